"""Torch modules built from op specs: shapes, parameter counts, semantics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latkit.core.errors import UsageError
from latkit.profiler.build import (
    ChannelShuffle,
    MBConv,
    build_network,
    build_op,
    count_params,
    flops,
    input_tensor,
    make_divisible,
)
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces.base import Layer, Network


def mb(inp, out, mid, k=3, s=1, se=False, act=Act.RELU, groups=1, idskip=False, ratio=None):
    """An MBConv spec with ratio derived from mid unless given."""
    return OpSpec(
        OpType.MBCONV, inp, out, kernel=k, stride=s, mid_channels=mid,
        expand_ratio=ratio if ratio is not None else mid / inp[2],
        se=se, act=act, groups=groups, idskip=idskip,
    )


SPECS = [
    OpSpec(OpType.STEM, (224, 224, 3), (112, 112, 16), kernel=3, stride=2, act=Act.H_SWISH),
    OpSpec(OpType.STEM, (32, 32, 3), (32, 32, 8), kernel=3, stride=1, act=Act.RELU6),
    OpSpec(OpType.STEM, (33, 33, 3), (17, 17, 8), kernel=5, stride=2, act=Act.RELU),
    *[mb((16, 16, 16), (16 // s, 16 // s, 24), 96, k=k, s=s) for k in (3, 5, 7) for s in (1, 2)],
    mb((14, 14, 40), (14, 14, 40), 120, k=5, se=True, act=Act.H_SWISH, idskip=True),
    mb((14, 14, 40), (7, 7, 48), 240, k=7, s=2, se=True, act=Act.RELU),
    mb((7, 7, 24), (4, 4, 32), 72, k=3, s=2, act=Act.RELU6),  # odd size, stride 2
    mb((12, 12, 16), (12, 12, 16), 16, act=Act.RELU6, ratio=1),  # no expansion conv
    mb((12, 12, 16), (12, 12, 16), 16, groups=2, idskip=True, ratio=1),  # FBNet k3_e1_g2
    mb((10, 10, 16), (5, 5, 24), 48, k=5, s=2, groups=2, act=Act.NONE),
    OpSpec(OpType.HEAD_CONV, (7, 7, 160), (7, 7, 960), act=Act.H_SWISH),
    OpSpec(OpType.POOL, (7, 7, 960), (1, 1, 960)),
    OpSpec(OpType.POOLED_CONV, (1, 1, 960), (1, 1, 1280), act=Act.H_SWISH),
    OpSpec(OpType.LOGITS, (1, 1, 1280), (1, 1, 1000)),
    OpSpec(OpType.LOGITS, (7, 7, 1280), (1, 1, 10)),  # pools first
    OpSpec(OpType.SKIP, (14, 14, 40), (14, 14, 40)),
    OpSpec(OpType.ZERO, (14, 14, 40), (14, 14, 40)),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_output_shape_matches_spec(spec):
    module = build_op(spec)
    assert not module.training
    x = input_tensor(spec.input_shape)
    with torch.inference_mode():
        y = module(x)
    h, w, c = spec.output_shape
    want = (1, c) if spec.op_type is OpType.LOGITS else (1, c, h, w)
    assert tuple(y.shape) == want
    assert torch.isfinite(y).all()


def _bn(c):
    return 2 * c  # weight and bias


@pytest.mark.parametrize(
    "spec",
    [
        mb((14, 14, 40), (14, 14, 40), 120, k=5, se=True, act=Act.H_SWISH, idskip=True),
        mb((16, 16, 16), (8, 8, 24), 96, k=7, s=2),
        mb((12, 12, 16), (12, 12, 16), 16, ratio=1, act=Act.RELU6),
        mb((10, 10, 16), (5, 5, 24), 48, k=5, s=2, groups=2),
    ],
    ids=lambda s: s.key,
)
def test_mbconv_param_count_matches_formula(spec):
    cin, mid, cout, k, g = spec.input_shape[2], spec.mid_channels, spec.output_shape[2], spec.kernel, spec.groups
    expand = 0 if (mid == cin and spec.expand_ratio == 1 and g == 1) else cin * mid // g + _bn(mid)
    dw = mid * k * k + _bn(mid)
    se_mid = make_divisible(mid // 4, 8)
    se = (mid * se_mid + se_mid + se_mid * mid + mid) if spec.se else 0
    project = mid * cout // g + _bn(cout)
    assert count_params(build_op(spec)) == expand + dw + se + project


def test_other_param_counts():
    assert count_params(build_op(SPECS[0])) == 3 * 16 * 9 + _bn(16)
    head = OpSpec(OpType.HEAD_CONV, (7, 7, 160), (7, 7, 960), act=Act.H_SWISH)
    assert count_params(build_op(head)) == 160 * 960 + _bn(960)
    mix = OpSpec(OpType.POOLED_CONV, (1, 1, 960), (1, 1, 1280), act=Act.H_SWISH)
    assert count_params(build_op(mix)) == 960 * 1280  # no bias, no BN (OFA feature mix)
    logits = OpSpec(OpType.LOGITS, (1, 1, 1280), (1, 1, 1000))
    assert count_params(build_op(logits)) == 1280 * 1000 + 1000
    assert count_params(build_op(OpSpec(OpType.POOL, (7, 7, 8), (1, 1, 8)))) == 0


def test_no_expansion_block_has_no_expand_conv_and_grouped_block_keeps_it():
    plain = build_op(mb((12, 12, 16), (12, 12, 16), 16, ratio=1, act=Act.RELU6))
    assert isinstance(plain, MBConv) and plain.expand is None and plain.shuffle is None
    grouped = build_op(mb((12, 12, 16), (12, 12, 16), 16, groups=2, ratio=1))
    assert grouped.expand is not None and grouped.expand[0].groups == 2
    assert grouped.project[0].groups == 2 and isinstance(grouped.shuffle, ChannelShuffle)
    expanded = build_op(mb((12, 12, 16), (12, 12, 16), 48))
    assert expanded.expand is not None and expanded.depthwise[0].groups == 48


def test_se_width_is_ofa_make_divisible():
    block = build_op(mb((14, 14, 24), (14, 14, 24), 72, se=True))
    assert block.se.reduce.out_channels == 24  # 72//4 = 18 rounds to 16 (< 90%), so 24
    assert make_divisible(18, 8) == 24
    assert make_divisible(30, 8) == 32
    assert make_divisible(120 // 4, 8) == 32
    assert make_divisible(3, 8) == 8


def test_skip_and_zero_are_identities():
    x = input_tensor((14, 14, 40), seed=3)
    for t in (OpType.SKIP, OpType.ZERO):
        y = build_op(OpSpec(t, (14, 14, 40), (14, 14, 40)))(x)
        assert torch.equal(x, y)


def test_residual_adds_the_input():
    spec = mb((14, 14, 40), (14, 14, 40), 120, k=5, se=True, act=Act.H_SWISH, idskip=True)
    block = build_op(spec)
    x = input_tensor(spec.input_shape)
    with torch.inference_mode():
        with_res = block(x)
        block.residual = False
        branch = block(x)
    torch.testing.assert_close(with_res, x + branch)
    assert (branch.abs() > 1e-3).any()  # the branch is not trivially zero


def test_activations_follow_their_formulas():
    x = torch.linspace(-6, 6, 97).reshape(1, 1, 97, 1)
    spec = OpSpec(OpType.POOLED_CONV, (1, 1, 4), (1, 1, 4), act=Act.H_SWISH)
    act = build_op(spec)[1]
    torch.testing.assert_close(act(x), x * torch.clamp(x + 3, 0, 6) / 6)
    relu6 = build_op(OpSpec(OpType.POOLED_CONV, (1, 1, 4), (1, 1, 4), act=Act.RELU6))[1]
    assert relu6(x).max().item() == 6.0 and relu6(x).min().item() == 0.0
    assert isinstance(build_op(OpSpec(OpType.POOLED_CONV, (1, 1, 4), (1, 1, 4)))[1], nn.Identity)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_weights_are_seeded_and_leave_global_rng_alone():
    spec = mb((14, 14, 40), (14, 14, 40), 120, k=5, se=True, act=Act.H_SWISH, idskip=True)
    x = input_tensor(spec.input_shape)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = build_op(spec), build_op(spec), build_op(spec, seed=1)
    assert torch.equal(torch.rand(3), before)  # building drew nothing from the global RNG
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))
    # BN statistics are not the identity defaults, so exporters' folding is exercised
    bn = a.depthwise[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_inconsistent_specs_are_rejected():
    with pytest.raises(UsageError, match="output shape"):
        build_op(mb((16, 16, 16), (16, 16, 24), 96, s=2))
    with pytest.raises(UsageError, match="output shape"):
        build_op(OpSpec(OpType.SKIP, (14, 14, 40), (7, 7, 40)))
    with pytest.raises(UsageError, match="groups"):
        build_op(mb((10, 10, 15), (10, 10, 24), 45, groups=2))


def _net():
    specs = [
        OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 16), kernel=3, stride=2, act=Act.H_SWISH),
        mb((16, 16, 16), (16, 16, 16), 16, ratio=1, act=Act.RELU6),
        mb((16, 16, 16), (8, 8, 24), 96, k=5, s=2, se=True, act=Act.H_SWISH),
        OpSpec(OpType.ZERO, (8, 8, 24), (8, 8, 24)),
        mb((8, 8, 24), (8, 8, 24), 72, k=3, idskip=True),
        OpSpec(OpType.HEAD_CONV, (8, 8, 24), (8, 8, 96), act=Act.H_SWISH),
        OpSpec(OpType.POOL, (8, 8, 96), (1, 1, 96)),
        OpSpec(OpType.POOLED_CONV, (1, 1, 96), (1, 1, 128), act=Act.H_SWISH),
        OpSpec(OpType.LOGITS, (1, 1, 128), (1, 1, 10)),
    ]
    return Network("tiny", (32, 32, 3), tuple(Layer(f"l{i}", s) for i, s in enumerate(specs)))


def test_build_network_runs_end_to_end_and_is_deterministic():
    net = _net()
    a, b = build_network(net), build_network(net)
    x = input_tensor(net.input_shape)
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    assert tuple(ya.shape) == (1, 10) and not a.training
    assert torch.equal(ya, yb)
    assert len(list(a.children())) == len(net.layers)
    assert count_params(a) == sum(count_params(build_op(s)) for s in net.specs)


def test_build_network_rejects_a_broken_chain():
    net = _net()
    layers = list(net.layers)
    del layers[2]  # the 16x16x16 -> 8x8x24 reduction
    with pytest.raises(UsageError, match="takes"):
        build_network(Network("broken", net.input_shape, tuple(layers)))
    with pytest.raises(UsageError, match="network input"):
        build_network(Network("wrong-input", (64, 64, 3), net.layers))


def test_flops_scale_with_size():
    tiny = mb((7, 7, 16), (7, 7, 16), 16, ratio=1)
    big = mb((28, 28, 24), (28, 28, 24), 144, k=5)
    assert flops(tiny) == 7 * 7 * 16 * 9 + 7 * 7 * 16 * 16
    assert flops(big) == 28 * 28 * (24 * 144 + 144 * 25 + 144 * 24)
    assert flops(OpSpec(OpType.SKIP, (7, 7, 8), (7, 7, 8))) == 0


def test_fbnet_e1_block_keeps_its_expansion_conv():
    from latkit.profiler.ops import Act

    spec = OpSpec(OpType.MBCONV, (16, 16, 24), (16, 16, 24), kernel=3, expand_ratio=1,
                  mid_channels=24, act=Act.RELU, idskip=True, expand_conv=True)
    plain = OpSpec(OpType.MBCONV, (16, 16, 24), (16, 16, 24), kernel=3, expand_ratio=1,
                   mid_channels=24, act=Act.RELU, idskip=True)
    assert spec.key.endswith("-expconv:1") and "expconv" not in plain.key
    extra = count_params(build_op(spec)) - count_params(build_op(plain))
    assert extra == 24 * 24 + 2 * 24  # the 1x1 conv's weights and its BN's affine pair


def test_strided_head_conv_halves_the_map():
    from latkit.profiler.ops import Act

    spec = OpSpec(OpType.HEAD_CONV, (16, 16, 24), (8, 8, 32), stride=2, act=Act.RELU)
    out = build_op(spec)(torch.zeros(1, 24, 16, 16))
    assert tuple(out.shape) == (1, 32, 8, 8)
