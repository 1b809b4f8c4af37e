"""What an app needs to feed an exported file correctly, written into the file itself.

Every file :func:`latkit.deploy.export.export_arch` writes carries one JSON
document (schema ``latkit.app``), so a developer needs nothing but the file:

* ONNX: the model's ``metadata_props`` entry :data:`KEY` (``onnx.load(f).metadata_props``,
  or ``InferenceSession.get_modelmeta().custom_metadata_map`` in ONNX Runtime);
* TFLite: the flatbuffer's ``Model.metadata`` entry named :data:`KEY`, whose
  buffer holds the JSON text (UTF-8).

The document holds:

* ``input``: name, shape, ``layout`` (``NCHW`` or ``NHWC``), dtype, and for an
  integer input its ``quantization`` (``scale``, ``zero_point``: feed
  ``round(x / scale) + zero_point``, clipped to the dtype);
* ``output``: the same (an integer output is read back as ``(q - zero_point) * scale``);
* ``preprocessing``: how training fed the network: pixels scaled to
  ``pixel_range`` (8-bit images: value / 255), resized bilinearly to the input's
  height and width, then ``(x - mean[c]) / std[c]`` per channel ``c`` (RGB),
  with the training split's ``mean`` and ``std``; ``null`` when the weights'
  training data is unknown (random weights, a checkpoint without ``weights.json``);
* ``labels``: the class names by output index (``null`` when unknown);
* ``dataset``, ``format``, ``precision``, ``latkit_version``;
* ``sidecar``: the name of the JSON file beside the model (``<file>.json``,
  schema ``latkit.export``) that holds the rest: parity, provenance, and the
  ``measured_latency`` once the file is measured on a device (measuring happens
  after the file is written, so that figure lives there; ``latkit inspect``
  shows both).

:func:`read_app_metadata` reads the document back (``latkit inspect``,
``latkit.inspect()``); a model file latkit did not write gets the facts its
tensors carry (names, shapes, dtypes, quantization) and no preprocessing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latkit._version import __version__
from latkit.core.errors import StoreError
from latkit.core.files import atomic_path, file_sha256, read_json, write_bytes, write_json

log = logging.getLogger(__name__)

KEY = "latkit.app"
SCHEMA = "latkit.app"
SCHEMA_VERSION = 1
TRAINED_SIDECAR = "weights.json"  # what latkit train writes beside the weights


@dataclass(frozen=True)
class TrainingData:
    """What the weights were trained on: the dataset, its normalisation and class names (from its provenance)."""

    dataset: str
    normalization: Mapping[str, Any] | None
    labels: tuple[str, ...] | None

    @classmethod
    def from_provenance(cls, spec: str, provenance: Mapping[str, Any]) -> TrainingData:
        """From a dataset spec and its :class:`~latkit.search.supernet.data.DataProvenance`."""
        labels = provenance.get("classes")
        return cls(spec, provenance.get("normalization"), tuple(str(x) for x in labels) if labels else None)

    @classmethod
    def beside(cls, weights: str | Path | None) -> TrainingData | None:
        """The training data ``weights.json`` (``latkit train``'s sidecar) beside ``weights`` records, if any."""
        if weights is None:
            return None
        path = Path(weights).expanduser()
        sidecar = (path if path.is_dir() else path.parent) / TRAINED_SIDECAR
        if not sidecar.is_file():
            return None
        doc = read_json(sidecar, "training sidecar")
        dataset = doc.get("dataset") if isinstance(doc, dict) else None
        if not isinstance(dataset, dict) or not isinstance(dataset.get("provenance"), dict):
            return None
        return cls.from_provenance(str(dataset.get("spec", "")), dataset["provenance"])


def _quantization(detail: Mapping[str, Any]) -> dict[str, float | int] | None:
    """``{"scale", "zero_point"}`` of an integer TFLite tensor, None for a float one."""
    import numpy as np

    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero)}


