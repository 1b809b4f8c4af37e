"""Values computed from shapes alone, folded so ONNX shape inference sees through them.

Exporters write some sizes as arithmetic on ``Shape``: a channel split at
``C / 2`` (``Shape -> Gather -> Div -> Slice``), a "same" padding computed from
the input size (``Shape -> Sub -> Max -> Div -> Pad``). ONNX's data propagation
follows only some of these operators, and every tensor after one it cannot
follow has no shape, so a whole network would be left without kernels.

:func:`fold_shape_values` evaluates those subgraphs in numpy from the shapes
inference already knows, replaces each evaluated node by a ``Constant`` of its
value (in the copy used for inference only), and the caller infers again,
until every shape is known or nothing new folds. Only integer and small float
arithmetic on shape vectors is evaluated; anything else stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

_MAX_ELEMS = 64  # shape vectors, axes, scalars
_Fn = Callable[[list[Any], Mapping[str, Any]], Any]


def _slice(ins: list[Any], a: Mapping[str, Any]) -> Any:
    data, starts, ends = ins[0], ins[1], ins[2]
    axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
    steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return data[tuple(index)]


def _div(ins: list[Any], a: Mapping[str, Any]) -> Any:
    x, y = ins
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        return (np.trunc(np.asarray(x) / np.asarray(y))).astype(np.asarray(x).dtype)  # ONNX integer division
    return np.asarray(x) / np.asarray(y)


def _unsqueeze(ins: list[Any], a: Mapping[str, Any]) -> Any:
    axes = a.get("axes") if a.get("axes") is not None else ins[1]
    out = np.asarray(ins[0])
    for ax in sorted(int(v) % (out.ndim + len(axes)) for v in axes):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(ins: list[Any], a: Mapping[str, Any]) -> Any:
    axes = a.get("axes") if a.get("axes") is not None else (ins[1] if len(ins) > 1 else None)
    return np.squeeze(ins[0], axis=None if axes is None else tuple(int(v) for v in axes))


_ONNX_TO_NUMPY = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}

_OPS: dict[str, _Fn] = {
    "Gather": lambda ins, a: np.take(ins[0], ins[1], axis=int(a.get("axis", 0))),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda ins, a: np.concatenate([np.atleast_1d(v) for v in ins], axis=int(a.get("axis", 0))),
    "Cast": lambda ins, a: np.asarray(ins[0]).astype(_ONNX_TO_NUMPY.get(int(a.get("to", 7)), np.int64)),
    "Add": lambda ins, a: np.add(ins[0], ins[1]),
    "Sub": lambda ins, a: np.subtract(ins[0], ins[1]),
    "Mul": lambda ins, a: np.multiply(ins[0], ins[1]),
    "Div": _div,
    "Mod": lambda ins, a: np.mod(ins[0], ins[1]),
    "Max": lambda ins, a: np.maximum.reduce([np.asarray(v) for v in ins]),
    "Min": lambda ins, a: np.minimum.reduce([np.asarray(v) for v in ins]),
    "Floor": lambda ins, a: np.floor(ins[0]),
    "Ceil": lambda ins, a: np.ceil(ins[0]),
    "Neg": lambda ins, a: np.negative(ins[0]),
    "Sqrt": lambda ins, a: np.sqrt(ins[0]),
    "Identity": lambda ins, a: ins[0],
    "Clip": lambda ins, a: np.clip(ins[0], *(v if v is not None else None for v in (list(ins[1:]) + [None, None])[:2])),
    "Transpose": lambda ins, a: np.transpose(ins[0], a.get("perm")),
    "Reshape": lambda ins, a: np.reshape(ins[0], [int(v) for v in ins[1]]),
    "Slice": _slice,
    "Range": lambda ins, a: np.arange(ins[0], ins[1], ins[2]),
    "Equal": lambda ins, a: np.equal(ins[0], ins[1]),
    "Where": lambda ins, a: np.where(ins[0], ins[1], ins[2]),
    "ConstantOfShape": lambda ins, a: np.full([int(v) for v in ins[0]], _fill(a)),
}  # fmt: skip


def _fill(attrs: Mapping[str, Any]) -> Any:
    from onnx import numpy_helper

    value = attrs.get("value")
    return numpy_helper.to_array(value).reshape(-1)[0] if value is not None else np.float32(0)


def _shape_of(node: Any, shapes: Mapping[str, tuple[int, ...]], attrs: Mapping[str, Any],
              values: Mapping[str, Any]) -> Any:
    shape = shapes.get(node.input[0])
    if shape is None and values.get(node.input[0]) is not None:
        shape = np.shape(values[node.input[0]])
    if shape is None:
        return None
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return np.asarray(shape[start:None if end is None else int(end)], dtype=np.int64)


def _known_values(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {}
    for t in graph.initializer:
        if int(np.prod(t.dims)) <= _MAX_ELEMS:
            values[t.name] = numpy_helper.to_array(t)
    values[""] = None
    return values


def fold_shape_values(light: Any, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Replace the nodes of ``light`` (a weightless model copy) whose values follow from ``shapes`` by constants.

    Returns:
        How many nodes were replaced (0: nothing more to fold).
    """
    from onnx import helper, numpy_helper

    values = _known_values(light.graph)
    folded = 0
    for node in light.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            if "value" in attrs:
                values[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        value = _evaluate(node, attrs, values, shapes)
        if value is None or len(node.output) != 1 or np.size(value) > _MAX_ELEMS:
            continue
        values[node.output[0]] = value
        const = helper.make_node("Constant", [], [node.output[0]], name=node.name,
                                 value=numpy_helper.from_array(np.asarray(value), node.output[0]))  # fmt: skip
        node.CopyFrom(const)
        folded += 1
    return folded


def _evaluate(node: Any, attrs: Mapping[str, Any], values: Mapping[str, Any],
              shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """The value of ``node``'s output, or None when it is not shape arithmetic or an input is unknown."""
    if node.op_type == "Shape":
        return _shape_of(node, shapes, attrs, values)
    fn = _OPS.get(node.op_type)
    if fn is None or any(t not in values for t in node.input):
        return None
    try:
        with np.errstate(all="ignore"):
            return np.asarray(fn([values[t] for t in node.input], attrs))
    except (ValueError, TypeError, IndexError, ZeroDivisionError):
        return None


__all__ = ["fold_shape_values"]
