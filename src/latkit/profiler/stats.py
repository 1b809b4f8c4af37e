"""Robust statistics of latency samples (pure functions on 1-D arrays).

Latency samples are right-skewed and now and then hit by a context switch or
a cache flush, so every summary here is built on order statistics:

* Outliers are rejected with the modified z-score of Iglewicz and Hoaglin,
  ``z = 0.6745 * (x - median) / MAD``; a sample is an outlier when
  ``|z| > 3.5``. It is chosen over IQR fences because its breakdown point is
  50% (a quarter of disturbed samples already moves the quartiles) and because
  it has a single, well-known threshold. When more than half of the samples are
  equal (MAD = 0) the mean absolute deviation, scaled by 1.2533 so that it
  estimates the same sigma for normal data, stands in for the MAD.
* The 95% confidence interval of a quantile (the median or a low quantile) is
  distribution-free: it is the pair of order statistics whose coverage, from
  the Binomial(n, q) law of how many samples fall below the true quantile, is
  at least 95%. Its width shrinks like ``1/sqrt(n)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binom

from latkit.core.errors import MeasurementError

MAD_TO_SIGMA = 1.0 / 0.6745  # MAD of a normal law is 0.6745 sigma
MEANAD_TO_SIGMA = 1.2533  # mean absolute deviation of a normal law is 0.7979 sigma
DEFAULT_Z = 3.5


def _as_array(samples: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise MeasurementError("no samples to summarise; take at least one sample")
    if not np.all(np.isfinite(x)):
        raise MeasurementError("samples contain NaN or infinity; the timer returned garbage")
    return x


def mad(samples: Sequence[float] | np.ndarray) -> float:
    """Median absolute deviation from the median (unscaled)."""
    x = _as_array(samples)
    return float(np.median(np.abs(x - np.median(x))))


def modified_z(samples: Sequence[float] | np.ndarray) -> np.ndarray:
    """Modified z-scores ``(x - median) / sigma_robust`` (zero for constant data).

    ``sigma_robust`` is ``MAD / 0.6745``, or ``1.2533 * mean|x - median|`` when
    the MAD is zero (more than half the samples equal).
    """
    x = _as_array(samples)
    med = np.median(x)
    dev = np.abs(x - med)
    sigma = np.median(dev) * MAD_TO_SIGMA
    if sigma == 0.0:
        sigma = float(np.mean(dev)) * MEANAD_TO_SIGMA
    if sigma == 0.0:  # every sample equal
        return np.zeros_like(x)
    return (x - med) / sigma


def inlier_mask(samples: Sequence[float] | np.ndarray, z: float = DEFAULT_Z) -> np.ndarray:
    """Boolean mask of the samples whose modified z-score is within ``±z``."""
    if z <= 0:
        raise MeasurementError(f"outlier threshold must be positive, got {z}")
    return np.abs(modified_z(samples)) <= z


def quantile_ci(
    samples: Sequence[float] | np.ndarray, q: float = 0.5, confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free confidence interval of the ``q``-quantile, by order statistics.

    The number ``B`` of samples below the true quantile is Binomial(n, q).
    The interval is ``(x_(l), x_(u))`` (1-based ranks of the sorted samples)
    with the largest ``l`` such that ``P(B <= l - 1) <= (1 - confidence) / 2``
    and the smallest ``u`` such that ``P(B >= u) <= (1 - confidence) / 2``.
    When too few samples lie on one side for that (e.g. fewer than 6 samples
    for the median, fewer than 35 for the 10th percentile's lower end), the
    extreme sample is used and that side's coverage is below nominal.
    """
    if not 0.0 < confidence < 1.0:
        raise MeasurementError(f"confidence must be in (0, 1), got {confidence}")
    if not 0.0 < q < 1.0:
        raise MeasurementError(f"quantile must be in (0, 1), got {q}")
    x = np.sort(_as_array(samples))
    n = x.size
    tail = (1.0 - confidence) / 2.0
    # lo = l - 1 (0-based index of x_(l)): the largest k with P(B <= k) <= tail
    lo = int(binom.ppf(tail, n, q))
    if binom.cdf(lo, n, q) > tail:
        lo -= 1
    # hi = u - 1: the smallest k with P(B <= k) >= 1 - tail, i.e. P(B >= k + 1) <= tail
    hi = int(binom.ppf(1.0 - tail, n, q))
    return float(x[max(lo, 0)]), float(x[min(hi, n - 1)])


def median_ci(
    samples: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (:func:`quantile_ci` at 0.5).

    For n = 100 it is ``(x_(40), x_(61))``; with fewer than 6 samples it is
    the whole range ``(min, max)``.
    """
    return quantile_ci(samples, 0.5, confidence)


def rel_ci_halfwidth(ci_low: float, ci_high: float, center: float) -> float:
    """Half-width of ``[ci_low, ci_high]`` relative to ``center`` (inf if center <= 0)."""
    if center <= 0.0:
        return float("inf")
    return (ci_high - ci_low) / 2.0 / center


@dataclass(frozen=True)
class Summary:
    """Robust summary of one set of samples.

    ``value`` is the ``q``-quantile of the usable samples (outliers included:
    a quantile is robust by itself) and ``ci_low`` / ``ci_high`` / ``rel_ci``
    its confidence interval. ``n`` and ``n_outliers`` count every sample
    given; ``median``, ``mean``, ``std``, ``min``, ``max``, ``p10``, ``p90``
    and ``mad`` describe the inliers only.
    """

    value: float
    q: float
    ci_low: float
    ci_high: float
    rel_ci: float
    median: float
    mean: float
    std: float
    min: float
    max: float
    p10: float
    p90: float
    mad: float
    n: int
    n_outliers: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return asdict(self)


def summarize(
    samples: Sequence[float] | np.ndarray,
    z: float = DEFAULT_Z,
    confidence: float = 0.95,
    mask: np.ndarray | None = None,
    q: float = 0.5,
) -> Summary:
    """Summarise samples: a quantile with its interval, and the inliers' figures.

    Args:
        samples: the samples, any order.
        z: modified z-score threshold for outlier rejection.
        confidence: confidence level of the quantile's interval.
        mask: optional pre-selection (True = usable); the rest count as
            outliers and take no part in any figure.
        q: which quantile ``value`` is (0.5 = the median).

    Raises:
        MeasurementError: no samples, or none left to summarise.
    """
    x = _as_array(samples)
    usable = np.ones(x.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if usable.shape != x.shape:
        raise MeasurementError(f"mask has shape {usable.shape}, samples {x.shape}")
    if not usable.any():
        raise MeasurementError("every sample was excluded; measure again on a quieter machine")
    kept = x[usable]
    value = float(np.quantile(kept, q))
    lo, hi = quantile_ci(kept, q, confidence)
    inl = kept[inlier_mask(kept, z)]
    return Summary(
        value=value,
        q=q,
        ci_low=lo,
        ci_high=hi,
        rel_ci=rel_ci_halfwidth(lo, hi, value),
        median=float(np.median(inl)),
        mean=float(np.mean(inl)),
        std=float(np.std(inl, ddof=1)) if inl.size > 1 else 0.0,
        min=float(np.min(inl)),
        max=float(np.max(inl)),
        p10=float(np.percentile(inl, 10)),
        p90=float(np.percentile(inl, 90)),
        mad=mad(inl),
        n=int(x.size),
        n_outliers=int(x.size - inl.size),
    )
