"""Weight-sharing supernets: every candidate's weights, one path per forward.

A :class:`Supernet` holds one :class:`MixedLayer` per layer of the space's
network (see :mod:`latkit.lut.tables`). A mixed layer keeps a module for every
distinct operator its choices can place there (built by
:func:`latkit.profiler.build.build_op`); ``zero`` / ``skip`` layers are the
identity, as in the space's own networks. :meth:`Supernet.forward` runs the one
sub-network an architecture picks, so a step costs the memory and compute of
that sub-network only.

:meth:`Supernet.forward_gated` is ProxylessNAS's binary-gate forward: in each
mixed layer one path is active and its output is multiplied by a gate of value
1, so ``dL/dg_active = <dL/dout, out_active>``; for the second sampled path
the same inner product is computed during the backward pass, from a no-grad
forward of that path, so the second path never keeps activations alive. Both
are read in a gradient hook on the layer output; no gate tensor is stored.

Candidates of one layer share weights (as Once-for-All's elastic kernel and
width do): a candidate whose parameters all fit inside a larger candidate's
(same names, every dimension no larger) runs on slices of that candidate's
tensors: the leading channels and the centred k×k window of a larger kernel.
Only the largest candidate's tensors are trained; each candidate keeps its own
BN statistics. Without sharing, each candidate trains in about one step in
seven and the 21-layer ``proxyless_mobile_w05`` supernet never learns (loss
stays at chance on the digits); with sharing, every step trains the common core
of every candidate.
The candidates' own copies of shared tensors are refreshed on
:meth:`MixedLayer.sync` (before every ``state_dict`` and :meth:`Supernet.extract`).

The classifier is resized to the dataset's class count; the LUT latency of the
space's own classifier is unaffected (latency and accuracy models are separate).
Different resolutions of one space (OFA's ``r``) share weights: the input is
resized to the architecture's resolution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from latkit.profiler.build import build_op
from latkit.profiler.ops import OpSpec, OpType
from latkit.profiler.spaces.base import Arch, SearchSpace
from latkit.lut.tables import LayerSlot, Layout, build_layout

IDENTITY = "identity"


def module_id(spec: OpSpec) -> str:
    """A shape-agnostic identity of an operator: what its weights depend on."""
    if not spec.measurable:
        return IDENTITY
    return "_".join(
        str(v)
        for v in (
            spec.op_type.value, spec.input_shape[2], spec.output_shape[2], spec.kernel,
            spec.stride, spec.expand_ratio, spec.mid_channels, spec.groups, int(spec.se),
            spec.act.value, int(spec.idskip), int(bool(spec.expand_conv)),
        )
    ).replace(".", "p")  # fmt: skip


def _with_classes(spec: OpSpec, n_classes: int | None) -> OpSpec:
    if spec.op_type is OpType.LOGITS and n_classes is not None:
        return dataclasses.replace(spec, output_shape=(1, 1, n_classes))
    return spec


def reset_bn(module: nn.Module) -> None:
    """Identity BN (unit scale, zero shift and statistics) throughout ``module``.

    build_op draws random BN statistics and affines (to exercise BN folding on
    export); training starts from the usual identity BN instead.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


