"""Per-slot latency tables of a space's network, compiled from a LUT, and the table latency model.

Which layer depends on which choices (the layout). Both the supernet and the latency
tables need to know, for every layer of the network, the choices its operator depends
on and the operator each joint option of those choices places there. The spaces do not
declare it, so it is probed: a choice ``c`` is a dependency of layer ``l`` when changing
``c`` alone changes ``l``'s spec, from either of two base architectures (all-first and
all-last options; two bases because a removed OFA block hides its kernel). The operator
of every joint option of the dependencies is then read off networks built with those
options, and the whole decomposition is checked against full networks of a few random
architectures. In ``proxyless_mobile`` and ``fbnet`` every block depends on its own
choice only (a layer's shapes depend only on its position: a ``zero``/``skip`` keeps
the shape). In ``ofa_mbv3`` a block depends on its kernel, its expand ratio and its
stage's depth (and on ``r`` when the resolution is a choice).

The tables (:class:`TableLatencyModel`). For every layer, the latency of the operator
each joint option of the layer's choices places there, summed into one table per
distinct set of choices. The latency of an architecture is then
``const + sum_t table_t[arch]``, which equals :func:`latkit.lut.estimate.estimate` on
the architecture's network, and the expected latency under a factorised distribution
``p`` over the options of each choice is

    E[LAT] = const + sum_t sum_{joint options o} table_t[o] * prod_{c in t} p_c[o_c]

exact (the choices are independent) and differentiable in ``p`` (torch, imported only
for that). In ``proxyless_mobile`` and ``fbnet`` every table has one choice and this is
the ProxylessNAS form ``sum_layers sum_ops p_op * LAT_op``; in ``ofa_mbv3`` a block's
table spans its kernel, expand ratio and stage depth. The calibrated variant folds the
device's calibration ``a * sum + b * n_ops + c`` into the tables (it is linear, so
expectations stay exact).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from latkit._version import __version__
from latkit.devices.precision import Precision
from latkit.core.errors import MissingOpsError, StoreError, UsageError
from latkit.lut.calibration import Calibration, describe_fit, load_calibration
from latkit.lut.store import LUT
from latkit.profiler.ops import OpSpec, OpType
from latkit.profiler.spaces.base import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

MAX_JOINT_OPTIONS = 100_000  # bound on the options one layer's dependencies may span (as lutsum had)


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
    deps = _probe(specs_of, bases, n_options, name)
    layer_names = [layer.name for layer in space.network(Arch(name, bases[0]), resolution).layers]
    for layer, d in enumerate(deps):
        joint = math.prod(n_options[c] for c in d)
        if joint > MAX_JOINT_OPTIONS:
            raise UsageError(
                f"space {name!r}: layer {layer_names[layer]} depends on {joint} joint options; "
                "restrict the space (e.g. fewer resolutions)"
            )
    tables = _enumerate(specs_of, deps, n_options, bases[-1])
    slots = tuple(LayerSlot(i, layer_names[i], d, tables[i]) for i, d in enumerate(deps))
    out = Layout(space, resolution, n_options, slots)
    _verify(out, checks)
    return out


def _probe(
    specs_of: Callable[[tuple[int, ...]], list[OpSpec]], bases: list[tuple[int, ...]],
    n_options: tuple[int, ...], name: str,
) -> list[tuple[int, ...]]:  # fmt: skip
    """Each layer's dependencies: the choices whose option alone changes its spec from a base."""
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
    return [tuple(sorted(d)) for d in deps]


def _enumerate(
    specs_of: Callable[[tuple[int, ...]], list[OpSpec]], deps: list[tuple[int, ...]],
    n_options: tuple[int, ...], fill: tuple[int, ...],
) -> list[dict[tuple[int, ...], OpSpec]]:  # fmt: skip
    """Every layer's spec for every joint option of its dependencies.

    The ``t``-th joint option of every layer is read off one network where the
    layers agree on the choices they share (the other choices at ``fill``); a
    layer that disagrees gets a network of its own. A space of independent
    blocks thus needs as many networks as its largest layer has options, not
    one per layer and option.
    """
    combos = [list(itertools.product(*(range(n_options[c]) for c in d))) for d in deps]
    tables: list[dict[tuple[int, ...], OpSpec]] = [{} for _ in deps]
    for t in range(max(len(c) for c in combos)):
        assigned: dict[int, int] = {}
        group, alone = [], []
        for layer, d in enumerate(deps):
            if t >= len(combos[layer]):
                continue
            want = dict(zip(d, combos[layer][t]))
            if all(assigned.get(c, v) == v for c, v in want.items()):
                assigned.update(want)
                group.append(layer)
            else:
                alone.append((layer, want))
        specs = specs_of(_with(fill, assigned))  # type: ignore[arg-type]
        for layer in group:
            tables[layer][combos[layer][t]] = specs[layer]
        for layer, want in alone:
            tables[layer][combos[layer][t]] = specs_of(_with(fill, want))[layer]  # type: ignore[arg-type]
    return tables


