"""Reference operators and the device drift: a LUT's rows re-measured on the device now."""

from __future__ import annotations

from pathlib import Path

import pytest

from latkit.devices.base import open_device
from latkit.lut.drift import Drift, Reference, combined, measure_drift, reference_ops
from latkit.lut.store import LUT
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.runner import profile_ops
from latkit.profiler.spaces import get_space

pytestmark = pytest.mark.slow

SPACE = "proxyless_mobile_w05"
RESOLUTION = 32


def _quick() -> ProtocolConfig:
    return ProtocolConfig.quick(min_samples=8, max_samples=20, max_seconds_per_op=0.5)


def test_reference_ops_are_the_slowest_measured_rows(tmp_path: Path) -> None:
    specs = [s for s in get_space(SPACE).operators(RESOLUTION) if s.measurable][:6]
    guessed = specs.pop()
    with LUT.open(tmp_path / "t.db", create=True) as lut:
        profile_ops(open_device("cpu:onnxruntime"), specs, lut, _quick())
        row = lut.rows("cpu:onnxruntime")[0] | {"op_key": lut.ensure_op(guessed), "latency_ms": 1e3,
                                                "source": "predicted:test"}  # fmt: skip
        with lut.transaction():
            lut.put_row(row)
        keys = [s.key for s in specs]
        by_latency = sorted(keys, key=lambda k: -lut.latency_ms(k, "cpu:onnxruntime"))
        # the slowest row is a prediction: never a reference
        refs = reference_ops(lut, "cpu:onnxruntime", [guessed.key, *keys, "no-such-key"], n=3)
        assert [r.spec.key for r in refs] == by_latency[:3]
        assert [r.lut_ms for r in refs] == [lut.latency_ms(k, "cpu:onnxruntime") for k in by_latency[:3]]


def test_drift_is_the_median_ratio_and_steady_within_the_tolerance(tmp_path: Path) -> None:
    specs = [s for s in get_space(SPACE).operators(RESOLUTION) if s.measurable][:3]
    with LUT.open(tmp_path / "d.db", create=True) as lut:
        profile_ops(open_device("cpu:onnxruntime"), specs, lut, _quick())
        refs = reference_ops(lut, "cpu:onnxruntime", [s.key for s in specs])
    # the same figures, "profiled" 4x faster: the device now reads ~4x its LUT
    fast = [Reference(r.spec, r.lut_ms / 4) for r in refs]
    drift = measure_drift(open_device("cpu:onnxruntime"), fast, _quick())
    ratios = sorted(o["ratio"] for o in drift.ops)
    assert drift.ratio == pytest.approx(ratios[1]) and not drift.steady and drift.ratio > 2
    assert measure_drift(open_device("cpu:onnxruntime"), [], _quick()) is None
    assert Drift(1.09, []).steady and not Drift(0.89, []).steady
    both = combined(Drift(1.0, [{"k": 1}]), Drift(1.2, [{"k": 2}]))
    assert both.ratio == pytest.approx(1.1) and len(both.ops) == 2
    assert combined(None, Drift(1.3, [])).ratio == 1.3
