"""Model-file writers and readers behind :mod:`latkit.deploy.export`.

Each writer turns an eval-mode torch module into one deployable file and
returns what it did (opset, converter version, layout); each runner executes a
file on a batch of inputs with the reference runtime of its format (ONNX
Runtime, the LiteRT interpreter) so the caller can compare it with torch.
Quantized copies (fp16, int8) are written by :mod:`latkit.profiler.quantize`,
the one place latkit quantizes; :func:`quantized_parity` judges them.
Optional packages (litert-torch, a LiteRT interpreter) are imported inside
the functions that need them.
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from latkit.core.files import one_line
from latkit.devices.base import captured_output
from latkit.devices.precision import Precision
from latkit.core.errors import LatkitError, MissingExtraError, UsageError
from latkit.profiler.export import ONNX_OPSET
from latkit.profiler.quiet import quiet_converter
from latkit.deploy.sidecar import ExporterInfo, FileIO, InterpreterTensor, Parity

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "output"
TFLITE_PRECISIONS = (Precision.FP16, Precision.INT8)  # beyond the float32 file
INT8_MIN_TOP1 = 0.9  # int8 parity: share of inputs whose arg-max matches the float32 network
INT8_REL_TOL = 0.25  # int8 parity: largest |int8 - float32| over the largest |float32| output


class ExportError(LatkitError):
    """An export that failed or whose file does not compute what torch computes."""


def package_version(dist: str) -> str:
    """The installed version of a distribution ('unknown' when absent)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


class ToNHWC(nn.Module):
    """Wrap an NCHW network so it takes NHWC images (what TFLite apps feed).

    The permute sits inside the graph, so the converter can fold it into the
    first convolution instead of the app transposing every frame.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.inner(x.permute(0, 3, 1, 2))
        # a 4-D output (a feature map) goes back to NHWC too; logits (N, K) stay
        return y.permute(0, 2, 3, 1) if y.dim() == 4 else y


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> ExporterInfo:
    """Export ``module`` to ONNX (TorchScript exporter, opset 17) and check the graph.

    Raises:
        ExportError: the exporter or ``onnx.checker`` rejects the model.
    """
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            )  # fmt: skip
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ExportError(f"torch.onnx.export failed: {one_line(exc)}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {path.name}: {one_line(exc)}") from exc
    model = onnx.load(str(path), load_external_data=False)
    opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
    return {
        "opset": opsets.get("ai.onnx", ONNX_OPSET),
        "opset_imports": opsets,
        "exporter": f"torch.onnx (torchscript) torch-{torch.__version__}",
        "onnx_version": package_version("onnx"),
        "checker": "onnx.checker full_check passed",
    }


def write_tflite(module: nn.Module, example: torch.Tensor, path: Path) -> ExporterInfo:
    """Convert ``module`` to a float32 TFLite flatbuffer with litert-torch.

    ``example`` is in the layout ``module`` takes (wrap with :class:`ToNHWC` first
    for an NHWC file).

    Raises:
        MissingExtraError: litert-torch is not installed.
        ExportError: the conversion failed.
    """
    with quiet_converter("litert-torch"):
        try:
            import litert_torch
        except ImportError as exc:
            raise MissingExtraError("TFLite export", "tflite", exc) from None
        try:
            litert_torch.convert(module, (example,)).export(str(path))
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
            raise ExportError(f"litert-torch could not convert the network: {one_line(exc)}") from exc
    return {"converter": f"litert-torch-{package_version('litert-torch')}", "torch_version": torch.__version__}


def run_onnx(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the ONNX file for each input (ONNX Runtime, CPU, all optimisations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: x})[0] for x in inputs]


def tflite_interpreter_module() -> tuple[ModuleType, str]:
    """The LiteRT interpreter module and its package (ai_edge_litert, else tflite_runtime).

    Raises:
        MissingExtraError: neither is installed.
    """
    for module_name, dist in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                              ("tflite_runtime.interpreter", "tflite-runtime")):  # fmt: skip
        try:
            import importlib

            return importlib.import_module(module_name), f"{dist}-{package_version(dist)}"
        except ImportError:
            continue
    raise MissingExtraError("checking a TFLite file", "tflite")


def run_tflite(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the TFLite file for each input (LiteRT interpreter, default delegates).

    A full-integer file whose input or output tensor is itself int8/uint8 is fed
    quantized inputs and its outputs are dequantized, with the tensors' own
    scale and zero point, so every file answers in float32.
    """
    module, _ = tflite_interpreter_module()
    with captured_output():
        interp = module.Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    results = []
    for x in inputs:
        if tuple(inp["shape"]) != x.shape:
            raise ExportError(f"{path.name} takes input {tuple(inp['shape'])}, got {x.shape}")
        interp.set_tensor(inp["index"], _to_tensor(x, inp))
        interp.invoke()
        results.append(_from_tensor(np.array(interp.get_tensor(out["index"])), out))
    return results


