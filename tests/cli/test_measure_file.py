"""`latkit measure FILE` on a user's own ONNX and TFLite files, `--precision` / `--target-ci` on the commands,
and `lut show` by precision: real ONNX Runtime and LiteRT sessions, a real SQLite LUT, the loopback phone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from cli_checks import one_error_line, run
from latkit.devices.precision import Precision
from latkit.profiler.ops import Act, OpSpec, OpType

pytestmark = pytest.mark.slow

SPEC = OpSpec(OpType.STEM, (16, 16, 3), (8, 8, 8), kernel=3, stride=2, act=Act.RELU6)
ARCH = {"space": "proxyless_mobile_w05", "resolution": 32, "arch": ["5x5_MBConv6"] + ["zero", "3x3_MBConv3"] * 10}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A user's files: an ONNX export (torch.onnx), an fp32 and an int8 TFLite file (latkit's exporters)."""
    from latkit.profiler.export import BuiltModel

    folder = tmp_path_factory.mktemp("user-models")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1)).eval()
    out = {"onnx": folder / "user_net.onnx"}
    torch.onnx.export(net, (torch.randn(1, 8, 16, 16),), str(out["onnx"]), dynamo=False,
                      input_names=["image"], dynamic_axes={"image": {0: "batch"}})  # fmt: skip
    cache = tmp_path_factory.mktemp("export-cache")
    for name, precision in (("tflite", Precision.FP32), ("int8", Precision.INT8)):
        src = BuiltModel(SPEC, cache_dir=cache, precision=precision).file("tflite")
        out[name] = folder / f"user_{name}.tflite"
        shutil.copyfile(src, out[name])
    (folder / "arch.json").write_text(json.dumps(ARCH))
    out["arch"] = folder / "arch.json"
    return out


def _measure_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, "measure", *argv, "--quick", "--json")
    assert code == 0, err
    return json.loads(out)


def _check_latency(doc: dict) -> None:
    assert 0 < doc["ci_low_ms"] <= doc["latency_ms"] <= doc["ci_high_ms"]
    assert doc["p90_ms"] >= doc["ci_low_ms"] and doc["rel_ci"] >= 0
    # every sample is kept (the phone's few long ones may stop at --quick's time cap before 5)
    assert len(doc["samples_ms"]) == doc["n_samples"] >= 3
    assert doc["measurement"]["latency_ms"] == doc["latency_ms"]
    assert doc["provenance"]["device"]["uri"] == doc["device"]


def test_measure_a_users_onnx_file_on_onnxruntime(capsys, files) -> None:
    doc = _measure_json(capsys, files["onnx"], "--device", "cpu:onnxruntime", "--target-ci", "0.2")
    assert doc["file"] == str(files["onnx"].resolve()) and doc["sha256"] == _sha256(files["onnx"])
    assert doc["format"] == "onnx" and doc["precision"] == "fp32" and doc["precision_source"] == "file"
    # the batch dimension was dynamic: timed at batch 1, the rest of the shape from the file
    assert doc["input_shape"] == [1, 8, 16, 16] and doc["dynamic_batch"] is True and doc["input_name"] == "image"
    assert doc["device"] == "cpu:onnxruntime" and doc["device_info"]["runtime"] == "onnxruntime"
    assert doc["provenance"]["protocol"]["target_rel_ci"] == 0.2  # --target-ci reached the protocol
    _check_latency(doc)


def test_measure_a_users_tflite_files_on_litert(capsys, files) -> None:
    doc = _measure_json(capsys, files["tflite"], "--device", "cpu:litert")
    assert doc["format"] == "tflite" and doc["precision"] == "fp32" and doc["sha256"] == _sha256(files["tflite"])
    assert doc["input_shape"] == [1, 3, 16, 16] and doc["device_info"]["runtime"] == "litert"
    _check_latency(doc)
    # the int8 file says so itself; naming its precision is accepted, naming another is refused
    doc = _measure_json(capsys, files["int8"], "--device", "cpu:litert", "--precision", "int8")
    assert doc["precision"] == "int8" and doc["precision_source"] == "file"
    _check_latency(doc)
    code, _, err = run(capsys, "measure", files["int8"], "--device", "cpu:litert", "--precision", "fp32", "--quick")
    one_error_line(code, err, "user_int8.tflite holds a model at int8, not fp32", "--precision int8")