def tflite_tensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first input's and output's name, shape, dtype and quantization, as LiteRT reads them."""
    import numpy as np

    from latkit.deploy.export_formats import tflite_interpreter_module
    from latkit.devices.base import captured_output

    module, _ = tflite_interpreter_module()
    with captured_output():
        interp = module.Interpreter(model_path=str(path))
    found = []
    for detail in (interp.get_input_details()[0], interp.get_output_details()[0]):
        found.append({"name": detail["name"], "shape": [int(v) for v in detail["shape"]],
                      "dtype": np.dtype(detail["dtype"]).name, "quantization": _quantization(detail)})  # fmt: skip
    return found[0], found[1]


def app_document(path: Path, sidecar: Mapping[str, Any], data: TrainingData | None) -> dict[str, Any]:
    """The ``latkit.app`` document of an exported file, from its sidecar, its tensors and the training data."""
    inp = {k: v for k, v in sidecar["input"].items() if k in ("name", "shape", "dtype", "layout")}
    out = {k: v for k, v in sidecar["output"].items() if k in ("name", "shape", "dtype")}
    if sidecar["format"] == "tflite":
        got_in, got_out = tflite_tensors(path)
        inp["quantization"], out["quantization"] = got_in["quantization"], got_out["quantization"]
    else:  # ONNX files take and give float32 (an int8 file quantizes inside, QDQ)
        inp["quantization"] = out["quantization"] = None
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "latkit_version": __version__,
        "format": sidecar["format"], "precision": sidecar.get("precision", sidecar.get("variant")),
        "input": inp, "output": out,
        "preprocessing": dict(data.normalization) if data and data.normalization else None,
        "labels": list(data.labels) if data and data.labels else None,
        "dataset": data.dataset if data else None,
        "sidecar": sidecar.get("file", path.name) + ".json",
    }  # fmt: skip


def embed(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` into the model file at ``path`` (ONNX ``metadata_props``, TFLite ``Model.metadata``).

    Raises:
        StoreError: the file cannot be rewritten (a TFLite file with weights outside its flatbuffer).
    """
    text = json.dumps(document, sort_keys=True)
    data = path.read_bytes()
    if data[4:8] == b"TFL3":
        write_bytes(path, _tflite_with_metadata(data, text.encode(), path), "exported model")
        return
    import onnx

    model = onnx.load_model_from_string(data)
    kept = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=KEY, value=text)
    with atomic_path(path, "exported model", keep_suffix=True) as tmp:
        onnx.save(model, str(tmp))


def _tflite_with_metadata(data: bytes, payload: bytes, path: Path) -> bytes:
    """The TFLite file ``data`` with a ``Model.metadata`` entry :data:`KEY` holding ``payload``
    (rebuilt by :mod:`latkit.devices.tflite_flatbuffer`, weights after the flatbuffer kept aligned)."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    from latkit.devices.tflite_flatbuffer import pack, unpack

    try:
        unpacked = unpack(data)
    except StoreError as exc:
        raise StoreError(f"cannot add metadata to {path.name}: {exc}; export the model again") from None
    model = unpacked.model
    entries = [m for m in model.metadata or [] if m.name not in (KEY, KEY.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = KEY, len(model.buffers) - 1
    model.metadata = entries + [entry]
    return pack(unpacked)


def stamp(exported: Any, data: TrainingData | None) -> dict[str, Any]:
    """Embed the ``latkit.app`` document in an :class:`~latkit.deploy.exported_file.ExportedFile` and
    record it in its sidecar (with the file's new size and sha256); the document."""
    meta = exported.meta()
    document = app_document(exported.path, meta, data)
    embed(exported.path, document)
    meta["app"] = document
    meta["size_bytes"], meta["sha256"] = exported.path.stat().st_size, file_sha256(exported.path)
    write_json(exported.sidecar, meta, "model sidecar", indent=1, nan_to_null=True)
    return document


__all__ = ["KEY", "SCHEMA", "SCHEMA_VERSION", "TrainingData", "app_document", "embed", "stamp", "tflite_tensors"]
