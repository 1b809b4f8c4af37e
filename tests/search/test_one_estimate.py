"""One estimate everywhere (issue 24, cases 1 and 2): every path from a LUT to a network latency
uses the device's calibration when it has one, says when it does not, prices the deployed classifier,
and resolves a relative target to the same milliseconds."""

from __future__ import annotations

import pytest

from g2_helpers import DEVICE, _measurement, make_lut, op_latency_ms
from latkit.core.errors import MissingOpsError
from latkit.lut.calibration import fit_calibration, save_calibration
from latkit.lut.estimate import estimate
from latkit.lut.tables import TableLatencyModel, latency_note
from latkit.profiler.spaces.base import head_specs, with_classes
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.search.target import parse_target, resolve_on_model

RES = 32


@pytest.fixture
def space_lut(tmp_path):
    space = ProxylessMobileSpace(width_mult=0.25)
    lut = make_lut(tmp_path / "p.db", space, RES)
    yield space, lut
    lut.close()


def _add_head(space, lut, classes: int) -> None:
    for spec in head_specs(space, RES, classes):
        lut.add(spec, _measurement(spec, op_latency_ms(spec)), DEVICE)


def test_the_classifier_is_priced_at_the_deployed_class_count(space_lut):
    space, lut = space_lut
    with pytest.raises(MissingOpsError, match="no 10-class classifier.*latkit profile --space proxyless_mobile"):
        TableLatencyModel.from_lut(space, lut, resolution=RES, classes=10)
    _add_head(space, lut, 10)
    ten = TableLatencyModel.from_lut(space, lut, resolution=RES, classes=10)
    full = TableLatencyModel.from_lut(space, lut, resolution=RES)
    slow = full.max_latency()[1]
    want = estimate(lut, with_classes(space.network(slow, RES), 10), calibration=False).total_ms
    assert ten.latency_ms(slow) == pytest.approx(want, rel=1e-12)
    assert ten.latency_ms(slow) < full.latency_ms(slow)  # the 1000-class head costs more than the 10-class one


def test_a_calibration_is_used_whenever_it_exists_and_its_absence_is_said(space_lut):
    space, lut = space_lut
    _add_head(space, lut, 10)
    raw = TableLatencyModel.from_lut(space, lut, resolution=RES, classes=10, calibrated=None)
    assert raw.provenance["kind"] == "lut" and not raw.provenance["calibrated"]
    assert latency_note(raw.provenance).startswith("UNCALIBRATED") and "latkit lut calibrate" in latency_note(
        raw.provenance)
    pct = parse_target("60%")
    ms_raw, text_raw = resolve_on_model(pct, raw)
    assert ms_raw == pytest.approx(0.6 * raw.max_latency()[0]) and text_raw.endswith("(on the uncalibrated LUT sum)")

    cal = fit_calibration([0.2, 0.4, 0.6, 0.8], [20, 22, 24, 26], [0.09, 0.17, 0.25, 0.33])
    save_calibration(lut, DEVICE["uri"], cal)
    auto = TableLatencyModel.from_lut(space, lut, resolution=RES, classes=10, calibrated=None)
    assert auto.provenance["kind"] == "lut-calibrated" and "calibrated end-to-end" in latency_note(auto.provenance)
    # the calibrated model is the run's (calibrated=True) and lut estimate's: one figure for one network
    run_model = TableLatencyModel.from_lut(space, lut, resolution=RES, classes=10, calibrated=True)
    slow = auto.max_latency()[1]
    net = with_classes(space.network(slow, RES), 10)
    est = estimate(lut, net)
    assert est.calibrated and auto.latency_ms(slow) == pytest.approx(est.total_ms, rel=1e-12)
    assert auto.latency_ms(slow) == pytest.approx(cal.apply(est.lut_sum_ms, est.n_measurable), rel=1e-12)
    # 60% resolves to the same ms on the search's and the run's model, and on neither to the raw sum's
    ms_auto, text_auto = resolve_on_model(pct, auto)
    assert ms_auto == pytest.approx(resolve_on_model(pct, run_model)[0], rel=1e-12)
    assert ms_auto == pytest.approx(0.6 * est.total_ms, rel=1e-12) and "uncalibrated" not in text_auto
    assert ms_auto < 0.5 * ms_raw  # this device runs whole networks at ~0.4x their LUT sum
    raw_again = TableLatencyModel.from_lut(space, lut, resolution=RES, classes=10, calibrated=False)
    assert raw_again.latency_ms(slow) == pytest.approx(est.lut_sum_ms, rel=1e-12)


def test_the_per_layer_chart_is_scaled_to_the_measured_total():
    from latkit.pipeline.report import layer_bars

    layers = [{"name": "stem", "latency_ms": 0.06}, {"name": "skip", "latency_ms": 0.0},
              {"name": "b1", "latency_ms": 0.10}, {"name": "head", "latency_ms": 0.04}]
    rows, bars, label = layer_bars(layers, measured_ms=0.07)
    assert [r["name"] for r in rows] == ["stem", "b1", "head"]
    assert sum(bars) == pytest.approx(0.07) and bars == pytest.approx([0.021, 0.035, 0.014])
    assert "isolated-operator" in label and "scaled to the measured 0.070 ms" in label
    rows, bars, label = layer_bars(layers)  # nothing measured: the LUT figures, said to be the LUT sum
    assert sum(bars) == pytest.approx(0.20) and "sums to the LUT sum" in label
