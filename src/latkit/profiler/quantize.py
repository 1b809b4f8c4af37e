"""Reduced-precision copies of model files, and what a model file really contains.

latkit does not quantize by itself; it drives the maintained quantizers the
runtimes are built for and then checks their output:

* TFLite ``int8``: ai-edge-quantizer's static recipe (``static_wi8_ai8``):
  per-channel int8 weights, int8 activations whose ranges are the lowest and
  highest values over all representative inputs (global min-max), int8 model
  input and output, the full-integer file LiteRT/XNNPACK and NNAPI run on phones.
* TFLite ``fp16``: float16 weights dequantized at load (the file GPU
  delegates take; on a CPU the compute stays float32).
* ONNX ``int8``: ``onnxruntime.quantization.quantize_static`` in QDQ format,
  per-channel int8 weights and uint8 activations (the pairing ONNX Runtime's
  x86 kernels are fastest with), float model input and output.

A file's name says nothing trustworthy, so :func:`model_precision` reads its
operators and tensors, and :func:`check_kernels` refuses a file whose
convolutions / matrix products do not run at the precision it claims.
Representative inputs are float32 NCHW arrays (the model's input); without
them, seeded standard-normal inputs of the file's input shape are used, which
is what an operator's latency depends on (its values do not change its speed).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import atomic_path, one_line
from latkit.devices.base import captured_output
from latkit.devices.precision import Precision
from latkit.core.errors import LatkitError, MissingExtraError, StoreError, UsageError
from latkit.profiler.quiet import quiet_converter

log = logging.getLogger(__name__)

REPRESENTATIVE_COUNT = 16
REPRESENTATIVE_SEED = 20240
TFLITE_INT8_SCHEME = (
    "ai-edge-quantizer static_wi8_ai8: per-channel int8 weights, int8 activations "
    "(global min-max calibration), int8 input/output"
)
TFLITE_FP16_SCHEME = "ai-edge-quantizer float casting: float16 weights dequantized at load, float32 compute"
ONNX_INT8_SCHEME = (
    "onnxruntime quantize_static QDQ: per-channel int8 weights, uint8 activations "
    "(min-max calibration), float input/output"
)
# operators whose arithmetic is the model's cost: they must carry the claimed precision
_TFLITE_KERNELS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}
)
_ONNX_FLOAT_KERNELS = frozenset({"Conv", "MatMul", "Gemm", "ConvTranspose"})
_ONNX_INT_KERNELS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})
_ONNX_INT8 = frozenset({2, 3})  # TensorProto.UINT8, INT8
_ONNX_FP16 = 10  # TensorProto.FLOAT16


class QuantizationError(LatkitError):
    """A quantizer that failed on a model file."""


def quantizer_version(fmt: str) -> str:
    """The quantizer (distribution and version) used for ``fmt`` (``tflite`` or ``onnx``)."""
    dist = "ai-edge-quantizer" if fmt == "tflite" else "onnxruntime"
    try:
        return f"{dist}-{metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist}-unknown"


def representative_inputs(shape: Sequence[int], count: int = REPRESENTATIVE_COUNT,
                          seed: int = REPRESENTATIVE_SEED) -> list[np.ndarray]:
    """``count`` seeded standard-normal float32 arrays of ``shape`` (the same on every call)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(int(v) for v in shape), dtype=np.float32) for _ in range(count)]


def _fit_inputs(arrays: Sequence[np.ndarray] | None, shape: tuple[int, ...], what: str) -> list[np.ndarray]:
    """Representative arrays in the file's input layout (an NCHW array becomes NHWC if the file wants it)."""
    if arrays is None:
        return representative_inputs(shape)
    if len(arrays) == 0:
        raise UsageError(f"{what}: representative inputs are empty; give at least one input or None")
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        if a.shape == shape:
            out.append(a)
        elif a.ndim == 4 and a.transpose(0, 2, 3, 1).shape == shape:
            out.append(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))
        else:
            raise UsageError(f"{what}: a representative input has shape {a.shape}; the model takes {shape}")
        if not np.all(np.isfinite(out[-1])):
            raise UsageError(f"{what}: a representative input holds NaN or inf")
    return out


def _target(precision: Precision, fmt: str, offered: tuple[Precision, ...]) -> Precision:
    if precision not in offered:
        raise UsageError(f"{fmt} files are quantized to {' or '.join(x.value for x in offered)}, not {precision}")
    return precision


