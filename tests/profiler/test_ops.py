"""Operator keys: every op type is written and read back through the one table of key forms."""

from __future__ import annotations

import pytest

from latkit.core.errors import ParseError
from latkit.profiler.ops import Act, OpSpec, OpType, measurable_by_key, parse_key

IN, OUT = (8, 8, 16), (4, 4, 32)
KEYS = {
    OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 8), kernel=3, stride=2, act=Act.H_SWISH):
        "Conv-input:32x32x3-output:16x16x8",
    OpSpec(OpType.HEAD_CONV, IN, (8, 8, 64), act=Act.H_SWISH): "Conv_1-input:8x8x16-output:8x8x64",
    OpSpec(OpType.POOL, IN, (1, 1, 16)): "AvgPool2D-input:8x8x16-output:1x1x16",
    OpSpec(OpType.POOLED_CONV, (1, 1, 16), (1, 1, 64), act=Act.H_SWISH): "Conv_2-input:1x1x16-output:1x1x64",
    OpSpec(OpType.LOGITS, (1, 1, 64), (1, 1, 10)): "Logits-input:1x1x64-output:10",
    OpSpec(OpType.SKIP, IN, IN): "skip-input:8x8x16-output:8x8x16",
    OpSpec(OpType.ZERO, IN, IN): "zero-input:8x8x16-output:8x8x16",
    OpSpec(OpType.MBCONV, IN, OUT, kernel=5, stride=2, expand_ratio=3, mid_channels=48, act=Act.RELU6):
        "expanded_conv-input:8x8x16-output:4x4x32-expand:3-kernel:5-stride:2-idskip:0",
    OpSpec(OpType.MBCONV, IN, OUT, kernel=3, stride=2, expand_ratio=4, mid_channels=64, act=Act.H_SWISH, se=True):
        "expanded_conv-input:8x8x16-output:4x4x32-expand:64-kernel:3-stride:2-idskip:0-se:1-hs:1",
    OpSpec(OpType.MBCONV, IN, OUT, kernel=3, stride=2, expand_ratio=2, mid_channels=32, act=Act.RELU, groups=2):
        "expanded_conv-input:8x8x16-output:4x4x32-expand:32-kernel:3-stride:2-idskip:0-se:0-hs:0-groups:2",
}  # fmt: skip


def test_every_op_type_has_a_key_form():
    assert {spec.op_type for spec in KEYS} == set(OpType)


@pytest.mark.parametrize("spec", list(KEYS), ids=lambda s: s.op_type.value)
def test_each_key_is_written_and_read_back(spec):
    assert spec.key == KEYS[spec]
    assert parse_key(spec.key, default_act=spec.act) == spec


def test_named_keys_take_the_tables_activation_and_their_stride_from_the_shapes():
    stem = parse_key("Conv-input:224x224x3-output:112x112x32", default_act=Act.RELU6)
    assert (stem.kernel, stem.stride, stem.act) == (3, 2, Act.RELU6)
    strided = parse_key("Conv_1-input:8x8x16-output:4x4x32")  # FBNet's shape-changing skip
    assert (strided.kernel, strided.stride, strided.act) == (1, 2, Act.NONE)
    pool = parse_key("AvgPool2D-input:7x7x960-output:1x1x960", default_act=Act.H_SWISH)
    assert (pool.stride, pool.act) == (1, Act.NONE)


@pytest.mark.parametrize(
    "key, message",
    [
        ("junk", "unrecognised operator key"),
        ("Dense-input:1x1x8-output:10", "unknown operator type 'Dense'"),
        ("expanded_conv-input:8x8x16-output:8x8x16-expand:3-kernel:3", "lacks a valid expand/kernel/stride/idskip"),
        ("expanded_conv-input:8x8x16-output:8x8x16-expand:3.0-kernel:3-stride:1-idskip:0", "does not round-trip"),
    ],
)
def test_bad_keys_are_one_parse_error(key, message):
    with pytest.raises(ParseError, match=message):
        parse_key(key)


def test_measurable_by_key_keeps_the_first_of_each_key_in_order():
    specs = list(KEYS)
    out = measurable_by_key([*reversed(specs), *specs])
    assert list(out) == [s.key for s in reversed(specs) if s.measurable]
    assert OpType.SKIP not in {s.op_type for s in out.values()} and len(out) == len(specs) - 2
