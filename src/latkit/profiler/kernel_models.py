"""One kernel configuration as a small ONNX model a device can time.

Each :class:`~latkit.profiler.kernels.KernelConfig` is built as the operators
a real network runs for it (a convolution followed by its activation node, a
residual ``Add``...), so the runtime applies the same fusions it applies to
the network, and the timing is the fused kernel's. Models have one float
input (``x``); any second operand (a residual, a concat's other inputs, the
right-hand side of a matmul) is a stored tensor, because the device feeds
only a model's first input.

A model is written on first use under the export cache and named by its
configuration key, so a resumed build reuses it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latkit.devices.precision import Precision
from latkit.core.errors import LatkitError, UsageError
from latkit.core.files import one_line
from latkit.devices.base import ModelFormat
from latkit.profiler.kernels import KernelConfig, KernelType

log = logging.getLogger(__name__)

OPSET = 20
_ACT_OPS = {"relu": "Relu", "clip": "Clip", "sigmoid": "Sigmoid", "hardsigmoid": "HardSigmoid",
            "hardswish": "HardSwish", "tanh": "Tanh", "leakyrelu": "LeakyRelu", "gelu": "Gelu", "erf": "Erf",
            "elu": "Elu", "selu": "Selu", "softplus": "Softplus", "prelu": "Relu", "mish": "Mish",
            "swish": "Sigmoid", "other": "Relu"}  # fmt: skip
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max"}
# the configuration of the smallest model: what one invocation costs with (almost) no work in it
OVERHEAD_CONFIG = KernelConfig(KernelType.ACTIVATION, variant="relu")


class _Builder:
    """Collects nodes and stored tensors of one small model."""

    def __init__(self, seed: int) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def const(self, shape: tuple[int, ...], scale: float = 0.1) -> str:
        return self._store((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def ints(self, values: list[int]) -> str:
        return self._store(np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.n}", **attrs))
        return out

    def act(self, name: str, x: str) -> str:
        if not name:
            return x
        if name == "clip":
            return self.op("Clip", [x, self.const_scalar(0.0), self.const_scalar(6.0)])
        return self.op(_ACT_OPS.get(name, "Relu"), [x])

    def const_scalar(self, value: float) -> str:
        return self._store(np.asarray(value, dtype=np.float32))

    def const_floats(self, values: list[float]) -> str:
        return self._store(np.asarray(values, dtype=np.float32))

    def const_abs(self, shape: tuple[int, ...]) -> str:
        """Positive values (a batch norm's variance)."""
        return self._store(np.abs(self.rng.standard_normal(shape)).astype(np.float32) + 0.5)

    def _store(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name


def input_shape(c: KernelConfig) -> tuple[int, ...]:
    """The model input's shape for ``c`` (NCHW images, rows x width otherwise)."""
    if c.type is KernelType.FC or c.type in (KernelType.SOFTMAX, KernelType.LAYERNORM):
        return (c.h, c.cin)
    if c.type is KernelType.REDUCE:
        return (c.h, c.cin) if c.extra else (c.cin, c.h)
    if c.type is KernelType.NORM:
        return (1, c.h, c.cin)
    if c.type is KernelType.COPY and c.variant == "expand":
        return (1, c.cin, c.h, 1) if c.extra <= c.w else (1, c.cin, 1, 1)
    if c.type is KernelType.MATMUL:
        return (c.w, c.h, c.cin)
    if c.type is KernelType.CONCAT:
        return (1, max(1, c.cin // max(c.extra, 1)), c.h, c.w)
    return (1, c.cin, c.h, c.w)


def _conv(b: _Builder, c: KernelConfig) -> str:
    pad = c.kernel // 2
    y = b.op("Conv", ["x", b.const((c.cout, c.cin // c.groups, c.kernel, c.kernel)), b.const((c.cout,))],
             kernel_shape=[c.kernel, c.kernel], strides=[c.stride, c.stride], pads=[pad] * 4, group=c.groups)
    if c.extra:
        oh, ow = c.out_hw()
        y = b.op("Add", [y, b.const((1, c.cout, oh, ow))])
    return b.act(c.act, y)


def _pool(b: _Builder, c: KernelConfig) -> str:
    if c.variant == "global":
        return b.op("GlobalAveragePool", ["x"])
    op = "MaxPool" if c.variant == "max" else "AveragePool"
    return b.op(op, ["x"], kernel_shape=[c.kernel, c.kernel], strides=[c.stride, c.stride], pads=[c.kernel // 2] * 4)


def _se(b: _Builder, c: KernelConfig) -> str:
    s = b.op("GlobalAveragePool", ["x"])
    s = b.op("Relu", [b.op("Conv", [s, b.const((c.cout, c.cin, 1, 1)), b.const((c.cout,))])])
    s = b.op("Conv", [s, b.const((c.cin, c.cout, 1, 1)), b.const((c.cin,))])
    s = b.op("HardSigmoid" if c.variant == "hardsigmoid" else "Sigmoid", [s])
    return b.op("Mul", ["x", s])


def _shuffle(b: _Builder, c: KernelConfig) -> str:
    if c.variant != "transpose":
        return b.op("Reshape", ["x", b.ints([1, c.cin * c.h * c.w])])
    if c.cin % 2:
        return b.op("Transpose", ["x"], perm=[0, 1, 3, 2])
    y = b.op("Reshape", ["x", b.ints([1, 2, c.cin // 2, c.h, c.w])])
    y = b.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    return b.op("Reshape", [y, b.ints([1, c.cin, c.h, c.w])])


def _copy(b: _Builder, c: KernelConfig) -> str:
    if c.variant == "expand":
        return b.op("Expand", ["x", b.ints([1, c.cin, c.h, c.w])])
    if c.variant == "split":
        from onnx import helper

        parts = min(max(c.extra, 2), c.cin)
        sizes = [c.cin - (parts - 1) * (c.cin // parts)] + [c.cin // parts] * (parts - 1)

        b.n += 1
        outs = [f"t{b.n}_{i}" for i in range(parts)]
        b.nodes.append(helper.make_node("Split", ["x", b.ints(sizes)], outs, name=f"Split_{b.n}", axis=1))
        return outs[0]  # the graph's output; the runtime writes every part all the same
    return b.op("Slice", ["x", b.ints([0]), b.ints([min(c.cout, c.cin)]), b.ints([1])])


def _body(b: _Builder, c: KernelConfig) -> str:
    t = c.type
    if t in (KernelType.CONV, KernelType.DWCONV, KernelType.GCONV, KernelType.POINTWISE):
        return _conv(b, c)
    if t is KernelType.FC:
        y = b.op("Gemm", ["x", b.const((c.cin, c.cout)), b.const((c.cout,))])
        return b.act(c.act, y)
    if t is KernelType.MATMUL:
        return b.act(c.act, b.op("MatMul", ["x", b.const((c.w, c.cin, c.cout))]))
    if t is KernelType.POOL:
        return _pool(b, c)
    if t is KernelType.ELEMENTWISE:
        if c.variant == "affine":
            return b.op("BatchNormalization", ["x", *(b.const((c.cin,)) for _ in range(3)),
                                               b.const_abs((c.cin,))])  # fmt: skip
        other = b.const((1, c.cin, 1, 1) if c.extra else (1, c.cin, c.h, c.w))
        return b.act(c.act, b.op(_BINARY.get(c.variant, "Add"), ["x", other]))
    if t is KernelType.CONCAT:
        part = input_shape(c)
        return b.op("Concat", ["x", *(b.const(part) for _ in range(max(c.extra, 2) - 1))], axis=1)
    if t is KernelType.ACTIVATION:
        return b.act(c.variant or "relu", "x")
    if t is KernelType.SE:
        return _se(b, c)
    if t is KernelType.SHUFFLE:
        return _shuffle(b, c)
    if t is KernelType.RESIZE:
        scales = b.const_floats([1.0, 1.0, float(c.stride), float(c.stride)])
        return b.op("Resize", ["x", "", scales], mode="linear" if c.variant == "linear" else "nearest")
    if t is KernelType.SOFTMAX:
        return b.op("Softmax", ["x"], axis=-1)
    if t is KernelType.LAYERNORM:
        return b.op("LayerNormalization", ["x", b.const((c.cin,)), b.const((c.cin,))], axis=-1)
    if t is KernelType.COPY:
        return _copy(b, c)
    if t is KernelType.REDUCE:
        op = {"sum": "ReduceSum", "mean": "ReduceMean"}.get(c.variant, "ReduceMax")
        return b.op(op, ["x", b.ints([-1 if c.extra else 0])], keepdims=1)
    if t is KernelType.NORM:
        return b.op("InstanceNormalization", ["x", b.const((c.h,)), b.const((c.h,))])
    raise UsageError(f"no model builder for kernel type {t.value}")


def build_onnx(c: KernelConfig, seed: int = 0) -> Any:
    """The ONNX model proto running kernel ``c`` once."""
    from onnx import TensorProto, helper

    b = _Builder(seed)
    out = _body(b, c)
    graph = helper.make_graph(
        b.nodes, c.key[:120], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape(c)))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=b.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="latkit")
    model.ir_version = 9
    return model


class KernelModel:
    """A kernel configuration as a :class:`~latkit.devices.base.ModelSource` (ONNX, or TFLite for LiteRT)."""

    precision = Precision.FP32

    def __init__(self, config: KernelConfig, cache_dir: Path | str | None = None) -> None:
        from latkit.core.cache import models_dir

        self.config = config
        self.key = "kernel-" + config.key
        self.input_shape = input_shape(config)
        self._dir = Path(cache_dir) if cache_dir is not None else models_dir() / "kernels"

    def file(self, fmt: ModelFormat | str) -> Path:
        """The model's ONNX or TFLite file (:mod:`latkit.profiler.kernel_tflite`), written on first use.

        Raises:
            UsageError: another format, or a kernel type not built in this one.
        """
        fmt = ModelFormat(fmt)
        if fmt not in (ModelFormat.ONNX, ModelFormat.TFLITE):
            raise UsageError(f"kernel models are built as ONNX or TFLite; {fmt.value} devices "
                             "are not supported by kernel measurement yet")
        path = self._dir / f"{self.key}.{fmt.value}"
        if not path.is_file():
            from latkit.core.files import write_bytes

            if fmt is ModelFormat.TFLITE:
                from latkit.profiler.kernel_tflite import build_tflite

                data = build_tflite(self.config)
            else:
                data = build_onnx(self.config).SerializeToString()
            write_bytes(path, data, "kernel model")
        return path

    def torch_module(self) -> Any:
        """Kernel models have no torch form.

        Raises:
            UsageError: always.
        """
        raise UsageError("kernel models are ONNX or TFLite files; measure them on cpu:onnxruntime or cpu:litert")





def measure_kernels(device: Any, configs: list[KernelConfig], on_measured: Any, protocol: Any = None,
                    on_progress: Any = None, cache_dir: Path | str | None = None) -> dict[str, str]:
    """Measure ``configs`` on ``device`` with the measurement protocol, handing each result on at once.

    Args:
        device: an open ONNX device.
        configs: distinct configurations.
        on_measured: called as ``(config, measurement)`` the moment one finishes (store it there:
            a killed run keeps what it measured).
        protocol: :class:`~latkit.profiler.protocol.ProtocolConfig` (default the protocol's own).
        on_progress: ``(done, total, key)`` after each configuration.
        cache_dir: where the models are written (default the export cache).

    Returns:
        Configuration key -> one-line reason, for the configurations that failed.
    """
    from latkit.profiler.protocol import measure_many

    by_key = {"kernel-" + c.key: c for c in configs}
    failed: dict[str, str] = {}

    def progress(done: int, total: int, key: str, m: Any) -> None:
        if m is not None:
            on_measured(by_key[key], _with_layout_share(device, KernelModel(by_key[key], cache_dir), m))
        if on_progress is not None:
            on_progress(done, total, key)

    def error(key: str, exc: BaseException) -> None:
        failed[by_key[key].key] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

    measure_many(device, [KernelModel(c, cache_dir) for c in by_key.values()], protocol, None, progress,
                 on_error=error)
    return failed


def _with_layout_share(device: Any, model: KernelModel, m: Any) -> Any:
    """``m`` with ``layout_share`` in its provenance where the device's sessions tell it
    (ONNX Runtime: the share of a run in the layout changes at the lone kernel's edges).

    A network runs those once, not once per kernel, so the kernel counts without them
    (:meth:`~latkit.lut.kernel_store.KernelStore.measurements`).
    A failed profile leaves the measurement as it is: it is never lost for the share. Only ONNX
    devices are asked (a phone would take another push for a share it cannot tell).
    """
    if getattr(device, "model_format", None) is not ModelFormat.ONNX:
        return m
    try:
        with device.open(model) as session:
            share = getattr(session, "layout_share", None)
            if share is None:
                return m
            value = float(share())
    except LatkitError as exc:
        log.warning("%s: no layout share (%s); its whole time is kept as the kernel's", model.key, one_line(exc))
        return m
    return replace(m, provenance={**m.provenance, "layout_share": round(value, 4)})


__all__ = ["OPSET", "OVERHEAD_CONFIG", "KernelModel", "build_onnx", "input_shape", "measure_kernels"]
