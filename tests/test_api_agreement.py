"""The Python API agrees with the CLI (issue 26): the same defaults, a URI wherever a device goes,
a list wherever an architecture goes, a LUT path wherever a latency model goes, a function for
every CLI verb, progress events as `run`'s, typed returns with short reprs, and no half-written
output after a failure."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from artefacts import CLASSES, DEVICE, RESOLUTION, SPACE, copy_lut
from cli_checks import run

import latkit
from latkit.core.errors import MissingOpsError, UnknownNameError

FBNET_CSV = Path(__file__).resolve().parents[1] / "data" / "fbnet_latency_ms.csv"


def _ops() -> list[str]:
    """A small network of the space as a list of operator names (its native form)."""
    from latkit.profiler.spaces import get_space

    return ["zero" if "zero" in c.options else "3x3_MBConv3" for c in get_space(SPACE).choices()]


def _cli_default(command: str, option: str) -> object:
    from latkit.cli import _command

    (param,) = [p for p in _command().commands[command].params if option in p.opts]
    return param.default


def test_export_writes_the_cli_layout_by_default_and_removes_what_a_failure_wrote(monkeypatch, tmp_path):
    from latkit.deploy import export as export_mod
    from latkit.deploy.layout import InputLayout, parse_layout

    seen = {}

    def failing_export(arch, weights, formats, out_dir, **kw):
        seen.update(kw)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "model.onnx").write_bytes(b"half")
        raise latkit.LatkitError("converter failed")

    monkeypatch.setattr(export_mod, "export_arch", failing_export)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    for out in (tmp_path / "new" / "export", tmp_path / "kept"):
        with pytest.raises(latkit.LatkitError, match="converter failed"):
            latkit.export("arch.json", "w.safetensors", out_dir=out)
        assert seen["layout"] is InputLayout.NHWC is parse_layout(str(_cli_default("export", "--layout")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # the folders it made are gone
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]  # only what it wrote was removed


def test_export_opens_a_device_uri_and_a_wrong_one_writes_nothing(tmp_path):
    from latkit.profiler.protocol import Preset, ProtocolConfig

    arch = json.dumps(_ops())
    with pytest.raises(UnknownNameError, match="cpu:nope"):
        latkit.export(arch, out_dir=tmp_path / "bad", random_weights=True, space=SPACE, device="cpu:nope")
    assert not (tmp_path / "bad").exists()
    report = latkit.export(arch, formats="onnx", out_dir=tmp_path / "e", random_weights=True, space=SPACE,
                           resolution=RESOLUTION, device=DEVICE, protocol=ProtocolConfig.preset(Preset.QUICK))
    (onnx,) = report.files
    assert onnx.measured["device"] == DEVICE and 0.001 < onnx.measured["latency_ms"] < 100
    assert len(repr(report)) < 200 and "files=[1 item]" in repr(report)


def test_estimate_takes_a_list_of_operator_names(profiled_lut):
    ops = _ops()
    as_list = latkit.estimate(profiled_lut, ops, space=SPACE, resolution=RESOLUTION)
    as_text = latkit.estimate(profiled_lut, json.dumps(ops), space=SPACE, resolution=RESOLUTION)
    assert as_list.total_ms == as_text.total_ms > 0 and as_list.n_measurable == 10
    assert len(repr(as_list)) < 200 and "layers=[" in repr(as_list)
    # without a resolution the list is read at the space's (224): the error names the LUT's own
    with pytest.raises(MissingOpsError, match=rf"holds resolution {RESOLUTION}, not 224.*resolution={RESOLUTION}"):
        latkit.estimate(profiled_lut, ops, space=SPACE)


def test_search_arch_takes_a_lut_path_and_names_the_resolution_it_holds(monkeypatch, profiled_lut, tmp_path):
    from latkit.search import run as run_mod

    with pytest.raises(MissingOpsError, match=rf"at resolution {RESOLUTION}, not 224.*`-r {RESOLUTION}`"):
        latkit.search_arch(SPACE, profiled_lut, 5.0, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    seen = {}
    monkeypatch.setattr(run_mod, "run_search", lambda space, model, config, data, out, **kw: seen.update(
        model=model, config=config))
    latkit.search_arch(SPACE, str(profiled_lut), 5.0, tmp_path / "out", resolution=RESOLUTION, epochs=1)
    prov = seen["model"].provenance
    assert (prov["kind"], prov["resolution"], prov["classes"]) == ("lut", RESOLUTION, CLASSES)
    assert seen["model"].latency_ms(seen["model"].min_latency(SPACE)[1]) > 0


def test_profile_reports_progress_as_run_does(tmp_path):
    events = []
    report = latkit.profile(DEVICE, SPACE, tmp_path / "p.db", resolution=RESOLUTION, limit=2, quick=True,
                            on_progress=lambda *e: events.append(e))
    assert [e[:3] for e in events] == [("profile", 1, 2), ("profile", 2, 2)]
    assert sorted(e[3] for e in events) == sorted(report.measured)  # in the order they finished
    with pytest.raises(TypeError, match="on_progress"):
        latkit.profile(DEVICE, SPACE, tmp_path / "x.db", on_progress="bar")


def test_profile_keeps_one_statistic_per_lut_as_the_cli_does(profiled_lut, tmp_path):
    lut = copy_lut(profiled_lut, tmp_path / "lut.db")
    with pytest.raises(latkit.LatkitError, match="holds p5 figures .* a LUT keeps one statistic"):
        latkit.profile(DEVICE, SPACE, lut, resolution=RESOLUTION, quick=True, statistic="median")
    assert latkit.profile(DEVICE, SPACE, lut, resolution=RESOLUTION, quick=True, statistic="p5").measured == []


# each CLI verb and the API function that wraps it
CLI_TO_API = {
    "devices": "list_devices", "spaces": "list_spaces", "profile": "profile", "measure": "measure",
    "lut estimate": "estimate", "lut calibrate": "calibrate", "lut show": "show_lut", "lut export": "export_lut",
    "lut import": "import_lut", "lut merge": "merge_luts", "predictor fit": "fit_predictor",
    "predictor predict": "predict", "predictor eval": "evaluate_predictor", "predictor design": "design_predictor",
    "predict": "predict_model", "search": "search_arch", "train": "train", "export": "export", "run": "run",
    "loopback-device": "loopback_phone", "predictor sample": "sample_latencies", "inspect": "inspect",
    "kernels build": "build_kernel_predictors", "kernels detect-fusion": "detect_fusion",
    "kernels calibrate": "calibrate_kernels", "kernels transfer": "transfer_kernels", "farm devices": "farm_devices",
    "farm profile": "farm_profile",
}
# the verbs with no function, none being needed: shell helpers and listings
NOT_IN_API = {"cache clear", "completion", "ops", "parse-benchmark", "predictor list"}


def test_every_cli_verb_has_its_api_function():
    from latkit.cli import _command

    verbs, stack = set(), [("", _command())]
    while stack:  # every leaf command, by its full name
        name, cmd = stack.pop()
        if hasattr(cmd, "commands"):
            stack += [(f"{name} {sub}".strip(), c) for sub, c in cmd.commands.items()]
        else:
            verbs.add(name)
    assert set(CLI_TO_API) | NOT_IN_API >= verbs and not set(CLI_TO_API) & NOT_IN_API
    assert set(CLI_TO_API) <= verbs  # no stale name
    for verb, function in CLI_TO_API.items():
        assert function in latkit.__all__ and callable(getattr(latkit, function)), verb


def test_export_lut_writes_what_import_lut_reads(profiled_lut, tmp_path):
    assert latkit.export_lut(profiled_lut, tmp_path / "lut.json") == 71
    with pytest.raises(latkit.LatkitError, match="SQLite file"):
        latkit.export_lut(tmp_path / "lut.json", profiled_lut)  # never over a LUT, its own input included
    (report,) = latkit.import_lut(tmp_path / "back.db", [tmp_path / "lut.json"])
    assert report.added == 71


def test_sample_latencies_takes_the_cli_options_and_reports_progress_as_run_does(monkeypatch, tmp_path):
    from latkit.predictors import collect

    seen = {}

    def sample(dev, sp, n, out, **kw):
        seen.update(kw, uri=dev.info().uri)
        kw["on_progress"](1, n, "net-0")
        return "report"

    monkeypatch.setattr(collect, "sample_latencies", sample)
    (tmp_path / "ref.csv").write_text("\n".join(FBNET_CSV.read_text().splitlines()[:3]) + "\n")  # two archs
    events = []
    assert latkit.sample_latencies(DEVICE, "fbnet", 2, tmp_path / "s.csv", from_csv=tmp_path / "ref.csv",
                                   on_progress=lambda *e: events.append(e)) == "report"
    assert events == [("sampling", 1, 2, "net-0")] and seen["uri"] == DEVICE and len(seen["pool"]) == 2


def test_train_returns_a_typed_result():
    from latkit.deploy import train as train_mod

    assert inspect.signature(latkit.train).return_annotation == "TrainResult"
    assert train_mod.train_arch.__annotations__["return"] == "TrainResult"  # what it returns


def test_results_have_short_reprs(tmp_path):
    from latkit.devices.precision import Precision
    from latkit.lut.calibration import Calibration
    from latkit.lut.io import Conflict, MergeReport
    from latkit.pipeline.runner import PipelineResult
    from latkit.profiler.measurement import Measurement
    from latkit.predictors.kernel_calibration import CalibrationForm, KernelCalibration
    from latkit.predictors.kernels import KernelPredictors
    from latkit.profiler.farm import FarmReport, NodeReport
    from latkit.profiler.kernels import FusionRules
    from latkit.profiler.runner import ProfileReport
    from latkit.search.run import SearchOutcome

    keys = [f"Conv-input:{i}x{i}x16-output:{i}x{i}x32" for i in range(500)]
    pairs = {(k, "Relu") for k in keys}
    results = [
        ProfileReport("adb+tcp://127.0.0.1:6555?delegate=gpu", measured=keys, failed={k: "x" * 300 for k in keys}),
        Measurement("k" * 400, 1.5, 1.6, 0.1, 1.4, 2.0, 1.45, 1.8, 0.05, 1.49, 1.51, 0.01, 1000, 3, 4, True,
                    samples_ms=[1.5] * 1000, provenance={"device": {"uri": "x" * 500}}),
        SearchOutcome([1] * 21, ["7x7_MBConv6"] * 21, 3.2, 91.5, 4.0, tmp_path / ("deep" * 40)),
        PipelineResult(tmp_path, 4.0, 3.9, 3.7, True, True, "HIT: " + "x" * 300, tmp_path / "arch.json", {},
                       tmp_path / "report.md"),
        Calibration(1.0, 0.01, 0.2, "lstsq3", 6, 0.01, 0.05, 0.1, refused="y" * 400),
        MergeReport(70, conflicts=[Conflict(k, "cpu", 1.0, 2.0, "existing") for k in keys]),
        FusionRules(frozenset(pairs), "measured", {f"{a}->{b}": {"fused": True} for a, b in pairs}),
        KernelPredictors({"uri": "x" * 500}, Precision.FP32, {}, FusionRules(frozenset(pairs)), 0.1),
        KernelCalibration(CalibrationForm.AFFINE, 1.1, 0.2, 5, 3.5, 9.0),
        FarmReport(groups={"g": keys}, measured={"g": keys}, fenced={k: "x" * 300 for k in keys}),
        NodeReport("n" * 64, "10.0.0.1", "host" * 40, unreachable={k: "gone" for k in keys}, error="e" * 300),
    ]
    for result in results:
        text = repr(result)
        assert len(text) <= 200 and text.startswith(type(result).__name__ + "("), text
    assert "measured=[500 items]" in repr(results[0]) and "latency_ms=1.5" in repr(results[1])


def test_show_import_and_merge_luts_as_the_cli_does(capsys, profiled_lut, tmp_path):
    code, out, _ = run(capsys, "lut", "show", profiled_lut, "--json")
    assert code == 0 and latkit.show_lut(profiled_lut) == json.loads(out)
    code, _, _ = run(capsys, "lut", "export", profiled_lut, "-o", tmp_path / "lut.json")
    (imported,) = latkit.import_lut(tmp_path / "imported.db", [tmp_path / "lut.json"])
    merged = latkit.merge_luts(tmp_path / "merged.db", [profiled_lut])
    assert code == 0 and imported.added == merged.added == 71 and merged.conflicts == []
    assert latkit.show_lut(tmp_path / "merged.db")["summary"]["total"] == 71
    with pytest.raises(TypeError, match="sources"):
        latkit.merge_luts(tmp_path / "m.db", str(profiled_lut))  # one path, not a list


def test_design_and_evaluate_predictor_as_the_cli_does(capsys, tmp_path):
    code, out, _ = run(capsys, "predictor", "design", "--csv", FBNET_CSV, "--k", "5", "--known", "pixel3,gold_6240")
    design = latkit.design_predictor(FBNET_CSV, 5, known=["pixel3", "gold_6240"])
    assert code == 0 and design == out.split("\n")[:-1] and len(design) == 5
    summary = latkit.evaluate_predictor(FBNET_CSV, "fbnet", "pixel3", k=5, known=["gold_6240", "samsung_a50"], seeds=1)
    assert summary["target"] == "pixel3" and 0 <= summary["method"]["mape_pct"] < 100


@pytest.mark.slow
def test_calibrate_fits_the_device_and_stores_it(profiled_lut, tmp_path):
    lut = copy_lut(profiled_lut, tmp_path / "lut.db")
    events = []
    cal = latkit.calibrate(DEVICE, SPACE, lut, networks=3, resolution=RESOLUTION, quick=True,
                           on_progress=lambda *e: events.append(e))
    assert cal.n_points == 3 and cal.a > 0 and len(repr(cal)) < 200
    assert {e[0] for e in events} == {"calibrate"} and events[-1][1] == events[-1][2] >= 6
    est = latkit.estimate(lut, _ops(), space=SPACE, resolution=RESOLUTION, classes=CLASSES)
    assert est.calibrated and est.total_ms == pytest.approx(cal.apply(est.lut_sum_ms, est.n_measurable))


def test_a_loopback_phone_runs_for_its_block_and_is_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "cache"))
    with latkit.loopback_phone(tmp_path / "phone", auth="off") as phone:
        assert phone.uri.startswith("adb+tcp://127.0.0.1:")
        assert phone.uri in [d["uri"] for d in latkit.list_devices() if d.get("running")]
    assert phone.uri not in [d["uri"] for d in latkit.list_devices()]