class MixedLayer(nn.Module):
    """One layer of the supernet: a module per distinct candidate operator.

    Args:
        slot: the layer's dependencies and specs.
        n_classes: classifier width, if this is the classifier.
        seed: weight seed (each candidate gets its own offset).
        share_weights: run candidates that fit inside a larger one on its
            tensors' slices (see the module docstring).
    """

    def __init__(self, slot: LayerSlot, n_classes: int | None, seed: int, share_weights: bool = True) -> None:
        super().__init__()
        self.deps = slot.deps
        self.choice_to_id: dict[tuple[int, ...], str] = {}
        self.candidates = nn.ModuleDict()
        for combo, spec in slot.specs.items():
            mid = module_id(spec)
            self.choice_to_id[combo] = mid
            if mid not in self.candidates:
                spec = _with_classes(spec, n_classes)
                module = nn.Identity() if mid == IDENTITY else build_op(spec, seed + len(self.candidates))
                reset_bn(module)
                self.candidates[mid] = module.train()
        self.input_resolution = {c: s.input_shape[0] for c, s in slot.specs.items()}
        self.shares: dict[str, Share] = _plan_sharing(self.candidates) if share_weights else {}
        for mid, share in self.shares.items():
            params = dict(self.candidates[mid].named_parameters())
            for name in share.slices:
                params[name].requires_grad_(False)  # a stale copy: the master's slice is trained
        if self.shares:
            self.sync()
            self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module.sync())

    def pick(self, indices: Sequence[int]) -> nn.Module:
        """The candidate an architecture (its option indices) selects."""
        return self.candidates[self.choice_to_id[tuple(indices[c] for c in self.deps)]]

    def option_module(self, option: int) -> nn.Module:
        """The candidate of option ``option`` of a single-choice layer (its own copy of shared tensors)."""
        return self.candidates[self.choice_to_id[(option,)]]

    def run(self, mid: str, x: torch.Tensor) -> torch.Tensor:
        """Candidate ``mid`` applied to ``x``, on the shared tensors where it shares."""
        module = self.candidates[mid]
        share = self.shares.get(mid)
        if share is None:
            return module(x)
        master = dict(self.candidates[share.master].named_parameters())
        return functional_call(module, {n: master[n][s] for n, s in share.slices.items()}, (x,))

    def run_option(self, option: int, x: torch.Tensor) -> torch.Tensor:
        """:meth:`run` for option ``option`` of a single-choice layer."""
        return self.run(self.choice_to_id[(option,)], x)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the shared slices into the candidates' own tensors (for saving and extraction)."""
        for mid, share in self.shares.items():
            master = dict(self.candidates[share.master].named_parameters())
            for name, param in self.candidates[mid].named_parameters():
                if name in share.slices:
                    param.copy_(master[name][share.slices[name]])

    def forward(self, x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:  # noqa: D102
        return self.run(self.choice_to_id[tuple(indices[c] for c in self.deps)], x)


@dataclass(frozen=True)
class Share:
    """A candidate that runs on slices of another candidate's (``master``'s) parameters."""

    master: str
    slices: dict[str, tuple[slice, ...]]


def _window(shape: Sequence[int], big: Sequence[int]) -> tuple[slice, ...] | None:
    """Leading channels (first two dims), centred window (the rest); None if ``shape`` does not fit."""
    if len(shape) != len(big) or any(n > m for n, m in zip(shape, big)):
        return None
    out = []
    for d, (n, m) in enumerate(zip(shape, big)):
        if d < 2:
            out.append(slice(0, n))
        elif (m - n) % 2:
            return None  # no centred window
        else:
            out.append(slice((m - n) // 2, (m - n) // 2 + n))
    return tuple(out)


def _wiring(module: nn.Module) -> list[tuple[str, str]]:
    """How a candidate connects channels: per convolution, dense, depthwise or its group count.

    Grouped convolutions and channel shuffles map channels differently from a
    dense candidate, so slices of its tensors would mean other channels.
    """
    out = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            out.append((name, "dw" if m.groups == m.in_channels > 1 else f"g{m.groups}"))
        elif not list(m.children()) and not list(m.parameters(recurse=False)):
            out.append((name, type(m).__name__))
    return out


def _plan_sharing(candidates: nn.ModuleDict) -> dict[str, Share]:
    """Which candidates run on which larger candidate's tensors.

    Candidates are visited largest first; each shares with the first master
    whose parameters it fits inside entirely (same names), or becomes a master.
    """
    sizes = {mid: sum(p.numel() for p in m.parameters()) for mid, m in candidates.items()}
    sized = sorted(((n, mid) for mid, n in sizes.items() if n), key=lambda t: -t[0])
    masters: list[str] = []
    shares: dict[str, Share] = {}
    for _, mid in sized:
        own = {n: tuple(p.shape) for n, p in candidates[mid].named_parameters()}
        for master in masters:
            big = {n: tuple(p.shape) for n, p in candidates[master].named_parameters()}
            if set(own) != set(big) or _wiring(candidates[mid]) != _wiring(candidates[master]):
                continue
            slices = {n: _window(shape, big[n]) for n, shape in own.items()}
            if all(s is not None for s in slices.values()):
                shares[mid] = Share(master, slices)  # type: ignore[arg-type]
                break
        else:
            masters.append(mid)
    return shares


@dataclass
class GateSample:
    """The two sampled paths of one mixed layer in a gated forward.

    ``active_grad`` and ``other_grad`` are ``dL/dg`` of the two binary gates,
    filled in during the backward pass.
    """

    active: int
    other: int | None
    active_grad: float = 0.0
    other_grad: float = 0.0


class Supernet(nn.Module):
    """All candidates of ``space`` at ``resolution``, one path per forward.

    Args:
        space: the search space (any space with an operator-level network).
        n_classes: classes of the dataset.
        resolution: input resolution (``None``: the space's default, or the
            architecture's own ``r`` in OFA).
        seed: weight seed.
        layout: a precomputed layout (built when omitted).
        share_weights: candidates of a layer share their common weights (the
            default; ``False`` gives every candidate its own, for comparison).
    """

    def __init__(
        self,
        space: SearchSpace,
        n_classes: int,
        resolution: int | None = None,
        seed: int = 0,
        layout: Layout | None = None,
        share_weights: bool = True,
    ) -> None:
        super().__init__()
        self.space = space
        self.layout = layout or build_layout(space, resolution)
        last = len(self.layout.slots) - 1
        self.layers = nn.ModuleList(
            MixedLayer(slot, n_classes if i == last else None, seed + 1000 * i, share_weights)
            for i, slot in enumerate(self.layout.slots)
        )

    def _resize(self, x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        first = self.layers[0]
        r = first.input_resolution[tuple(indices[c] for c in first.deps)]
        if x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Logits of the sub-network ``arch`` picks."""
        idx = arch.indices
        x = self._resize(x, idx)
        for layer in self.layers:
            x = layer(x, idx)
        return x

    def path_modules(self, arch: Arch) -> list[nn.Module]:
        """The modules of the sub-network ``arch`` picks, in order (their BN layers are the ones it uses)."""
        return [layer.pick(arch.indices) for layer in self.layers]

    def extract(self, arch: Arch) -> nn.Sequential:
        """A standalone copy of the sub-network (weights copied, not shared)."""
        import copy

        for layer in self.layers:
            layer.sync()
        modules = [copy.deepcopy(m) for m in self.path_modules(arch)]
        for m in modules:
            m.requires_grad_(True)
        return nn.Sequential(*modules)

    def forward_gated(
        self, x: torch.Tensor, base: Arch, owners: dict[int, int], samples: dict[int, GateSample]
    ) -> torch.Tensor:
        """Binary-gate forward (ProxylessNAS): ``samples[c]`` for each gated choice ``c``.

        Args:
            x: input batch.
            base: the architecture of the active paths (``base.indices[c]`` must
                equal ``samples[c].active``).
            owners: choice index -> layer index of the single-choice layers.
            samples: choice index -> its two sampled paths and gate.
        """
        by_layer = {owners[c]: (c, s) for c, s in samples.items()}
        x = self._resize(x, base.indices)
        for i, layer in enumerate(self.layers):
            if i not in by_layer:
                x = layer(x, base.indices)
                continue
            if not x.requires_grad:
                # from the first gated layer on, outputs must carry gradients (the gate
                # gradients are read off them) even when the weights are frozen; the
                # layers before it need no backward and keep no activations
                x = x.detach().requires_grad_(True)
            _, sample = by_layer[i]
            out = layer.run_option(sample.active, x)
            other = None
            if sample.other is not None:  # only its output is kept, not its activations
                with torch.no_grad():
                    other = layer.run_option(sample.other, x)
            out.register_hook(_gate_hook(out.detach(), other, sample))
            x = out
        return x


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.vdot(a.reshape(-1), b.reshape(-1)))


def _gate_hook(out: torch.Tensor, other: torch.Tensor | None, sample: GateSample):  # noqa: ANN202
    # The gate g multiplies a path's output and equals 1 (active) or 0, so
    # dL/dg = <dL/dout, path(x)>. The inactive path ran in the forward pass
    # without keeping its activations (its intermediate tensors lived only
    # while it ran, before the backward pass holds gradients), and no gate
    # tensor enters the graph.
    def hook(grad: torch.Tensor) -> None:
        sample.active_grad = _dot(grad, out)
        if other is not None:
            sample.other_grad = _dot(grad, other)

    return hook