@dataclass(frozen=True)
class SlotTables:
    """A layout as flat per-slot key tables, for vectorised LUT sums (LUT-independent).

    Attributes:
        keys: per slot (layer), the op key of each joint option of its
            dependencies, in :func:`itertools.product` order (None: not measurable).
        radix: ``[n_choices, n_slots]`` mixed-radix weights: an architecture's
            joint-option index in slot ``j`` is ``indices @ radix[:, j]``.
        offsets: start of each slot's joint options in the flat tables.
    """

    keys: list[list[str | None]]
    radix: np.ndarray
    offsets: np.ndarray

    @property
    def flat_keys(self) -> list[str | None]:
        """Every slot's keys, concatenated (the layout of the flat latency table)."""
        return [k for slot in self.keys for k in slot]


def slot_tables(layout: Layout) -> SlotTables:
    """``layout``'s per-slot keys and the mixed radix that indexes them."""
    n = layout.n_options
    radix = np.zeros((len(n), len(layout.slots)), dtype=np.int64)
    keys: list[list[str | None]] = []
    for j, slot in enumerate(layout.slots):
        stride = 1
        for c in reversed(slot.deps):  # the last dependency is the least significant digit
            radix[c, j] = stride
            stride *= n[c]
        specs = (slot.specs[combo] for combo in itertools.product(*(range(n[c]) for c in slot.deps)))
        keys.append([s.key if s.measurable else None for s in specs])
    sizes = [len(k) for k in keys]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return SlotTables(keys, radix, offsets)


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


MAX_SHARED_ENUMERATION = 200_000  # joint options of shared choices enumerated for exact min


@dataclass(frozen=True)
class Term:
    """Latency (ms) as a table over the joint options of some choices."""

    deps: tuple[int, ...]
    table: np.ndarray  # shape: n_options of each dep


def lut_precision(lut: LUT, device_uri: str, precision: Precision | None) -> Precision:
    """The precision of ``device_uri``'s rows to read: ``precision``, checked against what the LUT holds.

    None picks the LUT's only precision for the device (fp32 when it holds none).

    Raises:
        UsageError: the LUT holds rows for the device but none at ``precision``,
            or several precisions and ``precision`` is None.
    """
    held = lut.precisions(device_uri)
    if precision is None:
        if len(held) > 1:
            raise UsageError(f"LUT {lut.path} holds {', '.join(p.value for p in held)} rows for {device_uri}; "
                             "choose one with --precision")  # fmt: skip
        return held[0] if held else Precision.FP32
    p = precision
    if held and p not in held:
        raise UsageError(
            f"LUT {lut.path} holds only {', '.join(x.value for x in held)} measurements for {device_uri}, none at "
            f"{p.value}; profile them with `latkit profile --device {device_uri} --precision {p.value} "
            f"--lut {lut.path}` (or search at {held[0].value})"
        )
    return p


