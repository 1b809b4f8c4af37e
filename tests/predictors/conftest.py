"""Shared fixtures: small slices of the public latency tables (real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latkit.predictors.data import LatencyDataset, encode_archs, read_latency_csv

DATA = Path(__file__).resolve().parents[2] / "data"


def _table(name: str) -> LatencyDataset:
    return read_latency_csv(DATA / f"{name}_latency_ms.csv")


@pytest.fixture(scope="session")
def fbnet_table() -> LatencyDataset:
    return _table("fbnet")


@pytest.fixture(scope="session")
def nb201_table() -> LatencyDataset:
    return _table("nasbench201")


@pytest.fixture(scope="session")
def fbnet_small(fbnet_table: LatencyDataset) -> tuple[np.ndarray, np.ndarray, LatencyDataset]:
    """(one-hot X, pixel3 latency, table) of 300 FBNet archs."""
    sub = fbnet_table.rows(np.arange(300))
    return encode_archs("fbnet", sub.archs), sub.column("pixel3"), sub
