"""A TFLite file as the same operator graph an ONNX file gives.

The kernel grouping and the kernel predictors speak ONNX operator names and
NCHW shapes, so the reader translates a TFLite flatbuffer into those terms,
from the schema that ``ai_edge_litert`` ships (``schema_py_generated``; no
interpreter is started unless the input is resized):

* **operators**: each builtin maps onto the ONNX operator that does the same
  work (``CONV_2D`` and ``DEPTHWISE_CONV_2D`` -> ``Conv`` with its group,
  ``FULLY_CONNECTED`` -> ``Gemm``, ``MEAN`` -> ``ReduceMean``, ``LOGISTIC`` ->
  ``Sigmoid``, ``RELU6`` -> ``Clip``...). ``QUANTIZE`` / ``DEQUANTIZE`` keep
  names of their own (``Quantize``, ``Dequantize``): in a TFLite file they are
  real element-wise passes, unlike ONNX's QDQ pairs, which a runtime folds. A
  builtin with no mapping keeps its TFLite name and becomes a flagged fallback
  kernel, as an unknown ONNX operator does.
* **fused activations**: TFLite stores a convolution's or an add's activation
  in the operator itself; the reader keeps it as the node's ``activation``
  attribute, which the kernel's configuration reads. It is always part of that
  kernel: the operator applies it, whatever a device's fusion rules say.
* **layout**: TFLite images are NHWC. Every 4-D tensor an image operator
  (convolution, pooling, resize) reads or writes, and every 4-D tensor joined to
  one through layout-preserving operators (element-wise, activations, pad,
  concat, quantize...), is given in NCHW order, and those operators' axes are
  mapped the same way. Other 4-D tensors (the NCHW input before a boundary
  ``TRANSPOSE``, attention heads) keep their order. Filters are given in ONNX's
  (out, in / groups, kh, kw) order.
* **shapes**: the file stores every tensor's shape at its conversion size. A
  dynamic input dimension (``-1`` in its shape signature) is refused in one line
  unless an input shape is given; a given shape that differs from the stored one
  is applied through the LiteRT interpreter, which recomputes every tensor's
  shape.

Only the main subgraph is read; control-flow operators that call others are
fallback kernels.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import MissingExtraError, StoreError, UsageError
from latkit.profiler.op_graph import Node, OpGraph, Shape, static_tensors

# TFLite builtin -> ONNX operator type (or a name of latkit's own where ONNX has none)
OP_TYPES: dict[str, str] = {
    "CONV_2D": "Conv", "DEPTHWISE_CONV_2D": "Conv", "FULLY_CONNECTED": "Gemm", "BATCH_MATMUL": "MatMul",
    "ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div", "MAXIMUM": "Max", "MINIMUM": "Min", "POW": "Pow",
    "SQUARED_DIFFERENCE": "Sub", "ADD_N": "Sum",
    "AVERAGE_POOL_2D": "AveragePool", "MAX_POOL_2D": "MaxPool", "MEAN": "ReduceMean", "SUM": "ReduceSum",
    "REDUCE_MAX": "ReduceMax", "REDUCE_MIN": "ReduceMin", "REDUCE_PROD": "ReduceProd",
    "RESHAPE": "Reshape", "SQUEEZE": "Squeeze", "EXPAND_DIMS": "Unsqueeze", "TRANSPOSE": "Transpose",
    "DEPTH_TO_SPACE": "DepthToSpace", "SPACE_TO_DEPTH": "SpaceToDepth", "CONCATENATION": "Concat",
    "SOFTMAX": "Softmax", "LOGISTIC": "Sigmoid", "HARD_SWISH": "HardSwish", "RELU": "Relu", "RELU6": "Clip",
    "RELU_N1_TO_1": "Clip", "RELU_0_TO_1": "Clip", "TANH": "Tanh", "GELU": "Gelu", "LEAKY_RELU": "LeakyRelu",
    "PRELU": "PRelu", "ELU": "Elu", "PAD": "Pad", "PADV2": "Pad", "MIRROR_PAD": "Pad",
    "QUANTIZE": "Quantize", "DEQUANTIZE": "Dequantize", "SLICE": "Slice", "STRIDED_SLICE": "Slice",
    "SPLIT": "Split", "SPLIT_V": "Split", "GATHER": "Gather", "BROADCAST_TO": "Expand", "TILE": "Tile",
    "RESIZE_BILINEAR": "Resize", "RESIZE_NEAREST_NEIGHBOR": "Resize", "SQRT": "Sqrt", "RSQRT": "Sqrt",
    "EXP": "Exp", "LOG": "Log", "ABS": "Abs", "NEG": "Neg", "SQUARE": "Mul", "CAST": "Cast",
}  # fmt: skip
_ACTIVATION = {1: "relu", 2: "clip", 3: "clip", 4: "tanh", 5: "other"}  # ActivationFunctionType -> latkit name
# operators whose first input and output are images (NHWC in the file)
_IMAGE_OPS = frozenset({"Conv", "AveragePool", "MaxPool", "Resize", "DepthToSpace", "SpaceToDepth"})
# operators whose 4-D data tensors all share one layout
_SAME_LAYOUT = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Concat", "Pad",
                          "Quantize", "Dequantize", "Relu", "Clip", "Sigmoid", "HardSwish", "Tanh", "Gelu", "LeakyRelu",
                          "PRelu", "Elu", "Slice", "Split", "Sqrt", "Exp", "Log", "Abs", "Neg", "Cast",
                          "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "Expand",
                          "Tile"})  # fmt: skip
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)
_INT_TYPES = {2: np.int32, 4: np.int64, 9: np.int8, 3: np.uint8, 7: np.int16}  # TensorType -> numpy


def tflite_schema(purpose: str = "reading a TFLite file") -> Any:
    """LiteRT's generated flatbuffer schema module; MissingExtraError naming ``purpose`` without LiteRT."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise MissingExtraError(purpose, "tflite") from None
    return schema


