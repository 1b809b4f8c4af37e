"""Deployable export: weights mapping, ONNX / TFLite parity, sidecars, NHWC, measurement.

Everything runs for real: torch builds the network, torch.onnx / litert-torch
write the files, ONNX Runtime and the LiteRT interpreter run them, and the
measurement goes through the cpu:onnxruntime / cpu:litert devices.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy_helpers import ARCH, CLASSES, RESOLUTION, SPACE
from latkit._version import __version__
from latkit.devices.base import open_device
from latkit.core.errors import MissingExtraError, StoreError, UsageError
from latkit.deploy.layout import InputLayout
from latkit.devices.precision import Precision
from latkit.profiler.build import build_network
from latkit.profiler.protocol import ProtocolConfig, measure_one
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import with_classes
from latkit.deploy import export_formats
from latkit.deploy.export import (
    ExportError,
    export_arch,
    parse_variants,
    read_arch,
    save_weights,
    standalone_module,
)
from latkit.deploy.verify import ExportedModel

pytestmark = pytest.mark.slow


def _quick() -> ProtocolConfig:
    return ProtocolConfig.quick(min_samples=8, max_samples=20, max_seconds_per_op=0.5)


def _arch_json(path: Path) -> Path:
    path.write_text(json.dumps({
        "space": SPACE, "arch": ARCH, "resolution": RESOLUTION, "target_ms": 1.5,
        "predicted_latency_ms": 1.4, "latency_source": {"kind": "lut", "lut": "cpu.db"},
    }))  # fmt: skip
    return path


def _trained(tmp: Path) -> tuple[Path, torch.nn.Module]:
    """A 10-class network with non-default weights, saved in the standalone naming."""
    network = with_classes(read_arch(_arch_json(tmp / "arch.json")).network, CLASSES)
    module = build_network(network, seed=7)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    path = save_weights(module, tmp / "weights.safetensors", network, {"dataset": "synthetic"})
    return path, module.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("export")
    weights, module = _trained(tmp)
    device = open_device("cpu:onnxruntime")
    report = export_arch(
        tmp / "arch.json", weights, formats="onnx,tflite", out_dir=tmp / "out",
        tflite_precisions=(Precision.FP16, Precision.INT8), device=device, protocol=_quick(),
    )  # fmt: skip
    return report, module, weights, device


def _fresh_inputs(n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(99)  # not the exporter's parity inputs
    return [torch.randn(1, 3, RESOLUTION, RESOLUTION, generator=gen) for _ in range(n)]


def test_weights_round_trip_and_class_count(tmp_path: Path) -> None:
    weights, module = _trained(tmp_path)
    space_net = read_arch(tmp_path / "arch.json").network  # 1000 classes, as the space says
    loaded, network = standalone_module(space_net, weights)
    assert network.layers[-1].spec.output_shape == (1, 1, CLASSES)
    for x in _fresh_inputs():
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    weights, _ = _trained(tmp_path)
    other = get_space(SPACE).network(get_space(SPACE).parse_arch(json.dumps(["7x7_MBConv6"] * 21)), RESOLUTION)
    with pytest.raises(StoreError, match="do not fit this architecture"):
        standalone_module(other, weights)


def test_onnx_file_runs_like_torch(exported) -> None:
    import onnxruntime as ort

    report, module, _, _ = exported
    onnx_file = report.file("onnx")
    sess = ort.InferenceSession(str(onnx_file.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, RESOLUTION, RESOLUTION]
    for x in _fresh_inputs():
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = module(x).numpy()
        assert got.shape == (1, CLASSES)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_tflite_files_run_like_torch(exported) -> None:
    from ai_edge_litert.interpreter import Interpreter

    report, module, _, _ = exported
    tolerances = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.25}
    for variant, tol in tolerances.items():
        path = report.file("tflite", variant).path
        interp = Interpreter(model_path=str(path))
        inp = interp.get_input_details()[0]
        assert tuple(inp["shape"]) == (1, 3, RESOLUTION, RESOLUTION)
        # full-integer int8 takes and gives int8 tensors; run_tflite applies their scale and zero point
        assert np.dtype(inp["dtype"]) == (np.int8 if variant == "int8" else np.float32), variant
        for x in _fresh_inputs():
            got = export_formats.run_tflite(path, [x.numpy()])[0]
            with torch.no_grad():
                want = module(x).numpy()
            assert np.abs(got - want).max() <= tol * np.abs(want).max(), variant
    sizes = {v: report.file("tflite", v).path.stat().st_size for v in tolerances}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]  # the variants really shrink the weights


def test_sidecar_contents(exported) -> None:
    report, _, weights, _ = exported
    for f in report.files:
        meta = json.loads(f.sidecar.read_text())
        assert meta["schema"] == "latkit.export" and meta["schema_version"] == 1
        assert meta["kind"] == "deployable" and meta["latkit_version"] == __version__
        assert meta["file"] == f.path.name and meta["size_bytes"] == f.path.stat().st_size
        assert meta["sha256"] == hashlib.sha256(f.path.read_bytes()).hexdigest()
        arch = meta["architecture"]
        assert (arch["space"], arch["arch"], arch["resolution"], arch["classes"]) == (SPACE, ARCH, RESOLUTION, CLASSES)
        assert meta["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert meta["latency_target_ms"] == 1.5
        assert meta["predicted_latency"] == {"latency_ms": 1.4, "source": {"kind": "lut", "lut": "cpu.db"}}
        assert meta["parity"]["reference"].startswith("torch") and meta["parity"]["passed"] is True
        assert meta["parity"]["max_rel_err"] <= meta["parity"]["rel_tol"]
        assert meta["output"]["shape"] == [1, CLASSES]
    onnx_meta = report.file("onnx").meta()
    assert onnx_meta["opset"] == 17 and onnx_meta["input"]["layout"] == "NCHW"
    int8 = report.file("tflite", "int8").meta()
    assert int8["derived_from"] == "model.tflite" and int8["precision"] == int8["file_precision"] == "int8"
    assert int8["representative"] == {"source": "seeded-random", "n_images": 0}
    assert int8["parity"]["min_top1_agreement"] == 0.9 and "seeded" in int8["parity"]["inputs"]
    saved = json.loads((report.out_dir / "export.json").read_text())
    assert [f["path"] for f in saved["files"]] == [str(f.path) for f in report.files]


def test_measured_latency_is_a_real_measurement(exported) -> None:
    report, _, _, device = exported
    onnx_file = report.file("onnx")
    measured = onnx_file.meta()["measured_latency"]
    assert measured["latency_ms"] > 0 and measured["n_samples"] >= 8
    # timed in a fresh interpreter (this one built the network with torch), handed back to the report
    assert onnx_file.measured is not None and onnx_file.measured["latency_ms"] == measured["latency_ms"]
    assert measured["device"] == "cpu:onnxruntime"
    assert measured["provenance"]["device"]["uri"] == "cpu:onnxruntime"
    assert measured["ci_low_ms"] <= measured["latency_ms"] <= measured["ci_high_ms"]
    again = measure_one(device, ExportedModel(onnx_file), _quick()).latency_ms
    assert 1 / 3 < again / measured["latency_ms"] < 3
    # TFLite files were not measured on an ONNX device
    assert report.file("tflite").meta()["measured_latency"] is None


def test_nhwc_tflite(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    weights, module = _trained(tmp_path)
    report = export_arch(
        tmp_path / "arch.json", weights, formats=["tflite"], out_dir=tmp_path / "nhwc", layout=InputLayout.NHWC,
        device=open_device("cpu:litert"), protocol=_quick(),
    )  # fmt: skip
    f = report.file("tflite")
    assert f.layout is InputLayout.NHWC and f.meta()["input"]["layout"] == "NHWC"
    interp = Interpreter(model_path=str(f.path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert tuple(inp["shape"]) == (1, RESOLUTION, RESOLUTION, 3)
    x = _fresh_inputs(1)[0]
    interp.set_tensor(inp["index"], x.permute(0, 2, 3, 1).contiguous().numpy())
    interp.invoke()
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(interp.get_tensor(out["index"]), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    measured = f.meta()["measured_latency"]
    assert measured["latency_ms"] > 0 and measured["provenance"]["device"]["runtime"] == "litert"


def test_bad_arguments(tmp_path: Path) -> None:
    arch = _arch_json(tmp_path / "arch.json")
    with pytest.raises(UsageError, match="unknown export format"):
        export_arch(arch, formats="onnx,coreml", out_dir=tmp_path / "o")
    with pytest.raises(UsageError, match="add tflite"):
        export_arch(arch, formats="onnx", tflite_precisions=(Precision.INT8,), out_dir=tmp_path / "o")
    with pytest.raises(UsageError, match="unknown variant"):  # --variants is parsed where it enters
        parse_variants("int4")


def test_tflite_without_litert_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` fail
    with pytest.raises(MissingExtraError, match=r"latkit\[tflite\]"):
        export_arch(_arch_json(tmp_path / "arch.json"), formats="tflite", out_dir=tmp_path / "o", random_weights=True)
    assert not (tmp_path / "o" / "model.tflite").exists()  # no half-written file left behind


def test_parity_failure_raises_for_float_files() -> None:
    ref = [np.array([[1.0, -2.0, 0.5]], dtype=np.float32)]
    off = [np.array([[1.0, -2.0, 0.9]], dtype=np.float32)]
    par = export_formats.parity(ref, off, rel_tol=1e-3)
    assert par["passed"] is False and par["max_rel_err"] == pytest.approx(0.2)
    assert par["top1_agreement"] == 1.0
    from latkit.deploy.exported_file import check_parity

    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(par, Path("model.onnx"), Precision.FP32, "ONNX Runtime")
    check_parity(par, Path("model_int8.tflite"), Precision.INT8, "LiteRT")  # recorded, not raised


def test_tflite_measured_on_the_loopback_phone(exported, tmp_path: Path) -> None:
    """The phone path: real ADB to the loopback device, which runs benchmark_model on the file."""
    from latkit.devices.loopback.server import LoopbackDevice
    from latkit.deploy.verify import measure_exported

    report, _, _, _ = exported
    tflite = report.file("tflite")
    with LoopbackDevice(tmp_path / "phone", port=0, auth="accept") as phone:
        device = open_device(f"adb+tcp://127.0.0.1:{phone.port}", threads=1, key_path=tmp_path / "adbkey",
                             backoff_s=0.05)  # fmt: skip
        try:
            entry = measure_exported(device, tflite, _quick())
        finally:
            device.close()
    assert entry["latency_ms"] > 0 and entry["device"].startswith("adb+tcp://127.0.0.1:")
    assert entry["provenance"]["device"]["kind"] == "android"
    assert tflite.meta()["measured_latency"]["latency_ms"] == entry["latency_ms"]


def test_a_miss_is_confirmed_by_a_second_measurement(exported) -> None:
    from latkit.deploy.verify import HOST_SESSIONS_MAX, HOST_SESSIONS_MIN, measure_exported

    report, _, _, _ = exported
    onnx_file = report.file("onnx")
    device = open_device("cpu:onnxruntime")
    sessions = range(HOST_SESSIONS_MIN, HOST_SESSIONS_MAX + 1)  # a host CPU file: fresh sessions until two agree
    single = measure_exported(device, onnx_file, _quick())
    assert len(single["measurements_ms"]) in sessions
    # within a budget: nothing more; over a budget no network meets: measured once more, the lowest kept
    assert len(measure_exported(device, onnx_file, _quick(), confirm_target_ms=1e6)["measurements_ms"]) in sessions
    entry = measure_exported(device, onnx_file, _quick(), confirm_target_ms=1e-6)
    assert len(entry["measurements_ms"]) - 1 in sessions
    assert entry["latency_ms"] == min(entry["measurements_ms"])
    assert onnx_file.meta()["measured_latency"]["measurements_ms"] == entry["measurements_ms"]


def test_a_failed_per_layer_profile_leaves_the_measurement_standing(exported, monkeypatch, caplog) -> None:
    from latkit.core.errors import MeasurementError
    from latkit.deploy.verify import measure_exported
    from latkit.devices.onnxruntime_cpu import OrtSession

    def broken(self, runs, quantile=0.5):
        raise MeasurementError("onnxruntime failed profiling model.onnx: out of memory")

    report, _, _, _ = exported
    onnx_file = report.file("onnx")
    monkeypatch.setattr(OrtSession, "profile_layers", broken)
    with caplog.at_level("WARNING", logger="latkit.deploy.verify"):
        entry = measure_exported(open_device("cpu:onnxruntime"), onnx_file, _quick(), per_layer=True)
    assert entry["latency_ms"] > 0 and onnx_file.meta()["measured_latency"]["latency_ms"] == entry["latency_ms"]
    assert onnx_file.meta()["layer_profile"] is None
    assert [r.getMessage() for r in caplog.records] == [
        "the per-layer profile of model.onnx failed, so none is recorded: "
        "onnxruntime failed profiling model.onnx: out of memory"]


def _references(scale: float) -> list:
    """Two real operators of the space, with "LUT" figures measured now and scaled by ``scale``."""
    from latkit.profiler.export import BuiltModel
    from latkit.profiler.protocol import measure_many
    from latkit.lut.drift import Reference

    specs = [s for s in get_space(SPACE).operators(RESOLUTION) if s.measurable][:2]
    now = measure_many(open_device("cpu:onnxruntime"), [BuiltModel(s) for s in specs], _quick())
    return [Reference(s, m.latency_ms * scale) for s, m in zip(specs, now)]


def test_reference_operators_give_the_device_drift(exported) -> None:
    from latkit.deploy.verify import measure_exported

    report, _, _, _ = exported
    refs = _references(1.0)
    entry = measure_exported(open_device("cpu:onnxruntime"), report.file("onnx"), _quick(), references=refs)
    drift = entry["device_drift"]
    assert len(drift["ops"]) == 4  # each reference before and after the file
    assert {o["key"] for o in drift["ops"]} == {r.spec.key for r in refs}
    for o in drift["ops"]:
        assert o["ratio"] == pytest.approx(o["now_ms"] / o["lut_ms"])
    assert entry["references"] == [{"key": r.spec.key, "lut_ms": r.lut_ms} for r in refs]


def test_a_miss_on_a_drifted_device_waits_and_measures_again(exported) -> None:
    from latkit.search import target as tgt
    from latkit.deploy.verify import HOST_SESSIONS_MAX, HOST_SESSIONS_MIN, measure_exported

    report, _, _, _ = exported
    # "profiled" at a third of today's figures: the device now runs ~3x slower than its LUT
    refs = _references(1 / 3)
    entry = measure_exported(open_device("cpu:onnxruntime"), report.file("onnx"), _quick(),
                             confirm_target_ms=1e-6, references=refs, retry_waits_s=(0.0, 0.0))  # fmt: skip
    # over the budget: the sessions, then once after each pause
    assert len(entry["measurements_ms"]) - 2 in range(HOST_SESSIONS_MIN, HOST_SESSIONS_MAX + 1)
    assert all(r > 1.5 for r in entry["drift_ratios"])
    assert entry["device_drift"]["steady"] is False
    text = tgt.judge(2e6, 1e6, drift=entry["device_drift"]).text
    assert text.startswith("OVER") and "not in the state it was profiled in" in text
    assert tgt.judge(1e6, 1e6, drift=entry["device_drift"]).text.startswith("HIT")
