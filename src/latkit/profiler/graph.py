"""Any model as one operator graph with static shapes: ONNX, TFLite, or a torch module.

``latkit predict`` works on a user's own network, not a search space member, so
it needs the network's operators with the shape of every tensor. This module
reads the forms a user has into one :class:`OpGraph`:

* an ONNX file: its nodes as they are, every tensor shape from ONNX's shape
  inference (with data propagation, so ``Reshape`` targets computed from
  ``Shape`` are resolved, and shape arithmetic it cannot follow folded by
  :mod:`latkit.profiler.static_values`);
* a TFLite file: its operators mapped onto the ONNX names, NHWC images given
  as NCHW (:mod:`latkit.profiler.tflite_graph`);
* a torch ``nn.Module`` with an input shape: exported to ONNX first (the
  TorchScript exporter, as latkit's own exports use).

A graph input with a dynamic dimension is refused in one line that names the
dimension, unless an input shape is given, which fixes it. Shapes are needed
for every kernel's configuration; a prediction of one network at an unknown
size would be a guess.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latkit.core.checks import MAX_DIMENSION, MAX_ELEMENTS
from latkit.core.errors import StoreError, UsageError
from latkit.core.files import check_input_file
from latkit.profiler.op_graph import Node, OpGraph, Shape, static_tensors

log = logging.getLogger(__name__)


def parse_input_shape(text: str | None) -> Shape | None:
    """``1x3x224x224`` (or ``1,3,224,224``) as a shape; None stays None.

    Raises:
        UsageError: not positive integers separated by ``x`` or ``,``.
    """
    if text is None:
        return None
    parts = text.replace(",", "x").lower().split("x")
    if not all(p.strip().isascii() and p.strip().isdigit() for p in parts):  # int() also takes "٨"
        raise UsageError(f"--input-shape {text!r}: give positive integers like 1x3x224x224")
    dims = tuple(int(p) for p in parts)
    if min(dims) < 1:
        raise UsageError(f"--input-shape {text!r}: give positive integers like 1x3x224x224")
    _check_size("--input-shape", dims)
    return dims


def _check_size(what: str, dims: Sequence[int]) -> None:
    """Refuse a shape no network latkit can time: a dimension or a tensor past the runtimes' int32 sizes.

    Raises:
        UsageError: one line naming the shape.
    """
    shown = "x".join(str(d) for d in dims)
    if max(dims, default=0) > MAX_DIMENSION or math.prod(dims) > MAX_ELEMENTS:
        raise UsageError(f"{what} {shown} is too large: at most {MAX_DIMENSION} per dimension and "
                         f"{MAX_ELEMENTS} elements in all; give the shape the model runs at")


def read_graph(model: Any, input_shape: Shape | None = None) -> OpGraph:
    """The operator graph of an ONNX file, a TFLite file or a torch module.

    Args:
        model: a path to a ``.onnx`` / ``.tflite`` file, or an ``nn.Module``.
        input_shape: fixes the (first) input's shape; required for a module,
            optional for a file (where it replaces dynamic dimensions).

    Raises:
        StoreError: the file is missing or not a model.
        UsageError: a dynamic dimension and no ``input_shape``; a module without one.
    """
    if isinstance(model, (str, Path)):
        path = check_input_file(model, "model file")  # a FIFO or /dev/zero would never end
        try:
            with path.open("rb") as f:
                head = f.read(8)
        except OSError as exc:
            raise StoreError(f"cannot read model file {path}: {exc.strerror or exc}") from None
        if head[4:8] == b"TFL3":
            from latkit.profiler.tflite_graph import read_tflite

            return read_tflite(path, input_shape)
        import onnx

        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
            raise StoreError(f"{path} is not an ONNX or TFLite model: {str(exc).splitlines()[0][:200]}") from None
        return onnx_graph(proto, path.name, input_shape)
    return torch_graph(model, input_shape)


def torch_graph(module: Any, input_shape: Shape | None) -> OpGraph:
    """The graph of a torch module, exported to ONNX at ``input_shape``.

    Raises:
        UsageError: no input shape given, or the module cannot be exported.
    """
    import torch

    if input_shape is None:
        raise UsageError("a torch module needs an input shape (e.g. input_shape=(1, 3, 224, 224))")
    import onnx

    module = module.eval()
    with tempfile.TemporaryDirectory(prefix="latkit-graph-") as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(module, (torch.zeros(*input_shape),), str(out), dynamo=False,
                                  opset_version=17, input_names=["input"], do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - the exporter raises anything
            raise UsageError(f"cannot export {type(module).__name__} to ONNX: {str(exc).splitlines()[0][:200]}") from exc
        proto = onnx.load(str(out))
    graph = onnx_graph(proto, type(module).__name__, None)
    return OpGraph(graph.name, graph.nodes, graph.shapes, graph.constants, graph.inputs, "torch")


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]  # fmt: skip


def _fix_inputs(proto: Any, name: str, input_shape: Shape | None) -> list[str]:
    """Set the first activation input to ``input_shape``; refuse any dynamic dimension left."""
    weights = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if not inputs:
        raise UsageError(f"{name} has no graph input")
    if input_shape is not None:
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != len(input_shape):
            raise UsageError(f"{name}: input {inputs[0].name!r} has {len(dims)} dimensions, "
                             f"--input-shape gives {len(input_shape)}")
        for d, v in zip(dims, input_shape):
            d.Clear()
            d.dim_value = int(v)
    for inp in inputs:
        dims = _dims(inp)
        bad = [d for d in dims if not (isinstance(d, int) and d > 0)]
        if bad:
            shown = "x".join(str(d) for d in dims)
            raise UsageError(f"{name}: input {inp.name!r} has dynamic dimension {bad[0]!r} (shape {shown}); "
                             "fix it with --input-shape, e.g. --input-shape 1x3x224x224")
        _check_size(f"{name}: input {inp.name!r} of shape", dims)
    return [i.name for i in inputs]


def onnx_graph(proto: Any, name: str, input_shape: Shape | None = None) -> OpGraph:
    """The :class:`OpGraph` of an ONNX model proto (shapes by ONNX shape inference).

    Raises:
        UsageError: a dynamic input dimension that ``input_shape`` does not fix.
        StoreError: shape inference rejects the model.
    """
    import onnx
    from onnx import numpy_helper

    inputs = _fix_inputs(proto, name, input_shape)
    shapes = _inferred_shapes(_without_weights(proto), name)
    constants = set()
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
        constants.add(t.name)
    nodes = []
    for i, n in enumerate(proto.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.type != onnx.AttributeProto.GRAPH}
        if n.op_type == "Constant" and "value" in attrs:
            shapes[n.output[0]] = tuple(numpy_helper.to_array(attrs["value"]).shape)
            attrs = {}
        nodes.append(Node(n.name or f"{n.op_type}_{i}", n.op_type, tuple(n.input), tuple(n.output), attrs))
    return OpGraph(name, tuple(nodes), shapes, frozenset(static_tensors(nodes, constants)), tuple(inputs))


_MAX_FOLDS = 32  # rounds of folding shape arithmetic and inferring again (one per padded stage, say)


def _inferred_shapes(light: Any, name: str) -> dict[str, Shape]:
    """Every static tensor shape ONNX shape inference finds in ``light``, folding shape arithmetic it cannot follow.

    Raises:
        StoreError: shape inference rejects the model.
    """
    from latkit.profiler.static_values import fold_shape_values

    shapes: dict[str, Shape] = {}
    for _ in range(_MAX_FOLDS + 1):
        shapes = _infer_once(light, name)
        missing = any(t not in shapes for n in light.graph.node if n.op_type != "Constant" for t in n.output if t)
        if not missing or fold_shape_values(light, shapes) == 0:
            break
    return shapes


def _infer_once(light: Any, name: str) -> dict[str, Shape]:
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(light, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises its own and ValueError/RuntimeError
        raise StoreError(f"{name}: ONNX shape inference failed: {str(exc).splitlines()[0][:200]}") from None
    shapes: dict[str, Shape] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = _dims(vi)
        if vi.type.tensor_type.HasField("shape") and all(isinstance(d, int) and d > 0 for d in dims):
            shapes[vi.name] = tuple(int(d) for d in dims)
    return shapes


_SMALL_WEIGHT = 64  # elements: shape vectors, axes, scalars (what data propagation needs the values of)


def _without_weights(proto: Any) -> Any:
    """A copy of ``proto`` whose large weights are graph inputs of the same type and shape.

    Shape inference serialises the whole model, weights included, and parses its
    result back; a network's weights are nearly all of its bytes and no shape
    depends on their values. Small integer tensors (a ``Reshape`` target) keep
    their values, which data propagation reads.
    """
    from onnx import helper

    light = type(proto)()
    light.ir_version, light.producer_name = proto.ir_version, proto.producer_name
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    g = light.graph
    g.name = proto.graph.name
    g.node.extend(proto.graph.node)
    g.input.extend(proto.graph.input)
    g.output.extend(proto.graph.output)
    g.value_info.extend(proto.graph.value_info)
    declared = {i.name for i in proto.graph.input}
    for t in proto.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        if n <= _SMALL_WEIGHT:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


__all__ = ["onnx_graph", "parse_input_shape", "read_graph", "torch_graph"]
