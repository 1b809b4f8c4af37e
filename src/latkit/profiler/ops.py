"""Operator identity: a frozen spec, and the one place its key is derived.

Keys follow the published latency tables so that they match key for key:

* Once-for-All (MobileNetV3 tables), e.g.
  ``expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0``
  where ``expand`` is the block's expanded (middle) channel count;
* ProxylessNAS (mobile table), e.g.
  ``expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0``
  where ``expand`` is the expansion *ratio*.

Which of the two an MBConv uses is decided by the spec itself: ProxylessNAS blocks
are ReLU6 without squeeze-excite, so a ReLU6/no-SE MBConv takes the ProxylessNAS
form and every other MBConv the OFA form (``hs:1`` for h-swish, ``hs:0`` for
ReLU; another activation or grouped 1x1 convolutions add ``-act:`` /
``-groups:`` fields that no public table has). Stem, head and classifier keys are
``Conv``, ``Conv_1`` (1x1 convolution before pooling), ``AvgPool2D``, ``Conv_2``
(1x1 convolution after pooling) and ``Logits`` (classifier; its input is
pooled first when it is larger than 1x1, as in the ProxylessNAS table).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from latkit.core.errors import ParseError, UsageError


class OpType(str, Enum):
    """The closed set of operator kinds latkit builds and measures."""

    STEM = "stem"  # first convolution (kernel k, stride s, BN, activation)
    MBCONV = "mbconv"  # inverted residual block (expand 1x1, depthwise kxk, [SE], project 1x1)
    HEAD_CONV = "head_conv"  # 1x1 convolution on the last feature map, before pooling
    POOL = "pool"  # global average pooling
    POOLED_CONV = "pooled_conv"  # 1x1 convolution on the pooled 1x1 feature (OFA feature mix)
    LOGITS = "logits"  # classifier: global pooling if needed, flatten, linear
    SKIP = "skip"  # identity layer: free, never measured
    ZERO = "zero"  # a removed residual layer (ProxylessNAS "zero"): free, never measured


class Act(str, Enum):
    """Activation functions of the MBConv families."""

    NONE = "none"
    RELU = "relu"
    RELU6 = "relu6"
    H_SWISH = "h_swish"


FREE_OPS = frozenset({OpType.SKIP, OpType.ZERO})

Shape = tuple[int, int, int]  # (height, width, channels), as in the public tables


# far beyond any mobile operator; larger values are typos that would allocate gigabytes
MAX_DIM = 1 << 16
MAX_KERNEL = 31


def _shape(value: Any, name: str) -> Shape:
    try:
        h, w, c = (_whole(v) for v in value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"{name} must be three integers (H, W, C), got {value!r}") from exc
    if min(h, w, c) < 1 or max(h, w, c) > MAX_DIM:
        raise UsageError(f"{name} must be integers from 1 to {MAX_DIM}, got {value!r}")
    return (h, w, c)


def _whole(value: Any) -> int:
    """An integer given as int, integral float or digit string (never a bool or 2.5)."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a size")
    number = int(value)
    if isinstance(value, float) and value != number:
        raise ValueError(f"{value} is not a whole number")
    return number