def _interpreter(path: Path, **kwargs: Any) -> Any:
    """A LiteRT interpreter on ``path`` (no delegate), or StoreError for a file that is not TFLite."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise MissingExtraError("reading a TFLite file", "tflite", exc) from None
    if not path.is_file():
        raise StoreError(f"model file {path} does not exist")
    try:
        with captured_output():
            return Interpreter(
                model_path=str(path),
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                **kwargs,
            )
    except (ValueError, RuntimeError) as exc:
        raise StoreError(f"cannot read {path} as a TFLite model: {one_line(exc)}") from exc


def quantize_tflite(src: str | Path, dst: str | Path, precision: Precision,
                    representative: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Write an ``int8`` (full-integer static) or ``fp16`` copy of a float32 TFLite file.

    Args:
        src: The float32 TFLite file.
        dst: Where the quantized file goes (written atomically).
        precision: ``int8`` or ``fp16`` (``fp32`` is the file itself).
        representative: Calibration inputs, float32 NCHW (or already in the
            file's layout); None = :func:`representative_inputs` of the file's
            input shape. Unused for fp16.

    Returns:
        ``precision``, ``scheme``, ``quantizer`` and, for int8, ``calibration_inputs``.

    Raises:
        UsageError: another precision, or representative inputs of the wrong shape.
        MissingExtraError: ai-edge-quantizer is not installed.
        StoreError: ``src`` is not a TFLite file.
        QuantizationError: the quantizer failed.
    """
    src, dst = Path(src), Path(dst)
    p = _target(precision, "TFLite", (Precision.INT8, Precision.FP16))
    interp = _interpreter(src)
    meta: dict[str, Any] = {"precision": p.value, "quantizer": quantizer_version("tflite")}
    with quiet_converter("ai-edge-quantizer"):
        try:
            from ai_edge_quantizer import quantizer, recipe
        except ImportError as exc:
            raise MissingExtraError(f"TFLite {p.value} quantization", "tflite", exc) from None
        try:
            if p is Precision.INT8:
                int8_recipe = recipe.static_wi8_ai8()
                q = quantizer.Quantizer(str(src), int8_recipe)
                data = _tflite_calibration(interp, representative, src.name)
                result = q.quantize(_min_max_ranges(src, int8_recipe, data), enable_progress_report=False)
                meta["scheme"] = TFLITE_INT8_SCHEME
                meta["calibration_inputs"] = len(next(iter(data.values())))
            else:
                q = quantizer.Quantizer(str(src))
                _fp16_recipe(q)
                result = q.quantize(enable_progress_report=False)
                meta["scheme"] = TFLITE_FP16_SCHEME
            with atomic_path(dst, "quantized model", keep_suffix=True) as tmp:
                tmp.unlink()  # the quantizer warns when it overwrites a file
                result.export_model(str(tmp))
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise QuantizationError(
                f"ai-edge-quantizer could not make a {p.value} copy of {src.name}: {one_line(exc)}"
            ) from exc
    return meta


def _tflite_calibration(interp: Any, representative: Sequence[np.ndarray] | None,
                        name: str) -> dict[str, list[dict[str, np.ndarray]]]:
    """Calibration data for ai-edge-quantizer: {signature: [{input name: array}, ...]}."""
    signatures = interp.get_signature_list()
    if len(signatures) != 1:
        raise QuantizationError(f"{name} has {len(signatures)} signatures; static calibration needs exactly one")
    key, sig = next(iter(signatures.items()))
    if len(sig["inputs"]) != 1:
        raise QuantizationError(f"{name} has {len(sig['inputs'])} inputs; latkit calibrates one-input models")
    shape = tuple(int(v) for v in interp.get_input_details()[0]["shape"])
    arrays = _fit_inputs(representative, shape, name)
    return {key: [{sig["inputs"][0]: a} for a in arrays]}


