"""Kernel predictors for a new device, adapted from a known device's with a few measurements.

Building a device's predictors measures hundreds of kernel configurations.
A new device of the same runtime mostly differs from a known one by how fast
it does the same work: a faster core scales every kernel, more threads help
large kernels more than small ones. So a source device's predictors are kept
whole (their shape of latency over configurations, their trees) and only a
correction of the log latency is fitted on a few configurations measured on
the new device:

* per kernel type with samples of its own: an intercept (a per-type speed
  ratio), plus, from :data:`MIN_SLOPE_SAMPLES` samples on, slopes on the log
  work (MACs, input, output and weight sizes) ridge-shrunk towards zero
  (:data:`SLOPE_PENALTY`): a few samples spanning a small range would
  otherwise fit a slope that extrapolates by orders of magnitude;
* a type without samples: the pooled intercept of all types (the device's
  overall speed ratio).

The correction is linear in the columns of the log-linear base, so a
transferred type is an ordinary :class:`~latkit.predictors.kernels.TypeModel`
(its base coefficients moved, its trees kept): it saves, loads and predicts
like a built one, and the provenance names the source device and the number
of samples (``transfer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.predictors.kernels import _MIN_MS, KernelPredictors, _design
from latkit.profiler.kernels import FusionRules, KernelConfig, KernelType, features

SLOPE_PENALTY = 4.0  # ridge weight on the slopes against one sample's squared residual
MIN_SLOPE_SAMPLES = 6  # fewer samples of a type move only its intercept (two points fit any slope)


def _correction(x: np.ndarray, residual: np.ndarray, penalty: float) -> np.ndarray:
    """The correction of the base coefficients: an intercept, plus ridge slopes once there are enough samples.

    The slopes are fitted on the centred design, so they explain only how the
    residual changes across the samples; the intercept keeps the mean residual.
    """
    a = _design(x)
    delta = np.zeros(a.shape[1])
    if len(residual) < MIN_SLOPE_SAMPLES:
        delta[-1] = float(np.mean(residual))
        return delta
    cols = a[:, :-1]
    mean = cols.mean(axis=0)
    centred = cols - mean
    gram = centred.T @ centred + penalty * np.eye(cols.shape[1])
    slopes = np.linalg.solve(gram, centred.T @ (residual - residual.mean()))
    delta[:-1] = slopes
    delta[-1] = float(residual.mean() - mean @ slopes)
    return delta


def transfer_predictors(source: KernelPredictors, rows: Sequence[tuple[KernelConfig, float]],
                        device: dict[str, Any], *, overhead_ms: float, rules: FusionRules | None = None,
                        penalty: float = SLOPE_PENALTY) -> KernelPredictors:
    """``source``'s predictors adapted to ``device`` from its measured ``(configuration, latency_ms)`` rows.

    Args:
        source: a known device's predictors.
        rows: kernels measured on the new device (any types; a few per type is enough).
        device: the new device's identity (``DeviceInfo.to_dict()``).
        overhead_ms: the new device's per-invocation overhead (its smallest model's time).
        rules: the new device's fusion rules (default the source's).
        penalty: ridge weight on the slopes (0: a free linear correction per type).

    Raises:
        UsageError: no rows, or none of a type the source predicts.
    """
    by_type: dict[KernelType, list[tuple[KernelConfig, float]]] = {}
    for c, ms in rows:
        if c.type in source.models:
            by_type.setdefault(c.type, []).append((c, ms))
    if not by_type:
        raise UsageError("no measured kernels of a type the source predictors know; measure some on the new device")
    residuals = {}
    for t, items in by_type.items():
        x = features(c for c, _ in items)
        y = np.maximum(np.asarray([ms for _, ms in items]) - overhead_ms, _MIN_MS)
        residuals[t] = (x, np.log(y) - np.log(source.models[t].predict(x)))
    pooled = float(np.mean(np.concatenate([r for _, r in residuals.values()])))
    models = {}
    for t, model in source.models.items():
        delta = np.zeros_like(model.coef)
        if t in residuals:
            delta = _correction(*residuals[t], penalty)
        else:
            delta[-1] = pooled
        lo, hi = model.log_range
        models[t] = replace(model, coef=model.coef + delta, log_range=(lo + delta[-1], hi + delta[-1]))
    provenance = {"transfer": {"source": source.uri, "source_rows": source.provenance.get("rows"),
                               "rows": len(rows), "per_type": {t.value: len(v) for t, v in by_type.items()},
                               "pooled_log_ratio": pooled, "slope_penalty": penalty}}  # fmt: skip
    return KernelPredictors(device, source.precision, models, rules or source.rules, overhead_ms,
                            provenance=provenance)  # fmt: skip


def transfer_configs(types: Sequence[KernelType], n: int, seed: int = 1) -> list[KernelConfig]:
    """``n`` configurations to measure on a new device, spread over ``types`` (round-robin)."""
    from latkit.profiler.kernel_sampling import sample_configs

    per = -(-n // max(len(types), 1))
    groups = [sample_configs(t, per, seed=seed) for t in types]
    out: list[KernelConfig] = []
    for i in range(per):
        out += [g[i] for g in groups if i < len(g)]
    return out[:n]


__all__ = ["MIN_SLOPE_SAMPLES", "SLOPE_PENALTY", "transfer_configs", "transfer_predictors"]
