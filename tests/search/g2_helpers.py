"""Helpers for the supernet / gradient-search tests: small spaces and real LUT files.

The LUTs are real SQLite files written through :class:`latkit.lut.store.LUT`;
their latencies are derived from each operator's multiply-accumulates (a stand-in
for a device, so the tests run in seconds), with a fixed per-op overhead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latkit.lut.store import LUT
from latkit.profiler import stats
from latkit.profiler.build import flops
from latkit.profiler.measurement import Measurement
from latkit.profiler.ops import OpSpec
from latkit.profiler.spaces.base import SearchSpace

DEVICE = {"uri": "cpu:flops-model", "kind": "cpu", "runtime": "synthetic", "runtime_version": "1",
          "threads": 1, "model": "macs stand-in"}  # fmt: skip


def op_latency_ms(spec: OpSpec) -> float:
    """The stand-in latency of one op: 5 us overhead + 1 ms per 100 M MACs."""
    return 0.005 + flops(spec) * 1e-5 / 1e3


def _measurement(spec: OpSpec, center_ms: float) -> Measurement:
    samples = center_ms * (1 + 0.001 * np.random.default_rng(0).standard_normal(16))
    s = stats.summarize(samples)
    return Measurement(
        key=spec.key, latency_ms=s.median, mean_ms=s.mean, std_ms=s.std, min_ms=s.min,
        max_ms=s.max, p10_ms=s.p10, p90_ms=s.p90, mad_ms=s.mad, ci_low_ms=s.ci_low,
        ci_high_ms=s.ci_high, rel_ci=s.rel_ci, n_samples=s.n, n_outliers=s.n_outliers,
        iterations=1, converged=True, samples_ms=[float(v) for v in samples],
        provenance={"note": "macs stand-in"},
    )  # fmt: skip


def make_lut(path: Path, space: SearchSpace, resolution: int | None) -> LUT:
    """A real LUT file holding every operator of ``space`` at ``resolution``."""
    lut = LUT.open(path, create=True)
    for spec in space.operators(resolution):
        lut.add(spec, _measurement(spec, op_latency_ms(spec)), DEVICE)
    return lut
