"""Kernels as a runtime runs them: an operator graph grouped by fusion rules.

A runtime does not run a network operator by operator: ONNX Runtime folds a
batch norm into the convolution before it and runs the activation after it
inside the same kernel; LiteRT's converter does the same. A latency model
that sums one figure per ONNX node counts those fused operators twice, so
``latkit predict`` first groups the graph into the kernels the runtime runs
(nn-Meter's kernel detection) and predicts one latency per kernel.

Grouping, in order:

1. **Folded work**: nodes computing only from weights and shapes (``Shape``,
   ``Constant``, a ``Reshape`` target) are folded at load time; ``Identity``
   and ``Dropout`` are removed. They cost nothing and are listed as such.
2. **Patterns**: a squeeze-excite block (global pooling, one or two small
   layers, a gate, and the multiply that scales the block's input) is one
   :attr:`KernelType.SE` kernel; a run of layout operators (``Reshape``,
   ``Transpose``, ``Flatten``...: a channel shuffle) is one
   :attr:`KernelType.SHUFFLE` kernel.
3. **Fusion rules** (:class:`FusionRules`): a kernel rooted at operator ``A``
   absorbs the single consumer ``B`` of its output while the rule ``A -> B``
   holds (``Conv -> BatchNormalization``, ``Conv -> Relu``...). The rules are a
   device's own when fusion detection ran on it (:mod:`latkit.profiler.fusion`,
   stored in the LUT), otherwise the documented defaults for its runtime.
4. Every operator left is a kernel of its own type, or, when its type has no
   kernel predictor, an :attr:`KernelType.UNKNOWN` kernel that a prediction
   covers with a flagged fallback. No operator is dropped.

Each kernel's :class:`KernelConfig` (input H x W, channels in and out, kernel,
stride, groups, fused activation...) is what the kernel predictors learn
from and what :mod:`latkit.profiler.kernel_models` builds to measure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.core.reprs import short_repr
from latkit.profiler.op_graph import Node, OpGraph, Shape


class KernelType(str, Enum):
    """The kinds of kernel latkit predicts, each with its own learned predictor."""

    CONV = "conv"  # dense k x k convolution (k > 1)
    DWCONV = "dwconv"  # depthwise or grouped convolution
    POINTWISE = "pointwise"  # 1x1 convolution, one group
    FC = "fc"  # fully connected / matmul with a weight matrix
    MATMUL = "matmul"  # matmul of two activations (attention scores, attention x values)
    POOL = "pool"  # max / average / global pooling
    ELEMENTWISE = "elementwise"  # add, mul, sub, div, a standalone batch norm
    CONCAT = "concat"
    ACTIVATION = "activation"  # an activation alone (not fused into a kernel before it)
    SE = "se"  # squeeze-excite: pool, small layers, gate, scale
    SHUFFLE = "shuffle"  # reshape / transpose / channel shuffle
    RESIZE = "resize"
    SOFTMAX = "softmax"
    LAYERNORM = "layernorm"
    COPY = "copy"  # data movement: slice, split, expand (broadcast), tile
    REDUCE = "reduce"  # a sum / mean / max over some axes that is not a spatial pooling
    NORM = "norm"  # instance / group normalization: rows (channels) normalized over their width (spatial)
    # grouped convolution, 1 < groups < input channels (RegNet, ResNeXt): runtimes run it
    # group by group, not as a depthwise kernel nor as one dense one (listed last: the
    # sampling seeds hang on each type's place)
    GCONV = "gconv"
    UNKNOWN = "unknown"  # no predictor: a flagged fallback estimate


PREDICTED_TYPES = tuple(t for t in KernelType if t is not KernelType.UNKNOWN)

ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu",
                         "Gelu", "Erf", "Elu", "Selu", "Softplus", "PRelu", "Mish", "Swish"})  # fmt: skip
# Quantize / Dequantize: a TFLite file's (de)quantize passes (latkit's names; ONNX's QDQ pairs are folded)
_ELEMENTWISE = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Sum": "add", "Max": "max",
                "Min": "max", "Pow": "mul", "BatchNormalization": "affine",
                "Quantize": "affine", "Dequantize": "affine"}  # fmt: skip
_LAYOUT = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "DepthToSpace", "SpaceToDepth"})
_REMOVED = frozenset({"Identity", "Dropout"})
# operators a runtime folds into the operator they feed (ORT's PadFusion, XNNPACK's constant-pad fusion):
# a rule (prefix, B) makes the pair one kernel of B's type, and B's own rules apply after it
PREFIX_OPS = frozenset({"Pad"})
_GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool"})

# the categorical fields' vocabulary: a config's variant and fused activation are indices here
VARIANTS = ("", "relu", "clip", "sigmoid", "hardsigmoid", "hardswish", "tanh", "leakyrelu", "gelu",
            "erf", "elu", "selu", "softplus", "prelu", "mish", "swish", "max", "avg", "global",
            "add", "sub", "mul", "div", "affine", "reshape", "transpose", "nearest", "linear", "other",
            "slice", "split", "expand", "sum", "mean", "instance", "group")  # fmt: skip


@dataclass(frozen=True)
class KernelConfig:
    """Everything a kernel's latency depends on, in one frozen, hashable value.

    Image kernels use ``h, w`` (input), ``cin``, ``cout``; row-wise kernels
    (fc, matmul, softmax, layer norm, reduce, norm) put their rows in ``h``
    (``w`` is the batch of a matmul) and the reduced / produced width in
    ``cin`` / ``cout``. ``extra`` is per type: inputs of a concat, a fused
    residual add on a convolution, a broadcast operand of an element-wise op,
    the outputs of a split, the broadcast factor of an expand, a reduction over
    the innermost (contiguous) axis. ``variant`` names the operator within its type (``max`` pooling,
    ``mul``...), ``act`` the activation fused into it.
    """

    type: KernelType
    h: int = 1
    w: int = 1
    cin: int = 1
    cout: int = 1
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    extra: int = 0
    variant: str = ""
    act: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", KernelType(self.type))
        for name in ("h", "w", "cin", "cout", "kernel", "stride", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"kernel config {name} must be an integer >= 1, got {value!r}")
        for name in ("variant", "act"):
            if getattr(self, name) not in VARIANTS:
                object.__setattr__(self, name, "other")

    @property
    def key(self) -> str:
        """A stable text key (the LUT row's identity for this configuration)."""
        parts = [self.type.value, f"{self.h}x{self.w}", f"c{self.cin}-{self.cout}", f"k{self.kernel}",
                 f"s{self.stride}", f"g{self.groups}", f"e{self.extra}"]  # fmt: skip
        parts += [p for p in (self.variant, self.act and f"a-{self.act}") if p]
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": self.type.value, "h": self.h, "w": self.w, "cin": self.cin, "cout": self.cout,
                "kernel": self.kernel, "stride": self.stride, "groups": self.groups, "extra": self.extra,
                "variant": self.variant, "act": self.act}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KernelConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(d))

    def out_hw(self) -> tuple[int, int]:
        """Output height and width of an image kernel (same padding)."""
        if self.type is KernelType.RESIZE:
            return self.h * self.stride, self.w * self.stride
        if self.type is KernelType.POOL and self.variant == "global":
            return 1, 1
        return math.ceil(self.h / self.stride), math.ceil(self.w / self.stride)


