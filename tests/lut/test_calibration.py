"""Per-device calibration: the pure fit, its storage, and a real end-to-end calibration."""

from __future__ import annotations

import numpy as np
import pytest

from latkit.core.errors import UsageError
from latkit.lut.calibrate import MAX_PASSES, calibrate_device, steady
from latkit.lut.calibration import FORMS, Calibration, describe_fit, fit_calibration, load_calibration, save_calibration
from latkit.lut.estimate import estimate
from latkit.lut.store import LUT

pytestmark = pytest.mark.slow


def test_fit_recovers_known_coefficients():
    sums = np.array([10.0, 20.0, 35.0, 50.0, 80.0])
    n_ops = np.array([20, 24, 22, 30, 27])
    e2e = 0.8 * sums + 0.05 * n_ops + 1.2
    cal = fit_calibration(sums, n_ops, e2e)
    assert cal.method == "lstsq3" and cal.n_points == 5
    assert (cal.a, cal.b, cal.c) == pytest.approx((0.8, 0.05, 1.2), abs=1e-9)
    assert cal.rmse_ms < 1e-9 and cal.max_rel_err < 1e-9
    assert cal.apply(40.0, 25) == pytest.approx(0.8 * 40 + 0.05 * 25 + 1.2)


def test_fit_is_least_squares_with_noise():
    rng = np.random.default_rng(0)
    sums = rng.uniform(5, 60, 40)
    n_ops = rng.integers(18, 30, 40)
    e2e = 1.1 * sums + 0.1 * n_ops + 0.5 + rng.normal(0, 0.2, 40)
    cal = fit_calibration(sums, n_ops, e2e)
    x = np.column_stack([sums, n_ops, np.ones(40)])
    ref = np.linalg.lstsq(x, e2e, rcond=None)[0]
    assert (cal.a, cal.b, cal.c) == pytest.approx(tuple(ref), rel=1e-9)
    assert 0.1 < cal.rmse_ms < 0.3


def test_fallbacks_with_few_points():
    # two networks: a 2-term fit cannot be checked out of sample (one point left), the ratio can
    two = fit_calibration([10.0, 30.0], [20, 25], [9.0, 25.0])
    assert two.method == "ratio" and two.a == pytest.approx(34 / 40) and two.loo_max_rel_err is not None
    assert "lstsq2: leave-one-out error not checkable" in two.refused
    one = fit_calibration([10.0], [20], [12.0])
    assert one.method == "ratio" and (one.a, one.b, one.c) == (1.2, 0.0, 0.0)
    assert one.loo_max_rel_err is None and one.quality == "unchecked"
    # equal op counts: b and c cannot be told apart, so the 2-term model is used (it predicts each network exactly)
    same = fit_calibration([10.0, 20.0, 40.0], [22, 22, 22], [11.0, 21.0, 41.0])
    assert same.method == "lstsq2" and (same.a, same.c) == pytest.approx((1.0, 1.0))
    assert same.loo_max_rel_err == pytest.approx(0.0, abs=1e-9) and same.quality == "good"
    # identical sums: only a ratio is defined
    flat = fit_calibration([10.0, 10.0, 10.0], [22, 22, 22], [11.0, 12.0, 13.0])
    assert flat.method == "ratio" and flat.a == pytest.approx(1.2)


def test_fuller_forms_must_hold_out_of_sample():
    # figures of a real calibration (proxyless_mobile_w05 at 64 px, cpu:onnxruntime, fastest op 0.011 ms):
    # in sample the 3-term fit is within 1%, but its negative per-operator term trades against its offset, and
    # without the smallest network the offset fit mispredicts it by 78%. The sum less one runtime call per
    # operator (the network pays one call, not one per operator) holds to 2.8% out of sample, the ratio to 17%
    sums, n_ops, e2e = [0.183, 0.420, 0.529, 0.693], [10, 25, 24, 25], [0.120, 0.264, 0.375, 0.539]
    cal = fit_calibration(sums, n_ops, e2e, 0.011)
    assert cal.method == "overhead" and (cal.a, cal.b, cal.c) == pytest.approx((1.008, -0.00644, 0.0), abs=1e-3)
    assert cal.loo_max_rel_err == pytest.approx(0.0278, abs=1e-3) and cal.quality == "good"
    assert "lstsq3: negative per-operator overhead b = -0.0" in cal.refused and "beside an offset" in cal.refused
    assert "lstsq2: leave-one-out error 78.4%, not clearly below overhead's" in cal.refused
    ratio_only = fit_calibration(sums, [24] * 4, e2e, 0.011)  # equal op counts: no call to take off
    assert ratio_only.method == "ratio" and ratio_only.loo_max_rel_err == pytest.approx(0.1708, abs=1e-3)
    # the same with the largest network reading high: even the ratio misses one network by 30% out of sample
    poor = fit_calibration([0.183, 0.465, 0.499, 0.521, 0.693], [10, 22, 22, 24, 25],
                           [0.121, 0.323, 0.370, 0.380, 0.708], 0.011)  # fmt: skip
    assert poor.method == "ratio" and poor.loo_max_rel_err == pytest.approx(0.2993, abs=1e-3)
    assert poor.quality == "poor" and "POOR fit" in describe_fit(poor.to_dict())