def _to_tensor(x: np.ndarray, detail: InterpreterTensor) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _from_tensor(y: np.ndarray, detail: InterpreterTensor) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind in "iu":
        scale, zero = detail["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y.astype(np.float32)


def predict(path: Path, format: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of an ONNX or TFLite file for each input, in the file's own runtime.

    Raises:
        UsageError: an unknown format.
    """
    if format == "onnx":
        return run_onnx(path, inputs)
    if format == "tflite":
        return run_tflite(path, inputs)
    raise UsageError(f"cannot run a {format!r} file; use onnx or tflite")


def tflite_io(path: Path) -> FileIO:
    """Input and output names, shapes and dtypes of a TFLite file."""
    module, _ = tflite_interpreter_module()
    with captured_output():
        interp = module.Interpreter(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return {
        "input": {"name": inp["name"], "shape": [int(v) for v in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name},
        "output": {"name": out["name"], "shape": [int(v) for v in out["shape"]], "dtype": np.dtype(out["dtype"]).name},
    }


def parity(reference: list[np.ndarray], got: list[np.ndarray], rel_tol: float) -> Parity:
    """Compare a runtime's outputs with torch's.

    The error is relative to the largest reference magnitude (logits have no
    natural scale, and elementwise relative error explodes near zero).

    Returns:
        ``max_abs_err``, ``max_rel_err``, ``rel_tol``, ``top1_agreement`` (share
        of inputs with the same arg-max) and ``passed``.
    """
    abs_err = max(float(np.max(np.abs(r - g))) for r, g in zip(reference, got))
    scale = max(float(np.max(np.abs(r))) for r in reference) or 1.0
    same_top1 = [int(np.argmax(r)) == int(np.argmax(g)) for r, g in zip(reference, got)]
    rel = abs_err / scale
    return {
        "max_abs_err": abs_err,
        "max_rel_err": rel,
        "rel_tol": rel_tol,
        "top1_agreement": sum(same_top1) / len(same_top1),
        "n_inputs": len(reference),
        "passed": bool(np.isfinite(rel) and rel <= rel_tol),
    }


def quantized_parity(reference: list[np.ndarray], got: list[np.ndarray],
                     min_top1: float = INT8_MIN_TOP1, rel_tol: float = INT8_REL_TOL) -> Parity:  # fmt: skip
    """Compare an int8 file's outputs with the float32 network's, with int8 tolerances.

    Quantization moves every logit a little, so elementwise closeness is the
    wrong test; what a user sees is the predicted class. The file passes when
    its arg-max agrees with float32 on at least ``min_top1`` of the inputs and
    its largest error stays within ``rel_tol`` of the largest float32 output.

    Returns:
        :func:`parity`'s fields, plus ``min_top1_agreement``; ``passed`` applies both bounds.
    """
    out = parity(reference, got, rel_tol)
    out["min_top1_agreement"] = min_top1
    out["passed"] = bool(out["passed"] and out["top1_agreement"] >= min_top1)
    return out


__all__ = [
    "ExportError",
    "TFLITE_PRECISIONS",
    "ToNHWC",
    "parity",
    "quantized_parity",
    "predict",
    "run_onnx",
    "run_tflite",
    "tflite_interpreter_module",
    "tflite_io",
    "write_onnx",
    "write_tflite",
]