def test_measure_prints_a_table_with_the_file(capsys, files) -> None:
    code, out, err = run(capsys, "measure", files["onnx"], "--quick")
    assert code == 0, err
    assert "user_net.onnx" in out and "cpu:onnxruntime" in out and "fp32" in out
    assert f"sha256 {_sha256(files['onnx'])[:16]}" in out


def test_measure_names_its_statistic_shows_the_median_and_the_spread_between_sessions(capsys, files) -> None:
    code, out, err = run(capsys, "measure", files["onnx"], "--quick")
    assert code == 0, err
    assert "p5 ms" in out and "median ms" in out and "(this run)" in out and "back-to-back runs" in out
    assert "--sessions 3" in out  # one session: the CI is said not to cover a session's variation
    doc = _measure_json(capsys, files["onnx"], "--statistic", "median", "--sessions", "3")
    assert doc["statistic_short"] == "median" and doc["provenance"]["protocol"]["quantile"] == 0.5
    figures = doc["sessions_ms"]
    assert len(figures) == 3 and figures == sorted(figures) and doc["latency_ms"] == figures[1]
    assert doc["between_sessions_rel"] == pytest.approx((figures[2] - figures[0]) / figures[0])
    assert doc["median_ms"] > 0 and doc["mean_ms"] > 0
    code, _, err = run(capsys, "measure", files["onnx"], "--statistic", "mean", "--quick")
    one_error_line(code, err, "--statistic must be one of p5, p10, p25, median")


def test_measure_a_users_tflite_file_on_the_loopback_phone(capsys, files, tmp_path) -> None:
    server = pytest.importorskip("latkit.devices.loopback.server")
    from latkit.devices.loopback.benchmark_model import received_runs

    with server.LoopbackDevice(tmp_path / "phone", auth="accept") as phone:
        uri = f"adb+tcp://127.0.0.1:{phone.port}"
        doc = _measure_json(capsys, files["int8"], "--device", uri)
        runs = received_runs(phone.root)
        # the GPU delegate takes the int8 graph only in part: the table says so under the latency
        code, out, err = run(capsys, "measure", files["int8"], "--device", f"{uri}?delegate=gpu", "--quick")
        gpu_runs = received_runs(phone.root)[len(runs):]
    assert code == 0, err
    delegation = [ln for ln in out.splitlines() if ln.startswith("delegation:")]
    assert len(delegation) == 1 and "CPU" in delegation[0].upper(), out
    assert gpu_runs and all("--use_gpu=true" in r["argv"] for r in gpu_runs)
    assert doc["device"] == uri and doc["device_info"]["kind"] == "android"
    assert doc["format"] == "tflite" and doc["precision"] == "int8"
    _check_latency(doc)
    # benchmark_model ran the user's very file (same bytes), once per sample at least
    assert runs and {r["graph_sha256"] for r in runs} == {_sha256(files["int8"])}
    assert len(runs) >= doc["n_samples"]


def _damaged(folder: Path, files: dict[str, Path]) -> dict[str, Path]:
    data = files["tflite"].read_bytes()
    made = {"truncated.tflite": data[: len(data) // 2], "empty.onnx": b"",
            "notes.onnx": b"these are my notes, not a model\n" * 20,
            "half.onnx": files["onnx"].read_bytes()[:300], "random.bin": bytes(range(256)) * 8}  # fmt: skip
    for name, content in made.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in made}


@pytest.mark.parametrize("name,says", [
    ("truncated.tflite", "not a valid TFLite model (truncated or damaged?)"),
    ("empty.onnx", "is empty"),
    ("notes.onnx", "not a valid ONNX model"),
    ("half.onnx", "not a valid ONNX model"),
    ("random.bin", "not an ONNX or TFLite model"),
])  # fmt: skip
def test_a_damaged_model_file_is_one_line(capsys, files, tmp_path, name, says) -> None:
    path = _damaged(tmp_path, files)[name]
    code, _, err = run(capsys, "measure", path, "--device", "cpu:litert", "--quick")
    one_error_line(code, err, says, name)


