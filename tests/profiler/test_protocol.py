"""The measurement protocol and the op runner, on real ONNX Runtime sessions and LUT files."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from latkit.devices.base import ModelFormat, Session
from latkit.core.errors import DeviceError, UnknownNameError, UsageError
from latkit.devices.precision import Precision, parse_precision
from latkit.lut.store import LUT
from latkit.profiler.export import BuiltModel
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.protocol import Preset, ProtocolConfig, measure_many, measure_one
from latkit.profiler.runner import profile_ops
from timing_log import LoggingDevice

FAST = ProtocolConfig.quick(target_rel_ci=0.05)


def _mbconv(kernel: int, expand: int, hw: int = 8, c: int = 16) -> OpSpec:
    return OpSpec(OpType.MBCONV, (hw, hw, c), (hw, hw, c), kernel=kernel, expand_ratio=expand,
                  mid_channels=c * expand, act=Act.RELU6, idskip=True)  # fmt: skip


SPECS = [_mbconv(3, 3), _mbconv(5, 6), _mbconv(7, 3),
         OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 8), kernel=3, stride=2, act=Act.RELU6)]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def device(ort_device):
    return ort_device  # the session's real ONNX Runtime device (tests/conftest.py)


@pytest.fixture
def models(cache):
    return [BuiltModel(s, cache_dir=cache) for s in SPECS]


class _BrokenModel:
    """A model source whose ONNX file is garbage (a real file ONNX Runtime rejects)."""

    def __init__(self, folder: Path):
        self.key = "broken-model"
        self.input_shape = (1, 3, 8, 8)
        self.path = folder / "broken.onnx"
        self.path.write_bytes(b"this is not a protobuf")

    def file(self, fmt: ModelFormat) -> Path:
        return self.path

    def torch_module(self):
        raise NotImplementedError


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "bad",
    [
        {"warmup_runs": -1}, {"min_samples": 0}, {"min_samples": 50, "max_samples": 10},
        {"target_rel_ci": 0.0}, {"target_rel_ci": 1.5}, {"quantile": 1.0},
        {"target_sample_ms": 0}, {"max_seconds_per_op": -1}, {"pool_size": 0},
        {"samples_per_round": 2.5}, {"warmup_s": float("nan")},
    ],
)  # fmt: skip
def test_config_validation(bad):
    with pytest.raises(UsageError):
        ProtocolConfig(**bad)


def test_config_defaults_and_quick():
    c = ProtocolConfig()
    assert c.warmup_runs >= 10 and c.warmup_s >= 0.2 and 2.0 <= c.target_sample_ms <= 5.0
    assert c.target_rel_ci == 0.02 and c.quantile == 0.05
    assert ProtocolConfig(**c.to_dict()) == c
    q = ProtocolConfig.quick(target_rel_ci=0.03)
    assert q.target_rel_ci == 0.03 and q.max_samples < c.max_samples


def test_presets_are_the_settings_their_callers_used():
    default = ProtocolConfig()
    assert ProtocolConfig.preset("default") == ProtocolConfig.preset(Preset.DEFAULT) == default
    assert ProtocolConfig.preset("quick") == ProtocolConfig.quick() == ProtocolConfig(
        warmup_runs=5, warmup_s=0.03, min_samples=12, max_samples=40, target_rel_ci=0.05,
        max_seconds_per_op=1.0, pool_size=8)  # fmt: skip
    assert ProtocolConfig.preset("profile") == ProtocolConfig(target_rel_ci=0.02, max_seconds_per_op=20.0)
    assert ProtocolConfig.preset("pipeline") == ProtocolConfig(
        min_samples=20, max_samples=120, target_rel_ci=0.03, max_seconds_per_op=2.0)
    assert ProtocolConfig.preset("network") == ProtocolConfig(
        min_samples=30, max_samples=200, target_rel_ci=0.02, max_seconds_per_op=4.0)
    # overrides go on top, and are validated like any setting
    assert ProtocolConfig.preset("quick", target_rel_ci=0.1).min_samples == 12
    with pytest.raises(UsageError, match="target_rel_ci"):
        ProtocolConfig.preset("pipeline", target_rel_ci=2.0)
    with pytest.raises(UnknownNameError, match="unknown protocol preset 'fast'; known: default, network, "
                                               "pipeline, profile, quick"):
        ProtocolConfig.preset("fast")


# ---------------------------------------------------------------- protocol


def test_measure_many_statistics_and_provenance(device, models):
    out = measure_many(device, models, FAST)
    assert [m.key for m in out] == [s.key for s in SPECS]
    for m in out:
        raw = np.asarray(m.samples_ms)
        assert m.n_samples == raw.size >= FAST.min_samples
        assert np.all(raw > 0)
        assert m.latency_ms == pytest.approx(np.quantile(raw, FAST.quantile), rel=1e-12)
        assert m.ci_low_ms <= m.latency_ms <= m.ci_high_ms
        assert m.rel_ci == pytest.approx((m.ci_high_ms - m.ci_low_ms) / 2 / m.latency_ms)
        assert m.converged == (m.rel_ci <= FAST.target_rel_ci)
        # iterations are chosen so that one sample lasts about target_sample_ms
        sample_ms = m.iterations * m.latency_ms
        assert m.iterations == 1 or 0.4 * FAST.target_sample_ms < sample_ms < 2.5 * FAST.target_sample_ms
        p = m.provenance
        assert p["device"] == device.info().to_dict()
        assert p["protocol"] == FAST.to_dict() and p["iterations"] == m.iterations
        assert "loadavg" in p["state_before"] and "loadavg" in p["state_after"]
        assert p["host_cpu"] and p["latkit_version"]
        assert datetime.fromisoformat(p["measured_at"]).utcoffset().total_seconds() == 0
        assert p["median_ms"] == pytest.approx(float(np.median(raw)))
        assert len(p["sample_rounds"]) == raw.size
    # bigger ops are slower: the 5x5 expand-6 block does ~2.8x the multiply-adds of the
    # 3x3 expand-3 one (350k vs 126k); a 7x7 vs 3x3 kernel at 8x8x16 is too close to call
    # on a loaded host (both ~0.05 ms), so the size gap compared here is a real one
    assert out[1].latency_ms > out[0].latency_ms


def test_rounds_are_interleaved_and_shuffled(device, models):
    logged = LoggingDevice(device)
    config = ProtocolConfig.quick(min_samples=12, max_samples=12, samples_per_round=3, pool_size=4)
    out = measure_many(logged, models, config)
    # every model took part in every round: rounds 0..3 for all of them
    for m in out:
        assert sorted(set(m.provenance["sample_rounds"])) == [0, 1, 2, 3]
    # the last 4 rounds x 4 models x (1 untimed run + 3 samples) calls are the rounds
    keys = logged.log[-64:]
    visits = [keys[i:i + 4] for i in range(0, 64, 4)]
    assert all(len(set(v)) == 1 for v in visits)  # a visit stays on one model
    rounds = [[v[0] for v in visits[i:i + 4]] for i in range(0, 16, 4)]
    for r in rounds:
        assert sorted(r) == sorted(m.key for m in models)  # each model once per round
    assert len({tuple(r) for r in rounds}) > 1  # the order is reshuffled between rounds


def test_each_result_is_committed_before_the_run_goes_on(device, models, tmp_path):
    path = tmp_path / "lut.db"
    seen = []
    with LUT.open(path, create=True) as lut:
        def on_progress(done, total, key, m):
            with LUT.open(path) as other:  # a second connection sees the row already
                assert key in other.done_keys(device.uri)
            seen.append((done, total, key))

        measure_many(device, models, FAST, sink=lut, on_progress=on_progress)
    assert [d for d, _, _ in seen] == [1, 2, 3, 4] and all(t == 4 for _, t, _ in seen)
    with LUT.open(path) as lut:
        assert lut.done_keys(device.uri) == {s.key for s in SPECS}


def test_caps_end_unconverged_models(device, models):
    config = ProtocolConfig.quick(target_rel_ci=1e-9, min_samples=6, max_samples=12)
    out = measure_many(device, models[:2], config)
    assert all(m.n_samples == 12 and not m.converged for m in out)
    timed = ProtocolConfig.quick(target_rel_ci=1e-9, max_samples=100_000, max_seconds_per_op=0.05)
    (m,) = measure_many(device, models[:1], timed)
    assert not m.converged and m.provenance["timed_s"] >= 0.05
    assert m.provenance["timed_s"] < 0.05 + 0.05  # stops within about one round of the cap


def test_failures_are_reported_or_raised(device, models, tmp_path):
    broken = _BrokenModel(tmp_path)
    errors = {}
    out = measure_many(device, [models[0], broken, models[1]], FAST,
                       on_error=lambda k, e: errors.setdefault(k, e))  # fmt: skip
    assert [m.key for m in out] == [models[0].key, models[1].key]
    assert list(errors) == ["broken-model"] and isinstance(errors["broken-model"], DeviceError)
    with pytest.raises(DeviceError, match="onnxruntime cannot load"):
        measure_many(device, [broken], FAST)


def test_sink_needs_specs_and_keys_must_be_distinct(device, models, tmp_path, cache):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        with pytest.raises(UsageError, match="no op spec"):
            measure_many(device, [_BrokenModel(tmp_path)], FAST, sink=lut)
    with pytest.raises(UsageError, match="distinct keys"):
        measure_many(device, [models[0], BuiltModel(SPECS[0], cache_dir=cache)], FAST)


def test_measure_one_network(device, cache):
    from latkit.profiler.spaces.base import Layer, Network

    stem, block = SPECS[3], _mbconv(3, 3, hw=16, c=8)
    net = Network("tiny", (32, 32, 3), (Layer("stem", stem), Layer("block", block)))
    m = measure_one(device, BuiltModel(net, cache_dir=cache), FAST)
    assert m.key.startswith("network-tiny-") and m.n_samples >= FAST.min_samples
    assert m.latency_ms > 0 and m.provenance["sample_rounds"][0] == 0


# ---------------------------------------------------------------- runner


def test_profile_ops_resumes_skips_and_records_failures(device, tmp_path, cache):
    bad = OpSpec(OpType.STEM, (32, 32, 3), (10, 10, 8), kernel=3, stride=2, act=Act.RELU6)
    free = OpSpec(OpType.SKIP, (8, 8, 16), (8, 8, 16))
    specs = [*SPECS, SPECS[0], free, bad]  # a repeat and a free op are dropped
    path = tmp_path / "lut.db"
    with LUT.open(path, create=True) as lut:
        first = profile_ops(device, specs, lut, FAST, limit=2, cache_dir=cache)
        assert first.measured == [SPECS[0].key, SPECS[1].key]
        assert first.left == 3 and first.skipped == [] and first.ok
        progress = []
        second = profile_ops(device, specs, lut, FAST, cache_dir=cache,
                             on_progress=lambda d, t, k, m: progress.append((d, t, k, m)))  # fmt: skip
        assert second.skipped == [SPECS[0].key, SPECS[1].key]
        assert second.measured == [SPECS[2].key, SPECS[3].key]
        assert list(second.failed) == [bad.key] and "UsageError" in second.failed[bad.key]
        assert not second.ok and second.left == 0
        assert sorted(d for d, _, _, _ in progress) == [1, 2, 3] and all(t == 3 for _, t, _, _ in progress)
        assert [k for _, _, k, m in progress if m is None] == [bad.key]
        assert lut.done_keys(device.uri) == {s.key for s in SPECS}
        assert {r["source"] for r in lut.rows()} == {"measured"}
        assert lut.spec(SPECS[3].key) == SPECS[3]


# ---------------------------------------------------------------- bad timings


class _Skewed(Session):
    """A real session whose reported time is passed through ``skew`` (a broken device timer)."""

    def __init__(self, inner: Session, skew):
        self.inner, self.skew = inner, skew

    def time(self, iterations: int) -> float:
        return self.skew(self.inner.time(iterations))

    def close(self) -> None:
        self.inner.close()


class _SkewedDevice(LoggingDevice):
    """The real ONNX Runtime device, with one model's timings skewed."""

    def __init__(self, device, key: str, skew):
        super().__init__(device)
        self.key, self.skew = key, skew

    def open(self, model):
        session = self.device.open(model)
        return _Skewed(session, self.skew) if model.key == self.key else session


