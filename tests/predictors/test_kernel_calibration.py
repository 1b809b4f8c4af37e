"""Calibrating the kernel sum on measured networks: form chosen by leave-one-out error, stored, applied."""

from __future__ import annotations

import numpy as np
import pytest

from onnx import TensorProto, helper, numpy_helper

from latkit.core.errors import UsageError
from latkit.predictors.kernel_calibration import CalibrationForm, calibrate, fit_calibration
from latkit.predictors.kernels import KernelPredictors, fit_predictors
from latkit.profiler.kernel_sampling import sample_configs
from latkit.profiler.graph import onnx_graph
from latkit.profiler.kernels import KernelType, default_rules, group_kernels, work


def _conv_relu():
    w = numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_constant_factor_is_fitted_as_a_ratio():
    raw = np.array([2.0, 5.0, 11.0, 30.0])
    fit = fit_calibration(raw, 1.25 * raw)
    assert fit.form in (CalibrationForm.RATIO, CalibrationForm.AFFINE)
    assert fit.scale == pytest.approx(1.25, rel=1e-6)
    assert fit.offset_ms == pytest.approx(0.0, abs=1e-6)
    assert fit.loo_mape_pct == pytest.approx(0.0, abs=1e-6)
    assert fit.raw_mape_pct == pytest.approx(20.0)


def test_a_fixed_part_is_fitted_as_affine_and_beats_the_ratio_out_of_sample():
    raw = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = fit_calibration(raw, 0.9 * raw + 1.5)
    assert fit.form is CalibrationForm.AFFINE
    assert (fit.scale, fit.offset_ms) == pytest.approx((0.9, 1.5), rel=1e-6)
    assert fit.loo_mape_pct < 1e-6 < fit.raw_mape_pct


def test_predictions_already_right_stay_uncalibrated():
    raw = np.array([1.0, 3.0, 9.0])
    noise = np.array([1.01, 0.99, 1.0])
    fit = fit_calibration(raw, raw * noise)
    assert fit.form is CalibrationForm.NONE
    assert (fit.scale, fit.offset_ms) == (1.0, 0.0)


def test_two_networks_try_only_a_ratio_and_one_is_refused():
    assert fit_calibration([1.0, 2.0], [2.0, 4.1]).form is CalibrationForm.RATIO
    with pytest.raises(UsageError, match="two or more networks"):
        fit_calibration([1.0], [2.0])
    with pytest.raises(UsageError, match="positive"):
        fit_calibration([1.0, 0.0], [2.0, 1.0])


def test_calibration_is_stored_with_the_predictors_and_applied_after_loading(tmp_path):
    rows = [(c, 0.005 + 1e-6 * work(c)[0]) for t in (KernelType.CONV, KernelType.ELEMENTWISE)
            for c in sample_configs(t, 12, seed=3)]
    preds = fit_predictors(rows, {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"},
                           default_rules("onnxruntime"), overhead_ms=0.005)
    graph = group_kernels(onnx_graph(_conv_relu(), "m.onnx"), preds.rules)
    raw = preds.predict([graph])[0].latency_ms
    fit = calibrate(preds, [graph, graph, graph], [2 * raw, 2 * raw, 2 * raw])
    assert fit.form is CalibrationForm.RATIO and fit.scale == pytest.approx(2.0)
    loaded = KernelPredictors.load(preds.save(tmp_path / "p"))
    again = loaded.predict([graph])[0]
    assert again.calibrated and again.latency_ms == pytest.approx(2 * raw, rel=1e-6)
    assert loaded.calibration["loo_mape_pct"] == pytest.approx(0.0, abs=1e-6)

