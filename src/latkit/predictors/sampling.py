"""Adaptive sampling: which few ops of a space to measure, and measuring them.

Measuring every op of a space on a slow device takes hours; an op-level
predictor (:mod:`latkit.predictors.oplevel`) trained on a well-chosen few
hundred can fill in the rest. The choice works in two regimes:

* **space-filling** (nothing, or too little, measured yet): first the extremes
  of work (least/most MACs and bytes moved), then one op from every stratum not
  yet covered (each op type, kernel, expand ratio, stride, squeeze-excite,
  activation and input size), then the op farthest (max-min distance) from
  everything chosen, in the standardised log-feature space;
* **uncertainty** (enough measured): fit a small bootstrap ensemble of
  op-level regressors on what is measured and take the ops on which the
  ensemble disagrees most (spread of log latency) *and* that lie far from
  every op measured or already picked (the product of the two).

:func:`profile_sampled` runs the loop on a device: pick a batch, measure it
with :func:`latkit.profiler.runner.profile_ops`, refit, pick the next batch;
then it predicts every op it did not measure into the LUT (:func:`fill_lut`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.devices.precision import Precision
from latkit.predictors.features import FEATURE_NAMES, feature_matrix
from latkit.profiler.ops import OpSpec, measurable_by_key

log = logging.getLogger(__name__)

MIN_FOR_MODEL = 12  # below this many measured ops an ensemble's spread means little
# categorical features whose every value should be measured at least once
STRATA = ("kernel", "expand_ratio", "stride", "se", "height", "groups")
_STRATA_COLS = [FEATURE_NAMES.index(n) for n in STRATA]
_ONEHOT_COLS = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(("type_", "act_"))]
_EXTREME_COLS = [FEATURE_NAMES.index(n) for n in ("macs", "mem_bytes")]


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _standardised(feats: np.ndarray) -> np.ndarray:
    z = np.log1p(np.maximum(feats, 0.0))
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def strata_of(feats: np.ndarray) -> list[set[tuple[int, float]]]:
    """The (column, value) strata each op belongs to (categorical values, one-hots)."""
    out = []
    for row in feats:
        s = {(c, float(row[c])) for c in _STRATA_COLS}
        s |= {(c, 1.0) for c in _ONEHOT_COLS if row[c] > 0}
        out.append(s)
    return out


def _space_filling(
    z: np.ndarray, feats: np.ndarray, taken: list[int], pool: list[int], n: int,
    rng: np.random.Generator,
) -> list[int]:  # fmt: skip
    """Extremes, then uncovered strata, then max-min distance (indices into the rows)."""
    chosen: list[int] = []
    free = set(pool)

    def pick(i: int) -> None:
        chosen.append(i)
        free.discard(i)

    for c in _EXTREME_COLS:  # the smallest and largest ops bound what a model must cover
        for i in (min(pool, key=lambda j: feats[j, c]), max(pool, key=lambda j: feats[j, c])):
            if i in free and len(chosen) < n:
                pick(i)
    strata = strata_of(feats)
    covered = set().union(*(strata[i] for i in taken + chosen)) if taken or chosen else set()
    while len(chosen) < n and free:
        order = list(free)
        rng.shuffle(order)  # ties go to a random op, not the first in the space's order
        gain = [len(strata[i] - covered) for i in order]
        if max(gain) == 0:
            break
        best = order[int(np.argmax(gain))]
        pick(best)
        covered |= strata[best]
    ref = taken + chosen
    dist = (np.min(np.linalg.norm(z[:, None, :] - z[None, ref, :], axis=2), axis=1)
            if ref else np.full(len(z), np.inf))  # fmt: skip
    while len(chosen) < n and free:
        cand = np.fromiter(free, dtype=np.int64)
        best = int(cand[np.argmax(dist[cand] + 1e-9 * rng.random(len(cand)))])
        pick(best)
        dist = np.minimum(dist, np.linalg.norm(z - z[best], axis=1))
    return chosen


def ensemble_spread(
    train_specs: Sequence[OpSpec], train_ms: np.ndarray, specs: Sequence[OpSpec],
    n_models: int = 5, rng: np.random.Generator | int | None = None,
) -> np.ndarray:  # fmt: skip
    """Std of log latency over a bootstrap ensemble of op-level regressors.

    Each member is an ``oplevel_xgb`` (smaller: 80 trees) fitted on a bootstrap
    resample of the measured ops; high spread = the measured ops say little
    about that op.
    """
    from latkit.predictors.oplevel import XGBOpPredictor

    gen = _rng(rng)
    train_specs = list(train_specs)
    preds = []
    for _ in range(n_models):
        idx = gen.integers(0, len(train_specs), len(train_specs))
        member = XGBOpPredictor(n_estimators=80, max_depth=3, learning_rate=0.1,
                                random_state=int(gen.integers(2**31)))  # fmt: skip
        member.fit([train_specs[i] for i in idx], np.asarray(train_ms)[idx])
        preds.append(np.log(member.predict(list(specs))))
    return np.std(np.stack(preds), axis=0)


def _by_uncertainty(
    z: np.ndarray, spread: np.ndarray, taken: list[int], pool: list[int], n: int
) -> list[int]:
    """Greedy: largest (ensemble spread x distance to every op measured or picked).

    Spread alone keeps picking near-duplicates of one odd op, distance alone
    ignores what the model already gets right; their product does neither.
    """
    dist = (np.min(np.linalg.norm(z[:, None, :] - z[None, taken, :], axis=2), axis=1)
            if taken else np.ones(len(z)))  # fmt: skip
    free = np.asarray(pool, dtype=np.int64)
    chosen: list[int] = []
    while len(chosen) < n and len(free):
        best_pos = int(np.argmax(spread[free] * dist[free]))
        best = int(free[best_pos])
        chosen.append(best)
        free = np.delete(free, best_pos)
        dist = np.minimum(dist, np.linalg.norm(z - z[best], axis=1))
    return chosen


def choose_informative(
    specs: Sequence[OpSpec],
    n: int,
    measured: Mapping[str, float] | Iterable[OpSpec | str] | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    n_models: int = 5,
    exclude: Iterable[str] = (),
) -> list[OpSpec]:
    """The ``n`` most informative ops of ``specs`` to measure next.

    Args:
        specs: the candidate ops (e.g. a space's operators at its resolutions);
            free ops and repeated keys are dropped.
        n: how many to return (fewer if fewer candidates are left).
        measured: ops already measured: a ``{key: latency_ms}`` mapping (enables
            the uncertainty regime once it holds ``MIN_FOR_MODEL`` ops of
            ``specs``), or just their specs / keys (space-filling only).
        rng: seed or generator (breaks ties; draws the ensemble's bootstraps).
        n_models: ensemble size of the uncertainty regime.
        exclude: keys never to return (e.g. ops that failed to measure).

    Returns:
        Distinct, not yet measured ops, in the order they were picked.

    Raises:
        UsageError: ``n`` is negative.
    """
    if n < 0:
        raise UsageError(f"cannot choose a negative number of ops ({n})")
    gen = _rng(rng)
    ops = list(measurable_by_key(specs).values())
    done: dict[str, float | None] = {}
    if isinstance(measured, Mapping):
        done = {str(k): float(v) for k, v in measured.items()}
    elif measured is not None:
        done = {(m.key if isinstance(m, OpSpec) else str(m)): None for m in measured}
    skip = set(exclude)
    taken = [i for i, s in enumerate(ops) if s.key in done]
    pool = [i for i, s in enumerate(ops) if s.key not in done and s.key not in skip]
    if n == 0 or not pool:
        return []
    feats = feature_matrix(ops)
    z = _standardised(feats)
    known = [i for i in taken if done[ops[i].key] is not None]
    if len(known) >= MIN_FOR_MODEL:
        lat = np.array([done[ops[i].key] for i in known], dtype=np.float64)
        spread = np.zeros(len(ops))
        spread[pool] = ensemble_spread([ops[i] for i in known], lat, [ops[i] for i in pool],
                                       n_models=n_models, rng=gen)  # fmt: skip
        picked = _by_uncertainty(z, spread, taken, pool, n)
    else:
        picked = _space_filling(z, feats, taken, pool, n, gen)
    return [ops[i] for i in picked]


# --------------------------------------------------------------------------- profiling


@dataclass
class SampledReport:
    """What :func:`profile_sampled` did."""

    device: str
    n_candidates: int
    measured: list[str] = field(default_factory=list)  # keys measured by this run
    failed: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    n_train: int = 0  # measured ops the final predictor was fitted on
    n_predicted: int = 0  # rows fill_lut wrote
    predictor: str = ""

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


ProgressFn = Callable[[int, int, str, Any], None]


def _shifted_progress(on_progress: ProgressFn | None, offset: int, n: int) -> ProgressFn:
    """A round's progress callback reporting to ``on_progress`` as ``(offset + done, n, ...)``."""

    def progress(i: int, total: int, key: str, m: Any) -> None:
        if on_progress is not None:
            on_progress(offset + i, n, key, m)

    return progress


def _sample_round(
    device: Any,
    ops: list[OpSpec],
    size: int,
    lut: Any,
    config: Any,
    report: SampledReport,
    gen: np.random.Generator,
    progress: ProgressFn,
    precision: Precision,
) -> bool:
    """Pick ``size`` ops given what the LUT holds, measure them and add them to ``report``.

    Returns:
        False when nothing is left to pick.
    """
    from latkit.predictors.oplevel import measured_ops
    from latkit.profiler.runner import profile_ops

    specs, lat = measured_ops(lut, device.uri, precision=precision)
    done = {s.key: float(v) for s, v in zip(specs, lat)}
    # a failed op would be picked again and fail again
    batch = choose_informative(ops, size, done, gen, exclude=report.failed)
    if not batch:
        return False
    pr = profile_ops(device, batch, lut, config, on_progress=progress, precision=precision)
    report.measured += pr.measured
    report.failed.update(pr.failed)
    report.rounds += 1
    log.info("sampling round %d: measured %d op(s)", report.rounds, len(pr.measured))
    return True


def profile_sampled(
    device: Any,
    space_specs: Sequence[OpSpec],
    lut: Any,
    config: Any,
    n: int,
    rng: np.random.Generator | int | None = None,
    on_progress: ProgressFn | None = None,
    *,
    rounds: int = 4,
    predictor: Any = None,
    precision: Precision = Precision.FP32,
) -> SampledReport:
    """Measure the ``n`` most informative ops of a space, predict the rest.

    Works in ``rounds`` batches: pick (:func:`choose_informative`, with what the
    LUT already holds for the device), measure with
    :func:`latkit.profiler.runner.profile_ops` (committed op by op), refit,
    repeat. Then fits ``predictor`` (default ``oplevel_xgb``) on every measured
    op of the device and writes predictions for the unmeasured ops of
    ``space_specs`` (:func:`~latkit.predictors.oplevel.fill_lut`).

    Args:
        device: an open :class:`latkit.devices.base.Device`.
        space_specs: every op of the space (all resolutions wanted).
        lut: the :class:`latkit.lut.store.LUT` to measure into.
        config: the :class:`latkit.profiler.protocol.ProtocolConfig`.
        n: how many new ops to measure.
        rng: seed or generator.
        on_progress: ``(done, n, key, measurement or None)`` after each op.
        rounds: how many pick/measure/refit rounds.
        predictor: unfitted op-level predictor for the fill (default ``oplevel_xgb``).
        precision: the precision measured and predicted (rows of others are not read).

    Returns:
        A :class:`SampledReport`.

    Raises:
        UsageError: ``n`` or ``rounds`` is not positive.
    """
    from latkit.predictors.oplevel import fill_lut, fit_on_lut

    if n < 1 or rounds < 1:
        raise UsageError(f"--sample needs a positive count and rounds (got {n}, {rounds})")
    gen = _rng(rng)
    ops = list(measurable_by_key(space_specs).values())
    report = SampledReport(device=device.uri, n_candidates=len(ops))
    sizes = [n // rounds + (i < n % rounds) for i in range(rounds)]
    for size in (s for s in sizes if s):
        progress = _shifted_progress(on_progress, len(report.measured), n)
        if not _sample_round(device, ops, size, lut, config, report, gen, progress, precision):
            break
    fitted = fit_on_lut(lut, device.uri, predictor, precision=precision)
    report.n_train = int(fitted.n_train_)
    report.predictor = fitted.name
    report.n_predicted = fill_lut(lut, ops, device.info().to_dict(), fitted, precision=precision)
    return report


__all__ = [
    "MIN_FOR_MODEL",
    "STRATA",
    "SampledReport",
    "choose_informative",
    "ensemble_spread",
    "profile_sampled",
    "strata_of",
]