def test_a_fit_predicting_a_negative_latency_is_refused():
    # issue 24 case 3: a steep offset fit (about 1.4 * lut_sum - 0.07) predicts the smallest network below zero
    sums, n_ops, e2e = [0.05, 0.12, 0.20, 0.25, 0.29], [10, 20, 22, 25, 25], [0.010, 0.06, 0.22, 0.30, 0.35]
    (a, c) = np.linalg.lstsq(np.column_stack([sums, np.ones(5)]), e2e, rcond=None)[0]
    assert a > 1.4 and a * 0.05 + c < 0  # the unguarded 2-term fit
    cal = fit_calibration(sums, n_ops, e2e, 0.004)
    assert cal.method == "ratio" and all(cal.apply(s, k) > 0 for s, k in zip(sums, n_ops))
    assert "lstsq2: predicts -0.011 ms (not positive) inside the calibrated range" in cal.refused
    # its smallest network is still missed by 4x: the fit is flagged, not trusted silently
    assert cal.quality == "poor" and cal.loo_max_rel_err > 4


def test_a_negative_per_operator_overhead_is_refused():
    # an exact 3-term relation with b < 0 (as issue 24's 1.010 * lut_sum - 0.0047 * n_ops + 0.009)
    sums = np.array([0.10, 0.15, 0.20, 0.25, 0.30])
    n_ops = np.array([10, 25, 15, 24, 18])
    cal = fit_calibration(sums, n_ops, 1.010 * sums - 0.0047 * n_ops + 0.2)
    assert cal.method != "lstsq3" and cal.b == 0.0 and "lstsq3: negative per-operator overhead" in cal.refused
    positive = fit_calibration(sums, n_ops, 1.010 * sums + 0.0047 * n_ops + 0.2)
    assert positive.method == "lstsq3" and positive.b == pytest.approx(0.0047)


def test_a_saved_call_is_kept_only_while_it_is_smaller_than_the_fastest_operator():
    sums = np.array([0.10, 0.15, 0.20, 0.25, 0.30])
    n_ops = np.array([10, 25, 15, 24, 18])
    cal = fit_calibration(sums, n_ops, 1.0 * sums - 0.002 * n_ops, min_op_ms=0.004)
    assert cal.method == "overhead" and (cal.a, cal.b) == pytest.approx((1.0, -0.002))
    assert "scale + per-operator call fit, e2e = 1.000 * lut_sum -0.0020 * n_ops" in describe_fit(cal.to_dict())
    # a "call" of 5 us where the fastest operator took 4 us alone cannot be a call the network saved
    big = fit_calibration(sums, n_ops, 1.25 * sums - 0.005 * n_ops, min_op_ms=0.004)
    assert big.method != "overhead" and "overhead: the fastest operator would cost no time" in big.refused


def test_a_fit_with_a_negative_slope_falls_back_to_the_ratio():
    # networks timed in different load states: the larger LUT sums measured faster
    sums = np.array([1.0, 2.0, 3.0, 4.0])
    e2e = np.array([2.6, 2.1, 1.9, 1.4])
    cal = fit_calibration(sums, [10, 20, 30, 40], e2e)
    assert cal.method == "ratio" and cal.a == pytest.approx(e2e.sum() / sums.sum()) and cal.a > 0
    assert cal.b == 0.0 and cal.c == 0.0


@pytest.mark.parametrize(
    "args",
    [([], [], []), ([1.0, 2.0], [1], [1.0, 2.0]), ([1.0], [1], [0.0]), ([float("nan")], [1], [1.0])],
)
def test_fit_rejects_bad_input(args):
    with pytest.raises(UsageError):
        fit_calibration(*args)


def test_save_and_load_newest(tmp_path):
    first = fit_calibration([10.0], [20], [12.0])
    second = fit_calibration([10.0, 30.0], [20, 25], [9.0, 25.0])
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        assert load_calibration(lut, "cpu:x") is None
        save_calibration(lut, "cpu:x", first, {"why": "test"})
        save_calibration(lut, "cpu:x", second)
    with LUT.open(tmp_path / "a.db") as lut:
        assert load_calibration(lut, "cpu:x") == second
        rows = lut.calibrations("cpu:x")
    assert rows[0]["provenance"]["why"] == "test" and "latkit_version" in rows[1]["provenance"]
    assert Calibration.from_dict(second.to_dict()) == second


