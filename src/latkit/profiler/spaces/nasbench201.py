"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell has four nodes; each of its six edges ``j -> i`` (``j < i``) carries one of
five operations. Architectures are written as NAS-Bench-201's cell string::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

where the three ``+``-separated groups are the inputs of nodes 1, 2 and 3 and
``op~j`` is the op on the edge from node ``j``. 5**6 = 15,625 architectures.
There is no operator table: the space is used as an encoding for predictors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latkit.core.errors import ArchError
from latkit.profiler.spaces.base import Arch, Choice, SearchSpace, register_space

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# the six edges in cell-string order, as (to_node, from_node)
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_NODES = 4

# Op-as-node DAG (the BRP-NAS / HELP encoding): node 0 is the cell input, nodes
# 1..6 the edges in cell-string order, node 7 the cell output. An edge j -> i
# feeds every edge that leaves node i, or the output when i is the last node.
GRAPH_NODES = 2 + len(EDGES)


def _op_graph() -> np.ndarray:
    adjacency = np.zeros((GRAPH_NODES, GRAPH_NODES), dtype=np.float32)
    out = GRAPH_NODES - 1
    for e, (to, frm) in enumerate(EDGES, start=1):
        if frm == 0:
            adjacency[0, e] = 1.0
        if to == N_NODES - 1:
            adjacency[e, out] = 1.0
        for f, (_, frm2) in enumerate(EDGES, start=1):
            if frm2 == to:
                adjacency[e, f] = 1.0
    return adjacency


_ADJACENCY = _op_graph()


@register_space("nasbench201")
class NasBench201Space(SearchSpace):
    """NAS-Bench-201: 6 edges x 5 ops, written as the cell string."""

    description = "NAS-Bench-201 cell space (6 edges x 5 ops = 15,625 cells), no LUT"
    has_lut = False
    default_resolution = 32
    resolutions = (32,)
    arch_help = (
        "a cell string |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with ops "
        + ", ".join(NB201_OPS)
        + ", or a list of the 6 op names"
    )

    def __init__(self) -> None:
        self._choices = [Choice(f"edge{frm}to{to}", NB201_OPS) for to, frm in EDGES]

    def choices(self) -> list[Choice]:
        return list(self._choices)

    def arch_from_native(self, native: Any) -> Arch:
        if isinstance(native, str):
            ops = self._parse_cell(native.strip())
        elif isinstance(native, (list, tuple)) and all(isinstance(v, str) for v in native):
            ops = list(native)
            if len(ops) != len(EDGES):
                raise ArchError(f"{self.name}: a list architecture needs {len(EDGES)} op names")
            for op in ops:
                _check_op(op)
        else:
            raise ArchError(
                f"{self.name}: cannot read {type(native).__name__}; expected {self.arch_help}"
            )
        return Arch(self.name, tuple(NB201_OPS.index(op) for op in ops))

    def _parse_cell(self, text: str) -> list[str]:
        groups = text.split("+")
        if len(groups) != N_NODES - 1:
            raise ArchError(
                f"{self.name}: {text!r} has {len(groups)} node group(s), expected "
                f"{N_NODES - 1}: {self.arch_help}"
            )
        ops = []
        for node, group in enumerate(groups, start=1):
            if len(group) < 2 or group[0] != "|" or group[-1] != "|":
                raise ArchError(f"{self.name}: node group {group!r} must start and end with '|'")
            tokens = group[1:-1].split("|")
            if len(tokens) != node:
                raise ArchError(f"{self.name}: node {node} needs {node} input(s), got {group!r}")
            for frm, token in enumerate(tokens):
                op, sep, src = token.partition("~")
                if not sep or src != str(frm):
                    raise ArchError(
                        f"{self.name}: {token!r} in node {node} must be 'op~{frm}'"
                    )
                ops.append(_check_op(op))
        return ops

    def arch_to_native(self, arch: Arch) -> str:
        ops = iter(self.options(arch))
        groups = []
        for node in range(1, N_NODES):
            groups.append("|" + "|".join(f"{next(ops)}~{frm}" for frm in range(node)) + "|")
        return "+".join(groups)

    def index(self, arch: Arch) -> int:
        """A dense index in ``[0, 15625)``: the op indices read as a base-5 number."""
        value = 0
        for i in self.check(arch).indices:
            value = value * len(NB201_OPS) + i
        return value

    def from_index(self, index: int) -> Arch:
        """The inverse of :meth:`index`."""
        total = len(NB201_OPS) ** len(EDGES)
        if not 0 <= index < total:
            raise ArchError(f"{self.name}: index must be in [0, {total}), got {index}")
        digits = []
        for _ in EDGES:
            index, d = divmod(index, len(NB201_OPS))
            digits.append(d)
        return Arch(self.name, tuple(reversed(digits)))

    def graph(self, arch: Arch) -> tuple[np.ndarray, np.ndarray]:
        """Op-as-node DAG: input, the 6 edge ops in cell-string order, output.

        Features are a one-hot over ``input, none, skip_connect, nor_conv_1x1,
        nor_conv_3x3, avg_pool_3x3, output`` (7 columns); ``adjacency[i, j] = 1``
        for an edge ``i -> j``.
        """
        features = np.zeros((GRAPH_NODES, len(NB201_OPS) + 2), dtype=np.float32)
        features[0, 0] = 1.0
        for node, i in enumerate(self.check(arch).indices, start=1):
            features[node, 1 + i] = 1.0
        features[-1, -1] = 1.0
        return _ADJACENCY.copy(), features


def _check_op(op: str) -> str:
    if op not in NB201_OPS:
        raise ArchError(
            f"unknown NAS-Bench-201 op {op!r}; valid: {', '.join(NB201_OPS)}"
        )
    return op
