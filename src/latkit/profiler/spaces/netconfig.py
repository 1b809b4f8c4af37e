"""Read ProxylessNAS / Once-for-All ``net.config`` files into a :class:`Network`.

A net.config is the JSON both projects save beside their weights::

    {"first_conv": ConvLayer, "blocks": [block, ...],
     "final_expand_layer": ConvLayer (OFA only), "feature_mix_layer": ConvLayer,
     "classifier": LinearLayer}

Each block is a ``MobileInvertedResidualBlock`` (ProxylessNAS; its op under
``mobile_inverted_conv``) or a ``ResidualBlock`` (newer OFA; under ``conv``). The
op is an ``MBInvertedConvLayer`` / ``MBConvLayer`` (``in_channels``,
``out_channels``, ``kernel_size``, ``stride``, ``expand_ratio`` and optionally
``mid_channels``, ``act_func``, ``use_se``, ``groups``), or a ``ZeroLayer`` /
``null`` (the block passes its input through). ``shortcut`` is ``null`` or an
``IdentityLayer``.

With a ``final_expand_layer`` (OFA MobileNetV3) the head is ``Conv_1`` (final
expand), ``AvgPool2D``, ``Conv_2`` (the feature mix on the pooled map) and
``Logits``; without one (ProxylessNAS) the feature mix is ``Conv_1`` on the last
map and ``Logits`` pools it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latkit.core.files import one_line, read_json
from latkit.core.errors import ArchError, StoreError, UsageError
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces._util import conv_out, make_divisible
from latkit.profiler.spaces.base import Layer, Network

# bounds far beyond any mobile network; a value outside them is a typo or a hostile file
MAX_CHANNELS = 1 << 16
MAX_KERNEL = 15
MAX_STRIDE = 4
MAX_EXPAND = 16.0
MAX_BLOCKS = 1000
MAX_RESOLUTION = 4096
MBCONV_NAMES = frozenset({"MBInvertedConvLayer", "MBConvLayer"})
ZERO_NAMES = frozenset({"ZeroLayer"})
_ACTS = {None: Act.NONE, "relu": Act.RELU, "relu6": Act.RELU6, "h_swish": Act.H_SWISH}


def is_netconfig(obj: Any) -> bool:
    """Whether ``obj`` looks like a parsed net.config (has first_conv and blocks)."""
    return isinstance(obj, dict) and "first_conv" in obj and isinstance(obj.get("blocks"), list)


def read_netconfig(obj_or_path: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A parsed net.config from a dict or a file path.

    Raises:
        ArchError: the file cannot be read, is not JSON, or is not a net.config.
    """
    obj: Any = obj_or_path
    if isinstance(obj_or_path, (str, Path)):
        try:
            obj = read_json(obj_or_path, "net.config")
        except StoreError as exc:
            raise ArchError(str(exc)) from exc
    if not is_netconfig(obj):
        raise ArchError(
            "not a net.config: expected a JSON object with 'first_conv' and a 'blocks' list"
        )
    return obj


def block_conv(block: Any) -> dict[str, Any] | None:
    """The op of a net.config block, or ``None`` for a zero (pass-through) block.

    Raises:
        ArchError: the block is not a dict or its op is of an unknown kind.
    """
    if not isinstance(block, dict):
        raise ArchError(f"net.config block must be an object, got {block!r}")
    conv = block.get("mobile_inverted_conv", block.get("conv"))
    if conv is None or (isinstance(conv, dict) and conv.get("name") in ZERO_NAMES):
        return None
    if not isinstance(conv, dict) or conv.get("name") not in MBCONV_NAMES:
        name = conv.get("name") if isinstance(conv, dict) else conv
        raise ArchError(
            f"net.config block op {name!r} is not supported; expected one of "
            f"{', '.join(sorted(MBCONV_NAMES | ZERO_NAMES))} or null"
        )
    return conv


def network_from_netconfig(
    obj_or_path: dict[str, Any] | str | Path, resolution: int | None = 224
) -> Network:
    """The ordered operators of a net.config network at ``resolution``.

    Raises:
        ArchError: the config is malformed or its layers do not connect.
    """
    cfg = read_netconfig(obj_or_path)
    r = 224 if resolution is None else resolution
    if isinstance(r, bool) or not isinstance(r, int) or not 16 <= r <= MAX_RESOLUTION:
        raise UsageError(f"net.config resolution must be an integer from 16 to {MAX_RESOLUTION}, got {r!r}")
    if len(cfg["blocks"]) > MAX_BLOCKS:
        raise ArchError(f"net.config has {len(cfg['blocks'])} blocks; at most {MAX_BLOCKS} are read")
    builder = _Builder(r)
    try:
        builder.stem(_section(cfg, "first_conv"))
        for i, block in enumerate(cfg["blocks"]):
            builder.block(i, block)
        builder.head(cfg)
    except KeyError as exc:
        raise ArchError(f"malformed net.config at {builder.where}: field {exc} is missing") from exc
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, UsageError) as exc:
        if isinstance(exc, ArchError):
            raise
        raise ArchError(f"malformed net.config at {builder.where}: {one_line(exc)}") from exc
    return Network(
        name=str(cfg.get("name", "netconfig")), input_shape=(r, r, 3),
        layers=tuple(builder.layers),
        meta={"source": "net.config", "resolution": r},
    )


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ArchError(f"net.config has no {key!r} layer (got {value!r})")
    return value


def _act(value: Any) -> Act:
    try:
        return _ACTS[value]
    except (KeyError, TypeError):
        raise ArchError(
            f"net.config activation {value!r} is not supported; use relu, relu6 or h_swish"
        ) from None


