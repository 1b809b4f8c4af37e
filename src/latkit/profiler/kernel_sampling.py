"""Kernel configurations to measure: drawn from the shapes real networks use.

A kernel predictor is only as good as the configurations it was trained on.
These are drawn per kernel type from the ranges mobile and server CNNs and
small vision transformers use: feature maps from 7x7 to 112x112 (224 for the
first layers), channel counts on the usual multiples of 8 from 8 to 2048,
kernels 1/3/5/7, strides 1/2, expansion-sized depthwise layers, and token
counts and widths of ViT-style blocks. They are drawn, never copied from any
named network, so a benchmark over a model zoo does not test the predictors
on their own training shapes.

:func:`perturb` draws configurations near given ones; the adaptive part of a
build (:mod:`latkit.predictors.kernel_build`) uses it where a predictor errs
most.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from latkit.profiler.kernels import KernelConfig, KernelType

_HW = (7, 14, 28, 56, 112)
_HW_WEIGHTS = (0.25, 0.3, 0.2, 0.15, 0.1)
_CHANNELS = (8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 240, 256, 320, 384, 480, 512, 576,
             640, 672, 768, 960, 1024, 1280, 1536, 2048)  # fmt: skip
_ACTS = ("", "relu", "clip", "hardswish", "sigmoid")
_MAX_MACS = 4e8  # per kernel: past this one configuration takes seconds to measure
_MAX_ELEMS = 2.5e6


def _hw(rng: np.random.Generator, big: bool = False) -> int:
    if big and rng.random() < 0.3:
        return int(rng.choice((112, 224)))
    return int(rng.choice(_HW, p=_HW_WEIGHTS))


def _ch(rng: np.random.Generator, hw: int = 14, lo: int = 8, hi: int = 2048) -> int:
    """A channel count, smaller on big feature maps (as networks are built)."""
    cap = min(hi, max(64, int(2048 * 7 / max(hw, 7) * 1.5)))
    options = [c for c in _CHANNELS if lo <= c <= cap]
    return int(rng.choice(options))


def _conv_like(kind: KernelType, rng: np.random.Generator) -> KernelConfig:
    hw = _hw(rng, big=kind is not KernelType.POINTWISE)
    cin = _ch(rng, hw) if kind is not KernelType.CONV or rng.random() > 0.1 else 3
    stride = int(rng.choice((1, 2), p=(0.75, 0.25)))
    act = str(rng.choice(_ACTS))
    residual = int(rng.random() < 0.2 and stride == 1)
    if kind is KernelType.DWCONV:
        k = int(rng.choice((3, 5, 7), p=(0.6, 0.3, 0.1)))
        return KernelConfig(kind, hw, hw, cin, cin, k, stride, cin, residual, act=act)
    if kind is KernelType.GCONV:
        return _grouped(hw, cin, stride, residual, act, rng)
    if kind is KernelType.POINTWISE:  # strided too: the downsampling shortcuts of ResNets and RegNets
        return KernelConfig(kind, hw, hw, cin, _ch(rng, hw), 1, stride, 1, residual, act=act)
    return KernelConfig(kind, hw, hw, cin, _ch(rng, hw), int(rng.choice((3, 5, 7), p=(0.8, 0.1, 0.1))), stride,
                        1, residual if cin != 3 else 0, act=act)  # fmt: skip


def _grouped(hw: int, cin: int, stride: int, residual: int, act: str, rng: np.random.Generator) -> KernelConfig:
    """A grouped convolution: 4 to 64 channels per group, mostly 3x3, mostly as many outputs as inputs."""
    width = int(rng.choice((4, 8, 16, 24, 32, 48, 64), p=(0.1, 0.2, 0.2, 0.15, 0.15, 0.1, 0.1)))
    groups = max(2, cin // width)
    k = int(rng.choice((1, 3, 5), p=(0.15, 0.75, 0.1)))
    cout = groups * width * (1 if rng.random() < 0.8 else 2)
    return KernelConfig(KernelType.GCONV, hw, hw, groups * width, cout, k, stride, groups,
                        residual if cout == groups * width else 0, act=act)  # fmt: skip


def _rowwise(kind: KernelType, rng: np.random.Generator) -> KernelConfig:
    width = int(rng.choice((64, 96, 128, 192, 256, 384, 512, 768, 1024)))
    rows = int(rng.choice((1, 16, 49, 64, 196, 256, 576, 1024)))
    if kind is KernelType.FC:
        rows = 1 if rng.random() < 0.5 else rows
        return KernelConfig(kind, h=rows, cin=_ch(rng), cout=int(rng.choice((10, 100, 1000, *_CHANNELS[4:]))),
                            act=str(rng.choice(("", "relu"))))  # fmt: skip
    if kind is KernelType.MATMUL:
        heads = int(rng.choice((1, 2, 4, 8, 12)))
        head = int(rng.choice((16, 32, 64)))
        if rng.random() < 0.5:  # q @ k^T: rows x head -> rows x rows
            return KernelConfig(kind, h=rows, w=heads, cin=head, cout=rows)
        return KernelConfig(kind, h=rows, w=heads, cin=rows, cout=head)  # attention @ v
    if kind is KernelType.SOFTMAX and rng.random() < 0.5:
        return KernelConfig(kind, h=rows * int(rng.choice((1, 4, 8))), cin=rows, cout=rows)
    return KernelConfig(kind, h=rows, cin=width, cout=width)


def _image_op(kind: KernelType, rng: np.random.Generator) -> KernelConfig:
    hw = _hw(rng, big=True)
    c = _ch(rng, hw)
    if kind is KernelType.POOL:
        variant = str(rng.choice(("max", "avg", "global"), p=(0.35, 0.15, 0.5)))
        k = int(rng.choice((2, 3)))
        return KernelConfig(kind, hw, hw, c, c, k, 2 if variant != "global" else 1, variant=variant)
    if kind is KernelType.ELEMENTWISE:
        variant = str(rng.choice(("add", "mul", "affine"), p=(0.6, 0.3, 0.1)))
        return KernelConfig(kind, hw, hw, c, c, extra=int(variant == "mul" and rng.random() < 0.5), variant=variant)
    if kind is KernelType.CONCAT:
        n = int(rng.choice((2, 3, 4), p=(0.7, 0.15, 0.15)))
        return KernelConfig(kind, hw, hw, c * n, c * n, extra=n)
    if kind is KernelType.ACTIVATION:
        return KernelConfig(kind, hw, hw, c, c, variant=str(rng.choice(("relu", "clip", "hardswish", "sigmoid",
                                                                         "gelu", "tanh"))))  # fmt: skip
    if kind is KernelType.SE:
        c = _ch(rng, hw, lo=16)
        mid = max(8, c // int(rng.choice((4, 8, 16))))
        return KernelConfig(kind, hw, hw, c, mid, variant=str(rng.choice(("sigmoid", "hardsigmoid"))))
    if kind is KernelType.SHUFFLE:
        return KernelConfig(kind, hw, hw, c, c, variant=str(rng.choice(("transpose", "reshape"), p=(0.7, 0.3))))
    if kind is KernelType.COPY:
        return _copy(rng, hw, c)
    if kind is KernelType.RESIZE:
        hw = min(hw, 56)  # scale 1: a map brought to a size near its own (MobileViT fits 7x7 to its 2x2 patches)
        scale = int(rng.choice((1, 2), p=(0.3, 0.7)))
        return KernelConfig(kind, hw, hw, c, c, stride=scale, variant=str(rng.choice(("nearest", "linear"))))
    raise ValueError(kind)


def _copy(rng: np.random.Generator, hw: int, c: int) -> KernelConfig:
    """A channel slice or split (ShuffleNet / GhostNet / attention style) or a broadcast to a feature map."""
    variant = str(rng.choice(("slice", "split", "expand"), p=(0.4, 0.35, 0.25)))
    if variant == "expand":
        full = rng.random() < 0.5  # (1, C, 1, 1) -> (1, C, H, W), else (1, C, H, 1) -> (1, C, H, W)
        return KernelConfig(KernelType.COPY, hw, hw, c, c, extra=hw * hw if full else hw, variant=variant)
    parts = int(rng.choice((2, 3, 4), p=(0.6, 0.25, 0.15)))
    cin = max(c, parts * 8) // parts * parts
    if variant == "split":
        return KernelConfig(KernelType.COPY, hw, hw, cin, cin // parts, extra=parts, variant=variant)
    return KernelConfig(KernelType.COPY, hw, hw, cin, cin // parts * int(rng.integers(1, parts)), variant=variant)


def _reduce_norm(kind: KernelType, rng: np.random.Generator) -> KernelConfig:
    """A reduction over rows of a width, or an instance / group norm of channels over their positions."""
    if kind is KernelType.NORM:
        rows = int(rng.choice((1, 2, 4, 8, 16, 32, 64, 128, 256, 512)))
        width = int(rng.choice((49, 196, 784, 3136, 12544, 50176), p=(0.15, 0.25, 0.25, 0.2, 0.1, 0.05)))
        return KernelConfig(kind, h=rows, cin=width, cout=width, variant=str(rng.choice(("instance", "group"))))
    rows = int(rng.choice((1, 16, 64, 256, 1024, 4096, 12544)))
    width = int(rng.choice((4, 16, 49, 64, 196, 256, 768, 3136)))
    return KernelConfig(kind, h=rows, cin=width, cout=1, extra=int(rng.random() < 0.7),
                        variant=str(rng.choice(("sum", "mean", "max"), p=(0.45, 0.45, 0.1))))  # fmt: skip


def sample_one(kind: KernelType, rng: np.random.Generator) -> KernelConfig:
    """One configuration of ``kind``, drawn from the shapes networks use."""
    if kind in (KernelType.CONV, KernelType.DWCONV, KernelType.GCONV, KernelType.POINTWISE):
        return _conv_like(kind, rng)
    if kind in (KernelType.FC, KernelType.MATMUL, KernelType.SOFTMAX, KernelType.LAYERNORM):
        return _rowwise(kind, rng)
    if kind in (KernelType.REDUCE, KernelType.NORM):
        return _reduce_norm(kind, rng)
    return _image_op(kind, rng)


def affordable(c: KernelConfig) -> bool:
    """Whether ``c`` is small enough to measure in a fraction of a second."""
    from latkit.profiler.kernels import work

    macs, n_in, n_out, n_w = work(c)
    return macs <= _MAX_MACS and max(n_in, n_out, n_w) <= _MAX_ELEMS and c.groups <= c.cin and \
        c.cin % c.groups == 0 and c.cout % c.groups == 0


def sample_configs(kind: KernelType, n: int, seed: int = 0, exclude: set[str] | None = None) -> list[KernelConfig]:
    """``n`` distinct, affordable configurations of ``kind`` (fewer if the draws run out).

    Args:
        kind: the kernel type.
        n: how many.
        seed: the random generator's seed.
        exclude: configuration keys not to return (already measured ones).
    """
    rng = np.random.default_rng([seed, list(KernelType).index(kind)])
    seen = set(exclude or ())
    out: list[KernelConfig] = []
    for _ in range(max(20 * n, 50)):  # bounded: a narrow type runs out of distinct draws
        if len(out) >= n:
            break
        c = sample_one(kind, rng)
        if c.key not in seen and affordable(c):
            seen.add(c.key)
            out.append(c)
    return out


def perturb(c: KernelConfig, rng: np.random.Generator) -> KernelConfig:
    """A configuration near ``c``: its sizes scaled by up to about 1.5x either way."""

    def near(v: int, lo: int = 1) -> int:
        return max(lo, int(round(v * math.exp(rng.uniform(-0.4, 0.4)) / 8)) * 8) if v >= 16 else \
            max(lo, int(round(v * math.exp(rng.uniform(-0.4, 0.4)))))

    hw = near(c.h)
    cin = near(c.cin)
    if c.type is KernelType.DWCONV and c.groups == c.cin:
        return replace(c, h=hw, w=hw if c.w == c.h else c.w, cin=cin, cout=cin, groups=cin)
    if c.groups > 1:
        return replace(c, h=hw, w=hw if c.w == c.h else c.w)
    cout = cin if c.cout == c.cin else near(c.cout)
    if c.type is KernelType.CONCAT:
        cin = cout = max(c.extra, 2) * max(1, cin // max(c.extra, 2))
    return replace(c, h=hw, w=hw if c.w == c.h else c.w, cin=cin, cout=cout)


__all__ = ["affordable", "perturb", "sample_configs", "sample_one"]