@dataclass(frozen=True)
class OpSpec:
    """The identity of one operator: everything its latency depends on.

    Shapes are ``(H, W, C)``. For :attr:`OpType.LOGITS` the output shape is
    ``(1, 1, classes)``. ``mid_channels`` is the expanded width of an MBConv;
    ``expand_ratio`` is kept beside it because the ProxylessNAS key uses it.
    """

    op_type: OpType
    input_shape: Shape
    output_shape: Shape
    kernel: int = 1
    stride: int = 1
    expand_ratio: float = 1.0
    mid_channels: int = 0
    groups: int = 1
    se: bool = False
    act: Act = Act.NONE
    idskip: bool = False
    # whether an MBConv has its 1x1 expansion convolution; None derives it: absent for an
    # ungrouped expand ratio 1 (MobileNetV2 / ProxylessNAS / OFA first blocks), present
    # otherwise. FBNet's e1 blocks keep it, so that space sets True.
    expand_conv: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "op_type", OpType(self.op_type))
        object.__setattr__(self, "act", Act(self.act))
        object.__setattr__(self, "input_shape", _shape(self.input_shape, "input_shape"))
        object.__setattr__(self, "output_shape", _shape(self.output_shape, "output_shape"))
        for name in ("kernel", "stride", "groups", "mid_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{name} must be an integer, got {value!r}")
        if self.kernel < 1 or self.stride < 1 or self.groups < 1:
            raise UsageError(f"kernel, stride and groups must be >= 1 in {self}")
        if self.kernel > MAX_KERNEL or self.stride > MAX_KERNEL or max(self.groups, self.mid_channels) > MAX_DIM:
            raise UsageError(f"kernel and stride must be at most {MAX_KERNEL}, groups and mid_channels "
                             f"at most {MAX_DIM}, in {self}")
        if isinstance(self.expand_ratio, bool) or not (0 < float(self.expand_ratio) <= 64):
            raise UsageError(f"expand_ratio must be a number above 0 and at most 64, got {self.expand_ratio!r}")
        if self.op_type is OpType.MBCONV:
            if self.mid_channels < 1:
                raise UsageError("an MBConv spec needs mid_channels >= 1")
            if self.kernel % 2 == 0:
                raise UsageError(f"MBConv kernel must be odd, got {self.kernel}")
        if self.idskip and (self.input_shape != self.output_shape or self.stride != 1):
            raise UsageError("an identity shortcut needs stride 1 and equal input/output shapes")
        ratio = float(self.expand_ratio)
        object.__setattr__(self, "expand_ratio", int(ratio) if ratio.is_integer() else ratio)
        if self.expand_conv is None:
            object.__setattr__(self, "expand_conv", self._implied_expand_conv())
        object.__setattr__(self, "expand_conv", bool(self.expand_conv))

    def _implied_expand_conv(self) -> bool:
        if self.op_type is not OpType.MBCONV:
            return False
        ratio_one = float(self.expand_ratio) == 1 and self.mid_channels == self.input_shape[2]
        return not (ratio_one and self.groups == 1)

    @property
    def expand_conv_is_default(self) -> bool:
        """Whether ``expand_conv`` is what the expand ratio implies (keys omit it then)."""
        return self.expand_conv == self._implied_expand_conv()

    @property
    def measurable(self) -> bool:
        """Whether the op costs time (skip and zero layers do not)."""
        return self.op_type not in FREE_OPS

    @property
    def key(self) -> str:
        """The LUT key: the one place an op's key string is derived."""
        return op_key(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` reads back."""
        d = dataclasses.asdict(self)
        d["op_type"] = self.op_type.value
        d["act"] = self.act.value
        d["input_shape"] = list(self.input_shape)
        d["output_shape"] = list(self.output_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpSpec:
        """Rebuild a spec from :meth:`to_dict` output."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"unknown op spec field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"invalid op spec {d!r}: {exc}") from exc


def _fmt_shape(shape: Shape) -> str:
    return "x".join(str(v) for v in shape)


def _is_proxyless_style(spec: OpSpec) -> bool:
    return spec.act is Act.RELU6 and not spec.se and spec.groups == 1 and spec.expand_conv_is_default


@dataclass(frozen=True)
class _KeyForm:
    """How an op type other than the MBConv is written in keys and read back."""

    name: str  # the key's first word
    conv: bool = False  # a convolution: read back with its stride from the shapes and the table's activation
    kernel: int = 1  # the kernel it is read back with
    flat_output: bool = False  # the output is written as its channel count alone


#: the one table of the op types whose key is their name and shapes
_KEY_FORMS = {
    OpType.STEM: _KeyForm("Conv", conv=True, kernel=3),
    OpType.HEAD_CONV: _KeyForm("Conv_1", conv=True),
    OpType.POOL: _KeyForm("AvgPool2D"),
    # a strided 1x1 conv (FBNet's shape-changing skip) shows in its shapes
    OpType.POOLED_CONV: _KeyForm("Conv_2", conv=True),
    OpType.LOGITS: _KeyForm("Logits", flat_output=True),
    OpType.SKIP: _KeyForm(OpType.SKIP.value),
    OpType.ZERO: _KeyForm(OpType.ZERO.value),
}
_TYPE_OF_NAME = {form.name: t for t, form in _KEY_FORMS.items()}
MBCONV_NAME = "expanded_conv"


def op_key(spec: OpSpec) -> str:
    """Derive the LUT key of ``spec`` (see the module docstring for the formats)."""
    form = _KEY_FORMS.get(spec.op_type)
    if form is not None:
        out = str(spec.output_shape[2]) if form.flat_output else _fmt_shape(spec.output_shape)
        return f"{form.name}-input:{_fmt_shape(spec.input_shape)}-output:{out}"
    io = f"input:{_fmt_shape(spec.input_shape)}-output:{_fmt_shape(spec.output_shape)}"
    common = f"kernel:{spec.kernel}-stride:{spec.stride}-idskip:{int(spec.idskip)}"
    if _is_proxyless_style(spec):
        return f"{MBCONV_NAME}-{io}-expand:{spec.expand_ratio}-{common}"
    key = f"{MBCONV_NAME}-{io}-expand:{spec.mid_channels}-{common}-se:{int(spec.se)}"
    key += f"-hs:{int(spec.act is Act.H_SWISH)}"
    if spec.act not in (Act.RELU, Act.H_SWISH):
        key += f"-act:{spec.act.value}"
    if spec.groups != 1:
        key += f"-groups:{spec.groups}"
    if not spec.expand_conv_is_default:
        key += f"-expconv:{int(spec.expand_conv)}"
    return key


_KEY_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_]+)-input:(?P<inp>\d+x\d+x\d+)-output:(?P<out>\d+x\d+x\d+|\d+)"
    r"(?P<rest>(-[a-z_]+:[A-Za-z0-9_.]+)*)$"
)


def _parse_shape(text: str) -> Shape:
    parts = [int(v) for v in text.split("x")]
    return (1, 1, parts[0]) if len(parts) == 1 else (parts[0], parts[1], parts[2])


def _parse_named(op_type: OpType, inp: Shape, out: Shape, act: Act) -> OpSpec:
    """The spec of a key of :data:`_KEY_FORMS` (``act``: the table's stem and head activation)."""
    form = _KEY_FORMS[op_type]
    if not form.conv:
        return OpSpec(op_type, inp, out)
    stride = max(1, round(inp[0] / out[0]))
    return OpSpec(op_type, inp, out, kernel=form.kernel, stride=stride, act=act)


def _parse_mbconv(key: str, inp: Shape, out: Shape, fields: dict[str, str]) -> OpSpec:
    """The spec of an ``expanded_conv`` key in the ProxylessNAS or the OFA form."""
    try:
        kernel, stride = int(fields["kernel"]), int(fields["stride"])
        idskip, expand = bool(int(fields["idskip"])), float(fields["expand"])
    except (KeyError, ValueError) as exc:
        raise ParseError(f"key {key!r} lacks a valid expand/kernel/stride/idskip field") from exc
    groups = int(fields.get("groups", 1))
    expand_conv = bool(int(fields["expconv"])) if "expconv" in fields else None
    if "se" not in fields and "hs" not in fields:  # ProxylessNAS form: expand is a ratio
        ratio = expand
        mid = round(inp[2] * ratio)
        act, se = Act.RELU6, False
    else:
        mid = int(expand)
        ratio = mid / inp[2]
        se = bool(int(fields.get("se", 0)))
        act = Act(fields["act"]) if "act" in fields else (
            Act.H_SWISH if int(fields.get("hs", 0)) else Act.RELU
        )
    return OpSpec(
        OpType.MBCONV, inp, out, kernel=kernel, stride=stride, expand_ratio=round(ratio, 4),
        mid_channels=mid, groups=groups, se=se, act=act, idskip=idskip, expand_conv=expand_conv,
    )


def parse_key(key: str, *, default_act: Act | None = None) -> OpSpec:
    """Rebuild the spec behind a key, so that ``parse_key(k).key == k``.

    Public tables leave out what their key format implies: ``default_act`` is
    the activation of the stem and head convolutions (ReLU6 for ProxylessNAS,
    h-swish for OFA MobileNetV3); MBConv activations are read from the key.

    Raises:
        ParseError: the key is not in any format latkit knows.
    """
    m = _KEY_RE.match(key.strip())
    if not m:
        raise ParseError(f"unrecognised operator key {key!r}")
    name, inp, out = m["name"], _parse_shape(m["inp"]), _parse_shape(m["out"])
    if name in _TYPE_OF_NAME:
        return _parse_named(_TYPE_OF_NAME[name], inp, out, default_act or Act.NONE)
    if name != MBCONV_NAME:
        raise ParseError(f"unknown operator type {name!r} in key {key!r}")
    fields = dict(f.split(":", 1) for f in m["rest"].split("-") if f)
    spec = _parse_mbconv(key, inp, out, fields)
    if spec.key != key.strip():
        raise ParseError(f"key {key!r} does not round-trip (read back as {spec.key!r})")
    return spec


def measurable_by_key(specs: Iterable[OpSpec]) -> dict[str, OpSpec]:
    """The specs that cost time by key, the first of each key kept, in order."""
    unique: dict[str, OpSpec] = {}
    for spec in specs:
        if spec.measurable:
            unique.setdefault(spec.key, spec)
    return unique
