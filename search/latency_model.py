"""Latency models for search: LUT tables, calibrated tables, predictors.

A :class:`TableLatencyModel` holds, for every layer of the space's network, the
latency of the operator each joint option of the layer's choices places there
(see :mod:`latkit.search.layout`), summed into one table per distinct set of
choices. The latency of an architecture is then ``const + sum_t table_t[arch]``,
which equals :func:`latkit.lut.estimate.estimate` on the architecture's network,
and the expected latency under a factorised distribution ``p`` over the options
of each choice is

    E[LAT] = const + sum_t sum_{joint options o} table_t[o] * prod_{c in t} p_c[o_c]

exact (the choices are independent) and differentiable in ``p``. In
``proxyless_mobile`` and ``fbnet`` every table has one choice and this is the
ProxylessNAS form ``sum_layers sum_ops p_op * LAT_op``; in ``ofa_mbv3`` a block's
table spans its kernel, expand ratio and stage depth.

The calibrated variant folds the device's calibration ``a * sum + b * n_ops + c``
into the tables (it is linear, so expectations stay exact). A
:class:`PredictorLatencyModel` wraps any latency predictor: it is not
differentiable, so its :meth:`~PredictorLatencyModel.expected_latency` is a
Monte-Carlo estimate over sampled architectures whose gradient is the
score-function (REINFORCE) estimate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latkit._version import __version__
from latkit.devices.precision import Precision, parse_precision
from latkit.errors import UsageError
from latkit.lut.calibration import load_calibration
from latkit.lut.store import LUT
from latkit.profiler.ops import OpType
from latkit.profiler.spaces.base import Arch, SearchSpace
from latkit.search.layout import LayerSlot, Layout, build_layout

MAX_SHARED_ENUMERATION = 200_000  # joint options of shared choices enumerated for exact min


@dataclass(frozen=True)
class Term:
    """Latency (ms) as a table over the joint options of some choices."""

    deps: tuple[int, ...]
    table: np.ndarray  # shape: n_options of each dep


def lut_precision(lut: LUT, device_uri: str, precision: str | Precision | None) -> Precision:
    """The precision of ``device_uri``'s rows to read: ``precision``, checked against what the LUT holds.

    None picks the LUT's only precision for the device (fp32 when it holds none).

    Raises:
        UsageError: the LUT holds rows for the device but none at ``precision``,
            or several precisions and ``precision`` is None.
    """
    held = [parse_precision(p) for p in lut.precisions(device_uri)]
    if precision is None:
        if len(held) > 1:
            raise UsageError(f"LUT {lut.path} holds {', '.join(p.value for p in held)} rows for {device_uri}; "
                             "choose one with --precision")  # fmt: skip
        return held[0] if held else Precision.FP32
    p = parse_precision(precision)
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
        provenance: dict[str, Any],
        layout: Layout | None = None,
    ) -> None:
        self.space = space
        self.const_ms = float(const_ms)
        self.terms = tuple(terms)
        self.provenance = dict(provenance)
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
        calibrated: bool = False,
        layout: Layout | None = None,
        classes: int | None = None,
        precision: str | Precision | None = None,
    ) -> TableLatencyModel:
        """Tables of ``space`` at ``resolution`` from the LUT's measurements on ``device``.

        Args:
            space: the search space.
            lut: an open LUT holding every operator of the space.
            device: device URI in the LUT (default its only device).
            resolution: input resolution (default the space's).
            calibrated: fold the device's stored calibration into the tables.
            layout: a precomputed :func:`~latkit.search.layout.build_layout`.
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
        ms = lut.lookup(keys, uri, precision=prec)
        cal = load_calibration(lut, uri, precision=prec) if calibrated else None
        if calibrated and cal is None:
            from latkit.errors import StoreError

            raise StoreError(
                f"LUT {lut.path} has no {prec.value} calibration for {uri}; run `latkit lut calibrate "
                f"--precision {prec.value}` or search with the uncalibrated LUT"
            )
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
        terms = [Term(d, t) for d, t in tables.items()]
        prov = {
            "kind": "lut-calibrated" if cal else "lut",
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

    def calibration_archs(self, n: int, rng: np.random.Generator, pool_size: int = 200) -> list[Arch]:
        """The architectures a calibration measures end to end: ``n`` spread, plus one corner.

        ``n`` networks spread evenly over the space's latency range, extremes
        included, so the fit interpolates wherever a search lands; and the
        fastest network with every layer present (:meth:`fastest_full`), the
        other corner in (LUT sum, op count): without it the fit extrapolates to
        networks of many small operators (one noisy measurement of the largest
        network once gave those networks 40% of their real latency). Call it on
        an uncalibrated model.

        Args:
            n: spread networks (at least 2: the fastest and the slowest).
            rng: draws the random architectures the spread ones are picked from.
            pool_size: how many random architectures to pick from.
        """
        if n < 2:
            raise UsageError(f"a calibration needs at least 2 spread networks, got {n}")
        pool = [self.min_latency(self.space)[1], self.max_latency()[1]]
        pool += [self.space.sample(rng) for _ in range(pool_size)]
        pool.sort(key=self.latency_ms)
        picks = np.linspace(0, len(pool) - 1, n).round().astype(int)
        return list(dict.fromkeys([pool[i] for i in picks.tolist()] + [self.fastest_full()]))


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


class PredictorLatencyModel:
    """A latency predictor (``predict(X) -> ms``) as a search latency model.

    Args:
        space: the search space.
        predictor: anything with ``predict(X) -> np.ndarray`` (ms).
        featurize: architectures -> the predictor's feature matrix; default the
            space's one-hot :meth:`~latkit.profiler.spaces.base.SearchSpace.encode`.
        provenance: recorded in ``arch.json`` (e.g. the predictor file).
        mc_samples: architectures sampled per :meth:`expected_latency` call.
        seed: seed of the sampling generator.
    """

    differentiable = False

    def __init__(
        self,
        space: SearchSpace,
        predictor: Any,
        featurize: Callable[[Sequence[Arch]], np.ndarray] | None = None,
        provenance: dict[str, Any] | None = None,
        mc_samples: int = 16,
        seed: int = 0,
    ) -> None:
        self.space, self.predictor = space, predictor
        self.featurize = featurize or (lambda archs: np.stack([space.encode(a) for a in archs]))
        self.provenance = {
            "kind": "predictor",
            "predictor": getattr(predictor, "name", type(predictor).__name__),
            "latkit_version": __version__,
            **(provenance or {}),
        }
        self.mc_samples = int(mc_samples)
        self.rng = np.random.default_rng(seed)
        self._cache: dict[Arch, float] = {}

    @classmethod
    def from_saved(cls, space: SearchSpace, directory: str | Path, **kwargs: Any) -> PredictorLatencyModel:
        """A predictor saved by ``latkit predictor fit``, checked to read ``space``'s encoding.

        Raises:
            StoreError: unreadable predictor (see :func:`latkit.predictors.base.load`).
            UsageError: a predictor of another space, of the known devices' latencies
                (few-shot), or whose feature count differs from the space's encoding.
        """
        from latkit.predictors.base import load, load_metadata

        meta = load_metadata(directory)
        saved = meta.get("space")
        prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
        refit = f"fit one with `latkit predictor fit --space {space.name}`"
        if prov.get("features") == "known_devices":
            raise UsageError(f"predictor {directory} reads other devices' latencies (few-shot), not "
                             f"architectures of {space.name!r}; {refit}")
        if isinstance(saved, str) and saved != space.name:
            raise UsageError(f"predictor {directory} was fitted on space {saved!r} but the search is on "
                             f"{space.name!r}; search --space {saved} or {refit}")
        predictor = load(directory)
        width = len(space.encode(space.sample(np.random.default_rng(0))))
        fitted = getattr(predictor, "n_features_in_", None)
        if isinstance(fitted, int) and fitted != width:
            raise UsageError(f"predictor {directory} reads {fitted} features but the encoding of "
                             f"{space.name!r} has {width}; {refit}")
        return cls(space, predictor, provenance={"predictor_dir": str(directory)}, **kwargs)

    def latency_ms_batch(self, archs: Sequence[Arch]) -> list[float]:
        """Predicted latencies (ms), cached per architecture."""
        todo = [a for a in dict.fromkeys(archs) if a not in self._cache]
        if todo:
            pred = np.asarray(self.predictor.predict(self.featurize(todo)), dtype=np.float64)
            self._cache.update(zip(todo, (float(v) for v in pred.reshape(-1))))
        return [self._cache[a] for a in archs]

    def latency_ms(self, arch: Arch) -> float:
        """Predicted latency of ``arch`` (ms)."""
        return self.latency_ms_batch([self.space.check(arch)])[0]

    def expected_latency(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """A Monte-Carlo ``E[LAT]`` over archs sampled from ``probs``.

        Its value is the mean predicted latency of the samples; its gradient is
        the score-function estimate ``mean_k (LAT_k - mean) * grad log p(arch_k)``.
        """
        with torch.no_grad():
            p_np = [p.detach().double().clamp_min(0).numpy() for p in probs]
        archs = [
            Arch(self.space.name, tuple(int(self.rng.choice(len(p), p=p / p.sum())) for p in p_np))
            for _ in range(self.mc_samples)
        ]
        lat = torch.tensor(self.latency_ms_batch(archs), dtype=probs[0].dtype)
        mean = lat.mean()
        logp = torch.stack(
            [sum(torch.log(probs[c][o]) for c, o in enumerate(a.indices)) for a in archs]
        )
        surrogate = ((lat - mean) * logp).mean()
        return mean + surrogate - surrogate.detach()

    def min_latency(self, space: SearchSpace | None = None) -> tuple[float, Arch]:
        """Smallest predicted latency found by bounded coordinate descent (an upper bound)."""
        from types import SimpleNamespace

        from latkit.search.base import min_latency

        # a view without min_latency, so the framework runs its coordinate descent
        return min_latency(self.space, SimpleNamespace(latency_ms=self.latency_ms), np.random.default_rng(0))

    def min_latency_ms(self) -> float:
        """See :meth:`min_latency`."""
        return self.min_latency()[0]
