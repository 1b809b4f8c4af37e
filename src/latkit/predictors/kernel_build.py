"""Build a device's kernel predictors within a time budget, resumably.

A build (``latkit kernels build``):

1. measures the device's per-invocation overhead (the smallest model);
2. measures configurations drawn per kernel type from the shapes networks use
   (:mod:`latkit.profiler.kernel_sampling`), round-robin over the types, so a
   budget that runs out leaves every type with some samples;
3. fits the per-type models, then, while budget remains, finds each type's
   worst-predicted rows (out of fold: a model fitted without them) and
   measures configurations near them (:func:`~latkit.profiler.kernel_sampling.perturb`);
4. saves the predictors (:class:`~latkit.predictors.kernels.KernelPredictors`)
   with the device's identity and fusion rules.

Every measurement is a committed LUT row (:class:`~latkit.lut.kernel_store.KernelStore`)
the moment it is taken; a rerun skips what the LUT holds, so a killed build
resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from latkit.core.checks import MAX_KERNEL_CONFIGS
from latkit.core.errors import UsageError
from latkit.devices.precision import Precision
from latkit.lut.kernel_store import KernelStore
from latkit.lut.store import LUT
from latkit.predictors.kernels import KernelPredictors, TypeModel, fit_predictors
from latkit.profiler.kernel_models import OVERHEAD_CONFIG, measure_kernels
from latkit.profiler.kernel_sampling import perturb, sample_configs
from latkit.profiler.kernels import PREDICTED_TYPES, FusionRules, KernelConfig, KernelType, default_rules, features

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, str], None]  # (phase, done, total, key)
_CHUNK = 8  # configurations measured between budget checks
MAX_BUDGET_S = 7 * 24 * 3600.0  # a kernel build measures for at most a week


def parse_budget(text: str, name: str = "--budget") -> float:
    """``30m``, ``90s``, ``1h`` or plain seconds, as seconds (``latkit kernels build --budget``, and
    the ``budget`` of :func:`latkit.build_kernel_predictors`; ``name`` is what the error names).

    Raises:
        UsageError: anything else, or more than a week.
    """
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1.0
    if not (t.isascii() and 0 < value <= MAX_BUDGET_S):  # float() also takes "inf" and non-ASCII digits
        raise UsageError(f"{name} {text!r}: give a duration such as 30m, 90s or 1h (at most a week)")
    return value


@dataclass(frozen=True)
class BuildSettings:
    """How big a build is.

    Attributes:
        budget_s: wall-clock seconds of measuring (the fits are quick).
        per_type: configurations first drawn per kernel type.
        adaptive_per_type: configurations added per type per adaptive round.
        rounds: adaptive rounds at most.
        seed: the draws' seed.
    """

    budget_s: float = 1800.0
    per_type: int = 30
    adaptive_per_type: int = 8
    rounds: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.per_type <= MAX_KERNEL_CONFIGS:  # every draw is made before the first is measured
            raise UsageError(f"per_type={self.per_type}: draw 1 to {MAX_KERNEL_CONFIGS} configurations per kernel type")


def device_rules(store: KernelStore, device: Any) -> FusionRules:
    """The device's detected fusion rules, or its runtime's documented defaults."""
    return store.rules(device.uri) or default_rules(device.info().runtime)


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()


def _measure(device: Any, store: KernelStore, configs: list[KernelConfig], budget: _Budget, protocol: Any,
             phase: str, on_progress: ProgressFn | None, precision: Precision) -> int:
    """Measure ``configs`` in chunks while budget remains; the number measured."""
    info = device.info().to_dict()
    done = 0

    def keep(config: KernelConfig, m: Any) -> None:
        nonlocal done
        store.add(config, m, info, precision=precision)
        done += 1
        if on_progress is not None:
            on_progress(phase, done, len(configs), config.key)

    for start in range(0, len(configs), _CHUNK):
        if budget.left <= 0:
            log.info("budget spent: %d of %d %s configurations measured", done, len(configs), phase)
            break
        failed = measure_kernels(device, configs[start:start + _CHUNK], keep, protocol)
        for key, why in failed.items():
            log.warning("kernel %s failed: %s", key, why)
    return done


def _round_robin(groups: list[list[KernelConfig]]) -> list[KernelConfig]:
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def _worst(rows: list[tuple[KernelConfig, float]], overhead: float, n: int, seed: int) -> list[KernelConfig]:
    """The ``n`` rows of one type a model fitted without them predicts worst (two folds)."""
    if len(rows) < 6:
        return [c for c, _ in rows[:n]]
    x = features(c for c, _ in rows)
    y = np.maximum(np.asarray([ms for _, ms in rows]) - overhead, 1e-4)
    fold = np.arange(len(rows)) % 2
    err = np.zeros(len(rows))
    for f in (0, 1):
        model = TypeModel.fit(x[fold != f], y[fold != f], n_estimators=60, seed=seed)
        err[fold == f] = np.abs(np.log(model.predict(x[fold == f]) / y[fold == f]))
    return [rows[i][0] for i in np.argsort(-err)[:n]]


def build_kernel_predictors(device: Any, lut: LUT, settings: BuildSettings = BuildSettings(), *, protocol: Any = None,
                            types: tuple[KernelType, ...] = PREDICTED_TYPES, precision: Precision = Precision.FP32,
                            on_progress: ProgressFn | None = None) -> KernelPredictors:
    """Measure (resumably, within ``settings.budget_s``) and fit ``device``'s kernel predictors.

    Returns:
        The fitted predictors (save them with :meth:`KernelPredictors.save`).
    """
    store = KernelStore(lut)
    budget = _Budget(settings.budget_s)
    started = time.monotonic()
    done = store.done_keys(device.uri, precision=precision)
    if OVERHEAD_CONFIG.key not in done:
        _measure(device, store, [OVERHEAD_CONFIG], budget, protocol, "overhead", on_progress, precision)
    # the same seed draws the same configurations: a rerun measures only those the LUT lacks
    initial = [[c for c in sample_configs(t, settings.per_type, settings.seed) if c.key not in done] for t in types]
    _measure(device, store, _round_robin(initial), budget, protocol, "sampled", on_progress, precision)
    rng = np.random.default_rng(settings.seed + 1)
    for r in range(settings.rounds):
        if budget.left <= 0:
            break
        rows = store.measurements(device.uri, precision=precision)
        overhead = min((ms for c, ms in rows if c == OVERHEAD_CONFIG), default=0.0)
        known = {c.key for c, _ in rows}
        new: list[list[KernelConfig]] = []
        for t in types:
            mine = [(c, ms) for c, ms in rows if c.type is t and c != OVERHEAD_CONFIG]
            near = [perturb(c, rng) for c in _worst(mine, overhead, settings.adaptive_per_type, settings.seed + r)]
            new.append([c for c in dict.fromkeys(near) if c.key not in known])
        _measure(device, store, _round_robin(new), budget, protocol, f"adaptive {r + 1}", on_progress, precision)
    preds = fit_from_store(store, device.info().to_dict(), device_rules(store, device), precision=precision,
                           seed=settings.seed)
    preds.provenance["build_s"] = round(time.monotonic() - started, 1)
    return preds


def transfer_to_device(device: Any, lut: LUT, source: KernelPredictors, samples: int, *, budget_s: float = 600.0,
                       protocol: Any = None, seed: int = 1, precision: Precision = Precision.FP32,
                       on_progress: ProgressFn | None = None) -> KernelPredictors:
    """Measure ``samples`` kernel configurations (resumably) on ``device`` and adapt ``source`` to it.

    The configurations are spread over the source's kernel types
    (:func:`~latkit.predictors.kernel_transfer.transfer_configs`); every
    measurement is a LUT row, so a rerun measures only what is missing, and
    the adaptation uses every row of those types the LUT holds for the device.
    """
    from latkit.predictors.kernel_transfer import transfer_configs, transfer_predictors

    if not 1 <= samples <= MAX_KERNEL_CONFIGS:  # every draw is made before the first is measured
        raise UsageError(f"samples={samples}: measure 1 to {MAX_KERNEL_CONFIGS} kernel configurations")
    store = KernelStore(lut)
    budget = _Budget(budget_s)
    started = time.monotonic()
    done = store.done_keys(device.uri, precision=precision)
    wanted = [OVERHEAD_CONFIG] + transfer_configs(sorted(source.models, key=list(KernelType).index), samples, seed)
    _measure(device, store, [c for c in wanted if c.key not in done], budget, protocol, "transfer", on_progress,
             precision)  # fmt: skip
    keys = {c.key for c in wanted}
    rows = [(c, ms) for c, ms in store.measurements(device.uri, precision=precision) if c.key in keys]
    overhead = min((ms for c, ms in rows if c == OVERHEAD_CONFIG), default=source.overhead_ms)
    preds = transfer_predictors(source, [r for r in rows if r[0] != OVERHEAD_CONFIG], device.info().to_dict(),
                                overhead_ms=overhead, rules=device_rules(store, device))  # fmt: skip
    preds.provenance.update(lut=str(lut.path), build_s=round(time.monotonic() - started, 1))
    return preds


def fit_from_store(store: KernelStore, info: dict[str, Any], rules: FusionRules, *, precision: Precision = Precision.FP32,
                   seed: int = 0) -> KernelPredictors:
    """Fit the predictors on every kernel row the store holds for the device.

    The provenance records the LUT and its row count; a build adds ``build_s``,
    the seconds that run of the build took (measuring and fitting).
    """
    rows = store.measurements(info["uri"], precision=precision)
    return fit_predictors(rows, info, rules, precision=precision, seed=seed,
                          provenance={"lut": str(store.lut.path), "rows": len(rows)})


__all__ = ["MAX_BUDGET_S", "BuildSettings", "build_kernel_predictors", "device_rules", "fit_from_store", "parse_budget",
           "transfer_to_device"]
