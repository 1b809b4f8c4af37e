"""Model-file writers and readers behind :mod:`latkit.search.export`.

Each writer turns an eval-mode torch module into one deployable file and
returns what it did (opset, converter version, layout); each runner executes a
file on a batch of inputs with the reference runtime of its format (ONNX
Runtime, the LiteRT interpreter) so the caller can compare it with torch.
Optional packages (litert-torch, ai-edge-quantizer, a LiteRT interpreter) are
imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latkit._files import one_line
from latkit.devices.base import captured_output
from latkit.errors import LatkitError, MissingExtraError, UsageError
from latkit.profiler.export import quiet_converter

log = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
TFLITE_VARIANTS = ("fp16", "int8")  # beyond the float32 file


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


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
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


def write_tflite(module: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
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


def quantize_tflite(src: Path, dst: Path, variant: str) -> dict[str, Any]:
    """Write a reduced-precision copy of a float32 TFLite file with ai-edge-quantizer.

    ``fp16`` stores conv / fully-connected weights as float16 (dequantized to
    float32 at load, compute stays float32); ``int8`` is dynamic-range
    quantization: int8 per-channel weights, activations quantized on the fly.

    Raises:
        UsageError: an unknown variant.
        MissingExtraError: ai-edge-quantizer is not installed.
        ExportError: the quantizer failed.
    """
    if variant not in TFLITE_VARIANTS:
        raise UsageError(f"unknown TFLite variant {variant!r}; use {' or '.join(TFLITE_VARIANTS)}")
    with quiet_converter("ai-edge-quantizer"):
        try:
            from ai_edge_quantizer import qtyping, quantizer, recipe
            from ai_edge_quantizer.algorithm_manager import AlgorithmName
        except ImportError as exc:
            raise MissingExtraError(f"TFLite {variant} export", "tflite", exc) from None
        try:
            if variant == "int8":
                q = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
                scheme = "dynamic-range int8 (per-channel int8 weights, float32 activations)"
            else:
                q = quantizer.Quantizer(str(src))
                cfg = qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(
                        num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                    ),
                    compute_precision=qtyping.ComputePrecision.FLOAT,
                    explicit_dequantize=True,
                )
                q.update_quantization_recipe(
                    regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                    op_config=cfg, algorithm_key=AlgorithmName.FLOAT_CASTING,
                )  # fmt: skip
                scheme = "float16 weights (dequantized at load), float32 compute"
            q.quantize(enable_progress_report=False).export_model(str(dst), overwrite=True)
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise ExportError(f"ai-edge-quantizer failed on the {variant} variant: {one_line(exc)}") from exc
    return {"quantizer": f"ai-edge-quantizer-{package_version('ai-edge-quantizer')}", "quantization": scheme}


def run_onnx(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the ONNX file for each input (ONNX Runtime, CPU, all optimisations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: x})[0] for x in inputs]


def tflite_interpreter_module() -> tuple[Any, str]:
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
    """Outputs of the TFLite file for each input (LiteRT interpreter, default delegates)."""
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
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        results.append(np.array(interp.get_tensor(out["index"])))
    return results


def tflite_io(path: Path) -> dict[str, Any]:
    """Input and output names, shapes and dtypes of a TFLite file."""
    module, _ = tflite_interpreter_module()
    with captured_output():
        interp = module.Interpreter(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return {
        "input": {"name": inp["name"], "shape": [int(v) for v in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name},
        "output": {"name": out["name"], "shape": [int(v) for v in out["shape"]], "dtype": np.dtype(out["dtype"]).name},
    }


def parity(reference: list[np.ndarray], got: list[np.ndarray], rel_tol: float) -> dict[str, Any]:
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


__all__ = [
    "ExportError",
    "ONNX_OPSET",
    "TFLITE_VARIANTS",
    "ToNHWC",
    "parity",
    "quantize_tflite",
    "run_onnx",
    "run_tflite",
    "tflite_interpreter_module",
    "tflite_io",
    "write_onnx",
    "write_tflite",
]
