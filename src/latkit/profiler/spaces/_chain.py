"""The stage-chain layout that the FBNet and ProxylessNAS spaces share.

Both are a fixed head, then stages of searchable block positions (*slots*), then a
fixed tail. A stage's first block takes the previous stage's width and the
stage's stride; its other blocks keep the stage's width at stride 1. Each slot
picks one block option by name; a space says what spec an option is in a slot
at a given input size (its ``block(slot, op, h)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from latkit.profiler.ops import OpSpec
from latkit.profiler.spaces._util import conv_out
from latkit.profiler.spaces.base import Layer


@dataclass(frozen=True)
class Slot:
    """A searchable block position: where it sits and how it is wired."""

    name: str
    in_channels: int
    out_channels: int
    stride: int
    first: bool  # a stage's first block (the others keep their shape: a shortcut fits)


Block = Callable[[Slot, str, int], OpSpec]


def stage_slots(in_channels: int, stages: Iterable[tuple[int, int, int]], first_stage: int = 0) -> list[Slot]:
    """The slots of ``stages``, each ``(width, depth, first stride)``, named ``stage<s>.block<b>``.

    Args:
        in_channels: the width entering the first stage.
        stages: the stages in order.
        first_stage: the number of the first stage in the slot names.
    """
    slots, cin = [], in_channels
    for stage, (width, depth, stride) in enumerate(stages, start=first_stage):
        for block in range(depth):
            first = block == 0
            name = f"stage{stage}.block{block}"
            slots.append(Slot(name, cin if first else width, width, stride if first else 1, first))
        cin = width
    return slots


def place_blocks(
    slots: Sequence[Slot], ops: Sequence[str], block: Block, h: int, prefix: str, start: int
) -> tuple[list[Layer], int]:
    """``ops`` placed in ``slots`` in turn from input size ``h``.

    Returns:
        The layers, named ``<prefix><start>``, ``<prefix><start + 1>``, ..., and
        the spatial size after the last.
    """
    layers = []
    for i, (slot, op) in enumerate(zip(slots, ops), start=start):
        spec = block(slot, op, h)
        layers.append(Layer(f"{prefix}{i}", spec))
        h = spec.output_shape[0]
    return layers, h


def every_option(
    slots: Sequence[Slot], options: Sequence[Sequence[str]], block: Block, h: int
) -> tuple[list[OpSpec], int]:
    """Every option of every slot, each at the input size its slot sees; and the size after them."""
    specs: list[OpSpec] = []
    for slot, opts in zip(slots, options):
        specs += [block(slot, op, h) for op in opts]
        h = conv_out(h, slot.stride)
    return specs, h