@pytest.mark.parametrize(
    ("skew", "says"),
    [
        (lambda t: -t, "not a positive finite time"),  # looped forever in the warm-up
        (lambda t: 0.0, "not a positive finite time"),  # was stored as a 0.0 ms row
        (lambda t: float("nan"), "not a positive finite time"),
        (lambda t: float("inf"), "not a positive finite time"),  # aborted the whole run
        (lambda t: t * 1e6, "implausible"),  # more than the call took
        (lambda t: 1e-12, "implausible"),  # a picosecond per run
    ],
)
def test_bad_timings_fail_that_op_and_the_run_goes_on(device, tmp_path, cache, skew, says):
    bad = SPECS[1].key
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        report = profile_ops(_SkewedDevice(device, bad, skew), SPECS, lut, FAST, cache_dir=cache)
        rows = {r["op_key"]: r for r in lut.rows(device.uri)}
    assert list(report.failed) == [bad] and says in report.failed[bad]
    assert "MeasurementError" in report.failed[bad]
    assert set(rows) == {s.key for s in SPECS} - {bad}
    assert all(r["latency_ms"] > 0 and all(v > 0 for v in r["samples_ms"]) for r in rows.values())


def test_a_single_zero_reading_is_taken_again_and_the_op_is_stored(device, tmp_path, cache):
    """A thread clock that did not tick over one short run reads 0: that reading is retried."""
    zeros = iter([0.0, 0.0])  # two zero readings in a row, then the real timer
    odd = SPECS[1].key
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        report = profile_ops(_SkewedDevice(device, odd, lambda t: next(zeros, t)), SPECS, lut, FAST,
                             cache_dir=cache)
        rows = {r["op_key"]: r for r in lut.rows(device.uri)}
    assert report.failed == {} and next(zeros, None) is None  # both zeros were read
    assert rows[odd]["latency_ms"] > 0 and all(v > 0 for v in rows[odd]["samples_ms"])


