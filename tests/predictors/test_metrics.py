"""Metrics on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latkit.core.errors import UsageError
from latkit.predictors import metrics


def test_error_metrics() -> None:
    m = np.array([10.0, 20.0, 40.0, 50.0])
    p = np.array([11.0, 19.0, 46.0, 50.0])
    assert metrics.rmse(m, p) == pytest.approx(math.sqrt((1 + 1 + 36 + 0) / 4))
    assert metrics.mape(m, p) == pytest.approx(100 * (0.1 + 0.05 + 0.15 + 0) / 4)
    assert metrics.within(m, p, 0.05) == pytest.approx(0.5)  # 19 (5%) and 50 (0%)
    assert metrics.within(m, p, 0.10) == pytest.approx(0.75)
    s = metrics.score(m, p)
    assert s.n == 4 and s.acc10 == pytest.approx(0.75) and s.acc5 == pytest.approx(0.5)


def test_rank_metrics() -> None:
    m = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert metrics.spearman(m, m**3) == pytest.approx(1.0)
    assert metrics.spearman(m, -m) == pytest.approx(-1.0)
    assert metrics.kendall(m, m**2) == pytest.approx(1.0)
    # one swapped pair out of 10: tau = (9 - 1) / 10
    assert metrics.kendall(m, np.array([2.0, 1.0, 3.0, 4.0, 5.0])) == pytest.approx(0.8)
    # d = (1, -1, 0, 0, 0): rho = 1 - 6 * 2 / (5 * 24)
    assert metrics.spearman(m, np.array([2.0, 1.0, 3.0, 4.0, 5.0])) == pytest.approx(0.9)
    assert math.isnan(metrics.spearman(m, np.ones(5)))


def test_mean_scores_and_bad_input() -> None:
    a = metrics.score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    b = metrics.score(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 3.0]))
    mean = metrics.mean_scores([a, b])
    assert mean["runs"] == 2 and mean["acc10"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(UsageError):
        metrics.rmse(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(UsageError, match="NaN"):
        metrics.rmse(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(UsageError):
        metrics.mean_scores([])
