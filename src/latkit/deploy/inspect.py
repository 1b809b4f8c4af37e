"""Read back what a model file says about feeding it (``latkit inspect FILE``, ``latkit.inspect()``).

A file latkit exported carries a ``latkit.app`` document (see
:mod:`latkit.deploy.app_metadata`); its sidecar, which the document names, adds
the measured latency once the file was measured. Any other ONNX or TFLite file
gets the facts its own tensors carry (names, shapes, dtypes, int8 scale and
zero point) and no preprocessing or labels, said so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latkit.core.errors import StoreError
from latkit.core.files import read_json
from latkit.deploy.app_metadata import KEY


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says an app needs, and where it came from.

    Attributes:
        path: the model file.
        format: ``onnx`` or ``tflite``.
        document: the ``latkit.app`` document (or, for a file latkit did not write, its tensors' facts).
        embedded: whether the file carries latkit's document.
        sidecar: the sidecar the document names, when it is beside the file.
        measured_latency: the sidecar's ``measured_latency`` (None until measured, or when the sidecar
            describes other bytes than the file's).
    """

    path: Path
    format: str
    document: Mapping[str, Any]
    embedded: bool
    sidecar: Path | None
    measured_latency: Mapping[str, Any] | None

    def __repr__(self) -> str:
        inp = self.document.get("input") or {}
        return (f"ModelMetadata({self.path.name!r}, {self.format}, input {inp.get('shape')} "
                f"{inp.get('layout') or ''}, {'latkit metadata' if self.embedded else 'no latkit metadata'})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``latkit inspect --json``)."""
        return {"file": str(self.path), "format": self.format, "embedded": self.embedded,
                **dict(self.document), "sidecar_path": str(self.sidecar) if self.sidecar else None,
                "measured_latency": self.measured_latency}  # fmt: skip


def inspect_file(path: str | Path) -> ModelMetadata:
    """What the model file at ``path`` says about feeding it.

    Raises:
        StoreError: missing, unreadable, not an ONNX or TFLite model, or its latkit document is damaged.
        UsageError: a model latkit cannot read an input of (see :class:`~latkit.profiler.model_file.ModelFile`).
    """
    from latkit.profiler.model_file import ModelFile

    model = ModelFile(path)  # refuses what is not a model, in one line
    fmt = model.format.value
    text = _tflite_document(model.path) if fmt == "tflite" else _onnx_document(model.path)
    if text is None:
        return ModelMetadata(model.path, fmt, _tensor_facts(model), False, None, None)
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("input"), dict):
        raise StoreError(f"{model.path} carries a damaged {KEY} metadata entry; export the model again")
    sidecar = model.path.with_name(str(document.get("sidecar") or model.path.name + ".json"))
    if not sidecar.is_file():
        return ModelMetadata(model.path, fmt, document, True, None, None)
    meta = read_json(sidecar, "model sidecar")
    same = isinstance(meta, dict) and meta.get("sha256") == model.sha256
    measured = meta.get("measured_latency") if same else None
    return ModelMetadata(model.path, fmt, document, True, sidecar if same else None, measured)


def _onnx_document(path: Path) -> str | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == KEY), None)


def _tflite_document(path: Path) -> str | None:
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if (entry.Name() or b"").decode(errors="replace") == KEY:
            buffer = model.Buffers(entry.Buffer())
            return bytes(buffer.DataAsNumpy()).decode("utf-8", errors="replace") if buffer.DataLength() else ""
    return None


def _tensor_facts(model: Any) -> dict[str, Any]:
    """A file without latkit's document: what its tensors say."""
    if model.format.value == "tflite":
        from latkit.deploy.app_metadata import tflite_tensors

        inp, out = tflite_tensors(model.path)
    else:
        inp = {"name": model.input_name, "shape": list(model.input_shape), "dtype": "float32", "quantization": None}
        out = None
    return {"input": inp, "output": out, "precision": model.precision.value if model.precision else None,
            "preprocessing": None, "labels": None,
            "note": f"no {KEY} metadata: not exported by latkit, so its preprocessing and labels are unknown"}


__all__ = ["ModelMetadata", "inspect_file"]
