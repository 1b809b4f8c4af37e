"""The operator graph every model reader produces: nodes with ONNX operator names, static shapes.

:mod:`latkit.profiler.graph` (ONNX files, torch modules) and
:mod:`latkit.profiler.tflite_graph` (TFLite files) both read a model into an
:class:`OpGraph`; the kernel grouping reads nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    """One operator: its ONNX type, tensor names in and out, and attributes.

    ``inputs`` keeps the ONNX order (data first, then weights); an optional
    input left empty is ``""``.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OpGraph:
    """A network's operators in topological order, with every tensor's static shape.

    Attributes:
        name: where the graph came from (file name or module class).
        nodes: operators in execution order.
        shapes: tensor name -> shape (NCHW for images); a tensor missing here
            has a shape inference could not tell.
        constants: names of weight tensors and tensors computed from weights
            or from shapes only (work a runtime folds at load time).
        inputs: the graph's activation inputs.
        source_format: ``onnx``, ``tflite`` or ``torch``.
    """

    name: str
    nodes: tuple[Node, ...]
    shapes: Mapping[str, Shape]
    constants: frozenset[str]
    inputs: tuple[str, ...]
    source_format: str = "onnx"

    def consumers(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the nodes that read it."""
        out: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                if t:
                    out.setdefault(t, []).append(i)
        return out

    def producers(self) -> dict[str, int]:
        """Tensor name -> index of the node that writes it."""
        return {t: i for i, n in enumerate(self.nodes) for t in n.outputs}

    def shape(self, tensor: str) -> Shape | None:
        """The static shape of ``tensor``, or None when it is not known."""
        return self.shapes.get(tensor)


# ops whose output depends only on shapes, never on activation values
_SHAPE_OPS = frozenset({"Shape", "Size", "Constant", "ConstantOfShape"})


def static_tensors(nodes: list[Node], constants: set[str]) -> set[str]:
    """Weights, and every tensor computed from weights and shapes alone (a runtime folds them)."""
    static = set(constants)
    for n in nodes:
        if n.op_type in _SHAPE_OPS or all(t in static for t in n.inputs if t):
            static.update(n.outputs)
    return static


__all__ = ["Node", "OpGraph", "Shape", "static_tensors"]
