"""One deployable file: what the exporters return, how its parity is judged, its sidecar.

:func:`latkit.deploy.export.export_arch` writes the float32 files and
:func:`latkit.deploy.export_quantized.export_quantized` the quantized ones; both
judge each file's parity with :func:`check_parity` and write its sidecar with
:func:`write_sidecar`, and both return an :class:`ExportedFile`, which
:func:`latkit.deploy.verify.measure_exported` measures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from latkit.core.reprs import short_repr
from latkit.core.errors import StoreError
from latkit.core.files import file_sha256, read_json, write_json
from latkit.devices.precision import Precision, parse_precision
from latkit.deploy.export_formats import INT8_REL_TOL, ExportError
from latkit.deploy.layout import InputLayout, parse_layout
from latkit.deploy.sidecar import ExportedFileDict, MeasuredLatency, Parity, Sidecar, SidecarBase, SidecarEntry

log = logging.getLogger(__name__)

REL_TOL = {Precision.FP32: 1e-3, Precision.FP16: 2e-2, Precision.INT8: INT8_REL_TOL}  # parity tolerance
STRICT_PRECISIONS = (Precision.FP32, Precision.FP16)  # parity failure raises for these


@dataclass
class ExportedFile:
    """One deployable file and its sidecar."""

    path: Path
    sidecar: Path
    format: str  # "onnx" | "tflite"
    precision: Precision
    layout: InputLayout
    input_shape: tuple[int, ...]
    parity: Parity
    measured: MeasuredLatency | None = None

    def __repr__(self) -> str:
        return short_repr(self, "path", "format", "precision", "layout", "input_shape")

    def meta(self) -> Sidecar:
        """The sidecar's content."""
        meta = read_json(self.sidecar, "model sidecar")
        if not isinstance(meta, dict):
            raise StoreError(f"the model sidecar {self.sidecar} is not a JSON object; export the model again")
        return meta  # a sidecar this module wrote

    def to_dict(self) -> ExportedFileDict:
        """JSON-ready form."""
        return {
            "path": str(self.path), "sidecar": str(self.sidecar), "format": self.format,
            "variant": self.precision.value, "layout": self.layout.tag, "input_shape": list(self.input_shape),
            "parity": self.parity, "measured": self.measured,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: ExportedFileDict) -> ExportedFile:
        """The file :meth:`to_dict` described (sent to a fresh interpreter and back as JSON)."""
        return cls(Path(d["path"]), Path(d["sidecar"]), d["format"], parse_precision(d["variant"]),
                   parse_layout(d["layout"]), tuple(d["input_shape"]), d["parity"], d.get("measured"))  # fmt: skip


def check_parity(parity: Parity, path: Path, precision: Precision, runtime: str) -> None:
    """Judge a file's parity with torch: a float file outside its tolerance raises, a quantized one is logged.

    Raises:
        ExportError: a float32 or fp16 file (:data:`STRICT_PRECISIONS`) missed its tolerance.
    """
    if parity["passed"]:
        return
    msg = (
        f"{path.name} ({runtime}) differs from torch by {parity['max_rel_err']:.3g} of the output "
        f"scale (tolerance {parity['rel_tol']:g})"
    )
    if precision in STRICT_PRECISIONS:
        raise ExportError(f"{msg}; the exporter mistranslated the network, report it with the arch.json")
    log.warning("%s; expected for %s quantization", msg, precision.value)


def write_sidecar(path: Path, base: SidecarBase, entry: SidecarEntry) -> Path:
    """Write ``<path>.json``: the export's shared fields, the file's own, its size, sha256 and time; its path."""
    meta: Sidecar = {
        **base, **entry, "file": path.name, "size_bytes": path.stat().st_size, "sha256": file_sha256(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    sidecar = path.with_name(path.name + ".json")
    write_json(sidecar, meta, "model sidecar", indent=1)
    return sidecar


__all__ = ["REL_TOL", "STRICT_PRECISIONS", "ExportedFile", "check_parity", "write_sidecar"]