def _int(conv: dict[str, Any], key: str, lo: int, hi: int, default: Any = ...) -> int:
    """An integer field of a net.config layer, within ``[lo, hi]``."""
    if default is ... and key not in conv:
        raise KeyError(key)
    value = conv.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ArchError(f"net.config {key} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _ratio(conv: dict[str, Any], key: str) -> float:
    value = conv[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_EXPAND:
        raise ArchError(f"net.config {key} must be a number above 0 and at most {MAX_EXPAND:g}, got {value!r}")
    return float(value)


def _flag(conv: dict[str, Any], key: str) -> bool:
    value = conv.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ArchError(f"net.config {key} must be true or false, got {value!r}")
    return value


class _Builder:
    """Walks a net.config, tracking the current feature-map shape."""

    def __init__(self, resolution: int):
        self.shape = (resolution, resolution, 3)
        self.layers: list[Layer] = []
        self.where = "first_conv"

    def _in_channels(self, conv: dict[str, Any], key: str = "in_channels") -> int:
        try:
            declared = _int(conv, key, 1, MAX_CHANNELS)
        except ArchError as exc:
            raise ArchError(f"{exc} (at {self.where})") from None
        if declared != self.shape[2]:
            raise ArchError(
                f"net.config {self.where} takes {declared} channels but receives {self.shape[2]}"
            )
        return int(declared)

    def _add(self, name: str, spec: OpSpec) -> None:
        self.layers.append(Layer(name, spec))
        self.shape = spec.output_shape

    def _conv(self, op_type: OpType, conv: dict[str, Any], act_default: Any) -> OpSpec:
        if not isinstance(conv, dict):
            raise ArchError(f"net.config {self.where} must be an object, got {conv!r}")
        h, _, _ = self.shape
        cin = self._in_channels(conv)
        stride = self._field(conv, "stride", 1, MAX_STRIDE, 1)
        ho = conv_out(h, stride)
        return OpSpec(
            op_type, (h, h, cin), (ho, ho, self._field(conv, "out_channels", 1, MAX_CHANNELS)),
            kernel=self._field(conv, "kernel_size", 1, MAX_KERNEL, 1), stride=stride,
            act=_act(conv.get("act_func", act_default)),
        )

    def _field(self, conv: dict[str, Any], key: str, lo: int, hi: int, default: Any = ...) -> int:
        try:
            return _int(conv, key, lo, hi, default)
        except ArchError as exc:
            raise ArchError(f"{exc} (at {self.where})") from None

    def stem(self, conv: dict[str, Any]) -> None:
        self._add("first_conv", self._conv(OpType.STEM, conv, "relu6"))

    def block(self, i: int, block: Any) -> None:
        self.where = f"blocks.{i}"
        conv = block_conv(block)
        if conv is None:
            zero = block.get("mobile_inverted_conv") or block.get("conv") or {}
            if self._field(zero, "stride", 1, MAX_STRIDE, 1) != 1:
                raise ArchError(f"net.config {self.where}: a zero layer must have stride 1")
            self._add(self.where, OpSpec(OpType.ZERO, self.shape, self.shape))
            return
        h = self.shape[0]
        cin = self._in_channels(conv)
        try:
            expand = _ratio(conv, "expand_ratio")
        except ArchError as exc:
            raise ArchError(f"{exc} (at {self.where})") from None
        if conv.get("mid_channels") is None:  # OFA rounds to a multiple of 8, ProxylessNAS does not
            mid = max(1, round(cin * expand))
            mid = make_divisible(mid) if conv["name"] == "MBConvLayer" else mid
        else:
            mid = self._field(conv, "mid_channels", 1, MAX_CHANNELS)
        stride = self._field(conv, "stride", 1, MAX_STRIDE)
        kernel = self._field(conv, "kernel_size", 1, MAX_KERNEL)
        groups = self._field(conv, "groups", 1, mid, 1) if conv.get("groups") is not None else 1
        ho = conv_out(h, stride)
        shortcut = block.get("shortcut")
        if shortcut is not None and not isinstance(shortcut, dict):
            raise ArchError(f"net.config {self.where} shortcut must be an object or null, got {shortcut!r}")
        try:
            se = _flag(conv, "use_se")
        except ArchError as exc:
            raise ArchError(f"{exc} (at {self.where})") from None
        spec = OpSpec(
            OpType.MBCONV, (h, h, cin), (ho, ho, self._field(conv, "out_channels", 1, MAX_CHANNELS)),
            kernel=kernel, stride=stride, expand_ratio=expand,
            mid_channels=mid, groups=groups,
            se=se, act=_act(conv.get("act_func", "relu6")),
            idskip=isinstance(shortcut, dict) and shortcut.get("name") == "IdentityLayer",
        )
        self._add(self.where, spec)

    def head(self, cfg: dict[str, Any]) -> None:
        final_expand = cfg.get("final_expand_layer")
        if final_expand is not None:  # OFA MobileNetV3: expand, pool, mix, classify
            self.where = "final_expand_layer"
            self._add(self.where, self._conv(OpType.HEAD_CONV, final_expand, "h_swish"))
            c = self.shape[2]
            self._add("global_avg_pool", OpSpec(OpType.POOL, self.shape, (1, 1, c)))
            mix_type = OpType.POOLED_CONV
        else:
            mix_type = OpType.HEAD_CONV
        mix = cfg.get("feature_mix_layer")
        if mix is not None:
            self.where = "feature_mix_layer"
            self._add(self.where, self._conv(mix_type, mix, "relu6"))
        self.where = "classifier"
        classifier = _section(cfg, "classifier")
        cin = self._in_channels(classifier, "in_features")
        h = self.shape[0]
        out = self._field(classifier, "out_features", 1, MAX_CHANNELS)
        self._add(self.where, OpSpec(OpType.LOGITS, (h, h, cin), (1, 1, out)))
