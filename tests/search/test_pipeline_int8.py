"""The pipeline at int8, end to end on this machine's CPU (ONNX Runtime), on a tiny configuration.

Real everything, as in test_pipeline.py: the LUT is profiled at int8 (each
operator quantized to a full-integer QDQ file), calibrated at int8, searched at
int8, the network trained in fp32, exported as full-integer int8 TFLite and ONNX
files calibrated on training images, both run on the held-out digits, and the
int8 ONNX file measured on the device. The target is above the space, so the
run does not depend on this machine's speed (the largest network is the answer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from artefacts import DEVICE, INT8_SETTINGS, RESOLUTION, SPACE
from artefacts import INT8_TARGET_MS as TARGET_MS
from latkit.devices.precision import Precision
from latkit.core.errors import UsageError
from latkit.lut.store import LUT
from latkit.profiler.quantize import check_kernels, model_precision
from latkit.search.supernet.data import load_data
from latkit.deploy.evaluate import file_accuracy_pct
from latkit.pipeline.config import PipelineConfig
from latkit.api import run as run_pipeline  # the public door: text settings are parsed there
from latkit.search.target import Target
from latkit.pipeline.stages import exported_file

pytestmark = pytest.mark.slow

TINY = dict(resolution=RESOLUTION, profile_quick=True, search_epochs=2, warmup_epochs=1, train_epochs=1,
            max_steps_per_epoch=3, calibration_networks=3, eval_samples=1, max_retries=0)  # fmt: skip


@pytest.fixture(scope="module")
def run(int8_run):
    """The shared int8 run (tests/artefacts.py), 1000 ms: above the space."""
    return int8_run.result, int8_run.out, int8_run.lut, list(int8_run.stages)


def test_every_stage_ran_at_int8_on_an_int8_lut(run) -> None:
    result, out, lut, stages = run
    for stage in ("profile", "calibrate", "search", "train", "export", "evaluate", "measure", "report"):
        assert stage in stages
    state = json.loads((out / "pipeline.json").read_text())
    assert state["config"]["precision"] == "int8"
    assert state["stages"]["profile"]["outputs"]["precision"] == "int8"
    with LUT.open(lut) as table:
        assert table.precisions(DEVICE) == ["int8"]  # nothing was profiled at fp32
        assert table.calibrations(DEVICE, precision=Precision.INT8)
        assert not table.calibrations(DEVICE, precision=Precision.FP32)
    search = state["stages"]["search"]["outputs"]
    assert search["latency_model"]["precision"] == "int8"
    assert json.loads(result.arch_path.read_text())["precision"] == "int8"


def test_the_shipped_files_are_full_integer_int8(run) -> None:
    result, _, _, _ = run
    tflite = exported_file(result.export, "tflite", Precision.INT8)
    onnx = exported_file(result.export, "onnx", Precision.INT8)
    for f in (tflite, onnx):
        assert model_precision(f.path) == Precision.INT8
        assert check_kernels(f.path, Precision.INT8)  # raises without int8 conv/matmul kernels
        meta = f.meta()
        assert meta["precision"] == meta["file_precision"] == "int8"
        assert meta["representative"] == {"source": "images", "n_images": 300}
        par = meta["parity"]
        assert par["reference"] == "torch float32" and par["n_inputs"] == 64
        assert par["min_top1_agreement"] == 0.9 and par["rel_tol"] == 0.25
        assert par["passed"] == (par["top1_agreement"] >= 0.9 and par["max_rel_err"] <= 0.25)
    assert tflite.layout.tag == "NHWC" and tflite.input_shape == (1, RESOLUTION, RESOLUTION, 3)  # phones' default
    assert tflite.meta()["input"]["dtype"] == "int8"
    assert onnx.layout.tag == "NCHW"
    # the float32 files are there too: they are what was quantized
    assert exported_file(result.export, "onnx").path.name == "model.onnx"


def test_the_int8_file_was_measured_and_both_accuracies_recorded(run) -> None:
    result, out, _, _ = run
    assert result.precision == "int8"
    onnx = exported_file(result.export, "onnx", Precision.INT8)
    measured = onnx.meta()["measured_latency"]
    assert measured["latency_ms"] == pytest.approx(result.measured_ms) and measured["device"] == DEVICE
    # the float32 file is measured beside the shipped one only to say whether int8 paid on this device
    check = onnx.meta()["precision_check"]
    assert check["precision"] == "int8" and check["fp32_latency_ms"] > 0
    assert check["paid"] == (check["latency_ms"] < check["fp32_latency_ms"])
    assert result.met and not result.hit and result.verdict.startswith("MET") and len(result.attempts) == 1
    # the int8 file's accuracy is the file's own, run again here on the same held-out split
    data = load_data("digits", RESOLUTION, seed=0)
    again = file_accuracy_pct(onnx.path, "onnx", onnx.layout, data.x_valid, data.y_valid)
    assert result.deployed_accuracy_pct == pytest.approx(again)
    assert result.accuracy_drop_pct == pytest.approx(result.fp32_accuracy_pct - result.deployed_accuracy_pct)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "int8"
    ev = summary["evaluate"]
    assert ev["fp32_accuracy_pct"] == result.fp32_accuracy_pct
    assert set(ev["files_accuracy_pct"]) == {"onnx", "tflite"}
    assert ev["deployed_accuracy_pct"] == ev["files_accuracy_pct"]["onnx"]
    report = (out / "report.md").read_text()
    assert "precision: **int8**" in report and f"| fp32 network | torch | {result.fp32_accuracy_pct:.2f}% |" in report
    assert f"| int8 tflite file | LiteRT | {ev['files_accuracy_pct']['tflite']:.2f}% |" in report
    assert f"quantization drop: {result.accuracy_drop_pct:+.2f} points" in report


def test_a_resumed_run_at_another_precision_is_refused(run) -> None:
    result, out, lut, _ = run
    with pytest.raises(UsageError, match=r"other settings \(precision: 'int8' -> 'fp32'\)"):
        run_pipeline(DEVICE, SPACE, TARGET_MS, out, lut=lut, **{**INT8_SETTINGS, "precision": "fp32"})
    assert PipelineConfig(DEVICE, SPACE, Target(ms=1.0), precision=Precision.INT8).fingerprint() != \
        PipelineConfig(DEVICE, SPACE, Target(ms=1.0)).fingerprint()


def test_a_precision_the_device_does_not_run_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^device cpu:onnxruntime does not run fp16 models; it runs fp32, int8$"):
        run_pipeline(DEVICE, SPACE, TARGET_MS, tmp_path / "r", lut=tmp_path / "l.db", precision="fp16",
                     formats=("onnx", "tflite"), **TINY)  # fmt: skip
    assert not (tmp_path / "l.db").exists()
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        run_pipeline(DEVICE, SPACE, TARGET_MS, tmp_path / "r4", precision="int4")
    assert not (tmp_path / "r4").exists()
    # --sample measures and predicts at the run's precision (predictors/sampling takes it)
    cfg = PipelineConfig(DEVICE, SPACE, Target(ms=1.0), precision=Precision.INT8, profile_sample=10)
    assert cfg.precision == "int8"


def test_representative_images_come_from_the_training_split() -> None:
    from latkit.pipeline.config import REPRESENTATIVE_IMAGES

    assert REPRESENTATIVE_IMAGES == 300
    data = load_data("digits", RESOLUTION, seed=0)
    train = {x.tobytes() for x in data.x_train.numpy()}
    valid = data.x_valid.numpy()

    class _P:  # the pipeline's own draw, without a device
        cfg = PipelineConfig(DEVICE, SPACE, Target(ms=1.0), precision=Precision.INT8)

        def data(self):
            return data

    from latkit.pipeline.runner import _Pipeline

    rep = _Pipeline.representative(_P())
    assert rep.shape == (300, 3, RESOLUTION, RESOLUTION) and rep.dtype == np.float32
    assert all(x.tobytes() in train for x in rep)
    assert not any(np.array_equal(rep[0], v) for v in valid)


def test_a_target_above_the_space_ships_the_slowest_network_and_says_so(int8_run) -> None:
    from latkit.lut.tables import TableLatencyModel
    from latkit.profiler.spaces import get_space

    result, out = int8_run.result, int8_run.out
    assert any(f"target is above {SPACE}" in w for w in int8_run.warnings)  # warned at the search
    # the answer is the slowest (largest) network, at the top of the range the search recorded
    space = get_space(SPACE)
    with LUT.open(int8_run.lut) as table:
        slowest = TableLatencyModel.from_lut(space, table, resolution=RESOLUTION, classes=10,
                                             precision=Precision.INT8).max_latency()[1]  # fmt: skip
    arch = json.loads(result.arch_path.read_text())
    state = json.loads((out / "pipeline.json").read_text())
    assert arch["arch"] == space.arch_to_native(slowest)
    assert arch["latency_ms"] == pytest.approx(state["stages"]["search"]["outputs"]["range_ms"][1])