class _File:
    """The parts of one flatbuffer the reader uses, read once."""

    def __init__(self, data: bytes, name: str) -> None:
        self.schema = tflite_schema()
        self.name = name
        try:
            self.model = self.schema.Model.GetRootAs(data, 0)
            if self.model.SubgraphsLength() < 1:
                raise StoreError(f"{name} is not a TFLite model: it has no subgraph")
            self.graph = self.model.Subgraphs(0)
            names = {v: k for k, v in vars(self.schema.BuiltinOperator).items() if not k.startswith("_")}
            self.codes = []
            for i in range(self.model.OperatorCodesLength()):
                oc = self.model.OperatorCodes(i)
                code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
                custom = oc.CustomCode()
                builtin = names.get(code, str(code))
                self.codes.append(custom.decode(errors="replace") if code == 32 and custom else builtin)
            self.tensors = [self.graph.Tensors(i) for i in range(self.graph.TensorsLength())]
        except (struct.error, IndexError, TypeError) as exc:
            raise StoreError(f"{name} is not a readable TFLite model ({exc})") from None
        self.tensor_names = self._unique_names()

    def _unique_names(self) -> list[str]:
        seen: set[str] = set()
        out = []
        for i, t in enumerate(self.tensors):
            n = (t.Name() or b"").decode(errors="replace") or f"t{i}"
            if n in seen:
                n = f"{n}#{i}"
            seen.add(n)
            out.append(n)
        return out

    def shape(self, i: int) -> list[int]:
        t = self.tensors[i]
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def signature(self, i: int) -> list[int]:
        t = self.tensors[i]
        return [int(d) for d in t.ShapeSignatureAsNumpy()] if t.ShapeSignatureLength() else self.shape(i)

    def is_constant(self, i: int) -> bool:
        b = self.model.Buffers(self.tensors[i].Buffer()) if self.tensors[i].Buffer() > 0 else None
        return b is not None and (b.DataLength() > 0 or int(b.Offset()) > 1)

    def int_values(self, i: int) -> list[int] | None:
        """The values of a small stored integer tensor (axes, a permutation), or None."""
        t = self.tensors[i]
        dtype = _INT_TYPES.get(int(t.Type()))
        if dtype is None or t.Buffer() <= 0:
            return None
        raw = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(raw, int) or raw is None or len(raw) == 0 or len(raw) > 4096:
            return None
        return [int(v) for v in np.frombuffer(raw.tobytes(), dtype=dtype)]


def _options(f: _File, op: Any) -> Any:
    """The operator's builtin options as the schema's object (attributes such as ``strideH``), or None."""
    try:
        return f.schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), op.BuiltinOptions())
    except (struct.error, AttributeError, TypeError):
        return None