def test_bad_measure_requests_are_one_line_each(capsys, files, tmp_path) -> None:
    onnx, tfl, arch = files["onnx"], files["tflite"], files["arch"]
    cases = [
        (["measure", onnx, "--precision", "int4"], ["unknown precision 'int4'", "fp32, fp16, int8"]),
        (["measure", "--arch", arch, "--precision", "fp16"], ["cpu:onnxruntime does not run fp16", "fp32, int8"]),
        (["measure", onnx, "--device", "cpu:torch"], ["user_net.onnx is an ONNX file", "cpu:onnxruntime"]),
        (["measure", tfl, "--device", "cpu:onnxruntime"],
         ["user_tflite.tflite is a TFLite file but cpu:onnxruntime runs ONNX", "cpu:litert"]),
        (["measure", onnx, "--arch", arch], ["exactly one"]),
        (["measure"], ["exactly one"]),
        (["measure", onnx, "--lut", tmp_path / "x.db"], ["--lut", "go(es) with --arch"]),
        (["measure", "--arch", onnx], ["is an ONNX model file", f"latkit measure {onnx}"]),
        (["measure", tmp_path / "missing.onnx"], ["does not exist"]),
        (["measure", tmp_path], ["is a folder"]),
    ]
    for argv, needles in cases:
        code, _, err = run(capsys, *argv, "--quick")
        one_error_line(code, err, *needles)


def test_a_dynamic_input_shape_is_refused(capsys, tmp_path) -> None:
    path = tmp_path / "any_size.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})  # fmt: skip
    code, _, err = run(capsys, "measure", path, "--quick")
    one_error_line(code, err, "any_size.onnx", "[n, 3, h, w]", "fixed input shape")


def test_the_old_float_precision_points_to_target_ci(capsys, files, tmp_path) -> None:
    for argv in (["measure", files["onnx"]],
                 ["profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--lut", tmp_path / "p.db"],
                 ["lut", "calibrate", "--lut", tmp_path / "p.db", "--space", "proxyless_mobile_w05"],
                 ["farm", "profile", "--space", "proxyless_mobile_w05", "--devices", "adb*", "--lut", tmp_path / "p.db"]):
        code, _, err = run(capsys, *argv, "--precision", "0.02")
        one_error_line(code, err, "--precision 0.02", "--target-ci 0.02")
    assert not (tmp_path / "p.db").exists()  # refused before anything was created


def test_profile_at_int8_and_target_ci(capsys, tmp_path) -> None:
    from latkit.lut.store import LUT

    lut = tmp_path / "p.db"
    base = ["profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--limit", "2", "--quick",
            "--lut", lut]  # fmt: skip
    code, _, err = run(capsys, *base, "--precision", "int8", "--target-ci", "0.3")
    assert code == 0, err
    assert "at int8" in err
    code, _, err = run(capsys, *base, "--device", "cpu:onnxruntime", "--precision", "fp16")
    one_error_line(code, err, "cpu:onnxruntime does not run fp16 models; it runs fp32, int8")
    with LUT.open(lut, readonly=True) as table:
        rows = table.rows()
    assert len(rows) == 2 and {r["precision"] for r in rows} == {"int8"}
    assert all(r["provenance"]["protocol"]["target_rel_ci"] == 0.3 for r in rows)


def _lut_with_two_precisions(path: Path) -> None:
    """fp32 and int8 rows of one device, one int8 row flagged by its delegation summary."""
    from latkit.lut.store import LUT
    from latkit.profiler.measurement import Measurement

    specs = [OpSpec(OpType.STEM, (16, 16, 3), (8, 8, c), kernel=3, stride=2, act=Act.RELU6) for c in (8, 16)]
    device = {"uri": "adb:LB1?delegate=gpu", "kind": "android", "runtime": "benchmark_model",
              "runtime_version": "2.3", "threads": 1}  # fmt: skip
    with LUT.open(path, create=True) as table:
        for precision, ms in ((Precision.FP32, 2.0), (Precision.INT8, 1.0)):
            for i, spec in enumerate(specs):
                prov = {"device": device}
                if precision == Precision.INT8 and i == 1:
                    prov["delegation_warning"] = "GPU delegate took 3 of 5 nodes; 2 ran on the CPU"
                m = Measurement(spec.key, ms * (i + 1), ms, 0.0, ms, ms, ms, ms, 0.0, ms, ms, 0.01, 10, 0, 1,
                                True, [ms] * 10, prov)  # fmt: skip
                table.add(spec, m, device, precision=precision)