def _min_max_ranges(src: Path, int8_recipe: Any, data: dict[str, list[dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Each activation's range: the lowest and highest value over all calibration inputs.

    ``Quantizer.calibrate`` keeps a moving average of each input's own min and max
    instead, which clips the values that only a few inputs reach; a network's
    int8 file then loses accuracy its fp32 one has. Global ranges are also what
    ONNX Runtime's calibration uses, so the two int8 files of one network are
    calibrated alike. ``latkit run --precision int8`` reports the int8 file's
    held-out accuracy beside the fp32 network's; ``benchmarks/NOTES.md`` keeps
    the figures that chose global ranges.
    """
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(int8_recipe)
    calib = calibrator.Calibrator(src.read_bytes(), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(data, recipes)
    return calib.get_model_qsvs()


def _fp16_recipe(q: Any) -> None:
    """Float16 weights on every supported op (the fp16 recipe search/export_formats.py used)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    cfg = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT,
        explicit_dequantize=True,
    )
    q.update_quantization_recipe(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        op_config=cfg, algorithm_key=AlgorithmName.FLOAT_CASTING,
    )  # fmt: skip


def _onnx_model(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise StoreError(f"model file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own types share no base
        raise StoreError(f"cannot read {path} as an ONNX model: {one_line(exc)}") from exc


def _onnx_input_shape(model: Any, name: str) -> tuple[tuple[int, ...], str]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise QuantizationError(f"{name} has {len(inputs)} inputs; latkit calibrates one-input models")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
    return shape, inputs[0].name


def quantize_onnx(src: str | Path, dst: str | Path, precision: Precision,
                  representative: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Write an ``int8`` copy (static QDQ, per-channel) of a float32 ONNX file.

    ONNX fp16 is not offered: ONNX Runtime's CPU provider has no float16 kernels.

    Args:
        src: The float32 ONNX file.
        dst: Where the quantized file goes (written atomically).
        precision: ``int8``.
        representative: Calibration inputs, float32 NCHW; None = seeded random inputs.

    Returns:
        ``precision``, ``scheme``, ``quantizer``, ``calibration_inputs``.

    Raises:
        UsageError: another precision, or representative inputs of the wrong shape.
        StoreError: ``src`` is not an ONNX file.
        QuantizationError: the quantizer failed.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    p = _target(precision, "ONNX", (Precision.INT8,))
    shape, input_name = _onnx_input_shape(_onnx_model(src), src.name)
    arrays = _fit_inputs(representative, shape, src.name)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: a} for a in arrays])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="latkit-q-") as work, captured_output() as out:
        try:
            # shape inference and graph clean-up first, as onnxruntime's docs advise
            pre = Path(work) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            with atomic_path(dst, "quantized model", keep_suffix=True) as tmp:
                quantize_static(
                    str(pre), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                )  # fmt: skip
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
            raise QuantizationError(
                f"onnxruntime could not quantize {src.name} to {p.value}: {one_line(exc)}"
            ) from exc
    if out.text:
        log.debug("onnxruntime.quantization: %s", out.text[-2000:])
    return {"precision": p.value, "scheme": ONNX_INT8_SCHEME, "quantizer": quantizer_version("onnx"),
            "calibration_inputs": len(arrays)}


@dataclass(frozen=True)
class ModelKernels:
    """What the compute kernels (convolutions, matrix products) of a model file run at.

    Attributes:
        path: The file.
        kernels: Number of conv / matmul / fully-connected kernels.
        int8_kernels: Of which with int8 weights and int8 (or uint8) activations.
        hybrid_kernels: Of which with int8 weights but float activations (dynamic range).
        fp16_weights: Float16 weight tensors in the file.
        int8_activations: Whether any operator reads int8/uint8 activations
            (what tells an int8 pooling model, which has no kernels, apart).
    """

    path: Path
    kernels: int
    int8_kernels: int
    hybrid_kernels: int
    fp16_weights: int
    int8_activations: bool = False

    @property
    def precision(self) -> Precision:
        """int8 when every kernel is full-integer, fp16 with float16 weights, else fp32.

        A model without kernels (pooling) is int8 when its activations are.
        """
        if self.kernels and self.int8_kernels == self.kernels:
            return Precision.INT8
        if not self.kernels and self.int8_activations:
            return Precision.INT8
        if self.fp16_weights and not self.int8_kernels and not self.hybrid_kernels:
            return Precision.FP16
        return Precision.FP32

    def describe(self) -> str:
        """One phrase for error lines."""
        return (f"{self.kernels} conv/matmul kernel(s): {self.int8_kernels} int8, "
                f"{self.hybrid_kernels} int8-weight/float-activation, "
                f"{self.fp16_weights} float16 weight tensor(s)")  # fmt: skip


def _tflite_kernels(path: Path) -> ModelKernels:
    interp = _interpreter(path)
    try:
        tensors = {d["index"]: np.dtype(d["dtype"]) for d in interp.get_tensor_details()}
        ops = interp._get_ops_details()  # noqa: SLF001 - the interpreter's only op listing
    except (ValueError, RuntimeError) as exc:
        raise StoreError(f"cannot read the operators of {path}: {one_line(exc)}") from exc
    kernels = full = hybrid = 0
    for op in ops:
        if op["op_name"] not in _TFLITE_KERNELS:
            continue
        kernels += 1
        ins = [tensors.get(i) for i in op["inputs"] if i >= 0]
        if len(ins) >= 2 and ins[1] == np.int8:
            if ins[0] in (np.int8, np.uint8):
                full += 1
            else:
                hybrid += 1
    fp16 = sum(1 for dt in tensors.values() if dt == np.float16)
    acts = any(tensors.get(op["inputs"][0]) in (np.int8, np.uint8) for op in ops
               if len(op["inputs"]) and op["inputs"][0] >= 0)  # fmt: skip
    return ModelKernels(path, kernels, full, hybrid, fp16, acts)


def _onnx_kernels(path: Path) -> ModelKernels:
    graph = _onnx_model(path).graph
    init_types = {i.name: i.data_type for i in graph.initializer}
    # a tensor is "integer" when a DequantizeLinear made it from int8/uint8 data (QDQ)
    dq_int = {n.output[0] for n in graph.node
              if n.op_type == "DequantizeLinear" and init_types.get(n.input[0], 0) in _ONNX_INT8}
    quantized = {q.output[0] for q in graph.node if q.op_type == "QuantizeLinear"}
    dq_int |= {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in quantized}
    kernels = full = 0
    for n in graph.node:
        if n.op_type in _ONNX_INT_KERNELS:
            kernels, full = kernels + 1, full + 1
        elif n.op_type in _ONNX_FLOAT_KERNELS:
            kernels += 1
            if len(n.input) >= 2 and n.input[0] in dq_int and n.input[1] in dq_int:
                full += 1
    hybrid = sum(1 for n in graph.node if n.op_type in _ONNX_FLOAT_KERNELS and len(n.input) >= 2
                 and n.input[1] in dq_int and n.input[0] not in dq_int)  # fmt: skip
    fp16 = sum(1 for t in init_types.values() if t == _ONNX_FP16)
    acts = any(n.op_type == "QuantizeLinear" or n.op_type.startswith("QLinear") for n in graph.node)
    return ModelKernels(path, kernels, full, hybrid, fp16, acts)


def inspect_kernels(path: str | Path) -> ModelKernels:
    """Count the compute kernels of an ONNX or TFLite file by precision.

    The content decides the format, as for :class:`~latkit.profiler.model_file.ModelFile`
    (a TFLite flatbuffer carries its identifier; anything else is read as ONNX),
    so a file whose suffix is missing or wrong is read as what it is.

    Raises:
        StoreError: the file is missing or not a readable model.
    """
    from latkit.core.files import check_input_file

    path = check_input_file(path, "model file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise StoreError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if head[4:8] == b"TFL3":  # the TFLite file identifier (model_file.sniff_format, which imports this module)
        return _tflite_kernels(path)
    return _onnx_kernels(path)


def model_precision(path: str | Path) -> Precision:
    """What a ``.onnx`` / ``.tflite`` file really is, from its tensors and operators.

    ``int8`` when every conv / matmul kernel takes int8 weights and int8 (uint8)
    activations; ``fp16`` with float16 weights and no integer kernels; else
    ``fp32`` (a dynamic-range file, int8 weights with float activations, is
    float compute: fp32).

    Raises:
        UsageError: not a .onnx or .tflite file.
        StoreError: a missing, corrupt or unreadable file.
    """
    return inspect_kernels(path).precision


def check_kernels(path: str | Path, precision: Precision) -> ModelKernels:
    """Refuse a model file that does not contain what ``precision`` claims.

    A file without conv / matmul kernels (a pooling operator) has no weights
    a precision could change; it passes for any claim (ONNX Runtime's
    quantizer leaves such a graph in float, and that is what it runs).

    Returns:
        The kernel counts, for provenance.

    Raises:
        StoreError: the file's kernels are of another precision (one line, with
            the counts), or it cannot be read.
        UsageError: an unknown file type.
    """
    p = precision
    found = inspect_kernels(path)
    if found.kernels and found.precision != p:
        name = Path(path).name
        if p == Precision.INT8 and found.hybrid_kernels:
            why = "int8 weights with float activations (dynamic range), not full-integer int8"
        else:
            why = f"it is {found.precision.value}"
        raise StoreError(f"{name} is not an {p.value} model: {why} ({found.describe()})")
    return found


__all__ = [
    "ModelKernels",
    "ONNX_INT8_SCHEME",
    "QuantizationError",
    "REPRESENTATIVE_COUNT",
    "TFLITE_FP16_SCHEME",
    "TFLITE_INT8_SCHEME",
    "check_kernels",
    "inspect_kernels",
    "model_precision",
    "quantize_onnx",
    "quantize_tflite",
    "quantizer_version",
    "representative_inputs",
]