def test_calibrate_device_end_to_end(tmp_path):
    """Profile the ops of 4 small networks, measure the networks whole, fit, apply."""
    from latkit.devices import open_device
    from latkit.profiler.ops import Act, OpSpec, OpType
    from latkit.profiler.protocol import ProtocolConfig
    from latkit.profiler.runner import profile_ops
    from latkit.profiler.spaces.base import Layer, Network

    stem = OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 16), kernel=3, stride=2, act=Act.RELU6)

    def block(k, e):
        return OpSpec(OpType.MBCONV, (16, 16, 16), (16, 16, 16), kernel=k, expand_ratio=e,
                      mid_channels=16 * e, act=Act.RELU6, idskip=True)  # fmt: skip

    nets = [
        Network(f"n{i}", (32, 32, 3),
                (Layer("stem", stem), *(Layer(f"b{j}", block(k, e)) for j, (k, e) in enumerate(blocks))))
        for i, blocks in enumerate([[(3, 3)], [(5, 6), (3, 3)], [(7, 6), (5, 3), (3, 6)],
                                    [(7, 3), (7, 6), (5, 6), (3, 3)]])
    ]  # fmt: skip
    config = ProtocolConfig.quick()
    device = open_device("cpu:onnxruntime")
    cache = tmp_path / "cache"
    try:
        with LUT.open(tmp_path / "lut.db", create=True) as lut:
            specs = [s for n in nets for s in n.specs]
            report = profile_ops(device, specs, lut, config, cache_dir=cache)
            assert report.ok and len(report.measured) == 7
            progress = []
            cal = calibrate_device(lut, device, nets, config, cache_dir=cache,
                                   on_progress=lambda d, t, name: progress.append(name))  # fmt: skip
            # two passes over every network, then again only networks whose figures disagree
            runs = lut.calibrations(device.uri)[-1]["provenance"]["e2e_runs_ms"]
            notes = [p for p in progress if p.startswith("pass ")]  # each pass announced before its figures
            assert len(notes) == len(runs[0]) and notes[0].startswith("pass 1 of 2") and notes[1] == "pass 2 of 2"
            progress = [p for p in progress if not p.startswith("pass ")]
            assert sorted(progress[:4]) == sorted(progress[4:8]) == ["n0", "n1", "n2", "n3"]
            assert len(progress) == sum(len(r) for r in runs) and all(2 <= len(r) <= MAX_PASSES for r in runs)
            assert all(steady(r) or len(r) == MAX_PASSES for r in runs)
            assert cal.n_points == 4 and cal.method in FORMS and cal.loo_max_rel_err is not None
            assert load_calibration(lut, device.uri) == cal
            prov = lut.calibrations(device.uri)[-1]["provenance"]
            assert prov["networks"] == ["n0", "n1", "n2", "n3"] and len(prov["e2e_ms"]) == 4
            assert prov["e2e_ms"] == [min(r) for r in prov["e2e_runs_ms"]]
            assert prov["min_op_ms"] == min(lut.latency_ms(s.key, device.uri) for s in specs)
            assert fit_calibration(prov["lut_sums_ms"], prov["n_ops"], prov["e2e_ms"], prov["min_op_ms"]) == cal
            assert cal.a * prov["min_op_ms"] + cal.b > 0  # every operator keeps a positive latency
            assert prov["e2e_ms"][3] > prov["e2e_ms"][0]  # 1 block vs 4 blocks, measured whole
            raw_err, cal_err = [], []
            for net, e2e in zip(nets, prov["e2e_ms"]):
                est = estimate(lut, net)
                assert est.calibrated
                assert est.total_ms == pytest.approx(cal.apply(est.lut_sum_ms, est.n_measurable))
                raw_err.append(est.lut_sum_ms - e2e)
                cal_err.append(est.total_ms - e2e)
            # every form leaves no bias over the calibration networks, which the plain sum (a=1, b=c=0) may
            assert abs(np.sum(cal_err)) <= abs(np.sum(raw_err)) + 1e-12
    finally:
        device.close()


def test_a_network_is_steady_when_its_two_lowest_figures_agree():
    assert steady([1.00, 1.93]) is False  # a loaded pass: measure again
    assert steady([1.93, 1.00, 1.05]) is True  # the third figure agrees with the lowest
    assert steady([1.0, 1.1]) is True and steady([1.0, 1.1001]) is False  # within 10%
    assert steady([1.0]) is False  # one figure proves nothing
