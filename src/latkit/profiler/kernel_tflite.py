"""One kernel configuration as a small TFLite file, for kernel measurement on LiteRT.

:mod:`latkit.profiler.kernel_models` builds each configuration as ONNX; a
LiteRT device runs TFLite files, and converting hundreds of small models
through a converter would take minutes each. The flatbuffer is written
directly with the schema that ``ai_edge_litert`` ships, as the LiteRT
converter would lay the kernel out: NHWC images, filters in TFLite's order,
ReLU / ReLU6 / tanh as the operator's fused activation (other activations as
an operator after it, as the converter leaves them), a residual as an ``ADD``
after the convolution, batch norm as per-channel ``MUL`` and ``ADD``.

Kernel types a TFLite file runs as a chain of small operators (layer norm,
instance norm) are not built; their measurement is refused in one line and a
build records them as failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.profiler.kernels import KernelConfig, KernelType
from latkit.profiler.tflite_graph import tflite_schema

_FUSED = {"relu": 1, "clip": 3, "tanh": 4}  # ActivationFunctionType
_ACT_OPS = {"relu": "RELU", "clip": "RELU6", "sigmoid": "LOGISTIC", "hardswish": "HARD_SWISH", "tanh": "TANH",
            "gelu": "GELU", "leakyrelu": "LEAKY_RELU", "elu": "ELU", "hardsigmoid": "LOGISTIC"}  # fmt: skip
_VERSIONS = {"BROADCAST_TO": 2}  # operators whose first registered version is not 1
_BINARY = {"add": "ADD", "sub": "SUB", "mul": "MUL", "div": "DIV", "max": "MAXIMUM"}
_OPTIONS = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "ADD": "AddOptions",
            "MUL": "MulOptions", "SUB": "SubOptions", "DIV": "DivOptions", "FULLY_CONNECTED": "FullyConnectedOptions",
            "MAX_POOL_2D": "Pool2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions", "MEAN": "ReducerOptions",
            "SUM": "ReducerOptions", "REDUCE_MAX": "ReducerOptions", "CONCATENATION": "ConcatenationOptions",
            "SOFTMAX": "SoftmaxOptions", "SPLIT_V": "SplitVOptions", "BATCH_MATMUL": "BatchMatMulOptions"}  # fmt: skip


class _Writer:
    """Tensors, buffers and operators of one TFLite model (the schema's object API)."""

    def __init__(self, seed: int = 0) -> None:
        self.s = tflite_schema("building kernel models as TFLite files")
        self.rng = np.random.default_rng(seed)
        self.model = self.s.ModelT()
        self.model.version, self.model.buffers, self.model.operatorCodes = 3, [self.s.BufferT()], []
        self.graph = self.s.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []

    def tensor(self, shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        t = self.s.TensorT()
        t.name, t.shape, t.buffer = f"t{len(self.graph.tensors)}", [int(d) for d in shape], 0
        t.type = self.s.TensorType.INT32 if data is not None and data.dtype == np.int32 else self.s.TensorType.FLOAT32
        if data is not None:
            b = self.s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(b)
            t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def const(self, shape: tuple[int, ...]) -> int:
        return self.tensor(shape, (self.rng.standard_normal(shape) * 0.1).astype(np.float32))

    def ints(self, values: list[int]) -> int:
        return self.tensor((len(values),), np.asarray(values, np.int32))

    def op(self, builtin: str, inputs: list[int], out_shape: tuple[int, ...], n_out: int = 1, **options: Any) -> int:
        """Append ``builtin`` on ``inputs``; the index of its (first) output tensor."""
        code = getattr(self.s.BuiltinOperator, builtin)
        codes = [c.builtinCode for c in self.model.operatorCodes]
        if code not in codes:
            oc = self.s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode = code, min(code, 127)
            oc.version = _VERSIONS.get(builtin, 1)
            self.model.operatorCodes.append(oc)
            codes.append(code)
        o = self.s.OperatorT()
        outs = [self.tensor(out_shape) for _ in range(n_out)]
        o.opcodeIndex, o.inputs, o.outputs = codes.index(code), list(inputs), outs
        if builtin in _OPTIONS:
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, _OPTIONS[builtin])
            o.builtinOptions = getattr(self.s, _OPTIONS[builtin] + "T")()
            for name, value in options.items():
                setattr(o.builtinOptions, name, value)
        self.graph.operators.append(o)
        return outs[0]

    def act(self, name: str, x: int, shape: tuple[int, ...]) -> int:
        return self.op(_ACT_OPS.get(name, "RELU"), [x], shape) if name else x

    def finish(self, x: int, y: int) -> bytes:
        import flatbuffers

        self.graph.inputs, self.graph.outputs = [x], [y]
        self.model.subgraphs = [self.graph]
        b = flatbuffers.Builder(1024)
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def input_shape(c: KernelConfig) -> tuple[int, ...]:
    """The TFLite model input's shape for ``c`` (NHWC images, rows x width otherwise)."""
    if c.type in (KernelType.FC, KernelType.SOFTMAX):
        return (c.h, c.cin)
    if c.type is KernelType.MATMUL:
        return (c.w, c.h, c.cin)
    if c.type is KernelType.REDUCE:
        return (c.h, c.cin) if c.extra else (c.cin, c.h)
    if c.type is KernelType.CONCAT:
        return (1, c.h, c.w, max(1, c.cin // max(c.extra, 1)))
    if c.type is KernelType.COPY and c.variant == "expand":
        return (1, c.h, 1, c.cin) if c.extra <= c.w else (1, 1, 1, c.cin)
    return (1, c.h, c.w, c.cin)


def _conv(w: _Writer, c: KernelConfig, x: int) -> tuple[int, tuple[int, ...]]:
    oh, ow = c.out_hw()
    out = (1, oh, ow, c.cout)
    fused = 0 if c.extra else _FUSED.get(c.act, 0)
    common = dict(padding=0, strideH=c.stride, strideW=c.stride, dilationHFactor=1, dilationWFactor=1,
                  fusedActivationFunction=fused)  # fmt: skip
    if c.type is KernelType.DWCONV and c.groups == c.cin:
        y = w.op("DEPTHWISE_CONV_2D", [x, w.const((1, c.kernel, c.kernel, c.cout)), w.const((c.cout,))], out,
                 depthMultiplier=max(1, c.cout // c.cin), **common)  # fmt: skip
    else:
        y = w.op("CONV_2D", [x, w.const((c.cout, c.kernel, c.kernel, c.cin // c.groups)), w.const((c.cout,))], out,
                 **common)  # fmt: skip
    if c.extra:
        y = w.op("ADD", [y, w.const(out)], out, fusedActivationFunction=_FUSED.get(c.act, 0))
    if c.act and c.act not in _FUSED:
        y = w.act(c.act, y, out)
    return y, out


def _image(w: _Writer, c: KernelConfig, x: int, shape: tuple[int, ...]) -> int:
    """Pooling, element-wise, concat, activation, squeeze-excite, shuffle, resize."""
    t, (oh, ow) = c.type, c.out_hw()
    if t is KernelType.POOL and c.variant == "global":
        return w.op("MEAN", [x, w.ints([1, 2])], (1, 1, 1, c.cin), keepDims=True)
    if t is KernelType.POOL:
        return w.op("MAX_POOL_2D" if c.variant == "max" else "AVERAGE_POOL_2D", [x], (1, oh, ow, c.cin), padding=0,
                    strideH=c.stride, strideW=c.stride, filterHeight=c.kernel, filterWidth=c.kernel)  # fmt: skip
    if t is KernelType.ELEMENTWISE and c.variant == "affine":
        return w.op("ADD", [w.op("MUL", [x, w.const((c.cin,))], shape), w.const((c.cin,))], shape)
    if t is KernelType.ELEMENTWISE:
        other = w.const((1, 1, 1, c.cin) if c.extra else shape)
        y = w.op(_BINARY.get(c.variant, "ADD"), [x, other], shape, **({} if c.variant == "max" else
                 {"fusedActivationFunction": _FUSED.get(c.act, 0)}))  # fmt: skip
        return w.act(c.act, y, shape) if c.act and c.act not in _FUSED else y
    if t is KernelType.CONCAT:
        parts = [x] + [w.const(shape) for _ in range(max(c.extra, 2) - 1)]
        return w.op("CONCATENATION", parts, (1, c.h, c.w, shape[3] * len(parts)), axis=3)
    if t is KernelType.ACTIVATION:
        return w.act(c.variant or "relu", x, shape)
    if t is KernelType.SE:
        s = w.op("MEAN", [x, w.ints([1, 2])], (1, 1, 1, c.cin), keepDims=True)
        s = w.op("CONV_2D", [s, w.const((c.cout, 1, 1, c.cin)), w.const((c.cout,))], (1, 1, 1, c.cout), padding=0,
                 strideH=1, strideW=1, fusedActivationFunction=1)  # fmt: skip
        s = w.op("CONV_2D", [s, w.const((c.cin, 1, 1, c.cout)), w.const((c.cin,))], (1, 1, 1, c.cin), padding=0,
                 strideH=1, strideW=1)  # fmt: skip
        return w.op("MUL", [x, w.op("LOGISTIC", [s], (1, 1, 1, c.cin))], shape)
    if t is KernelType.SHUFFLE:
        if c.variant != "transpose" or c.cin % 2:
            return w.op("RESHAPE", [x, w.ints([1, c.h * c.w * c.cin])], (1, c.h * c.w * c.cin))
        y = w.op("RESHAPE", [x, w.ints([1, c.h, c.w, 2, c.cin // 2])], (1, c.h, c.w, 2, c.cin // 2))
        y = w.op("TRANSPOSE", [y, w.ints([0, 1, 2, 4, 3])], (1, c.h, c.w, c.cin // 2, 2))
        return w.op("RESHAPE", [y, w.ints([1, c.h, c.w, c.cin])], shape)
    if t is KernelType.RESIZE:
        op = "RESIZE_BILINEAR" if c.variant == "linear" else "RESIZE_NEAREST_NEIGHBOR"
        return w.op(op, [x, w.ints([oh, ow])], (1, oh, ow, c.cin))
    raise UsageError(f"kernel type {t.value} is not built as a TFLite file; measure it on cpu:onnxruntime")


def _rows(w: _Writer, c: KernelConfig, x: int, shape: tuple[int, ...]) -> int:
    """Fully connected, matmul, softmax, reduce and copy kernels."""
    t = c.type
    if t is KernelType.FC:
        y = w.op("FULLY_CONNECTED", [x, w.const((c.cout, c.cin)), w.const((c.cout,))], (c.h, c.cout),
                 fusedActivationFunction=_FUSED.get(c.act, 0))  # fmt: skip
        return w.act(c.act, y, (c.h, c.cout)) if c.act and c.act not in _FUSED else y
    if t is KernelType.MATMUL:
        return w.op("BATCH_MATMUL", [x, w.const((c.w, c.cin, c.cout))], (c.w, c.h, c.cout))
    if t is KernelType.SOFTMAX:
        return w.op("SOFTMAX", [x], shape, beta=1.0)
    if t is KernelType.REDUCE:
        op = {"sum": "SUM", "mean": "MEAN"}.get(c.variant, "REDUCE_MAX")
        out = (c.h, 1) if c.extra else (1, c.h)
        return w.op(op, [x, w.ints([1 if c.extra else 0])], out, keepDims=True)
    if c.variant == "expand":
        return w.op("BROADCAST_TO", [x, w.ints([1, c.h, c.w, c.cin])], (1, c.h, c.w, c.cin))
    if c.variant == "split":  # SPLIT_V: the channels need not divide evenly
        parts = min(max(c.extra, 2), c.cin)
        sizes = [c.cin - (parts - 1) * (c.cin // parts)] + [c.cin // parts] * (parts - 1)
        return w.op("SPLIT_V", [x, w.ints(sizes), w.ints([3])], (1, c.h, c.w, sizes[0]), n_out=parts,
                    numSplits=parts)  # fmt: skip
    return w.op("SLICE", [x, w.ints([0, 0, 0, 0]), w.ints([1, c.h, c.w, min(c.cout, c.cin)])],
                (1, c.h, c.w, min(c.cout, c.cin)))  # fmt: skip


def build_tflite(c: KernelConfig, seed: int = 0) -> bytes:
    """The TFLite flatbuffer running kernel ``c`` once.

    Raises:
        UsageError: a kernel type not built as TFLite (layer norm, instance norm).
        MissingExtraError: ``ai_edge_litert`` is not installed.
    """
    w = _Writer(seed)
    shape = input_shape(c)
    x = w.tensor(shape)
    if c.type in (KernelType.CONV, KernelType.DWCONV, KernelType.GCONV, KernelType.POINTWISE):
        y, _ = _conv(w, c, x)
    elif c.type in (KernelType.FC, KernelType.MATMUL, KernelType.SOFTMAX, KernelType.REDUCE, KernelType.COPY):
        y = _rows(w, c, x, shape)
    else:
        y = _image(w, c, x, shape)
    return w.finish(x, y)


__all__ = ["build_tflite", "input_shape"]