class TableLatencyModel:
    """Additive latency tables over a space's choices (LUT-backed, optionally calibrated).

    Build it with :meth:`from_lut`. Implements the search framework's latency
    model (``latency_ms``, ``min_latency``, ``provenance``) and adds
    :meth:`expected_latency` for gradient search.
    """

    differentiable = True

    def __init__(
        self,
        space: SearchSpace,
        const_ms: float,
        terms: Sequence[Term],
        provenance: Mapping[str, object],
        layout: Layout | None = None,
    ) -> None:
        self.space = space
        self.const_ms = float(const_ms)
        self.terms = tuple(terms)
        self.provenance: dict[str, object] = dict(provenance)
        self.layout = layout
        self.n_options = tuple(len(c.options) for c in space.choices())
        self._tensors: list[torch.Tensor] | None = None

    # ---- construction ----

    @classmethod
    def from_lut(
        cls,
        space: SearchSpace,
        lut: LUT,
        device: str | None = None,
        resolution: int | None = None,
        calibrated: bool | None = False,
        layout: Layout | None = None,
        classes: int | None = None,
        precision: Precision | None = None,
    ) -> TableLatencyModel:
        """Tables of ``space`` at ``resolution`` from the LUT's measurements on ``device``.

        Args:
            space: the search space.
            lut: an open LUT holding every operator of the space.
            device: device URI in the LUT (default its only device).
            resolution: input resolution (default the space's).
            calibrated: fold the device's stored calibration into the tables
                (True: it must exist; None: when the device has one at
                ``precision``, else the LUT sum, which the provenance's
                ``calibrated`` and :func:`latency_note` say).
            layout: a precomputed :func:`~latkit.lut.tables.build_layout`.
            classes: the deployed classifier's output count, when it is not the
                space's (a network trained on a 10-class set); the LUT must hold
                that classifier.
            precision: the rows to read (fp32, fp16, int8); None: the only precision
                the LUT holds for the device. Rows of other precisions are never mixed in.

        Raises:
            UsageError: the LUT holds no rows at ``precision`` for the device, or
                several precisions and none was chosen.
            MissingOpsError: the LUT lacks operators the space can place.
            StoreError: ``calibrated`` but the device has no calibration.
        """
        uri = lut.resolve_device(device)
        prec = lut_precision(lut, uri, precision)
        layout = layout or build_layout(space, resolution)
        if classes is not None:
            layout = _with_classes(layout, classes)
        keys = [s.key for slot in layout.slots for s in slot.specs.values() if s.measurable]
        ms = _lookup(lut, uri, prec, keys, space, layout, classes)
        cal = load_calibration(lut, uri, precision=prec) if calibrated is None else (
            _stored_calibration(lut, uri, prec) if calibrated else None)
        const, terms = _fold(layout, ms, cal)
        prov = {
            "kind": "lut-calibrated" if cal else "lut",
            "calibrated": cal is not None,
            "lut": str(lut.path),
            "device": uri,
            "precision": prec.value,
            "resolution": layout.resolution,
            "n_ops": len(set(keys)),
            "classes": classes,
            "calibration": cal.to_dict() if cal else None,
            "lut_meta": {k: v for k, v in lut.meta.items() if k != "created_at"},
            "latkit_version": __version__,
        }
        return cls(space, const, terms, prov, layout)

    # ---- evaluation ----

    def latency_ms(self, arch: Arch) -> float:
        """Latency of ``arch`` in ms (LUT sum, or calibrated when built so)."""
        idx = self.space.check(arch).indices
        return self.const_ms + float(
            sum(t.table[tuple(idx[c] for c in t.deps)] for t in self.terms)
        )

    def latency_ms_batch(self, archs: Sequence[Arch]) -> list[float]:
        """:meth:`latency_ms` of several architectures."""
        return [self.latency_ms(a) for a in archs]

    def expected_latency(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``E[LAT]`` (ms) under independent categoricals ``probs[c]`` (one per choice).

        Differentiable in ``probs``; float64 tables are cast to ``probs``' dtype.
        """
        if len(probs) != len(self.n_options):
            raise UsageError(f"expected {len(self.n_options)} probability vectors, got {len(probs)}")
        import torch

        dtype = probs[0].dtype
        if self._tensors is None or self._tensors[0].dtype != dtype:
            self._tensors = [torch.as_tensor(t.table, dtype=dtype) for t in self.terms]
        total = torch.tensor(self.const_ms, dtype=dtype)
        for term, table in zip(self.terms, self._tensors):
            t = table
            for c in term.deps:  # contract one axis at a time: sum_o p_c[o] * t[o, ...]
                p = probs[c].reshape(-1, *([1] * (t.dim() - 1)))
                t = (p * t).sum(0)
            total = total + t
        return total

    # ---- extremes ----

    def _extreme(self, sign: float) -> tuple[float, Arch]:
        counts: dict[int, int] = {}
        for t in self.terms:
            for c in t.deps:
                counts[c] = counts.get(c, 0) + 1
        shared = sorted(c for c, k in counts.items() if k > 1)
        n_joint = math.prod(self.n_options[c] for c in shared)
        if n_joint > MAX_SHARED_ENUMERATION:
            raise UsageError(
                f"{self.space.name}: {n_joint} joint options of shared choices; restrict the space"
            )
        best: tuple[float, tuple[int, ...]] | None = None
        for combo in itertools.product(*(range(self.n_options[c]) for c in shared)):
            fixed = dict(zip(shared, combo))
            idx = [0] * len(self.n_options)
            for c, o in fixed.items():
                idx[c] = o
            total = self.const_ms
            for t in self.terms:
                sl = tuple(fixed.get(c, slice(None)) for c in t.deps)
                sub = np.asarray(t.table[sl])
                free = [c for c in t.deps if c not in fixed]
                flat = int(np.argmin(sign * sub)) if sub.ndim else 0
                total += float(sub.reshape(-1)[flat]) if sub.ndim else float(sub)
                if free:
                    for c, o in zip(free, np.unravel_index(flat, sub.shape)):
                        idx[c] = int(o)
            if best is None or sign * total < sign * best[0]:
                best = (total, tuple(idx))
        assert best is not None
        return best[0], Arch(self.space.name, best[1])

    def min_latency(self, space: SearchSpace | None = None) -> tuple[float, Arch]:
        """The smallest latency reachable and an architecture that reaches it (exact)."""
        return self._extreme(1.0)

    def max_latency(self) -> tuple[float, Arch]:
        """The largest latency reachable and an architecture that reaches it (exact)."""
        return self._extreme(-1.0)

    def min_latency_ms(self) -> float:
        """The smallest latency reachable (ms)."""
        return self._extreme(1.0)[0]

    def fastest_full(self) -> Arch:
        """The fastest architecture among those with the most operators (no layer skipped).

        The opposite corner to :meth:`min_latency` in (latency, operator count):
        a calibration that never sees it extrapolates there. Call it on an
        uncalibrated model, where every operator's entry is positive.
        """
        big = 1e6 * (1.0 + max(float(np.abs(t.table).max()) for t in self.terms))
        terms = [Term(t.deps, np.where(t.table > 0, t.table - big, 0.0)) for t in self.terms]
        return TableLatencyModel(self.space, 0.0, terms, self.provenance, self.layout)._extreme(1.0)[1]



def _lookup(lut: LUT, uri: str, prec: Precision, keys: list[str], space: SearchSpace, layout: Layout,
            classes: int | None) -> dict[str, float]:  # fmt: skip
    """``lut.lookup`` of ``keys``; a missing resized classifier gets the command that profiles it.

    Raises:
        MissingOpsError: operators are missing (only the classifier: say how to add it).
    """
    try:
        return lut.lookup(keys, uri, precision=prec)
    except MissingOpsError as exc:
        heads = {s.key for s in layout.slots[-1].specs.values()}
        if classes is None or not set(exc.missing) <= heads:
            asked = layout.resolution or getattr(space, "default_resolution", None)
            held = _resolutions_held(lut, uri, prec, space, asked)
            if held:
                raise _at_other_resolution(exc, lut, uri, space, asked, held) from None
            raise
        res = f" --resolution {layout.resolution}" if layout.resolution else ""
        err = MissingOpsError(exc.missing, lut=f"{lut.path} ({uri}, {prec.value})")
        err.args = (f"LUT {lut.path} has no {classes}-class classifier for {uri} at {prec.value} (the network "
                    f"deployed has {classes} classes); add it with `latkit profile --space {space.name}{res} "
                    f"--classes {classes} --device {uri} --precision {prec.value} --lut {lut.path}` "
                    "(one operator)",)  # fmt: skip
        raise err from None


def _resolutions_held(lut: LUT, uri: str, prec: Precision, space: SearchSpace, asked: int | None) -> list[int]:
    """The input resolutions other than ``asked`` at which the LUT holds every operator of ``space``
    (read off the 3-channel input shapes of its keys)."""
    from latkit.core.errors import LatkitError
    from latkit.lut.estimate import input_resolutions

    held = []
    for res in sorted(input_resolutions(lut, uri, prec) - {asked}):
        try:
            ops = sorted({spec.key for spec in space.operators(res) if spec.measurable})
        except (LatkitError, ValueError):  # the space does not take this resolution
            continue
        if ops and len(lut.lookup(ops, uri, strict=False, precision=prec)) == len(ops):
            held.append(res)
    return held


def _at_other_resolution(exc: MissingOpsError, lut: LUT, uri: str, space: SearchSpace, asked: int | None,
                         held: list[int]) -> MissingOpsError:  # fmt: skip
    """The missing-operators error for a LUT measured at another resolution: it names the one to ask for."""
    err = MissingOpsError(exc.missing, lut=str(lut.path))
    shown = ", ".join(map(str, held))
    err.args = (f"LUT {lut.path} holds {space.name} on {uri} at resolution {shown}, not {asked} "
                f"({len(exc.missing)} operator(s) missing at {asked}); search at its resolution with "
                f"`-r {held[0]}` (`--resolution {held[0]}`; resolution={held[0]} in Python), or profile "
                f"{asked} with `latkit profile --space {space.name} --resolution {asked} --device {uri} "
                f"--lut {lut.path}`",)  # fmt: skip
    return err


def latency_note(provenance: Mapping[str, object]) -> str:
    """What a table model's figures are, in one line: calibrated (with its fit) or the raw LUT sum.

    An uncalibrated figure names the command that calibrates it: a LUT sum prices
    every operator in a model of its own, which on a CPU is typically 1.3-3x the
    whole network's latency.
    """
    classes = provenance.get("classes")
    head = f", classifier with {classes} classes" if classes else ""
    where = f"{provenance.get('device')} at {provenance.get('precision')}"
    cal = provenance.get("calibration")
    if isinstance(cal, Mapping):
        return f"calibrated end-to-end estimate for {where} ({describe_fit(cal)}){head}"
    return (f"UNCALIBRATED sum of isolated-operator latencies for {where}{head}: whole networks usually run "
            f"faster; run `latkit lut calibrate --lut {provenance.get('lut')} --device {provenance.get('device')} "
            f"--precision {provenance.get('precision')} --space ...` for end-to-end figures")  # fmt: skip


def _stored_calibration(lut: LUT, uri: str, prec: Precision) -> Calibration:
    """The device's calibration at ``prec``.

    Raises:
        StoreError: it has none.
    """
    cal = load_calibration(lut, uri, precision=prec)
    if cal is None:
        raise StoreError(
            f"LUT {lut.path} has no {prec.value} calibration for {uri}; run `latkit lut calibrate "
            f"--precision {prec.value}` or search with the uncalibrated LUT"
        )
    return cal


def _fold(layout: Layout, ms: Mapping[str, float], cal: Calibration | None) -> tuple[float, list[Term]]:
    """The constant and one table per distinct set of choices, each entry ``a * ms + b`` (``c`` in the constant)."""
    a, b, c = (cal.a, cal.b, cal.c) if cal else (1.0, 0.0, 0.0)
    const, tables = c, {}
    for slot in layout.slots:
        shape = tuple(layout.n_options[d] for d in slot.deps)
        table = np.zeros(shape, dtype=np.float64)
        for combo, spec in slot.specs.items():
            if spec.measurable:
                table[combo] = a * ms[spec.key] + b
        if not slot.deps:
            const += float(table)
        elif slot.deps in tables:
            tables[slot.deps] = tables[slot.deps] + table
        else:
            tables[slot.deps] = table
    return const, [Term(d, t) for d, t in tables.items()]


def _with_classes(layout: Layout, classes: int) -> Layout:
    """``layout`` with its classifier resized to ``classes`` outputs.

    Raises:
        UsageError: ``classes`` < 1 or the network does not end in a fixed classifier.
    """
    last = layout.slots[-1]
    if classes < 1 or last.deps or any(s.op_type is not OpType.LOGITS for s in last.specs.values()):
        raise UsageError(f"cannot give {layout.space.name}'s classifier {classes} outputs")
    specs = {k: replace(s, output_shape=(1, 1, classes)) for k, s in last.specs.items()}
    return replace(layout, slots=layout.slots[:-1] + (LayerSlot(last.index, last.name, last.deps, specs),))
