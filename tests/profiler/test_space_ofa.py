"""The OFA MobileNetV3 spaces against OFA's public Note10 latency tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.ops import Act, OpType
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.ofa_mbv3 import OfaMbv3Space

LUTS = (Path(__file__).resolve().parents[2] / "data" / "luts")
TABLE_RESOLUTIONS = (160, 176, 192, 208, 224)


@pytest.fixture(scope="module")
def space():
    return get_space("ofa_mbv3")


@pytest.fixture(scope="module")
def tables() -> dict[int, set[str]]:
    return {
        r: set(yaml.safe_load((LUTS / f"ofa_note10_{r}_lookup_table.yaml").read_text()))
        for r in TABLE_RESOLUTIONS
    }


def _arch(space, ks=3, e=6, d=4, r=224):
    return space.arch_from_native({"ks": [ks] * 20, "e": [e] * 20, "d": [d] * 5, "r": r})


def test_choices(space):
    names = [c.name for c in space.choices()]
    assert len(names) == 20 + 20 + 5 + 1
    assert names[0] == "ks0" and names[20] == "e0" and names[40] == "d0" and names[-1] == "r"
    assert space.choices()[-1].options == tuple(range(128, 225, 4))


@pytest.mark.parametrize("resolution", TABLE_RESOLUTIONS)
def test_operators_equal_the_public_table(space, tables, resolution):
    keys = [o.key for o in space.operators(resolution)]
    # stem + first block + 5 stages x 2 positions x 9 (kernel, expand) + 4 head ops
    assert len(keys) == 1 + 1 + 5 * 2 * 9 + 4 == 96
    assert set(keys) == tables[resolution]


@pytest.mark.parametrize("resolution", TABLE_RESOLUTIONS)
def test_random_archs_are_in_the_public_table(space, tables, resolution):
    rng = np.random.default_rng(resolution)
    for _ in range(20):
        net = space.network(space.sample(rng), resolution)
        assert net.input_shape == (resolution, resolution, 3)
        assert {s.key for s in net.measurable_specs()} <= tables[resolution]


def test_network_structure_at_width_12(space):
    net = space.network(_arch(space, ks=7, e=4))
    assert len(net.layers) == 26
    stem, first = net.specs[:2]
    assert stem.key == "Conv-input:224x224x3-output:112x112x24" and stem.act is Act.H_SWISH
    assert first.key == (
        "expanded_conv-input:112x112x24-output:112x112x24-expand:24-kernel:3-stride:1"
        "-idskip:1-se:0-hs:0"
    )
    blocks = net.specs[2:22]
    assert [b.output_shape[2] for b in blocks[::4]] == [32, 48, 96, 136, 192]
    assert [b.output_shape[0] for b in blocks[::4]] == [56, 28, 14, 14, 7]
    assert [b.se for b in blocks[::4]] == [False, True, False, True, True]
    assert [b.act for b in blocks[::4]] == [Act.RELU, Act.RELU] + [Act.H_SWISH] * 3
    assert [b.idskip for b in blocks[:4]] == [False, True, True, True]
    assert blocks[4].mid_channels == 128  # 32 * 4
    assert [s.key.split("-")[0] for s in net.specs[-4:]] == [
        "Conv_1", "AvgPool2D", "Conv_2", "Logits",
    ]
    assert net.specs[-1].key == "Logits-input:1x1x1536-output:1000"


def test_width_10_shapes():
    space = get_space("ofa_mbv3_w10")
    assert space.stage_widths == (24, 40, 80, 112, 160)
    assert (space.stem_width, space.final_expand_width, space.feature_mix_width) == (16, 960, 1280)
    net = space.network(_arch(space, ks=5, e=3))
    assert net.specs[1].key.startswith("expanded_conv-input:112x112x16-output:112x112x16-expand:16")
    blocks = net.specs[2:22]
    assert [b.input_shape for b in blocks[::4]] == [
        (112, 112, 16), (56, 56, 24), (28, 28, 40), (14, 14, 80), (14, 14, 112),
    ]
    for b in blocks:  # make_divisible(round(in * 3), 8) stays in * 3 for these widths
        assert b.mid_channels == b.input_shape[2] * 3
    assert net.specs[-4].key == "Conv_1-input:7x7x160-output:7x7x960"
    assert net.specs[-2].key == "Conv_2-input:1x1x960-output:1x1x1280"
    assert len(space.operators(224)) == 96


def test_depth_drops_blocks_as_zero_layers(space):
    shallow = space.network(_arch(space, d=2))
    zeros = [layer for layer in shallow.layers if layer.spec.op_type is OpType.ZERO]
    assert len(shallow.layers) == 26 and len(zeros) == 10
    assert [z.name for z in zeros[:2]] == ["blocks.3", "blocks.4"]
    assert len(shallow.measurable_specs()) == 2 + 10 + 4
    # the kernels of dropped blocks do not change the network
    native = space.arch_to_native(_arch(space, d=2))
    native["ks"][3] = 7
    assert space.network(space.arch_from_native(native)).specs == shallow.specs


def test_resolution_comes_from_the_arch_unless_overridden(space):
    arch = _arch(space, r=160)
    assert space.resolution_of(arch) == 160
    assert space.network(arch).input_shape == (160, 160, 3)
    assert space.network(arch, 192).input_shape == (192, 192, 3)
    assert space.network(arch, 208).meta["arch"]["r"] == 208
    assert space.network(_arch(space, r=132)).specs[-4].input_shape[:2] == (5, 5)  # 66 33 17 9 5
    for bad in (130, 256, 96):
        with pytest.raises(UsageError, match="not offered"):
            space.network(arch, bad)


def test_native_forms(space):
    arch = _arch(space, r=192)
    native = space.arch_to_native(arch)
    assert native["r"] == 192 and len(native["ks"]) == 20 and len(native["d"]) == 5
    assert space.arch_from_native({**native, "r": [192]}) == arch  # OFA's search writes a list
    assert space.arch_from_native({**native, "wid": None}) == arch
    no_r = {k: v for k, v in native.items() if k != "r"}
    assert space.resolution_of(space.arch_from_native(no_r)) == 224


@pytest.mark.parametrize(
    "patch, match",
    [({"ks": [3] * 19}, "'ks' must be a list of 20"),
     ({"d": [2, 3, 4, 4, 5]}, "d4: 5 is not one of 2, 3, 4"),
     ({"e": [3] * 19 + [5]}, "e19: 5 is not one of"),
     ({"r": 230}, "r: 230 is not one of"),
     ({"r": "224"}, "'r' must be an integer"),
     ({"wid": [1] * 20}, "unexpected key"),
     ({"depth": [2] * 5}, "unexpected key")],
)
def test_malformed_native_archs(space, patch, match):
    native = {**space.arch_to_native(_arch(space)), **patch}
    with pytest.raises(ArchError, match=match):
        space.arch_from_native(native)


def test_malformed_native_type(space):
    with pytest.raises(ArchError, match="cannot read list"):
        space.arch_from_native([3] * 45)


def test_restricted_resolutions():
    space = OfaMbv3Space(resolutions=TABLE_RESOLUTIONS)
    assert space.choices()[-1].options == TABLE_RESOLUTIONS
    rng = np.random.default_rng(0)
    assert {space.resolution_of(space.sample(rng)) for _ in range(50)} <= set(TABLE_RESOLUTIONS)
    with pytest.raises(UsageError):
        OfaMbv3Space(resolutions=(16,))