FEATURE_NAMES = ("log_h", "log_w", "log_cin", "log_cout", "kernel", "stride", "log_groups", "extra",
                 "variant", "act", "log_macs", "log_in", "log_out", "log_weights")  # fmt: skip


def work(c: KernelConfig) -> tuple[float, float, float, float]:
    """(MACs, input elements, output elements, weight elements) of a configuration."""
    oh, ow = c.out_hw()
    t = c.type
    if t in (KernelType.CONV, KernelType.DWCONV, KernelType.GCONV, KernelType.POINTWISE):
        wts = c.cout * (c.cin // c.groups) * c.kernel * c.kernel
        return oh * ow * wts, c.h * c.w * c.cin, oh * ow * c.cout, wts
    if t is KernelType.FC:
        return c.h * c.cin * c.cout, c.h * c.cin, c.h * c.cout, c.cin * c.cout
    if t is KernelType.MATMUL:
        return c.w * c.h * c.cin * c.cout, c.w * (c.h * c.cin + c.cin * c.cout), c.w * c.h * c.cout, 0
    if t is KernelType.SE:
        return c.h * c.w * c.cin + 2 * c.cin * c.cout, c.h * c.w * c.cin, c.h * c.w * c.cin, 2 * c.cin * c.cout
    if t is KernelType.POOL:
        k = c.h * c.w if c.variant == "global" else c.kernel * c.kernel
        return oh * ow * c.cin * k, c.h * c.w * c.cin, oh * ow * c.cin, 0
    if t is KernelType.COPY:  # a split writes every part; an expand reads 1 / extra of what it writes
        n_out = c.h * c.w * c.cout * (max(c.extra, 1) if c.variant == "split" else 1)
        n_in = max(1, c.h * c.w * c.cin // (max(c.extra, 1) if c.variant == "expand" else 1))
        return max(n_in, n_out), n_in, n_out, 0
    elems_in = c.h * c.w * c.cin * (max(c.extra, 1) if t is KernelType.CONCAT else 1)
    elems_out = oh * ow * c.cout
    return max(elems_in, elems_out), elems_in, elems_out, 0


def features(configs: Iterable[KernelConfig]) -> np.ndarray:
    """The feature matrix (columns :data:`FEATURE_NAMES`) of ``configs``."""
    rows = []
    for c in configs:
        macs, n_in, n_out, n_w = work(c)
        rows.append((math.log(c.h), math.log(c.w), math.log(c.cin), math.log(c.cout), c.kernel, c.stride,
                     math.log(c.groups), c.extra, VARIANTS.index(c.variant), VARIANTS.index(c.act),
                     math.log1p(macs), math.log1p(n_in), math.log1p(n_out), math.log1p(n_w)))  # fmt: skip
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))


