"""Shared fixtures: the real NAS-Bench-201 tables, read once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latkit.search.framework.tabular import TabularProblem

DATA = Path(__file__).resolve().parents[2] / "data"
ACC = f"{DATA / 'nasbench201_accuracy.csv'}:cifar10-val"
LAT = f"{DATA / 'nasbench201_latency_ms.csv'}:pixel3"


@pytest.fixture(scope="session")
def nb201() -> TabularProblem:
    return TabularProblem.load("nasbench201", ACC, LAT)


@pytest.fixture(scope="session")
def median_target(nb201: TabularProblem) -> float:
    return float(np.median(list(nb201.latency.column.values.values())))
