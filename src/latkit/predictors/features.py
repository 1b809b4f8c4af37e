"""Analytic features of one operator, computed from its :class:`OpSpec` alone.

The op-level latency regressors (:mod:`latkit.predictors.oplevel`) and the
adaptive sampler (:mod:`latkit.predictors.sampling`) both see an operator as the
fixed-length vector :func:`feature_matrix` returns. Everything here is
arithmetic on the spec (no torch), so featurising a whole search space takes
milliseconds. Counts follow the modules :mod:`latkit.profiler.build` makes:
parameters include batch-norm scale and shift, MACs count the convolutions and
linear layers, and memory traffic is the float32 bytes every tensor an op
reads or writes (input, output, weights, and the block's intermediate maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from latkit.profiler.ops import Act, OpSpec, OpType

BYTES_PER_VALUE = 4  # float32 models: every tensor and weight is 4 bytes

_ACTS = tuple(Act)
_TYPES = tuple(t for t in OpType if t not in (OpType.SKIP, OpType.ZERO))

#: Column names of :func:`feature_matrix`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "macs",
    "macs_expand",
    "macs_depthwise",
    "macs_project",
    "params",
    "mem_bytes",
    "in_bytes",
    "out_bytes",
    "height",
    "width",
    "out_height",
    "cin",
    "cout",
    "mid",
    "kernel",
    "expand_ratio",
    "stride",
    "se",
    "groups",
    "idskip",
    "expand_conv",
    *(f"act_{a.value}" for a in _ACTS),
    *(f"type_{t.value}" for t in _TYPES),
)


def se_channels(mid: int, divisor: int = 8) -> int:
    """Width of the squeeze-excite bottleneck of an MBConv with ``mid`` channels.

    The MobileNet rounding rule (``make_divisible(mid // 4, 8)`` in
    :mod:`latkit.profiler.build`), repeated here so features need no torch;
    the tests check the resulting parameter counts against the built modules.
    """
    value = mid // 4
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _has_expand(spec: OpSpec) -> bool:
    # The first MobileNetV2 / ProxylessNAS blocks have no 1x1 expansion; the spec says.
    return bool(spec.expand_conv)


@dataclass(frozen=True)
class OpCounts:
    """Analytic size of one operator.

    Attributes:
        macs_expand: Multiply-accumulates of the 1x1 expansion (MBConv) or of
            the whole convolution / linear layer (other ops).
        macs_depthwise: MACs of the depthwise convolution (MBConv only).
        macs_project: MACs of the 1x1 projection and the SE convolutions.
        params: Learnable parameters, batch-norm scale/shift and biases included.
        act_values: Values of every intermediate activation map the op writes
            and reads back (MBConv: expanded and depthwise outputs).
        out_hw: Output height and width.
    """

    macs_expand: int
    macs_depthwise: int
    macs_project: int
    params: int
    act_values: int
    out_hw: tuple[int, int]

    @property
    def macs(self) -> int:
        """All multiply-accumulates of the op."""
        return self.macs_expand + self.macs_depthwise + self.macs_project


def _mbconv_counts(spec: OpSpec) -> OpCounts:
    h, w, cin = spec.input_shape
    cout, mid, g, k = spec.output_shape[2], spec.mid_channels, spec.groups, spec.kernel
    oh, ow = _conv_out(h, k, spec.stride), _conv_out(w, k, spec.stride)
    expand_macs = expand_params = expand_acts = 0
    if _has_expand(spec):
        expand_macs = h * w * cin * mid // g
        expand_params = cin * mid // g + 2 * mid  # conv weights + BN
        expand_acts = h * w * mid
    dw_macs = oh * ow * mid * k * k
    dw_params = mid * k * k + 2 * mid
    se_macs = se_params = 0
    if spec.se:
        r = se_channels(mid)
        se_macs = 2 * mid * r
        se_params = 2 * mid * r + r + mid  # two 1x1 convs with biases
    proj_macs = oh * ow * mid * cout // g
    proj_params = mid * cout // g + 2 * cout
    return OpCounts(
        macs_expand=expand_macs,
        macs_depthwise=dw_macs,
        macs_project=proj_macs + se_macs,
        params=expand_params + dw_params + se_params + proj_params,
        act_values=expand_acts + oh * ow * mid,
        out_hw=(oh, ow),
    )


def op_counts(spec: OpSpec) -> OpCounts:
    """MACs, parameters and intermediate activations of ``spec``, analytically."""
    h, w, cin = spec.input_shape
    cout = spec.output_shape[2]
    t = spec.op_type
    if t is OpType.MBCONV:
        return _mbconv_counts(spec)
    if t is OpType.STEM:
        k = spec.kernel
        oh, ow = _conv_out(h, k, spec.stride), _conv_out(w, k, spec.stride)
        macs = oh * ow * cout * cin * k * k
        return OpCounts(macs, 0, 0, cin * cout * k * k + 2 * cout, 0, (oh, ow))
    if t is OpType.HEAD_CONV:
        return OpCounts(h * w * cin * cout, 0, 0, cin * cout + 2 * cout, 0, (h, w))
    if t is OpType.POOLED_CONV:  # bias-free 1x1 conv, no BN
        return OpCounts(cin * cout, 0, 0, cin * cout, 0, (1, 1))
    if t is OpType.LOGITS:  # linear layer with bias (after pooling when needed)
        return OpCounts(cin * cout, 0, 0, cin * cout + cout, 0, (1, 1))
    # POOL reads every input value once; SKIP/ZERO cost nothing
    return OpCounts(0, 0, 0, 0, 0, (1, 1) if t is OpType.POOL else (h, w))


def op_mem_bytes(spec: OpSpec) -> int:
    """Bytes an op moves: input + output + weights + intermediate maps (float32)."""
    c = op_counts(spec)
    h, w, cin = spec.input_shape
    oh, ow, cout = spec.output_shape
    return BYTES_PER_VALUE * (h * w * cin + oh * ow * cout + c.params + c.act_values)


def op_features(spec: OpSpec) -> dict[str, float]:
    """The named features of one operator (keys are :data:`FEATURE_NAMES`)."""
    c = op_counts(spec)
    h, w, cin = spec.input_shape
    oh, ow, cout = spec.output_shape
    feats: dict[str, float] = {
        "macs": c.macs,
        "macs_expand": c.macs_expand,
        "macs_depthwise": c.macs_depthwise,
        "macs_project": c.macs_project,
        "params": c.params,
        "mem_bytes": op_mem_bytes(spec),
        "in_bytes": BYTES_PER_VALUE * h * w * cin,
        "out_bytes": BYTES_PER_VALUE * oh * ow * cout,
        "height": h,
        "width": w,
        "out_height": oh,
        "cin": cin,
        "cout": cout,
        "mid": spec.mid_channels,
        "kernel": spec.kernel,
        "expand_ratio": float(spec.expand_ratio),
        "stride": spec.stride,
        "se": float(spec.se),
        "groups": spec.groups,
        "idskip": float(spec.idskip),
        "expand_conv": float(spec.op_type is OpType.MBCONV and _has_expand(spec)),
    }
    for a in _ACTS:
        feats[f"act_{a.value}"] = float(spec.act is a)
    for t in _TYPES:
        feats[f"type_{t.value}"] = float(spec.op_type is t)
    return {k: float(v) for k, v in feats.items()}


def feature_matrix(specs: Sequence[OpSpec]) -> np.ndarray:
    """Features of many ops as a float64 ``[len(specs), len(FEATURE_NAMES)]`` array."""
    rows = [list(op_features(s).values()) for s in specs]
    return np.asarray(rows, dtype=np.float64).reshape(len(specs), len(FEATURE_NAMES))


__all__ = [
    "BYTES_PER_VALUE",
    "FEATURE_NAMES",
    "OpCounts",
    "feature_matrix",
    "op_counts",
    "op_features",
    "op_mem_bytes",
    "se_channels",
]
