"""The Once-for-All MobileNetV3 search space (Cai et al., ICLR 2020).

Macro-architecture at width multiplier ``w`` (every width ``make_divisible(base * w, 8)``):

* stem: 3x3 stride-2 convolution 3 -> 16w, BN, h-swish (``Conv``);
* a fixed first block: MBConv 3x3, expand 1, 16w -> 16w, ReLU, no SE, identity
  shortcut when the widths match;
* five stages of widths 24w, 40w, 80w, 112w, 160w, up to 4 blocks each; the
  first block of a stage has stride 2, 2, 2, 1, 2; activations ReLU, ReLU,
  h-swish, h-swish, h-swish; squeeze-excite in stages 2, 4 and 5;
* every block picks kernel 3/5/7 and expand ratio 3/4/6, every stage a depth
  2/3/4; the middle width is ``make_divisible(round(in * e), 8)``;
* head: 1x1 convolution to 960w (``Conv_1``, h-swish), global pooling
  (``AvgPool2D``), 1x1 convolution on the pooled map to 1280w (``Conv_2``,
  h-swish, no BN) and the 1000-way classifier (``Logits``).

Blocks beyond a stage's depth are kept in the network as :attr:`OpType.ZERO`
layers (their input passes through), so every network has the same 26 layers
and a per-layer breakdown lines up across architectures.

The input resolution is part of the architecture (OFA's ``"r"``), 128..224 in
steps of 4. ``ofa_mbv3`` is width 1.2, the width of OFA's public Note10 latency
tables; ``ofa_mbv3_w10`` is width 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces._util import conv_out, distinct_measurable, make_divisible
from latkit.profiler.spaces.base import Arch, Choice, Layer, Network, SearchSpace, register_space

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
MAX_DEPTH = 4
N_STAGES = 5
N_BLOCKS = N_STAGES * MAX_DEPTH
BASE_STEM = 16
BASE_STAGE_WIDTHS = (24, 40, 80, 112, 160)
BASE_FINAL_EXPAND, BASE_FEATURE_MIX = 960, 1280
STRIDES = (2, 2, 2, 1, 2)
ACTS = (Act.RELU, Act.RELU, Act.H_SWISH, Act.H_SWISH, Act.H_SWISH)
SE = (False, True, False, True, True)
NUM_CLASSES = 1000
RESOLUTIONS = tuple(range(128, 225, 4))


@register_space("ofa_mbv3")
class OfaMbv3Space(SearchSpace):
    """OFA MobileNetV3: 20 kernels, 20 expand ratios, 5 depths and the resolution."""

    description = "Once-for-All MobileNetV3 space, width 1.2 (OFA Note10 tables)"
    default_resolution = 224
    resolutions = RESOLUTIONS
    width_mult = 1.2
    arch_help = (
        'OFA\'s dict {"ks": [20 of 3/5/7], "e": [20 of 3/4/6], "d": [5 of 2/3/4], '
        '"r": resolution 128..224 step 4 (optional, default 224)}'
    )

    def __init__(self, resolutions: Sequence[int] | None = None):
        """Build the space.

        Args:
            resolutions: the resolutions the ``r`` choice offers (default
                128..224 in steps of 4), e.g. ``(160, 176, 192, 208, 224)`` to
                stay on the resolutions of OFA's public tables.
        """
        res = tuple(int(r) for r in (resolutions or RESOLUTIONS))
        if not res or any(r < 32 for r in res):
            raise UsageError(f"{self.name}: resolutions must be integers >= 32, got {res}")
        self.resolutions = res
        self.default_resolution = 224 if 224 in res else res[-1]
        w = self.width_mult
        self.stem_width = make_divisible(BASE_STEM * w)
        self.stage_widths = tuple(make_divisible(c * w) for c in BASE_STAGE_WIDTHS)
        self.final_expand_width = make_divisible(BASE_FINAL_EXPAND * w)
        self.feature_mix_width = make_divisible(BASE_FEATURE_MIX * w)
        self._choices = (
            [Choice(f"ks{i}", KERNELS) for i in range(N_BLOCKS)]
            + [Choice(f"e{i}", EXPANDS) for i in range(N_BLOCKS)]
            + [Choice(f"d{s}", DEPTHS) for s in range(N_STAGES)]
            + [Choice("r", self.resolutions)]
        )

    # ---- architecture forms ----

    def choices(self) -> list[Choice]:
        return list(self._choices)

    def arch_from_native(self, native: Any) -> Arch:
        if not isinstance(native, dict):
            raise ArchError(
                f"{self.name}: cannot read {type(native).__name__}; expected {self.arch_help}"
            )
        unknown = set(native) - {"ks", "e", "d", "r", "wid"}
        if unknown or native.get("wid") is not None:
            bad = ", ".join(sorted(unknown)) or "wid (width is fixed in this space)"
            raise ArchError(f"{self.name}: unexpected key(s) {bad}; expected {self.arch_help}")
        ks = _int_list(native, "ks", N_BLOCKS, self.name)
        e = _int_list(native, "e", N_BLOCKS, self.name)
        d = _int_list(native, "d", N_STAGES, self.name)
        r = native.get("r", self.default_resolution)
        if isinstance(r, list) and len(r) == 1:  # OFA's search code writes "r": [224]
            r = r[0]
        if isinstance(r, bool) or not isinstance(r, int):
            raise ArchError(f"{self.name}: 'r' must be an integer resolution, got {r!r}")
        return self.from_options([*ks, *e, *d, r])

    def arch_to_native(self, arch: Arch) -> dict[str, Any]:
        v = self.options(arch)
        return {
            "ks": v[:N_BLOCKS],
            "e": v[N_BLOCKS : 2 * N_BLOCKS],
            "d": v[2 * N_BLOCKS : 2 * N_BLOCKS + N_STAGES],
            "r": v[-1],
        }

    def resolution_of(self, arch: Arch) -> int:
        """The input resolution ``arch`` picks."""
        return int(self.options(arch)[-1])

    # ---- operators ----

    def _resolution(self, arch: Arch | None, resolution: int | None) -> int:
        if resolution is None:
            return self.resolution_of(arch) if arch is not None else self.default_resolution
        if resolution not in self.resolutions:
            lo, hi = min(self.resolutions), max(self.resolutions)
            raise UsageError(
                f"{self.name}: resolution {resolution!r} is not offered; use one of {lo}..{hi} "
                "in steps of 4"
            )
        return resolution

    def _fixed_head(self, r: int) -> tuple[list[Layer], int]:
        h = conv_out(r, 2)
        c = self.stem_width
        stem = OpSpec(OpType.STEM, (r, r, 3), (h, h, c), kernel=3, stride=2, act=Act.H_SWISH)
        first = OpSpec(
            OpType.MBCONV, (h, h, c), (h, h, c), kernel=3, expand_ratio=1, mid_channels=c,
            act=Act.RELU, idskip=True,
        )
        return [Layer("first_conv", stem), Layer("blocks.0", first)], h

    def _block(self, stage: int, block: int, h: int, kernel: int, expand: int) -> OpSpec:
        """The MBConv at ``block`` of ``stage`` with input spatial size ``h``."""
        width = self.stage_widths[stage]
        cin = width if block else (self.stage_widths[stage - 1] if stage else self.stem_width)
        stride = STRIDES[stage] if block == 0 else 1
        ho = conv_out(h, stride)
        return OpSpec(
            OpType.MBCONV, (h, h, cin), (ho, ho, width), kernel=kernel, stride=stride,
            expand_ratio=expand, mid_channels=make_divisible(round(cin * expand)),
            se=SE[stage], act=ACTS[stage], idskip=stride == 1 and cin == width,
        )

    def _tail(self, h: int) -> list[Layer]:
        c, fe, fm = self.stage_widths[-1], self.final_expand_width, self.feature_mix_width
        final_expand = OpSpec(OpType.HEAD_CONV, (h, h, c), (h, h, fe), act=Act.H_SWISH)
        feature_mix = OpSpec(OpType.POOLED_CONV, (1, 1, fe), (1, 1, fm), act=Act.H_SWISH)
        return [
            Layer("final_expand_layer", final_expand),
            Layer("global_avg_pool", OpSpec(OpType.POOL, (h, h, fe), (1, 1, fe))),
            Layer("feature_mix_layer", feature_mix),
            Layer("classifier", OpSpec(OpType.LOGITS, (1, 1, fm), (1, 1, NUM_CLASSES))),
        ]

    def network(self, arch: Arch, resolution: int | None = None) -> Network:
        """The 26 layers of ``arch``; ``resolution`` (if given) overrides the arch's ``r``."""
        native = self.arch_to_native(arch)
        r = self._resolution(arch, resolution)
        layers, h = self._fixed_head(r)
        for stage in range(N_STAGES):
            for block in range(MAX_DEPTH):
                i = stage * MAX_DEPTH + block
                name = f"blocks.{i + 1}"
                if block >= native["d"][stage]:
                    shape = (h, h, self.stage_widths[stage])
                    layers.append(Layer(name, OpSpec(OpType.ZERO, shape, shape)))
                    continue
                spec = self._block(stage, block, h, native["ks"][i], native["e"][i])
                layers.append(Layer(name, spec))
                h = spec.output_shape[0]
        layers += self._tail(h)
        native["r"] = r
        return Network(
            name=self.name, input_shape=(r, r, 3), layers=tuple(layers),
            meta={"space": self.name, "resolution": r, "arch": native},
        )

    def operators(self, resolution: int | None = None) -> list[OpSpec]:
        r = self._resolution(None, resolution)
        fixed, h = self._fixed_head(r)
        specs = [layer.spec for layer in fixed]
        for stage in range(N_STAGES):
            for block in range(MAX_DEPTH):
                specs += [self._block(stage, block, h, k, e) for k in KERNELS for e in EXPANDS]
                h = specs[-1].output_shape[0]
        specs += [layer.spec for layer in self._tail(h)]
        return distinct_measurable(specs)


@register_space("ofa_mbv3_w10")
class OfaMbv3W10Space(OfaMbv3Space):
    """OFA MobileNetV3 at width 1.0."""

    description = "Once-for-All MobileNetV3 space, width 1.0"
    width_mult = 1.0


def _int_list(native: dict[str, Any], key: str, length: int, space: str) -> list[int]:
    value = native.get(key)
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ArchError(f"{space}: {key!r} must be a list of {length} integers, got {value!r}")
    return value