def test_lut_show_keeps_precisions_apart_and_flags_delegation(capsys, tmp_path) -> None:
    lut = tmp_path / "two.db"
    _lut_with_two_precisions(lut)
    code, out, err = run(capsys, "lut", "show", lut, "--json")
    assert code == 0, err
    groups = {d["precision"]: d for d in json.loads(out)["summary"]["devices"]}
    assert set(groups) == {"fp32", "int8"}
    assert groups["fp32"]["ops"] == 2 and groups["fp32"]["max_ms"] == pytest.approx(4.0)
    assert groups["int8"]["max_ms"] == pytest.approx(2.0)  # never the 4 ms fp32 row
    assert groups["int8"]["delegation_warnings"] == 1 and groups["fp32"]["delegation_warnings"] == 0
    code, out, err = run(capsys, "lut", "show", lut, "--rows")
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if "adb:LB1?delegate=gpu" in ln]
    # one summary line per precision, one per precision in the per-space table, one per row
    assert len(lines) == 2 + 2 + 4
    flagged = [ln for ln in lines if "WARNING" in ln]
    assert len(flagged) == 1 and "int8" in flagged[0] and "2 ran on the CPU" in flagged[0]


def test_estimate_asks_which_precision(capsys, tmp_path) -> None:
    """A network whose ops exist at two precisions: the estimate takes one, never a mix."""
    from latkit.lut.store import LUT
    from latkit.profiler.measurement import Measurement
    from latkit.profiler.spaces.load import load_network

    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    network, _ = load_network(None, arch, None)
    lut = tmp_path / "net.db"
    device = {"uri": "cpu:onnxruntime", "kind": "cpu", "runtime": "onnxruntime", "runtime_version": "1",
              "threads": 1}  # fmt: skip
    with LUT.open(lut, create=True) as table:
        for precision, ms in ((Precision.FP32, 0.5), (Precision.INT8, 0.25)):
            for spec in {s.key: s for s in network.measurable_specs()}.values():
                m = Measurement(spec.key, ms, ms, 0.0, ms, ms, ms, ms, 0.0, ms, ms, 0.01, 10, 0, 1, True, [ms] * 10,
                                {"device": device})  # fmt: skip
                table.add(spec, m, device, precision=precision)
    code, _, err = run(capsys, "lut", "estimate", "--lut", lut, "--arch", arch, "--raw")
    one_error_line(code, err, "--precision")
    sums = {}
    for precision in ("fp32", "int8"):
        code, out, err = run(capsys, "lut", "estimate", "--lut", lut, "--arch", arch, "--raw", "--json",
                             "--precision", precision)  # fmt: skip
        assert code == 0, err
        doc = json.loads(out)
        assert doc["precision"] == precision
        sums[precision] = doc["lut_sum_ms"]
    assert sums["fp32"] == pytest.approx(2 * sums["int8"]) and sums["int8"] > 0


def test_measure_arch_builds_the_network_at_the_precision(capsys, files) -> None:
    from latkit.profiler.quantize import model_precision

    doc = _measure_json(capsys, "--arch", files["arch"], "--device", "cpu:onnxruntime", "--precision", "int8")
    assert doc["network"] == "proxyless_mobile_w05" and doc["precision"] == "int8" and doc["format"] == "onnx"
    timed = Path(doc["file"])
    assert model_precision(timed).value == "int8" and doc["sha256"] == _sha256(timed)  # the file really is int8
    _check_latency(doc)


def test_lut_commands_check_the_precision(capsys, tmp_path) -> None:
    lut = tmp_path / "c.db"
    code, _, err = run(capsys, "lut", "calibrate", "--lut", lut, "--space", "proxyless_mobile_w05",
                       "--device", "cpu:onnxruntime", "--precision", "fp16", "--quick")  # fmt: skip
    one_error_line(code, err, "device cpu:onnxruntime does not run fp16 models; it runs fp32, int8")
    code, _, err = run(capsys, "lut", "estimate", "--lut", lut, "--arch", "x", "--precision", "int4")
    one_error_line(code, err, "unknown precision 'int4'; use one of fp32, fp16, int8")
    assert not lut.exists()


def test_a_file_the_runtime_cannot_load_is_not_told_to_re_export(capsys, tmp_path) -> None:
    # a valid ONNX graph with an operator ONNX Runtime does not have: the user's own file,
    # so the advice is about the file, not latkit's cache ("delete the file to re-export it")
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Blur", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    path = tmp_path / "custom op.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]), path)  # fmt: skip
    code, _, err = run(capsys, "measure", path, "--quick")
    line = one_error_line(code, err, "onnxruntime cannot load", "Blur", "custom op.onnx runs with this runtime")
    assert "delete the file" not in line
