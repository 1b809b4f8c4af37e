"""Robust statistics on synthetic samples with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from latkit.core.errors import MeasurementError
from latkit.profiler import stats


def test_injected_outliers_are_removed_and_clean_samples_kept():
    rng = np.random.default_rng(1)
    clean = rng.normal(10.0, 0.1, 200)
    spikes = np.array([20.0, 25.0, 13.0, 30.0, 5.0])  # context switches, one timer glitch
    x = np.concatenate([clean, spikes])
    mask = stats.inlier_mask(x)
    assert not mask[-5:].any()
    # 3.5 robust sigmas keeps virtually all of a normal sample
    assert mask[:200].sum() >= 199
    s = stats.summarize(x)
    assert s.n == 205 and 5 <= s.n_outliers <= 6
    assert s.max < 10.5 and s.min > 9.5
    assert s.mean == pytest.approx(10.0, abs=0.03)
    assert s.std == pytest.approx(0.1, rel=0.15)


def test_mad_and_modified_z_known_values():
    x = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert stats.mad(x) == 1.0  # |x - 3| = 2,1,0,1,97 -> median 1
    z = stats.modified_z(x)
    assert z[2] == 0.0
    assert z[4] == pytest.approx(97 * 0.6745)
    assert list(stats.inlier_mask(x)) == [True, True, True, True, False]


def test_mad_zero_falls_back_to_mean_abs_deviation():
    x = [5.0] * 8 + [5.1, 50.0]
    assert stats.mad(x) == 0.0
    mask = stats.inlier_mask(x)
    assert mask[:8].all() and not mask[-1]


def test_constant_samples_give_zero_width():
    for q in (0.1, 0.5):
        s = stats.summarize([2.5] * 30, q=q)
        assert s.value == 2.5 and s.median == 2.5 and s.ci_low == 2.5 and s.ci_high == 2.5
        assert s.rel_ci == 0.0 and s.std == 0.0 and s.mad == 0.0 and s.n_outliers == 0


def test_median_ci_matches_binomial_ranks():
    x = np.arange(1.0, 101.0)  # sorted ranks 1..100
    lo, hi = stats.median_ci(x)
    # textbook answer for n=100: ranks 40 and 61
    assert (lo, hi) == (40.0, 61.0)
    coverage = binom.cdf(60, 100, 0.5) - binom.cdf(39, 100, 0.5)
    assert coverage >= 0.95
    # one rank narrower would drop below 95%
    assert binom.cdf(59, 100, 0.5) - binom.cdf(40, 100, 0.5) < 0.95


def test_low_quantile_ci_matches_binomial_ranks():
    x = np.arange(1.0, 101.0)
    lo, hi = stats.quantile_ci(x, 0.1)
    # B ~ Binomial(100, 0.1): P(B <= 4) = 0.024 <= 2.5% < P(B <= 5); P(B >= 17) = 0.021 <= 2.5%
    assert (lo, hi) == (5.0, 17.0)
    assert binom.cdf(16, 100, 0.1) - binom.cdf(4, 100, 0.1) >= 0.95
    # too few samples below the 10th percentile: the lower end falls back to the minimum
    assert stats.quantile_ci(np.arange(1.0, 21.0), 0.1)[0] == 1.0


def test_low_quantile_ci_covers_true_quantile():
    rng = np.random.default_rng(11)
    true_p10 = -np.log(0.9)  # exponential(1) 10th percentile
    hits = sum(lo <= true_p10 <= hi for lo, hi in
               (stats.quantile_ci(rng.exponential(1.0, 80), 0.1) for _ in range(1500)))  # fmt: skip
    assert 0.94 <= hits / 1500 <= 0.995


def test_low_quantile_ignores_a_contaminated_majority():
    """60% of the samples preempted (2-3x slower): the 10th percentile stays on the clean ones."""
    rng = np.random.default_rng(5)
    clean = rng.normal(1.0, 0.01, 40)
    slow = rng.uniform(2.0, 3.0, 60)
    s = stats.summarize(rng.permutation(np.concatenate([clean, slow])), q=0.1)
    assert s.value == pytest.approx(1.0, abs=0.03) and s.ci_high < 1.05
    assert s.median > 2.0  # the median follows the contamination
    assert s.value == pytest.approx(np.quantile(np.concatenate([clean, slow]), 0.1))


def test_median_ci_small_n_is_whole_range():
    assert stats.median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)


def test_median_ci_covers_true_median_about_95_percent():
    rng = np.random.default_rng(7)
    true_median = np.log(2.0)  # exponential(1) median
    hits = 0
    trials = 2000
    for _ in range(trials):
        lo, hi = stats.median_ci(rng.exponential(1.0, 40))
        hits += lo <= true_median <= hi
    assert 0.94 <= hits / trials <= 0.99  # discrete intervals are slightly conservative


def test_ci_shrinks_like_inverse_sqrt_n():
    rng = np.random.default_rng(3)

    def mean_width(n: int) -> float:
        widths = []
        for _ in range(200):
            lo, hi = stats.median_ci(rng.normal(1.0, 0.05, n))
            widths.append(hi - lo)
        return float(np.mean(widths))

    ratio = mean_width(100) / mean_width(400)
    assert ratio == pytest.approx(2.0, rel=0.1)


def test_relative_halfwidth_and_percentiles():
    assert stats.rel_ci_halfwidth(9.0, 11.0, 10.0) == pytest.approx(0.1)
    assert stats.rel_ci_halfwidth(0.0, 1.0, 0.0) == float("inf")
    s = stats.summarize(np.arange(0.0, 101.0))
    assert s.median == 50.0 and s.p10 == 10.0 and s.p90 == 90.0 and s.mad == 25.0


def test_mask_preselects_samples():
    x = np.array([1.0, 1.0, 1.0, 9.0, 9.0, 9.0])
    s = stats.summarize(x, mask=np.array([True, True, True, False, False, False]))
    assert s.median == 1.0 and s.n == 6 and s.n_outliers == 3


def test_bad_input_raises():
    with pytest.raises(MeasurementError):
        stats.summarize([])
    with pytest.raises(MeasurementError):
        stats.summarize([1.0, float("nan")])
    with pytest.raises(MeasurementError):
        stats.summarize([1.0, 2.0], mask=np.array([False, False]))
    with pytest.raises(MeasurementError):
        stats.inlier_mask([1.0], z=0)
