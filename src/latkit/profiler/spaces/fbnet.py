"""The FBNet search space as HW-NAS-Bench defines it for CIFAR-100 (32x32 input).

Source: HW-NAS-Bench (Li et al., ICLR 2021), repository GATECH-EIC/HW-NAS-Bench,
file ``hw_nas_bench_api/fbnet_models/model_infer.py`` (``FBNet_Infer``), with its
CIFAR settings:

* stem: 3x3 stride-1 convolution 3 -> 16, BN, ReLU;
* seven stages of 1, 4, 4, 4, 4, 4, 1 layers (22 searchable layers), widths 16,
  24, 32, 64, 112, 184, 352, first-layer strides 1, 1, 2, 2, 1, 2, 1;
* each layer is one of nine blocks: ``k{3,5}_e{1,3,6}`` and ``k{3,5}_e1_g2``
  (1x1 expansion convolution, grouped for ``_g2``, with channel shuffle;
  kxk depthwise; 1x1 projection, grouped for ``_g2``; ReLU after the first two;
  identity shortcut when the input and output shapes match), or ``skip``;
* head: 1x1 convolution 352 -> 1504, BN, ReLU, global pooling and a 100-way
  linear classifier.

Unlike a MobileNetV2 block, an FBNet ``e1`` block keeps its 1x1 expansion
convolution. A ``skip`` is the identity when the shapes allow it and otherwise
a real 1x1 convolution (stride 1 or 2) with BN and ReLU; latkit models that as
an :attr:`OpType.HEAD_CONV` spec (its 1x1 convolution + BN + activation type),
whose stride follows from its shapes. The head's pooling is folded into the
``Logits`` op, as in the ProxylessNAS table.
"""

from __future__ import annotations

from typing import Any

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces._chain import Slot, every_option, place_blocks, stage_slots
from latkit.profiler.spaces._util import conv_out, distinct_measurable
from latkit.profiler.spaces.base import Arch, Choice, Layer, Network, SearchSpace, register_space

FBNET_OPS = (
    "k3_e1",
    "k3_e1_g2",
    "k3_e3",
    "k3_e6",
    "k5_e1",
    "k5_e1_g2",
    "k5_e3",
    "k5_e6",
    "skip",
)
SKIP = "skip"
DEPTHS = (1, 4, 4, 4, 4, 4, 1)
WIDTHS = (16, 24, 32, 64, 112, 184, 352)
STRIDES = (1, 1, 2, 2, 1, 2, 1)  # HW-NAS-Bench's CIFAR setting
STEM_WIDTH = 16
HEAD_WIDTH = 1504
NUM_CLASSES = 100
RESOLUTION = 32
N_LAYERS = sum(DEPTHS)


def parse_block(name: str) -> tuple[int, int, int]:
    """``"k5_e1_g2"`` -> ``(5, 1, 2)`` (kernel, expand ratio, groups)."""
    parts = name.split("_")
    groups = 2 if parts[-1] == "g2" else 1
    return int(parts[0][1:]), int(parts[1][1:]), groups


_SLOTS = stage_slots(STEM_WIDTH, zip(WIDTHS, DEPTHS, STRIDES))


@register_space("fbnet")
class FBNetSpace(SearchSpace):
    """HW-NAS-Bench's FBNet space on CIFAR-100: 22 layers, 9 options each."""

    description = "FBNet space of HW-NAS-Bench (CIFAR-100, 32x32, 22 layers x 9 ops)"
    default_resolution = RESOLUTION
    resolutions = (RESOLUTION,)
    arch_help = (
        "22 op names (k3_e1 k3_e1_g2 k3_e3 k3_e6 k5_e1 k5_e1_g2 k5_e3 k5_e6 skip) as a JSON "
        "list or one space-separated string, or a list of 22 op indices 0..8"
    )

    def __init__(self) -> None:
        self._choices = [Choice(slot.name, FBNET_OPS) for slot in _SLOTS]

    # ---- architecture forms ----

    def choices(self) -> list[Choice]:
        return list(self._choices)

    def arch_from_native(self, native: Any) -> Arch:
        if isinstance(native, dict) and set(native) == {"op_idx_list"}:  # HW-NAS-Bench config
            native = native["op_idx_list"]
        if isinstance(native, str):
            native = native.split()
        if isinstance(native, (list, tuple)) and native and all(
            isinstance(v, int) and not isinstance(v, bool) for v in native
        ):
            if not all(0 <= v < len(FBNET_OPS) for v in native):
                raise ArchError(f"{self.name}: op indices must be 0..{len(FBNET_OPS) - 1}")
            native = [FBNET_OPS[v] for v in native]
        return self.from_option_names(native)

    def arch_to_native(self, arch: Arch) -> list[str]:
        return list(self.options(arch))

    def arch_string(self, arch: Arch) -> str:
        """The space-separated form used by HW-NAS-Bench's FBNet tables."""
        return " ".join(self.options(arch))

    # ---- operators ----

    def _check_resolution(self, resolution: int | None) -> int:
        if resolution not in (None, RESOLUTION):
            raise UsageError(f"{self.name}: the space is defined for 32x32 input only")
        return RESOLUTION

    @staticmethod
    def _layer(slot: Slot, op: str, h: int) -> OpSpec:
        """The spec of ``op`` placed in ``slot`` at input spatial size ``h``."""
        ho = conv_out(h, slot.stride)
        inp, out = (h, h, slot.in_channels), (ho, ho, slot.out_channels)
        same = inp == out and slot.stride == 1
        if op == SKIP:
            if same:
                return OpSpec(OpType.SKIP, inp, out)
            return OpSpec(OpType.HEAD_CONV, inp, out, stride=slot.stride, act=Act.RELU)
        kernel, expand, groups = parse_block(op)
        return OpSpec(
            OpType.MBCONV, inp, out, kernel=kernel, stride=slot.stride, expand_ratio=expand,
            mid_channels=slot.in_channels * expand, groups=groups, act=Act.RELU, idskip=same,
            expand_conv=True,  # HW-NAS-Bench keeps the 1x1 expansion even at e1
        )

    @staticmethod
    def _stem() -> Layer:
        r = RESOLUTION
        spec = OpSpec(OpType.STEM, (r, r, 3), (r, r, STEM_WIDTH), kernel=3, act=Act.RELU)
        return Layer("stem", spec)

    @staticmethod
    def _tail(h: int) -> list[Layer]:
        c = WIDTHS[-1]
        head = OpSpec(OpType.HEAD_CONV, (h, h, c), (h, h, HEAD_WIDTH), act=Act.RELU)
        logits = OpSpec(OpType.LOGITS, (h, h, HEAD_WIDTH), (1, 1, NUM_CLASSES))
        return [Layer("header", head), Layer("fc", logits)]

    def network(self, arch: Arch, resolution: int | None = None) -> Network:
        r = self._check_resolution(resolution)
        cells, h = place_blocks(_SLOTS, self.options(arch), self._layer, r, "cells.", 0)
        return Network(
            name=self.name, input_shape=(r, r, 3), layers=(self._stem(), *cells, *self._tail(h)),
            meta={"space": self.name, "resolution": r, "arch": self.arch_string(arch)},
        )

    def operators(self, resolution: int | None = None) -> list[OpSpec]:
        h = self._check_resolution(resolution)
        cells, h = every_option(_SLOTS, [FBNET_OPS] * len(_SLOTS), self._layer, h)
        return distinct_measurable([self._stem().spec, *cells, *(layer.spec for layer in self._tail(h))])
