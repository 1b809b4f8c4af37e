"""Shared helpers for the LUT tests: real op specs and measurements built from samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latkit.profiler import stats
from latkit.profiler.measurement import Measurement
from latkit.profiler.ops import Act, OpSpec, OpType

LUT_DATA = (Path(__file__).resolve().parents[2] / "data" / "luts")
DEVICE = {"uri": "cpu:test-host", "kind": "cpu", "runtime": "onnxruntime",
          "runtime_version": "1.0", "threads": 1, "model": "test cpu"}  # fmt: skip


def mbconv(kernel: int, expand: int, hw: int = 16, c: int = 24) -> OpSpec:
    """A small ProxylessNAS-style MBConv spec."""
    return OpSpec(OpType.MBCONV, (hw, hw, c), (hw, hw, c), kernel=kernel, expand_ratio=expand,
                  mid_channels=c * expand, act=Act.RELU6, idskip=True)  # fmt: skip


def measurement_of(spec: OpSpec, center_ms: float, n: int = 40, seed: int = 0) -> Measurement:
    """A measurement summarising ``n`` synthetic samples around ``center_ms``."""
    rng = np.random.default_rng(seed)
    samples = center_ms * (1 + 0.01 * rng.standard_normal(n))
    s = stats.summarize(samples)
    return Measurement(
        key=spec.key, latency_ms=s.median, mean_ms=s.mean, std_ms=s.std, min_ms=s.min,
        max_ms=s.max, p10_ms=s.p10, p90_ms=s.p90, mad_ms=s.mad, ci_low_ms=s.ci_low,
        ci_high_ms=s.ci_high, rel_ci=s.rel_ci, n_samples=s.n, n_outliers=s.n_outliers,
        iterations=7, converged=True, samples_ms=[float(v) for v in samples],
        provenance={"note": "synthetic", "seed": seed},
    )  # fmt: skip


@pytest.fixture
def device() -> dict:
    """The DeviceInfo dict of a made-up host device."""
    return dict(DEVICE)


@pytest.fixture
def make_measurement():
    """:func:`measurement_of`, as a fixture."""
    return measurement_of


@pytest.fixture
def specs() -> list[OpSpec]:
    return [mbconv(k, e) for k in (3, 5, 7) for e in (3, 6)]


@pytest.fixture
def ofa224() -> Path:
    return LUT_DATA / "ofa_note10_224_lookup_table.yaml"


@pytest.fixture
def proxyless_yaml() -> Path:
    return LUT_DATA / "proxylessnas_mobile_trim.yaml"
