"""The kernel-predictor and farm verbs of the Python API (latkit/api_kernels.py, latkit/api_farm.py):
the CLI's defaults, a URI or an open device, progress as `run`'s events, the library's result."""

from __future__ import annotations

import inspect

import pytest
from artefacts import DEVICE, RESOLUTION, SPACE

import latkit
from latkit.profiler.protocol import ProtocolConfig

# a few samples per kernel: these tests check what is stored and returned, not the figures
TINY = ProtocolConfig.quick(min_samples=3, max_samples=5, warmup_runs=1, warmup_s=0.0, max_seconds_per_op=0.2)

# API function -> (CLI verb, {API parameter: CLI option}) whose defaults must agree
DEFAULTS = {
    "build_kernel_predictors": ("kernels build", {"budget": "--budget", "per_type": "--per-type",
                                                  "rounds": "--rounds", "quick": "--quick"}),
    "transfer_kernels": ("kernels transfer", {"samples": "--samples", "threads": "--threads", "budget": "--budget",
                                              "quick": "--quick"}),
    "calibrate_kernels": ("kernels calibrate", {"space": "--space", "networks": "--networks",
                                                "resolution": "--resolution", "quick": "--quick"}),
    "detect_fusion": ("kernels detect-fusion", {"quick": "--quick"}),
    "farm_devices": ("farm devices", {"threads": "--threads", "address": "--address"}),
    "farm_profile": ("farm profile", {"resolution": "--resolution", "threads": "--threads", "limit": "--limit",
                                      "quick": "--quick", "target_ci": "--target-ci", "op_timeout_s": "--op-timeout",
                                      "device_wait_s": "--device-wait", "precision": "--precision"}),
}  # fmt: skip


@pytest.mark.parametrize("function", sorted(DEFAULTS))
def test_the_api_takes_the_cli_defaults(function):
    from latkit.cli import _command

    verb, options = DEFAULTS[function]
    cmd = _command()
    for word in verb.split():
        cmd = cmd.commands[word]
    cli = {opt: p.default for p in cmd.params for opt in p.opts}
    params = inspect.signature(getattr(latkit, function)).parameters
    assert {name: params[name].default for name in options} == {name: cli[opt] for name, opt in options.items()}


@pytest.mark.slow
def test_build_calibrate_and_transfer_kernel_predictors(ort_device, tmp_path):
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.predictors.kernel_calibration import CalibrationForm
    from latkit.predictors.kernels import KernelPredictors, default_predictor_dir

    lut, events = tmp_path / "k.db", []
    preds = latkit.build_kernel_predictors(ort_device, lut=lut, budget=120, per_type=1, rounds=0, config=TINY,
                                           on_progress=lambda *e: events.append(e))
    assert not ort_device.closed  # an open device is the caller's to close
    with LUT.open(lut, readonly=True) as store:
        rows = KernelStore(store).done_keys(DEVICE)
    assert {e[0] for e in events} == {"kernels"} and sorted(e[3].split()[1] for e in events) == sorted(rows)
    assert events[0][1:3] == (1, 1) and events[0][3].startswith("overhead ")
    folder = default_predictor_dir(lut, DEVICE)
    assert KernelPredictors.load(folder).uri == DEVICE and preds.overhead_ms > 0

    events.clear()
    fit = latkit.calibrate_kernels(DEVICE, space=SPACE, networks=2, resolution=RESOLUTION, lut=lut, config=TINY,
                                   on_progress=lambda *e: events.append(e))
    assert fit.networks == 2 and [e[:3] for e in events] == [("calibrate", 1, 2), ("calibrate", 2, 2)]
    stored = fit.to_dict() if fit.form is not CalibrationForm.NONE else {}
    assert KernelPredictors.load(folder).calibration == stored  # saved with the predictors

    moved = latkit.transfer_kernels(DEVICE, folder, samples=2, lut=tmp_path / "t.db", budget="2m",
                                    out=tmp_path / "t", config=TINY)  # fmt: skip
    assert moved.provenance["transfer"]["rows"] >= 1 and (tmp_path / "t" / "predictors.json").is_file()


@pytest.mark.slow
def test_detect_fusion_stores_the_rules_a_build_uses(ort_device, tmp_path):
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.profiler.fusion import CANDIDATES, probe_key

    events = []
    rules = latkit.detect_fusion(DEVICE, lut=tmp_path / "k.db", config=TINY, on_progress=lambda *e: events.append(e))
    probes = {probe_key(pair, name) for pair in CANDIDATES for name in ("a", "b", "ab")}
    total = 1 + len(probes)  # the overhead model, then A, B and A->B of every pair, each probe timed once
    assert len(probes) < 3 * len(CANDIDATES)  # the pairs that start with Conv share one A
    assert rules.source == "measured" and len(rules.evidence) == len(CANDIDATES)
    assert [e[:3] for e in events][-1] == ("detect-fusion", total, total) and len(events) == total
    with LUT.open(tmp_path / "k.db", readonly=True) as store:
        assert KernelStore(store).rules(DEVICE) == rules


class _Run:
    def totals(self):
        return {"todo": 4, "done": 1}


def test_farm_profile_passes_the_cli_settings_on_and_reports_progress(monkeypatch, tmp_path):
    from latkit.profiler import farm
    from latkit.profiler.farm.options import farm_protocol, space_operators

    seen = {}

    def profile(specs, sink, devices, **kw):
        seen.update(kw, specs=specs, devices=devices)
        kw["on_event"]("done", None, _Run())
        return "report"

    monkeypatch.setattr(farm, "farm_profile", profile)
    events = []
    assert latkit.farm_profile(SPACE, "adb*", tmp_path / "f.db", resolution=RESOLUTION, limit=3, quick=True,
                               adb=["adb+tcp://127.0.0.1:6555"], on_progress=lambda *e: events.append(e)) == "report"
    assert seen["specs"] == space_operators(SPACE, RESOLUTION, 3) and len(seen["specs"]) == 3
    assert seen["protocol"] == farm_protocol(True) and seen["config"].op_timeout_s == 900.0
    assert (seen["devices"], seen["adb"], seen["threads"], seen["device_options"]) == (
        "adb*", ["adb+tcp://127.0.0.1:6555"], 1, {})
    assert events == [("farm", 1, 4, "done")]


def test_farm_devices_passes_the_cluster_on(monkeypatch):
    from latkit.profiler import farm

    monkeypatch.setattr(farm, "farm_devices", lambda *args: list(args))
    assert latkit.farm_devices(address="auto", threads=2) == ["auto", [], 2, {}]


def test_a_failed_build_leaves_no_predictor_folder(tmp_path):
    from latkit.core.errors import StoreError, UnknownNameError

    with pytest.raises(UnknownNameError, match="cpu:nope"):
        latkit.build_kernel_predictors("cpu:nope", lut=tmp_path / "k.db", out=tmp_path / "new" / "preds")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):  # before any device opens
        latkit.build_kernel_predictors("cpu:nope", lut=tmp_path / "k.db", out=tmp_path / "file")
