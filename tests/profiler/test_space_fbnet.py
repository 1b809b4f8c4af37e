"""The HW-NAS-Bench FBNet space (CIFAR-100) against HW-NAS-Bench's latency table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.ops import Act, OpType, parse_key
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.fbnet import FBNET_OPS

CSV = Path(__file__).resolve().parents[2] / "data" / "fbnet_latency_ms.csv"
STAGE_FIRST = (0, 1, 5, 9, 13, 17, 21)  # layer index of each stage's first layer


@pytest.fixture(scope="module")
def space():
    return get_space("fbnet")


@pytest.fixture(scope="module")
def table_archs() -> list[str]:
    with CSV.open() as f:
        return [row["arch"] for row in csv.DictReader(f)]


def test_choices(space):
    choices = space.choices()
    assert len(choices) == 22
    assert all(c.options == FBNET_OPS for c in choices)


def test_first_200_table_archs_parse_round_trip_and_chain(space, table_archs):
    for text in table_archs[:200]:
        arch = space.arch_from_native(text)
        assert space.arch_string(arch) == text
        assert space.arch_from_native(space.arch_to_native(arch)) == arch
        net = space.network(arch)
        specs = net.specs
        assert specs[0].input_shape == (32, 32, 3)
        for prev, spec in zip(specs, specs[1:]):
            assert spec.input_shape == prev.output_shape
        assert specs[-1].key == "Logits-input:4x4x1504-output:100"


def test_every_table_arch_round_trips(space, table_archs):
    assert len(table_archs) == 5000
    archs = {space.arch_from_native(text) for text in table_archs}
    assert len(archs) == len(set(table_archs))
    assert all(space.arch_string(a) in set(table_archs) for a in list(archs)[:50])


def test_macro_architecture(space):
    net = space.network(space.from_options(["k5_e6"] * 22))
    stem = net.specs[0]
    assert (stem.output_shape, stem.kernel, stem.stride, stem.act) == ((32, 32, 16), 3, 1, Act.RELU)
    cells = net.specs[1:23]
    assert [c.output_shape for c in (cells[i] for i in STAGE_FIRST)] == [
        (32, 32, 16), (32, 32, 24), (16, 16, 32), (8, 8, 64), (8, 8, 112), (4, 4, 184),
        (4, 4, 352),
    ]
    for i, c in enumerate(cells):
        assert c.mid_channels == c.input_shape[2] * 6 and c.act is Act.RELU
        assert c.idskip is (c.input_shape == c.output_shape)
        assert c.idskip is (i not in STAGE_FIRST[1:])
    assert net.specs[-2].key == "Conv_1-input:4x4x352-output:4x4x1504"


def test_skip_is_identity_or_a_strided_1x1_conv(space):
    net = space.network(space.from_options(["skip"] * 22))
    cells = net.specs[1:23]
    convs = [i for i, c in enumerate(cells) if c.measurable]
    assert convs == list(STAGE_FIRST[1:])  # every shape-changing position
    for i in convs:
        c = cells[i]
        assert c.op_type is OpType.HEAD_CONV and c.kernel == 1 and c.act is Act.RELU
        assert c.stride == c.input_shape[0] // c.output_shape[0]
    assert [cells[i].stride for i in convs] == [1, 2, 2, 1, 2, 1]
    assert all(c.op_type is OpType.SKIP for i, c in enumerate(cells) if i not in convs)


def test_grouped_blocks_get_groups_in_their_key(space):
    net = space.network(space.from_options(["k3_e1_g2"] * 22))
    for c in net.specs[1:23]:
        assert c.groups == 2 and "-groups:2" in c.key
        assert c.mid_channels == c.input_shape[2]
        assert c.expand_conv  # grouped blocks always keep their 1x1 expansion


def test_operator_count_and_keys_parse_back(space):
    ops = space.operators()
    # stem + 12 distinct layer positions x 8 blocks + 6 skip convs + header + logits
    assert len(ops) == 1 + 12 * 8 + 6 + 2 == 105
    for spec in ops:
        assert parse_key(spec.key, default_act=Act.RELU) == spec


def test_native_forms(space, table_archs):
    text = table_archs[0]
    arch = space.arch_from_native(text)
    idx = [FBNET_OPS.index(op) for op in text.split()]
    assert space.arch_from_native(idx) == arch
    assert space.arch_from_native({"op_idx_list": idx}) == arch
    assert space.arch_from_native(text.split()) == arch


def test_malformed_native_archs(space, table_archs):
    ops = table_archs[0].split()
    with pytest.raises(ArchError, match="'k7_e6' is not one of k3_e1"):
        space.arch_from_native(ops[:-1] + ["k7_e6"])
    with pytest.raises(ArchError, match="needs 22"):
        space.arch_from_native(" ".join(ops[:21]))
    with pytest.raises(ArchError, match="indices must be 0..8"):
        space.arch_from_native([9] * 22)
    with pytest.raises(ArchError, match="cannot read dict"):
        space.arch_from_native({"ops": ops})


def test_only_32x32_input(space):
    arch = space.from_options(["k3_e3"] * 22)
    assert space.network(arch, 32).input_shape == (32, 32, 3)
    with pytest.raises(UsageError, match="32x32"):
        space.network(arch, 64)
