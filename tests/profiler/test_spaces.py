"""Contract tests every registered search space goes through."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latkit.core.errors import ArchError, UnknownNameError, UsageError
from latkit.profiler.ops import OpType, parse_key
from latkit.profiler.spaces import Arch, get_space, list_spaces
from latkit.profiler.spaces._util import make_divisible

SPACES = list_spaces()
LUT_SPACES = [n for n in SPACES if get_space(n).has_lut]


def test_registry_holds_the_expected_spaces():
    assert set(SPACES) >= {
        "proxyless_mobile", "proxyless_mobile_w05", "ofa_mbv3", "ofa_mbv3_w10", "fbnet",
        "nasbench201",
    }
    assert list_spaces("ofa_*") == ["ofa_mbv3", "ofa_mbv3_w10"]
    with pytest.raises(UnknownNameError, match="proxyless_mobile"):
        get_space("proxyless")


@pytest.mark.parametrize("name", SPACES)
def test_choices_are_well_formed(name):
    space = get_space(name)
    choices = space.choices()
    assert choices, name
    assert len({c.name for c in choices}) == len(choices)
    for ch in choices:
        assert len(set(ch.options)) == len(ch.options) >= 2
    assert space.arch_help and "\n" not in space.arch_help
    assert space.default_resolution in space.resolutions


@pytest.mark.parametrize("name", SPACES)
def test_native_round_trip_through_json(name):
    space = get_space(name)
    rng = np.random.default_rng(7)
    for _ in range(20):
        arch = space.sample(rng)
        native = json.loads(json.dumps(space.arch_to_native(arch)))
        assert space.arch_from_native(native) == arch
        text = native if isinstance(native, str) else json.dumps(native)
        assert space.parse_arch(text) == arch


@pytest.mark.parametrize("name", SPACES)
def test_check_rejects_foreign_and_malformed_archs(name):
    space = get_space(name)
    n = len(space.choices())
    with pytest.raises(ArchError, match="of space"):
        space.check(Arch("other", (0,) * n))
    with pytest.raises(ArchError, match=f"have {n} choices"):
        space.check(Arch(name, (0,) * (n + 1)))
    bad = [0] * n
    bad[-1] = len(space.choices()[-1].options)
    with pytest.raises(ArchError, match="no option"):
        space.check(Arch(name, tuple(bad)))


@pytest.mark.parametrize("name", SPACES)
def test_encode_is_one_hot_per_choice(name):
    space = get_space(name)
    arch = space.sample(np.random.default_rng(3))
    v = space.encode(arch)
    assert v.dtype == np.float32
    assert v.shape == (sum(len(c.options) for c in space.choices()),)
    assert v.sum() == len(space.choices())


@pytest.mark.parametrize("name", SPACES)
def test_graph_is_a_dag_from_input_to_output(name):
    space = get_space(name)
    rng = np.random.default_rng(5)
    a1, a2 = space.sample(rng), space.sample(rng)
    adj, feats = space.graph(a1)
    n = adj.shape[0]
    assert adj.dtype == feats.dtype == np.float32
    assert adj.shape == (n, n) and feats.shape[0] == n
    assert set(np.unique(adj)) <= {0.0, 1.0}
    assert not np.tril(adj).any()  # nodes are in topological order: a DAG
    assert adj[:-1].sum(axis=1).min() >= 1  # everything but the output feeds on
    assert adj[:, 1:].sum(axis=0).min() >= 1  # everything but the input is fed
    assert (feats.sum(axis=1) > 0).all()
    adj2, feats2 = space.graph(a2)
    assert adj2.shape == adj.shape and feats2.shape == feats.shape
    if a1 != a2:
        assert not np.array_equal(feats, feats2)


def test_default_graph_layout():
    space = get_space("proxyless_mobile")
    arch = space.from_options(["7x7_MBConv6"] + ["zero"] * 3 + ["3x3_MBConv3"] * 17)
    adj, feats = space.graph(arch)
    assert adj.shape == (23, 23)
    assert np.array_equal(adj, np.eye(23, k=1, dtype=np.float32))
    assert feats.shape == (23, 7 + 3)
    assert feats[0].tolist() == [0] * 7 + [1, 0, 0]
    assert feats[1].tolist() == [0, 0, 0, 0, 0, 1, 0] + [0, 1, 0]  # 7x7_MBConv6 is option 5
    assert feats[2].tolist() == [0, 0, 0, 0, 0, 0, 1] + [0, 1, 0]  # zero is option 6
    assert feats[-1].tolist() == [0] * 7 + [0, 0, 1]


@pytest.mark.parametrize("name", LUT_SPACES)
def test_networks_chain_shapes_from_stem_to_logits(name):
    space = get_space(name)
    rng = np.random.default_rng(11)
    for _ in range(10):
        net = space.network(space.sample(rng))
        specs = net.specs
        assert specs[0].op_type is OpType.STEM
        assert specs[-1].op_type is OpType.LOGITS
        assert specs[0].input_shape == net.input_shape
        for prev, layer in zip(specs, net.layers[1:]):
            assert layer.spec.input_shape == prev.output_shape, (name, layer.name)
        for spec in specs:
            if not spec.measurable:
                assert spec.input_shape == spec.output_shape
        assert len({layer.name for layer in net.layers}) == len(net.layers)


@pytest.mark.parametrize("name", LUT_SPACES)
def test_operators_cover_every_network(name):
    space = get_space(name)
    ops = space.operators()
    keys = [o.key for o in ops]
    assert len(keys) == len(set(keys))
    assert all(o.measurable for o in ops)
    assert keys == [o.key for o in space.operators()]  # stable order
    rng = np.random.default_rng(13)
    for _ in range(20):
        arch = space.sample(rng)
        net = space.network(arch, space.default_resolution)
        assert {s.key for s in net.measurable_specs()} <= set(keys)


@pytest.mark.parametrize("name", LUT_SPACES)
def test_operator_keys_parse_back_to_the_same_spec(name):
    space = get_space(name)
    for spec in space.operators():
        # public keys leave out the stem/head activation: pass it as the default
        assert parse_key(spec.key, default_act=spec.act) == spec


@pytest.mark.parametrize("name", [n for n in SPACES if n not in LUT_SPACES])
def test_spaces_without_lut_refuse_networks(name):
    space = get_space(name)
    arch = space.sample(np.random.default_rng(0))
    with pytest.raises(UsageError, match="no LUT"):
        space.network(arch)
    with pytest.raises(UsageError, match="no LUT"):
        space.operators()


@pytest.mark.parametrize(
    "value, expected",
    [(19.2, 24), (28.8, 32), (48.0, 48), (134.4, 136), (1152.0, 1152), (8.0, 8), (3.0, 8),
     (44.8, 48), (268.8, 272)],
)
def test_make_divisible_follows_the_mobilenet_rule(value, expected):
    assert make_divisible(value) == expected
