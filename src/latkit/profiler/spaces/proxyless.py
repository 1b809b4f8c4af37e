"""The ProxylessNAS mobile search space (Cai et al., ICLR 2019).

Macro-architecture (the search space of ProxylessNAS's mobile search, the one its
public latency table ``mobile_trim.yaml`` was measured for):

* stem: 3x3 stride-2 convolution 3 -> 32, BN, ReLU6;
* a fixed first block: MBConv, expand 1, 3x3, 32 -> 16 (no expansion convolution);
* six stages of widths 24, 40, 80, 96, 192, 320 with 4, 4, 4, 4, 4, 1 blocks; a
  stage's first block has stride 2, 2, 2, 1, 2, 1 and no shortcut, its other
  blocks stride 1 and an identity shortcut;
* every one of these 21 blocks picks 3x3/5x5/7x7 depthwise kernel and expand
  ratio 3 or 6 (``"5x5_MBConv3"``), and a block that has a shortcut may also be
  ``"zero"``: dropped, the input passes through;
* feature mix: 1x1 convolution 320 -> 1280, BN, ReLU6 (``Conv_1``), then the
  classifier on the pooled map (``Logits``; pooling folded in, as in the table).

The middle width of a block is ``round(in * ratio)``; activations are ReLU6 and
there is no squeeze-excite, so block keys take the ProxylessNAS form (expand
*ratio* in the key). A width multiplier scales every width with
:func:`~latkit.profiler.spaces._util.make_divisible` (the 1280-wide feature mix
only grows, never shrinks, as in ProxylessNAS). ``proxyless_mobile_w05`` is the
half-width variant for quick searches.

Note: the *published* ProxylessNAS mobile network (``proxyless_mobile.config``)
uses 32 channels in the first stage, not 24; build it with
``ProxylessMobileSpace(stage_widths=(32, 40, 80, 96, 192, 320))`` or read its
net.config with :mod:`latkit.profiler.spaces.netconfig`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces._chain import Slot, every_option, place_blocks, stage_slots
from latkit.profiler.spaces._util import (
    check_resolution,
    conv_out,
    distinct_measurable,
    make_divisible,
)
from latkit.profiler.spaces.base import Arch, Choice, Layer, Network, SearchSpace, register_space

MB_OPS = (
    "3x3_MBConv3",
    "3x3_MBConv6",
    "5x5_MBConv3",
    "5x5_MBConv6",
    "7x7_MBConv3",
    "7x7_MBConv6",
)
ZERO = "zero"
BASE_STAGE_WIDTHS = (24, 40, 80, 96, 192, 320)
DEPTHS = (4, 4, 4, 4, 4, 1)
FIRST_STRIDES = (2, 2, 2, 1, 2, 1)
BASE_STEM, BASE_FIRST_BLOCK, BASE_FEATURE_MIX = 32, 16, 1280
NUM_CLASSES = 1000

_OP_RE = re.compile(r"^([1-9])x\1_MBConv([1-9])$")


def parse_op(name: str) -> tuple[int, int]:
    """``"5x5_MBConv3"`` -> ``(5, 3)`` (kernel, expand ratio).

    Raises:
        ArchError: not an MBConv op name.
    """
    m = _OP_RE.match(name)
    if not m:
        raise ArchError(f"{name!r} is not an MBConv op; valid: {', '.join(MB_OPS)}, {ZERO}")
    return int(m[1]), int(m[2])


def op_name(kernel: int, expand: int) -> str:
    """``(5, 3)`` -> ``"5x5_MBConv3"``."""
    return f"{kernel}x{kernel}_MBConv{expand}"


@register_space("proxyless_mobile")
class ProxylessMobileSpace(SearchSpace):
    """ProxylessNAS mobile space: 21 blocks, 6 MBConv options each (+ zero)."""

    description = "ProxylessNAS mobile space (ImageNet, 21 MBConv/zero choices)"
    default_resolution = 224
    resolutions = (128, 160, 192, 224)
    arch_help = (
        'a list of 21 op names, each one of 3x3_MBConv3 .. 7x7_MBConv6 or "zero" '
        '(e.g. ["5x5_MBConv3", "3x3_MBConv3", "zero", ...]), or {"ops": [...]}'
    )

    def __init__(self, width_mult: float = 1.0, stage_widths: Sequence[int] | None = None):
        """Build the space.

        Args:
            width_mult: multiplier applied to every width (make-divisible by 8).
            stage_widths: the six stage widths before the multiplier (default
                24, 40, 80, 96, 192, 320).
        """
        if not width_mult > 0:
            raise UsageError(f"width_mult must be positive, got {width_mult}")
        base = tuple(stage_widths) if stage_widths is not None else BASE_STAGE_WIDTHS
        if len(base) != len(DEPTHS) or min(base) < 1:
            raise UsageError(f"stage_widths must be {len(DEPTHS)} positive ints, got {base}")
        self.width_mult = float(width_mult)
        self.stem_width = make_divisible(BASE_STEM * width_mult)
        self.first_width = make_divisible(BASE_FIRST_BLOCK * width_mult)
        self.stage_widths = tuple(make_divisible(c * width_mult) for c in base)
        # ProxylessNAS keeps the 1280-wide feature mix for narrow nets
        self.feature_mix_width = (
            make_divisible(BASE_FEATURE_MIX * width_mult) if width_mult > 1 else BASE_FEATURE_MIX
        )
        # a stage's blocks after the first have an identity shortcut, so "zero" is allowed there
        self._slots = stage_slots(self.first_width, zip(self.stage_widths, DEPTHS, FIRST_STRIDES), 1)
        self._choices = [Choice(s.name, MB_OPS + (() if s.first else (ZERO,))) for s in self._slots]

    # ---- architecture forms ----

    def choices(self) -> list[Choice]:
        return list(self._choices)

    def arch_from_native(self, native: Any) -> Arch:
        if isinstance(native, dict):
            if set(native) != {"ops"}:
                raise ArchError(f"{self.name}: a dict architecture needs exactly the key 'ops'")
            native = native["ops"]
        if isinstance(native, str):
            native = native.replace(",", " ").split()
        return self.from_option_names(native)

    def arch_to_native(self, arch: Arch) -> list[str]:
        return list(self.options(arch))

    def arch_from_netconfig(self, config: dict[str, Any]) -> Arch:
        """The architecture whose 21 choices a ProxylessNAS ``net.config`` makes.

        Only the op of each block is read (kernel, expand ratio, or zero); the
        widths are not checked here, compare :meth:`network` outputs for that.

        Raises:
            ArchError: the config does not have this space's block layout.
        """
        from latkit.profiler.spaces.netconfig import block_conv

        blocks = config.get("blocks") or []
        if len(blocks) != len(self._slots) + 1:
            raise ArchError(
                f"{self.name}: net.config has {len(blocks)} blocks, the space has "
                f"{len(self._slots) + 1} (a fixed first block and {len(self._slots)} choices)"
            )
        ops = []
        for block in blocks[1:]:
            conv = block_conv(block)
            if conv is None:
                ops.append(ZERO)
            else:
                ops.append(op_name(int(conv["kernel_size"]), int(conv["expand_ratio"])))
        return self.from_options(ops)

    # ---- operators ----

    def _resolution(self, resolution: int | None) -> int:
        r = self.default_resolution if resolution is None else resolution
        return check_resolution(r, 32, 8, self.name)

    def _fixed_head(self, r: int) -> tuple[list[Layer], int]:
        """Stem and first block; returns them and the spatial size after them."""
        h = conv_out(r, 2)
        stem = OpSpec(
            OpType.STEM, (r, r, 3), (h, h, self.stem_width), kernel=3, stride=2, act=Act.RELU6
        )
        first = OpSpec(
            OpType.MBCONV, (h, h, self.stem_width), (h, h, self.first_width), kernel=3,
            expand_ratio=1, mid_channels=self.stem_width, act=Act.RELU6,
        )
        return [Layer("first_conv", stem), Layer("blocks.0", first)], h

    def _tail(self, h: int) -> list[Layer]:
        last = self.stage_widths[-1]
        mix = OpSpec(
            OpType.HEAD_CONV, (h, h, last), (h, h, self.feature_mix_width), act=Act.RELU6
        )
        logits = OpSpec(OpType.LOGITS, (h, h, self.feature_mix_width), (1, 1, NUM_CLASSES))
        return [Layer("feature_mix_layer", mix), Layer("classifier", logits)]

    def _block(self, slot: Slot, op: str, h: int) -> OpSpec:
        """The spec of ``op`` placed in ``slot`` at input spatial size ``h``."""
        if op == ZERO:
            shape = (h, h, slot.out_channels)
            return OpSpec(OpType.ZERO, shape, shape)
        kernel, expand = parse_op(op)
        ho = conv_out(h, slot.stride)
        return OpSpec(
            OpType.MBCONV, (h, h, slot.in_channels), (ho, ho, slot.out_channels),
            kernel=kernel, stride=slot.stride, expand_ratio=expand,
            mid_channels=round(slot.in_channels * expand), act=Act.RELU6, idskip=not slot.first,
        )

    def network(self, arch: Arch, resolution: int | None = None) -> Network:
        r = self._resolution(resolution)
        fixed, h = self._fixed_head(r)
        blocks, h = place_blocks(self._slots, self.options(arch), self._block, h, "blocks.", 1)
        return Network(
            name=self.name, input_shape=(r, r, 3), layers=(*fixed, *blocks, *self._tail(h)),
            meta={"space": self.name, "resolution": r, "arch": self.arch_to_native(arch)},
        )

    def operators(self, resolution: int | None = None) -> list[OpSpec]:
        r = self._resolution(resolution)
        fixed, h = self._fixed_head(r)
        blocks, h = every_option(self._slots, [c.options for c in self._choices], self._block, h)
        return distinct_measurable([*(layer.spec for layer in fixed), *blocks, *(layer.spec for layer in self._tail(h))])


@register_space("proxyless_mobile_w05")
class ProxylessMobileW05Space(ProxylessMobileSpace):
    """The ProxylessNAS mobile space at width 0.5 (cheap proxy for quick searches)."""

    description = "ProxylessNAS mobile space at width multiplier 0.5"

    def __init__(self) -> None:
        super().__init__(width_mult=0.5)