@dataclass(frozen=True)
class Kernel:
    """One kernel of a graph: its configuration and the operators it runs.

    ``config`` is None for an :attr:`KernelType.UNKNOWN` kernel whose shapes are
    not known either; ``fallback`` says how a prediction covers it then.
    """

    type: KernelType
    config: KernelConfig | None
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    out_elems: int = 0
    fallback: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": self.type.value, "config": self.config.to_dict() if self.config else None,
                "key": self.config.key if self.config else None, "nodes": list(self.nodes),
                "op_types": list(self.op_types), "fallback": self.fallback or None}  # fmt: skip


@dataclass(frozen=True)
class FusionRules:
    """Which operator pairs a runtime runs as one kernel: ``(root op, follower op)``.

    ``source`` is ``measured`` (fusion detection ran on the device) or
    ``default:<runtime>`` (the documented defaults).
    """

    pairs: frozenset[tuple[str, str]]
    source: str = "default"
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return short_repr(self, "source", "pairs", "evidence")

    def fuses(self, root: str, follower: str) -> bool:
        """Whether a kernel rooted at ``root`` absorbs a following ``follower``."""
        return (root, follower) in self.pairs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"pairs": sorted(list(p) for p in self.pairs), "source": self.source,
                "evidence": dict(self.evidence)}  # fmt: skip


_CONV_FOLLOWERS = ("BatchNormalization", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid")
# ONNX Runtime's CPU graph transformers (ORT_ENABLE_ALL): ConvBNFusion, ConvActivationFusion,
# ConvAddFusion and the NCHWc Conv+Sum(+Relu) fusion, MatMulAddFusion (-> Gemm), GemmActivationFusion
DEFAULT_RULES: dict[str, FusionRules] = {
    "onnxruntime": FusionRules(frozenset(
        [("Conv", f) for f in (*_CONV_FOLLOWERS, "Add")]
        + [("MatMul", "Add"), ("Gemm", "Relu"), ("MatMul", "Relu"), ("Pad", "Conv"), ("Pad", "MaxPool")]),
        "default:onnxruntime"),
    # the LiteRT converter folds batch norm and a ReLU/ReLU6/tanh into the convolution or FC before it (a
    # TFLite file carries them as the operator's fused activation); XNNPACK runs a zero pad inside the
    # convolution after it
    "litert": FusionRules(frozenset(
        [("Conv", f) for f in ("BatchNormalization", "Relu", "Clip", "Tanh")]
        + [("Gemm", "Relu"), ("MatMul", "Add"), ("Add", "Relu"), ("Add", "Clip"), ("Pad", "Conv")]),
        "default:litert"),
}
DEFAULT_RULES["benchmark_model"] = replace(DEFAULT_RULES["litert"], source="default:benchmark_model")
DEFAULT_RULES["torch"] = FusionRules(frozenset(), "default:torch")  # eager mode fuses nothing


def default_rules(runtime: str) -> FusionRules:
    """The documented fusion defaults of ``runtime`` (none for a runtime latkit does not know)."""
    return DEFAULT_RULES.get(runtime, FusionRules(frozenset(), f"default:{runtime}"))


@dataclass(frozen=True)
class KernelGraph:
    """A graph grouped into kernels, with the operators that cost nothing."""

    name: str
    kernels: tuple[Kernel, ...]
    folded: tuple[str, ...]  # node names folded or removed at load time
    rules: FusionRules

    @property
    def uncovered(self) -> tuple[Kernel, ...]:
        """The kernels no predictor covers (predicted by a flagged fallback)."""
        return tuple(k for k in self.kernels if k.type is KernelType.UNKNOWN)

    def configs(self) -> list[KernelConfig]:
        """The configuration of every predicted kernel, in order."""
        return [k.config for k in self.kernels if k.config is not None and k.type is not KernelType.UNKNOWN]


def hwc(shape: Shape | None) -> tuple[int, int, int]:
    """A tensor shape as (H, W, C): NCHW images, (rows, 1, width) otherwise."""
    if not shape:
        return 1, 1, 1
    s = [max(int(d), 1) for d in shape]
    if len(s) == 4:
        return s[2], s[3], s[0] * s[1]
    if len(s) == 3:
        return s[0] * s[1], 1, s[2]
    if len(s) == 2:
        return s[0], 1, s[1]
    return 1, 1, int(np.prod(s))


__all__ = [
    "ACTIVATIONS", "DEFAULT_RULES", "FEATURE_NAMES", "PREDICTED_TYPES", "PREFIX_OPS", "VARIANTS", "FusionRules", "Kernel",
    "KernelConfig", "KernelGraph", "KernelType", "default_rules", "features", "hwc", "work",
]