def _attrs(builtin: str, opts: Any, f: _File, inputs: list[int]) -> dict[str, Any]:
    """ONNX-style attributes of one operator (axes still in the file's own order)."""
    get = (lambda name, default=None: getattr(opts, name, default)) if opts is not None else (lambda n, d=None: d)
    a: dict[str, Any] = {}
    act = _ACTIVATION.get(int(get("fusedActivationFunction", 0) or 0))
    if act:
        a["activation"] = act
    if builtin in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
        a["strides"] = [int(get("strideH", 1) or 1), int(get("strideW", 1) or 1)]
        a["dilations"] = [int(get("dilationHFactor", 1) or 1), int(get("dilationWFactor", 1) or 1)]
        a["padding"] = "valid" if get("padding", 0) == 1 else "same"
    if builtin in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        a["kernel_shape"] = [int(get("filterHeight", 1) or 1), int(get("filterWidth", 1) or 1)]
    if builtin == "FULLY_CONNECTED":
        a["transB"] = 1
    if builtin == "BATCH_MATMUL":
        a["adj_x"], a["adj_y"] = int(bool(get("adjX", False))), int(bool(get("adjY", False)))
    if builtin == "CONCATENATION":
        a["axis"] = int(get("axis", 0) or 0)
    if builtin in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD") and len(inputs) > 1:
        a["axes"] = f.int_values(inputs[1])
        a["keepdims"] = int(bool(get("keepDims", False)))
    if builtin in ("TRANSPOSE",) and len(inputs) > 1:
        a["perm"] = f.int_values(inputs[1])
    if builtin == "MIRROR_PAD":
        a["mode"] = "reflect"  # not folded into a convolution (only zero pads are)
    if builtin in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        a["mode"] = "linear" if builtin == "RESIZE_BILINEAR" else "nearest"
    return a


def _image_tensors(nodes: list[Node], shapes: dict[str, list[int]], constants: set[str]) -> set[str]:
    """The 4-D tensors in image layout: read or written by an image operator, or joined to one (module docstring)."""
    image = set()
    for n in nodes:
        if n.op_type in _IMAGE_OPS:
            image.update(t for t in (n.inputs[0], n.outputs[0]) if len(shapes.get(t, ())) == 4)
    for _ in range(len(nodes) + 1):  # bounded: each pass either adds a tensor or ends the loop
        grew = False
        for n in nodes:
            if n.op_type not in _SAME_LAYOUT:
                continue
            data = [t for t in (*n.inputs, *n.outputs)
                    if t and t not in constants and len(shapes.get(t, ())) == 4]
            if any(t in image for t in data) and not all(t in image for t in data):
                image.update(data)
                grew = True
        if not grew:
            break
    return image


def _to_nchw(node: Node, image: set[str], shapes: dict[str, list[int]]) -> Node:
    """``node`` with its axes attributes in NCHW order where its data input is an image."""
    if not node.inputs or node.inputs[0] not in image:
        return node
    attrs = dict(node.attrs)
    if "axis" in attrs:
        attrs["axis"] = _NHWC_TO_NCHW_AXIS[int(attrs["axis"]) % 4]
    if attrs.get("axes") is not None:
        attrs["axes"] = sorted(_NHWC_TO_NCHW_AXIS[int(a) % 4] for a in attrs["axes"])
    return Node(node.name, node.op_type, node.inputs, node.outputs, attrs)


def _filter_shape(builtin: str, w: list[int]) -> tuple[list[int], int]:
    """A TFLite filter's shape in ONNX order, and its input channels per group (0 for depthwise)."""
    if builtin == "DEPTHWISE_CONV_2D" and len(w) == 4:  # (1, kh, kw, channels x multiplier)
        return [w[3], 1, w[1], w[2]], 0
    if len(w) == 4:  # (out, kh, kw, in / groups)
        return [w[0], w[3], w[1], w[2]], w[3]
    return w, 0


