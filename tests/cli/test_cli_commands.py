"""The CLI's commands end to end, on real components (ONNX Runtime, SQLite, the public data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from artefacts import INT8_ARGV, RUN_ARGV, copy_lut, copy_run
from latkit.cli import main

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "data"
FIXTURES = Path(__file__).resolve().parents[1] / "devices" / "fixtures"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def small_lut(profiled_lut) -> Path:
    """proxyless_mobile_w05 at 32x32, profiled on cpu:onnxruntime with the quick protocol (shared: read only)."""
    return profiled_lut


def test_profile_estimate_and_measure(capsys, small_lut, tmp_path):
    code, out, _ = run(capsys, "lut", "show", str(small_lut), "--json")
    assert code == 0
    summary = json.loads(out)["summary"]
    (dev,) = summary["devices"]
    assert dev["uri"] == "cpu:onnxruntime" and dev["ops"] == 71  # the space's 70 and the 10-class classifier

    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "proxyless_mobile_w05", "resolution": 32,
                                "arch": ["5x5_MBConv6"] + ["zero", "3x3_MBConv3"] * 10}))
    code, out, _ = run(capsys, "lut", "estimate", "--lut", str(small_lut), "--space",
                       "proxyless_mobile_w05", "--arch", str(arch), "--json")
    assert code == 0
    est = json.loads(out)
    layers = est["layers"]
    assert layers[0]["key"].startswith("Conv-input:32x32x3")
    assert sum(layer["latency_ms"] for layer in layers) == pytest.approx(est["lut_sum_ms"])
    assert all(layer["latency_ms"] == 0 for layer in layers if layer["key"].startswith("zero-"))

    code, out, _ = run(capsys, "measure", "--space", "proxyless_mobile_w05", "--arch", str(arch),
                       "--quick", "--lut", str(small_lut), "--json")
    assert code == 0
    result = json.loads(out)
    m = result["measurement"]
    assert m["latency_ms"] > 0 and m["n_samples"] >= 12
    assert m["provenance"]["device"]["uri"] == "cpu:onnxruntime"
    # the LUT sum and the end-to-end figure describe the same network
    assert 0.2 < result["estimate_ms"] / m["latency_ms"] < 5
    # the network's three slowest operators were re-measured before and after it
    drift = result["device_drift"]
    slowest = sorted({(layer["latency_ms"], layer["key"]) for layer in layers}, reverse=True)[:3]
    assert {op["key"] for op in drift["ops"]} == {k for _, k in slowest} and len(drift["ops"]) == 6
    assert drift["ratio"] > 0


def test_profile_resumes_without_remeasuring(capsys, small_lut, tmp_path):
    lut = copy_lut(small_lut, tmp_path / "cpu.db")
    code, _, err = run(capsys, "profile", "--device", "cpu:onnxruntime", "--space",
                       "proxyless_mobile_w05", "--resolution", "32", "--lut", str(lut), "--quick")
    assert code == 0
    assert "71 already in" in err and "measured 0" in err


def test_export_onnx_matches_torch(capsys, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "proxyless_mobile_w05", "resolution": 32,
                                "arch": ["3x3_MBConv3"] * 21}))
    code, out, _ = run(capsys, "export", "--arch", str(arch), "--format", "onnx", "--random-weights",
                       "--out", str(tmp_path / "exp"), "--json")
    assert code == 0
    report = json.loads(out)
    (onnx_file,) = report["files"]
    assert onnx_file["parity"]["passed"] and onnx_file["parity"]["max_rel_err"] < 1e-3
    sidecar = json.loads(Path(onnx_file["sidecar"]).read_text())
    assert sidecar["schema"] == "latkit.export"
    sess = ort.InferenceSession(onnx_file["path"], providers=["CPUExecutionProvider"])
    (out_arr,) = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})
    assert out_arr.shape[0] == 1


def test_tabular_search_meets_the_target(capsys, tmp_path):
    code, out, _ = run(capsys, "search", "--space", "nasbench201",
                       "--accuracy-table", f"{DATA / 'nasbench201_accuracy.csv'}:cifar10-val",
                       "--latency-table", f"{DATA / 'nasbench201_latency_ms.csv'}:pixel3",
                       "--target-ms", "10", "--algorithm", "random", "--queries", "40",
                       "--out", str(tmp_path), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["queries_used"] == 40
    assert result["best_latency_ms"] <= 10
    assert result["best_accuracy"] <= result["extra"]["oracle_accuracy"]
    assert (tmp_path / "search.json").is_file()


def test_search_needs_one_latency_source(capsys):
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", "5")
    assert code != 0 and err.strip().startswith("error:") and "--lut" in err


def test_supernet_search_on_smoothed_accuracy(capsys, small_lut, tmp_path):
    code, out, err = run(capsys, "search", "--space", "proxyless_mobile_w05", "--lut", str(small_lut),
                         "--resolution", "32", "--target-ms", "1000", "--algorithm", "random",
                         "--search-epochs", "1", "--queries", "3", "--smooth-accuracy", "6",
                         "--out", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["latency_ms"] <= 1000 and (tmp_path / "accuracy_gcn" / "predictor.json").is_file()
    rows = json.loads((tmp_path / "trajectory.json").read_text())["rows"]
    assert [r["kind"] for r in rows].count("supernet-sample") == 6


def test_smoothing_is_refused_in_tabular_mode(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--space", "nasbench201",
                       "--accuracy-table", f"{DATA / 'nasbench201_accuracy.csv'}:cifar10-val",
                       "--latency-table", f"{DATA / 'nasbench201_latency_ms.csv'}:pixel3",
                       "--target-ms", "10", "--smooth-accuracy", "20", "--out", str(tmp_path))
    assert code != 0 and "Traceback" not in err and "--smooth-accuracy" in err


def test_unreachable_tabular_target_names_the_minimum(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--space", "nasbench201",
                       "--accuracy-table", f"{DATA / 'nasbench201_accuracy.csv'}:cifar10-val",
                       "--latency-table", f"{DATA / 'nasbench201_latency_ms.csv'}:pixel3",
                       "--target-ms", "0.0001", "--queries", "10", "--out", str(tmp_path))
    assert code != 0 and "Traceback" not in err
    assert "smallest" in err or "minimum" in err


def test_predictor_eval_beats_the_reference_ridge(capsys):
    code, out, _ = run(capsys, "predictor", "eval", "--csv", str(DATA / "fbnet_latency_ms.csv"),
                       "--space", "fbnet", "--target", "pixel3", "--k", "10", "--seeds", "1", "--json")
    assert code == 0
    summary = json.loads(out)
    assert "pixel3" not in summary["known"]
    assert summary["method"]["spearman"] > summary["baseline"]["spearman"]
    assert summary["method"]["spearman"] > 0.85
    # hwmeta by default, the ridge combination beside it, and the interval's coverage
    assert summary["model"] == "hwmeta" and summary["design"] == "active"
    assert abs(summary["method"]["spearman"] - summary["ridge"]["spearman"]) < 0.05
    assert 0.5 < summary["method"]["coverage"] <= 1.0


def test_predictor_eval_rejects_k_beyond_the_data(capsys, tmp_path):
    small = tmp_path / "small.csv"
    lines = (DATA / "fbnet_latency_ms.csv").read_text().splitlines()[:8]
    small.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "predictor", "eval", "--csv", str(small), "--space", "fbnet",
                       "--target", "pixel3", "--k", "20")
    assert code != 0 and err.strip().startswith("error:") and "Traceback" not in err


def test_parse_benchmark_reads_the_summary(capsys):
    code, out, _ = run(capsys, "parse-benchmark", str(FIXTURES / "bm_current_xnnpack.txt"), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["inference_avg_us"] > 0 and result["partially_delegated"] is False


def test_parse_benchmark_garbage_is_one_error_line(capsys):
    code, _, err = run(capsys, "parse-benchmark", str(FIXTURES / "bm_garbage.txt"))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:")


def test_profile_one_netconfig_network_then_estimate_it(capsys, tmp_path):
    from latkit.profiler.spaces.load import load_network

    config = DATA / "luts" / "proxyless_mobile.config"
    lut = tmp_path / "net.db"
    code, _, err = run(capsys, "profile", "--arch", str(config), "--resolution", "32",
                       "--lut", str(lut), "--quick")
    assert code == 0, err
    network, _ = load_network(None, str(config), 32)
    code, out, _ = run(capsys, "lut", "show", str(lut), "--json")
    assert json.loads(out)["summary"]["devices"][0]["ops"] == len(network.measurable_specs())
    code, out, _ = run(capsys, "lut", "estimate", "--lut", str(lut), "--arch", str(config),
                       "--resolution", "32", "--json")
    assert code == 0
    assert json.loads(out)["lut_sum_ms"] > 0


def test_profile_needs_a_space_or_an_arch(capsys, tmp_path):
    code, _, err = run(capsys, "profile", "--lut", str(tmp_path / "x.db"))
    assert code != 0 and err.strip().startswith("error:") and "--arch" in err


def test_search_trains_each_architecture_from_the_knowledge_pool(capsys, small_lut, tmp_path):
    code, out, err = run(capsys, "search", "--space", "proxyless_mobile_w05", "--lut", str(small_lut),
                         "--resolution", "32", "--target-ms", "1000", "--algorithm", "evolution",
                         "--queries", "4", "--train-steps", "2", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads((tmp_path / "arch.json").read_text())
    trained = doc["search"]["trained"]
    assert doc["accuracy"]["kind"] == "trained" and doc["accuracy"]["steps"] == 2 and len(trained) == 4
    # the first starts from scratch; every later one inherits the layers it shares with a predecessor
    assert trained[0]["inherited_layers"] == 0 and all(t["inherited_layers"] > 0 for t in trained[1:])
    assert json.loads(out)["accuracy"] == pytest.approx(max(t["accuracy"] for t in trained if t["arch"] == doc["arch"]))
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile_w05", "--lut", str(small_lut), "--resolution",
                       "32", "--target-ms", "1000", "--train-steps", "2", "--out", str(tmp_path / "g"))
    assert code != 0 and "Traceback" not in err and "query-based" in err  # proxyless-grad trains a supernet


def test_run_exits_zero_when_the_target_is_above_the_space(capsys, int8_run, tmp_path):
    # the shared int8 run (tests/artefacts.py) is above the space; the command resumes a copy of it, which it
    # accepts only when its arguments give the same settings (what the run found: test_pipeline_int8.py)
    out_dir, lut = copy_run(int8_run, tmp_path)
    code, out, err = run(capsys, "run", "--lut", str(lut), *INT8_ARGV, "--out", str(out_dir), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["met"] and not doc["hit"] and doc["verdict"].startswith("MET") and len(doc["attempts"]) == 1
    assert doc["measured_ms"] == int8_run.result.measured_ms < 1000 and doc["precision"] == "int8"
    assert doc["target"] == {"ms": 1000.0, "fraction": None, "text": "1000"}


def test_search_takes_a_target_relative_to_the_space_and_warns_above_its_range(capsys, small_lut, tmp_path):
    common = ("search", "--space", "proxyless_mobile_w05", "--lut", str(small_lut), "--resolution", "32",
              "--algorithm", "random", "--search-epochs", "1", "--queries", "3", "--json")
    # the fastest network is ~47% of the slowest at 32x32 here (more on a loaded host), so targets stay above 60%
    code, out, err = run(capsys, *common, "--target-ms", "80%", "--out", str(tmp_path / "pct"))
    assert code == 0, err
    pct = json.loads(out)
    assert pct["target"]["fraction"] == pytest.approx(0.8) and pct["latency_ms"] <= pct["target_ms"]
    arch = json.loads(Path(pct["files"]["arch"]).read_text())
    assert arch["target_ms"] == pytest.approx(pct["target_ms"])
    assert arch["target"].startswith("80% of the slowest network")
    assert arch["target"].endswith(f"= {pct['target_ms']:.3f} ms (on the uncalibrated LUT sum)")
    # no calibration: the figures are said to be the raw LUT sum, with the command that calibrates
    assert not pct["latency_model"]["calibrated"] and pct["latency_model"]["classes"] == 10
    assert "warning: UNCALIBRATED" in err and "latkit lut calibrate" in err
    # the same search for another target: resumed from a copy of the first, whose supernet is trained
    shutil.copytree(tmp_path / "pct", tmp_path / "x15")
    code, out, err = run(capsys, *common, "--speedup", "1.5x", "--resume", "--out", str(tmp_path / "x15"))
    assert code == 0, err
    x15 = json.loads(out)
    # both resolve on the same slowest network: 1/1.5 vs 80% of it
    assert x15["target_ms"] / pct["target_ms"] == pytest.approx((1 / 1.5) / 0.8)
    assert "warning: the" not in err  # no range warning
    # a target above the space: warned before any work (the search after it fails at once)
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile_w05", "--lut", str(small_lut), "--resolution",
                       "32", "--target-ms", "1000", "--train-steps", "2", "--out", str(tmp_path / "above"))
    assert code != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("warning: UNCALIBRATED")
    assert lines[1].startswith("warning: the 1000 ms target is above proxyless_mobile_w05") and "60%" in lines[1]
    assert "query-based" in err


@pytest.mark.parametrize("args, says", [
    (("--target-ms", "abc%"), "not a percentage"),
    (("--target-ms", "0%"), "above 0%"),
    (("--target-ms", "150%"), "at most 100%"),
    (("--speedup", "-2x"), "--speedup must be"),
    (("--speedup", "0.5x"), "from 1x"),
    (("--target-ms", "5", "--speedup", "2x"), "exactly one"),
    ((), "exactly one"),
    (("--target-ms", "5", "--tolerance", "2"), "--tolerance must be between 0 and 0.5"),
])
def test_bad_targets_get_one_line(capsys, tmp_path, args, says):
    for cmd in (("search", "--space", "proxyless_mobile_w05", "--lut", str(tmp_path / "none.db")),
                ("run", "--out", str(tmp_path / "run"))):
        code, out, err = run(capsys, *cmd, *args)
        assert code == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and says in err, err
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_run_resolves_a_speedup_target_after_calibration_and_records_both(capsys, pipeline_run, tmp_path):
    # the shared run (tests/artefacts.py) was made with these settings: the command resumes a copy of it,
    # which it accepts only when its arguments give the same settings, and reports it
    out_dir, lut = copy_run(pipeline_run, tmp_path)
    code, out, err = run(capsys, "run", "--lut", str(lut), *RUN_ARGV, "--out", str(out_dir), "--json")
    doc = json.loads(out)
    assert code == (0 if doc["met"] else 1), err
    assert doc["measured_ms"] == pipeline_run.result.measured_ms  # resumed, not run again
    state = json.loads((out_dir / "pipeline.json").read_text())
    lo, hi = state["stages"]["search"]["outputs"]["range_ms"]
    # 1/1.5 of the slowest calibrated network: inside the range (the fastest is ~half the slowest, more on a
    # loaded host), so the run trades speed (not a MET)
    assert doc["target_ms"] == pytest.approx(hi / 1.5) and lo < doc["target_ms"] < hi
    assert doc["target"] == {"ms": None, "fraction": pytest.approx(1 / 1.5), "text": "1.5x"} and doc["tolerance"] == 0.2
    assert doc["verdict"].split(":")[0] in ("HIT", "OVER")
    # the budget rests on the judged figure (the lowest reading, or the one corrected for the host's state)
    assert doc["judged_ms"] <= doc["measured_ms"]
    assert doc["budget_used"] == pytest.approx(doc["judged_ms"] / doc["target_ms"])
    arch = json.loads(Path(doc["arch"]).read_text())
    assert arch["target_ms"] == pytest.approx(hi / 1.5) and arch["target"].startswith("1.5x faster than the slowest")
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["target"] == arch["target"] and summary["tolerance"] == 0.2
    report = (out_dir / "report.md").read_text()
    assert f"= {hi / 1.5:.3f} ms" in report and "+20%" in report
