"""Which layer of a space's network depends on which choices.

Both the supernet and the search latency model need to know, for every layer of
the network, the choices its operator depends on and the operator each joint
option of those choices places there. The spaces do not declare it, so it is
probed: a choice ``c`` is a dependency of layer ``l`` when changing ``c`` alone
changes ``l``'s spec, from either of two base architectures (all-first and
all-last options; two bases because a removed OFA block hides its kernel).
The operator of every joint option of the dependencies is then read off
networks built with those options, and the whole decomposition is checked
against full networks of a few random architectures.

In ``proxyless_mobile`` and ``fbnet`` every block depends on its own choice only
(a layer's shapes depend only on its position: a ``zero``/``skip`` keeps the
shape). In ``ofa_mbv3`` a block depends on its kernel, its expand ratio and its
stage's depth (and on ``r`` when the resolution is a choice).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from latkit.errors import UsageError
from latkit.profiler.ops import OpSpec
from latkit.profiler.spaces.base import Arch, SearchSpace

MAX_JOINT_OPTIONS = 4096  # bound on the options one layer's dependencies may span


@dataclass(frozen=True)
class LayerSlot:
    """One layer of the network: its dependencies and the spec per joint option."""

    index: int
    name: str
    deps: tuple[int, ...]  # choice indices, ascending; empty for a fixed layer
    specs: dict[tuple[int, ...], OpSpec]  # joint option indices of ``deps`` -> spec

    def spec_for(self, arch: Arch) -> OpSpec:
        """The operator ``arch`` places in this layer."""
        return self.specs[tuple(arch.indices[c] for c in self.deps)]


@dataclass(frozen=True)
class Layout:
    """A space's network at one resolution, decomposed layer by layer."""

    space: SearchSpace
    resolution: int | None
    n_options: tuple[int, ...]
    slots: tuple[LayerSlot, ...]

    def specs(self, arch: Arch) -> list[OpSpec]:
        """The ordered layer specs of ``arch`` (equal to ``space.network(arch).specs``)."""
        return [slot.spec_for(arch) for slot in self.slots]

    def single_choice_slots(self) -> dict[int, LayerSlot]:
        """Choice index -> its layer, when every choice drives exactly one layer alone.

        Raises:
            UsageError: some layer depends on several choices, or a choice on
                several layers (e.g. OFA's depth choices).
        """
        owned: dict[int, LayerSlot] = {}
        for slot in self.slots:
            if len(slot.deps) > 1 or (slot.deps and slot.deps[0] in owned):
                raise UsageError(
                    f"space {self.space.name!r} has layers that depend on several choices; "
                    "use a space whose layers each follow one choice (proxyless_mobile, fbnet)"
                )
            if slot.deps:
                owned[slot.deps[0]] = slot
        return owned


def _with(base: tuple[int, ...], assign: dict[int, int]) -> Arch | tuple[int, ...]:
    idx = list(base)
    for c, o in assign.items():
        idx[c] = o
    return tuple(idx)


def build_layout(space: SearchSpace, resolution: int | None = None, checks: int = 8) -> Layout:
    """Probe ``space``'s layer dependencies at ``resolution`` (see the module docstring).

    Args:
        space: a space with an operator-level network.
        resolution: input resolution passed to ``space.network`` (``None``: the
            space's default, or the arch's own ``r`` in OFA).
        checks: random architectures the decomposition is verified on.

    Raises:
        UsageError: the space's layers do not decompose per choice (the check
            failed), or a layer depends on too many joint options.
    """
    n_options = tuple(len(c.options) for c in space.choices())
    name = space.name

    def specs_of(indices: tuple[int, ...]) -> list[OpSpec]:
        return space.network(Arch(name, indices), resolution).specs

    bases = [tuple(0 for _ in n_options), tuple(n - 1 for n in n_options)]
    base_specs = [specs_of(b) for b in bases]
    n_layers = len(base_specs[0])
    deps: list[set[int]] = [set() for _ in range(n_layers)]
    for base, ref in zip(bases, base_specs):
        for c, n in enumerate(n_options):
            for o in range(n):
                if o == base[c]:
                    continue
                probe = specs_of(_with(base, {c: o}))  # type: ignore[arg-type]
                if len(probe) != n_layers:
                    raise UsageError(f"space {name!r}: networks have varying layer counts")
                for layer, (a, b) in enumerate(zip(probe, ref)):
                    if a != b:
                        deps[layer].add(c)
    layer_names = [layer.name for layer in space.network(Arch(name, bases[0]), resolution).layers]
    slots = []
    for layer in range(n_layers):
        d = tuple(sorted(deps[layer]))
        joint = math.prod(n_options[c] for c in d)
        if joint > MAX_JOINT_OPTIONS:
            raise UsageError(
                f"space {name!r}: layer {layer_names[layer]} depends on {joint} joint options; "
                "restrict the space (e.g. fewer resolutions)"
            )
        table = {}
        for combo in itertools.product(*(range(n_options[c]) for c in d)):
            table[combo] = specs_of(_with(bases[-1], dict(zip(d, combo))))[layer]  # type: ignore[arg-type]
        slots.append(LayerSlot(layer, layer_names[layer], d, table))
    out = Layout(space, resolution, n_options, tuple(slots))
    _verify(out, checks)
    return out


def _verify(layout: Layout, checks: int) -> None:
    rng = np.random.default_rng(12345)
    space = layout.space
    for _ in range(checks):
        arch = space.sample(rng)
        if layout.specs(arch) != space.network(arch, layout.resolution).specs:
            raise UsageError(
                f"space {space.name!r}: its layers do not decompose per choice; the search "
                "latency model and supernet cannot represent it"
            )
