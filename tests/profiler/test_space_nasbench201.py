"""The NAS-Bench-201 cell space against NAS-Bench-201's 15,625 cell strings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from latkit.core.errors import ArchError
from latkit.profiler.spaces import Arch, get_space
from latkit.profiler.spaces.nasbench201 import NB201_OPS

CSV = Path(__file__).resolve().parents[2] / "data" / "nasbench201_accuracy.csv"


@pytest.fixture(scope="module")
def space():
    return get_space("nasbench201")


def test_every_cell_string_parses_and_round_trips(space):
    with CSV.open() as f:
        cells = [row["cellstr"] for row in csv.DictReader(f)]
    assert len(cells) == 15625
    archs = [space.arch_from_native(c) for c in cells]
    assert [space.arch_to_native(a) for a in archs] == cells
    indices = {space.index(a) for a in archs}
    assert indices == set(range(5**6))  # the file holds the whole space, once each


def test_index_round_trip(space):
    for i in (0, 1, 4, 5, 3124, 15624):
        assert space.index(space.from_index(i)) == i
    assert space.from_index(0) == Arch("nasbench201", (0,) * 6)
    with pytest.raises(ArchError, match=r"\[0, 15625\)"):
        space.from_index(15625)


def test_cell_string_order(space):
    text = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    arch = space.arch_from_native(text)
    assert space.options(arch) == [
        "nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "none",
    ]
    assert space.arch_from_native(space.options(arch)) == arch


def test_unknown_op_names_the_token_and_the_valid_ones(space):
    text = "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ArchError) as info:
        space.arch_from_native(text)
    msg = str(info.value)
    assert "'nor_conv_5x5'" in msg and all(op in msg for op in NB201_OPS)


@pytest.mark.parametrize(
    "text, match",
    [("|none~0|+|none~0|none~1|", "2 node group"),
     ("|none~0|+|none~0|none~1|+|none~0|none~1|none~1|", r"must be 'op~2'"),
     ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2"),
     ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "start and end with"),
     ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", r"must be 'op~0'")],
)
def test_malformed_cell_strings(space, text, match):
    with pytest.raises(ArchError, match=match):
        space.arch_from_native(text)


def test_malformed_other_forms(space):
    with pytest.raises(ArchError, match="6 op names"):
        space.arch_from_native(["none"] * 5)
    with pytest.raises(ArchError, match="cannot read int"):
        space.arch_from_native(7)


def test_graph_is_the_op_as_node_cell_dag(space):
    text = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    adj, feats = space.graph(space.arch_from_native(text))
    # nodes: 0 input, 1..6 the edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3, 7 output
    expected = np.zeros((8, 8), dtype=np.float32)
    for src, dst in [(0, 1), (0, 2), (0, 4),  # input feeds the edges leaving node 0
                     (1, 3), (1, 5),  # edge 0->1 feeds the edges leaving node 1
                     (2, 6), (3, 6),  # edges into node 2 feed edge 2->3
                     (4, 7), (5, 7), (6, 7)]:  # edges into node 3 feed the output
        expected[src, dst] = 1.0
    assert np.array_equal(adj, expected)
    # columns: input, none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3, output
    assert feats.argmax(axis=1).tolist() == [0, 4, 1, 5, 2, 3, 1, 6]
    assert (feats.sum(axis=1) == 1).all()