def _read_nodes(f: _File, shapes: dict[str, list[int]]) -> list[Node]:
    """Every operator of the main subgraph as a :class:`Node` (filters reshaped to ONNX order in ``shapes``)."""
    nodes = []
    names = f.tensor_names
    for i in range(f.graph.OperatorsLength()):
        op = f.graph.Operators(i)
        builtin = f.codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(f.codes) else "UNKNOWN"
        ins = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        if builtin == "SPLIT" and len(ins) == 2:
            ins = [ins[1], ins[0]]  # (axis, input) in TFLite; data first as in ONNX
        attrs = _attrs(builtin, _options(f, op), f, ins)
        op_type = OP_TYPES.get(builtin, builtin)
        if op_type == "Conv" and len(ins) > 1 and ins[1] >= 0:
            w_name = names[ins[1]]
            onnx_w, per_group = _filter_shape(builtin, f.shape(ins[1]))
            shapes[w_name] = onnx_w
            x = f.shape(ins[0])
            cin = x[3] if len(x) == 4 else 1
            attrs["group"] = cin if builtin == "DEPTHWISE_CONV_2D" else max(1, cin // max(per_group, 1))
            attrs["kernel_shape"] = onnx_w[2:]
        nodes.append(Node(f"{builtin}_{i}", op_type, tuple(names[t] if t >= 0 else "" for t in ins),
                          tuple(names[t] for t in outs), attrs))  # fmt: skip
    return nodes


def _input_shapes(f: _File, data: bytes, input_shape: Shape | None) -> dict[int, list[int]]:
    """Every tensor's shape by index: as stored, or recomputed by the interpreter for ``input_shape``.

    Raises:
        UsageError: a dynamic input dimension without ``input_shape``, or a shape the model cannot take.
    """
    stored = {i: f.shape(i) for i in range(len(f.tensors))}
    inputs = [int(i) for i in f.graph.InputsAsNumpy()] if f.graph.InputsLength() else []
    inputs = [i for i in inputs if not f.is_constant(i)]
    if not inputs:
        raise UsageError(f"{f.name} has no graph input")
    first = inputs[0]
    if input_shape is not None:
        if len(input_shape) != len(stored[first]):
            raise UsageError(f"{f.name}: input {f.tensor_names[first]!r} has {len(stored[first])} dimensions, "
                             f"--input-shape gives {len(input_shape)}")
        if list(input_shape) != stored[first]:
            return _resized(f, data, first, input_shape)
    for i in inputs:
        sig = f.signature(i)
        if any(d < 1 for d in sig) and not (i == first and input_shape is not None):
            shown = "x".join(str(d) if d > 0 else "?" for d in sig)
            bad = next(k for k, d in enumerate(sig) if d < 1)
            raise UsageError(f"{f.name}: input {f.tensor_names[i]!r} has dynamic dimension {bad} (shape {shown}); "
                             "fix it with --input-shape in the file's layout, e.g. --input-shape 1x224x224x3")
    return stored


def _resized(f: _File, data: bytes, first: int, input_shape: Shape) -> dict[int, list[int]]:
    """Tensor shapes after resizing input ``first`` to ``input_shape`` (the interpreter propagates them)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise MissingExtraError("resizing a TFLite model's input", "tflite") from None
    try:
        # without the default XNNPACK delegate: the tensors it takes over would keep their old shapes
        interp = Interpreter(model_content=data,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.resize_tensor_input(first, list(input_shape), strict=False)
        interp.allocate_tensors()
        details = interp.get_tensor_details()
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"{f.name} cannot take --input-shape {'x'.join(map(str, input_shape))}: "
                         f"{str(exc).splitlines()[0][:200]}") from None
    shapes = {i: f.shape(i) for i in range(len(f.tensors))}
    # the interpreter may add tensors of its own (scratch buffers) after the file's
    shapes.update({int(d["index"]): [int(v) for v in d["shape"]] for d in details if int(d["index"]) in shapes})
    return shapes


def tflite_graph(data: bytes, name: str, input_shape: Shape | None = None) -> OpGraph:
    """The :class:`OpGraph` of a TFLite flatbuffer (ONNX operator names, NCHW images; module docstring).

    Raises:
        StoreError: not a readable TFLite model.
        UsageError: a dynamic input dimension that ``input_shape`` does not fix.
        MissingExtraError: ``ai_edge_litert`` is not installed.
    """
    f = _File(data, name)
    by_index = _input_shapes(f, data, input_shape)
    names = f.tensor_names
    shapes = {names[i]: s for i, s in by_index.items() if s}
    constants = {names[i] for i in range(len(f.tensors)) if f.is_constant(i)}
    nodes = _read_nodes(f, shapes)
    image = _image_tensors(nodes, shapes, constants)
    nodes = [_to_nchw(n, image, shapes) for n in nodes]
    final: dict[str, Shape] = {}
    for t, s in shapes.items():
        if s and all(d > 0 for d in s):
            final[t] = (s[0], s[3], s[1], s[2]) if t in image else tuple(s)
    inputs = [names[int(i)] for i in f.graph.InputsAsNumpy() if not f.is_constant(int(i))]
    return OpGraph(name, tuple(nodes), final, frozenset(static_tensors(nodes, constants)), tuple(inputs), "tflite")


def read_tflite(path: Path, input_shape: Shape | None = None) -> OpGraph:
    """The :class:`OpGraph` of the TFLite file at ``path``.

    Raises:
        StoreError: unreadable or not a TFLite model.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return tflite_graph(data, path.name, input_shape)


__all__ = ["OP_TYPES", "read_tflite", "tflite_graph"]
