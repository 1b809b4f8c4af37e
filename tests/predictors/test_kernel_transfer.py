"""Adapting a known device's kernel predictors to a new device with a few of its measurements."""

from __future__ import annotations

import numpy as np
import pytest

from latkit.core.errors import UsageError
from latkit.predictors.kernel_transfer import transfer_configs, transfer_predictors
from latkit.predictors.kernels import KernelPredictors, fit_predictors
from latkit.profiler.kernel_sampling import sample_configs
from latkit.profiler.kernels import KernelType, default_rules, work

TYPES = (KernelType.CONV, KernelType.POINTWISE, KernelType.ELEMENTWISE)


def _source_ms(c):
    return 0.005 + 1e-6 * work(c)[0]


def _target_ms(c):
    """A new device: 3x faster convolutions, 1.5x faster element-wise work, large kernels relatively faster."""
    speed = {KernelType.CONV: 3.0, KernelType.POINTWISE: 3.0}.get(c.type, 1.5)
    return 0.003 + 1e-6 * work(c)[0] ** 0.95 / speed


def _mape(preds, configs, truth):
    got = preds.predict_configs(configs) + preds.overhead_ms
    want = np.asarray([truth(c) for c in configs])
    return float(100 * np.mean(np.abs(got - want) / want))


def test_a_few_samples_per_type_adapt_the_source_far_better_than_a_fit_from_them_alone(tmp_path):
    info = {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"}
    source = fit_predictors([(c, _source_ms(c)) for t in TYPES for c in sample_configs(t, 40, seed=3)], info,
                            default_rules("onnxruntime"), overhead_ms=0.005)  # fmt: skip
    held_out = [c for t in TYPES for c in sample_configs(t, 30, seed=11)]
    new = transfer_configs(TYPES, 24, seed=7)
    assert sorted({c.type for c in new}) == sorted(TYPES) and len(new) == 24
    rows = [(c, _target_ms(c)) for c in new]
    target = {"uri": "cpu:onnxruntime?threads=2", "runtime": "onnxruntime"}
    adapted = transfer_predictors(source, rows, target, overhead_ms=0.003)
    scratch = fit_predictors(rows, target, default_rules("onnxruntime"), overhead_ms=0.003)
    unadapted = _mape(source, held_out, _target_ms)
    transferred = _mape(adapted, held_out, _target_ms)
    assert unadapted > 60 and transferred < 8, (unadapted, transferred)
    assert transferred < 0.5 * _mape(scratch, held_out, _target_ms)
    assert adapted.provenance["transfer"]["rows"] == 24 and adapted.uri == target["uri"]
    loaded = KernelPredictors.load(adapted.save(tmp_path / "kp"))
    assert np.allclose(loaded.predict_configs(held_out), adapted.predict_configs(held_out), rtol=1e-9)


def test_a_type_without_samples_takes_the_pooled_ratio_and_no_known_type_is_refused():
    info = {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"}
    source = fit_predictors([(c, _source_ms(c)) for t in TYPES for c in sample_configs(t, 20, seed=3)], info,
                            default_rules("onnxruntime"), overhead_ms=0.005)  # fmt: skip
    conv_rows = [(c, 2 * _source_ms(c) - 0.005) for c in sample_configs(KernelType.CONV, 6, seed=8)]  # 2x slower
    adapted = transfer_predictors(source, conv_rows, info, overhead_ms=0.005, penalty=1e6)
    elementwise = sample_configs(KernelType.ELEMENTWISE, 5, seed=9)
    ratio = adapted.predict_configs(elementwise) / source.predict_configs(elementwise)
    assert np.allclose(ratio, 2.0, rtol=0.05)
    with pytest.raises(UsageError, match="no measured kernels"):
        transfer_predictors(source, [(sample_configs(KernelType.SOFTMAX, 1)[0], 1.0)], info, overhead_ms=0.005)


def test_fewer_samples_than_the_slope_minimum_move_only_the_intercept():
    """Two samples far apart in size and in ratio fit no slope: it would extrapolate by orders of magnitude."""
    from latkit.predictors.kernel_transfer import MIN_SLOPE_SAMPLES

    info = {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"}
    source = fit_predictors([(c, _source_ms(c)) for c in sample_configs(KernelType.CONV, 20, seed=3)], info,
                            default_rules("onnxruntime"), overhead_ms=0.005)  # fmt: skip
    small, large = sorted(sample_configs(KernelType.CONV, 10, seed=4), key=lambda c: work(c)[0])[::9]
    rows = [(small, _source_ms(small)), (large, 50 * _source_ms(large))]
    assert len(rows) < MIN_SLOPE_SAMPLES
    adapted = transfer_predictors(source, rows, info, overhead_ms=0.005)
    before, after = source.models[KernelType.CONV].coef, adapted.models[KernelType.CONV].coef
    assert np.array_equal(before[:-1], after[:-1]) and after[-1] != before[-1]


@pytest.mark.slow  # measures a few kernels on the host
def test_cli_transfer_measures_into_the_lut_and_a_rerun_measures_nothing_new(tmp_path, capsys):
    import json

    from latkit.cli import main
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT

    info = {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"}
    source = fit_predictors([(c, _source_ms(c)) for c in sample_configs(KernelType.ELEMENTWISE, 10, seed=3)], info,
                            default_rules("onnxruntime"), overhead_ms=0.005).save(tmp_path / "source")  # fmt: skip
    argv = ["kernels", "transfer", "--device", "cpu:onnxruntime", "--from", str(source), "--samples", "3",
            "--lut", str(tmp_path / "k.db"), "--out", str(tmp_path / "adapted"), "--quick", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 3 and out["per_type"] == {"elementwise": 3} and out["source"] == "cpu:onnxruntime"
    with LUT.open(tmp_path / "k.db", readonly=True) as lut:
        n = len(KernelStore(lut).done_keys("cpu:onnxruntime"))
    assert n == 4  # the overhead model and the 3 samples
    assert main(argv) == 0
    with LUT.open(tmp_path / "k.db", readonly=True) as lut:
        assert len(KernelStore(lut).done_keys("cpu:onnxruntime")) == n
    adapted = KernelPredictors.load(tmp_path / "adapted")
    assert adapted.provenance["transfer"]["rows"] == 3
