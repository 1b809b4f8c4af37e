"""Quantized deployable files (fp16, full-integer int8) derived from the float32 exports.

:func:`export_quantized` takes a float32 file written by
:func:`latkit.deploy.export.export_arch`, quantizes it with
:mod:`latkit.profiler.quantize` (the one place latkit quantizes: ai-edge-quantizer's
static recipe for TFLite, ONNX Runtime's ``quantize_static`` QDQ for ONNX), checks
the result really holds int8 kernels, compares it with the float32 network on
the parity batch and writes its sidecar.

The representative batch is what the int8 activation ranges are calibrated on:
images from the training set when the caller has them (the pipeline passes a
few hundred), else the quantizer's seeded random inputs. Random inputs give
ranges that real images do not fill, which costs accuracy; the sidecar says
which was used so a user can tell.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import nn

from latkit.core.files import atomic_path
from latkit.devices.precision import Precision
from latkit.deploy.layout import InputLayout
from latkit.core.errors import UsageError
from latkit.deploy import export_formats as fmt
from latkit.deploy.exported_file import REL_TOL, ExportedFile, check_parity, write_sidecar
from latkit.deploy.sidecar import FileIO, Parity, RepresentativeInfo, SidecarBase, SidecarEntry

log = logging.getLogger(__name__)

PARITY_BATCH = 64  # representative images a quantized file is compared on
MAX_REPRESENTATIVE = 1000  # more images than this add calibration time, not accuracy

# representative images: one (N, C, H, W) array or tensor, or (1, C, H, W) / (C, H, W) arrays
Images = Union[np.ndarray, torch.Tensor, Sequence[np.ndarray]]


class QuantBatch:
    """The representative images (NCHW, one per array) and the parity batch drawn from them.

    Args:
        representative: images ``(N, C, H, W)`` (array or tensor, or a list of
            ``(1, C, H, W)`` / ``(C, H, W)`` arrays); None: no real images.
        shape_nchw: the network's input shape ``(1, C, H, W)``.
        fallback: inputs to compare on when no images are given.

    Raises:
        UsageError: images of another shape than the network takes, or none.
    """

    def __init__(self, representative: Images | None, shape_nchw: tuple[int, ...],
                 fallback: Sequence[torch.Tensor]) -> None:  # fmt: skip
        self.shape = tuple(shape_nchw)
        if representative is None:
            self.images: list[np.ndarray] | None = None
            self.parity = [x.numpy().astype(np.float32) for x in fallback]
            self.meta: RepresentativeInfo = {"source": "seeded-random", "n_images": 0}
            return
        arr = np.asarray(representative.numpy() if isinstance(representative, torch.Tensor) else
                         np.concatenate([np.asarray(x, dtype=np.float32).reshape(1, *self.shape[1:])
                                         for x in representative]) if isinstance(representative, (list, tuple))
                         else representative, dtype=np.float32)  # fmt: skip
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.shape[1:] or len(arr) == 0:
            raise UsageError(f"representative images have shape {tuple(arr.shape)}; the network takes "
                             f"(N, {', '.join(str(v) for v in self.shape[1:])})")  # fmt: skip
        arr = arr[:MAX_REPRESENTATIVE]
        self.images = [arr[i : i + 1] for i in range(len(arr))]
        self.parity = self.images[:PARITY_BATCH]
        self.meta = {"source": "images", "n_images": len(self.images)}

    def for_layout(self, arrays: Sequence[np.ndarray] | None, layout: InputLayout) -> list[np.ndarray] | None:
        """``arrays`` (NCHW) in a file's input layout."""
        if arrays is None:
            return None
        return [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == InputLayout.NHWC else x for x in arrays]


def _quantize(format: str, src: Path, dst: Path, precision: Precision,
              rep: list[np.ndarray] | None) -> Mapping[str, object]:  # fmt: skip
    """Quantize ``src`` into ``dst``; the quantizer's own account of what it did (free-form)."""
    from latkit.profiler import quantize as q

    fn = q.quantize_onnx if format == "onnx" else q.quantize_tflite
    return fn(src, dst, precision, representative=rep)


def export_quantized(
    src: ExportedFile, module: nn.Module, batch: QuantBatch, base: SidecarBase, precision: Precision, path: Path,
) -> ExportedFile:  # fmt: skip
    """Write ``path``: the float32 file ``src`` at ``precision``, parity-checked, with its sidecar.

    Args:
        src: the float32 :class:`~latkit.deploy.exported_file.ExportedFile` (ONNX or TFLite).
        module: the float32 torch network (the parity reference).
        batch: representative images and the parity batch.
        base: the sidecar fields every file of the export shares.
        precision: fp16 (TFLite) or int8.
        path: where the file goes (written atomically).

    Returns:
        The :class:`~latkit.deploy.exported_file.ExportedFile`.

    Raises:
        UsageError: fp16 asked of an ONNX file.
        ExportError / LatkitError: the quantizer failed, or an int8 file has no int8 kernels.
    """
    from latkit.profiler.quantize import check_kernels, model_precision

    if src.format == "onnx" and precision != Precision.INT8:
        raise UsageError(f"ONNX files are exported at fp32 or int8, not {precision.value}; use tflite for fp16")
    with torch.no_grad():
        reference = [module(torch.from_numpy(x)).numpy() for x in batch.parity]
    feeds = batch.for_layout(batch.parity, src.layout)
    with atomic_path(path, "exported model", keep_suffix=True) as tmp:
        details = _quantize(src.format, src.path, tmp, precision, batch.for_layout(batch.images, src.layout))
        if precision == Precision.INT8:
            check_kernels(tmp, precision)
        holds = model_precision(tmp)
        got = fmt.predict(tmp, src.format, feeds)
        io: FileIO | None = fmt.tflite_io(tmp) if src.format == "tflite" else None
    if src.format == "tflite":
        _, runtime = fmt.tflite_interpreter_module()
    else:
        runtime = f"onnxruntime-{fmt.package_version('onnxruntime')}"
    par: Parity
    if precision == Precision.INT8:
        par = fmt.quantized_parity(reference, got)
    else:
        par = fmt.parity(reference, got, REL_TOL[precision])
    par["runtime"] = runtime
    check_parity(par, path, precision, runtime)
    src_meta = src.meta()
    if io is None:
        io = {"input": src_meta["input"], "output": src_meta["output"]}
    io["input"]["layout"] = src.layout.tag
    entry: SidecarEntry = {
        "format": src.format, "variant": precision.value, "precision": precision.value,
        "file_precision": holds.value, "exporter": src_meta.get("exporter"), "quantization": details,
        "representative": batch.meta, **io, "derived_from": src.path.name,
        "parity": {"reference": "torch float32", "inputs": _parity_inputs_text(batch), **par},
    }  # fmt: skip
    sidecar = write_sidecar(path, base, entry)
    return ExportedFile(path, sidecar, src.format, precision, src.layout, src.input_shape, par)


def _parity_inputs_text(batch: QuantBatch) -> str:
    if batch.images is None:
        return f"{len(batch.parity)} seeded standard-normal inputs"
    return f"the first {len(batch.parity)} of the {len(batch.images)} representative images"


__all__ = ["MAX_REPRESENTATIVE", "PARITY_BATCH", "QuantBatch", "export_quantized"]
