"""Accuracy metrics of latency predictions.

All take measured and predicted latencies (ms) as 1-D arrays of equal length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from latkit.core.errors import UsageError


def _pair(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(measured_ms, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted_ms, dtype=np.float64).reshape(-1)
    if m.shape != p.shape or m.size == 0:
        raise UsageError(f"need equal, non-empty measured/predicted arrays, got {m.size} and {p.size}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(p))):
        raise UsageError("measured or predicted latencies hold NaN/inf values")
    return m, p


def rmse(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> float:
    """Root mean squared error, ms."""
    m, p = _pair(measured_ms, predicted_ms)
    return float(np.sqrt(np.mean((p - m) ** 2)))


def mape(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> float:
    """Mean absolute percentage error, in percent (rows measured as 0 ms are skipped)."""
    m, p = _pair(measured_ms, predicted_ms)
    ok = m > 0
    if not ok.any():
        raise UsageError("every measured latency is 0 ms; MAPE is undefined")
    return float(100.0 * np.mean(np.abs(p[ok] - m[ok]) / m[ok]))


def within(measured_ms: np.ndarray, predicted_ms: np.ndarray, tolerance: float) -> float:
    """Fraction of predictions within ``±tolerance`` (relative, e.g. 0.1) of the measurement.

    A 0 ms measurement counts as hit only when predicted exactly.
    """
    m, p = _pair(measured_ms, predicted_ms)
    return float(np.mean(np.abs(p - m) <= tolerance * np.abs(m)))


def spearman(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); NaN if either side is constant."""
    from scipy.stats import spearmanr

    m, p = _pair(measured_ms, predicted_ms)
    if np.ptp(m) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(spearmanr(m, p).statistic)


def kendall(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> float:
    """Kendall's tau-b; NaN if either side is constant."""
    from scipy.stats import kendalltau

    m, p = _pair(measured_ms, predicted_ms)
    if np.ptp(m) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(kendalltau(m, p).statistic)


@dataclass(frozen=True)
class Scores:
    """Every metric of one prediction run."""

    n: int
    rmse_ms: float
    mape_pct: float
    acc5: float
    acc10: float
    spearman: float
    kendall: float

    def as_dict(self) -> dict[str, float]:
        """The scores as a plain dict."""
        return asdict(self)


def score(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> Scores:
    """All metrics at once (see the module functions)."""
    m, p = _pair(measured_ms, predicted_ms)
    return Scores(
        n=int(m.size),
        rmse_ms=rmse(m, p),
        mape_pct=mape(m, p),
        acc5=within(m, p, 0.05),
        acc10=within(m, p, 0.10),
        spearman=spearman(m, p),
        kendall=kendall(m, p),
    )


def mean_scores(runs: list[Scores]) -> dict[str, float]:
    """Mean of each metric over several runs (NaN-aware), plus the run count."""
    if not runs:
        raise UsageError("no runs to average")
    keys = [k for k in runs[0].as_dict() if k != "n"]
    out = {k: float(np.nanmean([r.as_dict()[k] for r in runs])) for k in keys}
    out["runs"] = float(len(runs))
    return out
