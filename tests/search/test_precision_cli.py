"""--precision on `latkit search` and `latkit export`: int8 files from the CLI, and one error line for a misfit.

The CLI runs in-process (tests/cli_checks.py); the LUT is a real SQLite file with
a real fp32 measurement, the export writes and runs real files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latkit.devices.base import open_device
from latkit.devices.precision import Precision
from latkit.lut.store import LUT
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.quantize import check_kernels, model_precision
from latkit.profiler.runner import profile_ops
from latkit.profiler.spaces import get_space
from latkit.deploy.export_formats import run_tflite
from cli_checks import one_error_line, run

pytestmark = pytest.mark.slow

SPACE = "proxyless_mobile_w05"
RESOLUTION = 32
W05 = ["3x3_MBConv3", "zero", "5x5_MBConv3", "zero", "3x3_MBConv6", "zero", "zero", "zero",
       "7x7_MBConv3", "zero", "zero", "zero", "3x3_MBConv3", "zero", "zero", "zero",
       "5x5_MBConv6", "zero", "zero", "zero", "3x3_MBConv3"]  # fmt: skip


@pytest.fixture(scope="module")
def fp32_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LUT holding one real fp32 measurement of the space on cpu:onnxruntime."""
    path = tmp_path_factory.mktemp("lut") / "fp32.db"
    spec = next(s for s in get_space(SPACE).operators(RESOLUTION) if s.measurable)
    with LUT.open(path, create=True) as lut:
        profile_ops(open_device("cpu:onnxruntime"), [spec], lut, ProtocolConfig.quick())
        assert lut.precisions("cpu:onnxruntime") == ["fp32"]
    return path


def _arch(tmp: Path) -> Path:
    path = tmp / "arch.json"
    path.write_text(json.dumps({"space": SPACE, "arch": W05, "resolution": RESOLUTION}))
    return path


def test_search_at_int8_on_an_fp32_lut_is_one_line(capsys, fp32_lut: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "search", "--space", SPACE, "--target-ms", "1", "--lut", fp32_lut,
                       "--precision", "int8", "--resolution", RESOLUTION, "--out", tmp_path / "s")  # fmt: skip
    one_error_line(code, err, str(fp32_lut), "only fp32", "none at int8", "--precision int8")
    assert not (tmp_path / "s" / "arch.json").exists()


def test_search_precision_bad_word_and_predictor_are_one_line(capsys, fp32_lut: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "search", "--space", SPACE, "--target-ms", "1", "--lut", fp32_lut,
                       "--precision", "int4", "--out", tmp_path / "s")  # fmt: skip
    one_error_line(code, err, "unknown precision 'int4'", "fp32, fp16, int8")
    code, _, err = run(capsys, "search", "--space", SPACE, "--target-ms", "1", "--predictor", tmp_path / "p.json",
                       "--precision", "int8", "--out", tmp_path / "s")  # fmt: skip
    one_error_line(code, err, "a predictor gives the latency it was fitted on")


def test_search_on_a_device_that_does_not_run_the_precision_is_one_line(capsys, tmp_path: Path,
                                                                         monkeypatch) -> None:  # fmt: skip
    monkeypatch.setenv("LATKIT_LUT_DIR", str(tmp_path / "luts"))
    code, _, err = run(capsys, "search", "--space", SPACE, "--target-ms", "1", "--device", "cpu:onnxruntime",
                       "--precision", "fp16", "--resolution", RESOLUTION, "--out", tmp_path / "s")  # fmt: skip
    one_error_line(code, err, "device cpu:onnxruntime does not run fp16 models; it runs fp32, int8")
    assert not (tmp_path / "luts").exists() or not any((tmp_path / "luts").iterdir())


def test_export_on_a_device_that_does_not_run_the_precision_is_one_line(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "export", "--arch", _arch(tmp_path), "--format", "tflite", "--precision", "int8",
                       "--device", "cpu:torch", "--out", tmp_path / "o")  # fmt: skip
    one_error_line(code, err, "device cpu:torch does not run int8 models; it runs fp32")
    assert not (tmp_path / "o").exists()
    code, _, err = run(capsys, "export", "--arch", _arch(tmp_path), "--format", "onnx", "--precision", "fp16",
                       "--out", tmp_path / "o")  # fmt: skip
    one_error_line(code, err, "fp16 files are TFLite files")
    code, _, err = run(capsys, "export", "--arch", _arch(tmp_path), "--layout", "chw", "--out", tmp_path / "o")
    one_error_line(code, err, "unknown layout 'chw'")


def test_export_at_int8_writes_full_integer_files(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "export", "--arch", _arch(tmp_path), "--precision", "int8", "--data", "digits",
                         "--random-weights", "--out", tmp_path / "o", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["precision"] == "int8"
    files = {(f["format"], f["variant"]): f for f in report["files"]}
    assert set(files) == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    tfl, onnx = Path(files["tflite", "int8"]["path"]), Path(files["onnx", "int8"]["path"])
    assert (tfl.name, onnx.name) == ("model_int8.tflite", "model_int8.onnx")
    for path in (tfl, onnx):
        assert model_precision(path) == Precision.INT8
        check_kernels(path, Precision.INT8)
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        assert meta["precision"] == meta["file_precision"] == "int8"
        assert meta["representative"] == {"source": "images", "n_images": 300}
        assert meta["quantization"]["precision"] == "int8" and meta["quantization"]["calibration_inputs"] == 300
    # NHWC by default for the TFLite files, int8 input tensor; the ONNX QDQ file keeps float NCHW input
    assert files["tflite", "int8"]["layout"] == "NHWC" and files["tflite", "int8"]["input_shape"] == [1, 32, 32, 3]
    assert files["onnx", "int8"]["layout"] == "NCHW"
    tmeta = json.loads(tfl.with_name(tfl.name + ".json").read_text())
    assert tmeta["input"]["dtype"] == "int8"
    # the file answers like the float32 one, through its own quantization parameters
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    q, f = run_tflite(tfl, [x])[0], run_tflite(tfl.with_name("model.tflite"), [x])[0]
    assert np.abs(q - f).max() <= 0.25 * np.abs(f).max()


def test_run_with_a_precision_the_device_does_not_run_is_one_line(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LATKIT_LUT_DIR", str(tmp_path / "luts"))
    code, _, err = run(capsys, "run", "--device", "cpu:onnxruntime", "--precision", "fp16", "--target-ms", "1",
                       "--resolution", RESOLUTION, "--out", tmp_path / "r")  # fmt: skip
    one_error_line(code, err, "device cpu:onnxruntime does not run fp16 models; it runs fp32, int8")
    assert not (tmp_path / "luts").exists()  # refused before a LUT was made
    code, _, err = run(capsys, "run", "--precision", "int3", "--target-ms", "1", "--out", tmp_path / "r2")
    one_error_line(code, err, "unknown precision 'int3'")
    code, _, err = run(capsys, "run", "--layout", "hwc", "--target-ms", "1", "--out", tmp_path / "r3")
    one_error_line(code, err, "unknown layout 'hwc'")