def test_outage_wait_is_validated():
    with pytest.raises(UsageError):
        ProtocolConfig(outage_wait_s=-1)
    assert ProtocolConfig().outage_wait_s > 0


def test_profile_ops_at_int8_stores_int8_rows_beside_fp32(device, tmp_path, cache):
    specs = SPECS[:2]
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        fp32 = profile_ops(device, specs, lut, FAST, cache_dir=cache)
        int8 = profile_ops(device, specs, lut, FAST, cache_dir=cache, precision=Precision.INT8)
        again = profile_ops(device, specs, lut, FAST, cache_dir=cache, precision=Precision.INT8)
        assert fp32.precision == "fp32" and int8.precision == "int8"
        assert sorted(int8.measured) == sorted(s.key for s in specs) and int8.ok  # not skipped as done
        assert again.measured == [] and sorted(again.skipped) == sorted(s.key for s in specs)
        assert lut.done_keys(device.uri, precision=Precision.INT8) == {s.key for s in specs}
        assert lut.done_keys(device.uri) == {s.key for s in specs}
        rows = lut.rows(device.uri, precision=Precision.INT8)
    assert len(rows) == 2
    for row in rows:
        assert row["precision"] == "int8" and row["latency_ms"] > 0
        q = row["provenance"]["quantization"]
        assert row["provenance"]["precision"] == "int8" and "QDQ" in q["scheme"]
        assert q["quantizer"].startswith("onnxruntime-") and q["kernels"]["int8"] == q["kernels"]["total"] >= 1


def test_profile_ops_refuses_a_precision_up_front(device, tmp_path, cache):
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        with pytest.raises(UsageError, match=r"^device cpu:onnxruntime does not run fp16 models; it runs fp32, int8$"):
            profile_ops(device, SPECS, lut, FAST, cache_dir=cache, precision=Precision.FP16)
        with pytest.raises(UsageError, match="unknown precision 'int4'"):  # text is parsed where it enters
            parse_precision("int4")
        assert len(lut) == 0
