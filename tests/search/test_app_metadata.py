"""Exported files carry what an app needs (``latkit.app`` metadata); ``latkit inspect`` reads it back; the
shipped int8 TFLite file, fed from that metadata alone, scores the run's recorded held-out accuracy; the
report draws the deployed file's measured per-layer profile. All on the shared int8 run (tests/artefacts.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_checks import one_error_line, run
from latkit.devices.precision import Precision
from latkit.pipeline.stages import exported_file

pytestmark = pytest.mark.slow  # the shared int8 run


@pytest.fixture(scope="module")
def files(int8_run) -> dict[str, Path]:
    export = int8_run.result.export
    return {"tflite": exported_file(export, "tflite", Precision.INT8).path,
            "onnx": exported_file(export, "onnx", Precision.INT8).path, "fp32": exported_file(export, "onnx").path}


def test_the_int8_tflite_file_carries_its_feeding_in_its_own_flatbuffer(files) -> None:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    data = files["tflite"].read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    doc = json.loads(bytes(model.Buffers(entries["latkit.app"]).DataAsNumpy()).decode())
    interp = Interpreter(model_path=str(files["tflite"]))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert doc["input"]["name"] == inp["name"] and doc["input"]["shape"] == [1, 32, 32, 3]
    assert doc["input"]["layout"] == "NHWC" and doc["input"]["dtype"] == "int8"
    assert doc["input"]["quantization"] == {"scale": pytest.approx(inp["quantization"][0], rel=1e-7),
                                            "zero_point": inp["quantization"][1]}
    assert doc["output"]["quantization"]["zero_point"] == out["quantization"][1]
    assert doc["labels"] == [str(d) for d in range(10)] and doc["dataset"] == "digits"
    norm = doc["preprocessing"]
    assert norm["pixel_range"] == [0.0, 1.0] and norm["formula"] == "(x - mean[c]) / std[c]"
    assert len(norm["mean"]) == len(norm["std"]) == 3 and 0 < norm["mean"][0] < 1 and norm["std"][0] > 0
    assert doc["precision"] == "int8" and doc["sidecar"] == files["tflite"].name + ".json"
    # the sidecar describes the file as it now is (metadata included) and holds the same document
    sidecar = json.loads((files["tflite"].parent / doc["sidecar"]).read_text())
    assert sidecar["size_bytes"] == len(data) and sidecar["app"] == doc


def test_an_onnx_runtime_app_reads_the_metadata_and_the_measured_latency_is_in_the_sidecar(files, capsys) -> None:
    import onnxruntime as ort

    import latkit

    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    doc = json.loads(session.get_modelmeta().custom_metadata_map["latkit.app"])
    assert doc["input"] == {"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW",
                            "quantization": None}  # QDQ: the file quantizes inside
    info = latkit.inspect(files["onnx"])
    assert info.embedded and info.document == doc and len(repr(info)) < 200
    measured = json.loads(Path(str(files["onnx"]) + ".json").read_text())["measured_latency"]
    assert info.measured_latency == measured and measured["latency_ms"] > 0  # the run measured the ONNX file
    code, out, err = run(capsys, "inspect", files["onnx"], "--json")
    assert code == 0, err
    assert json.loads(out)["measured_latency"]["latency_ms"] == measured["latency_ms"]
    code, out, _ = run(capsys, "inspect", files["tflite"])
    assert code == 0 and "NHWC" in out and "zero point" in out and "labels: 0, 1, 2" in out
    assert "(x - mean[c]) / std[c]" in out and "not measured" in out  # the device ran the ONNX file


def test_inspect_refuses_what_is_not_a_model_in_one_line(capsys, tmp_path) -> None:
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a model\n" * 10)
    code, _, err = run(capsys, "inspect", notes)
    one_error_line(code, err, "notes.onnx", "not a valid ONNX model")
    code, _, err = run(capsys, "inspect", tmp_path / "missing.tflite")
    one_error_line(code, err, "does not exist")


def test_the_int8_tflite_file_fed_from_its_metadata_alone_scores_the_recorded_accuracy(int8_run, files) -> None:
    """An app's loop: pixels in [0, 1] -> (x - mean) / std -> the recorded layout -> int8 with the recorded
    scale and zero point -> LiteRT -> dequantized scores -> the recorded label.

    The run evaluated the same file on the same held-out images fed the same way in float32 (torch
    normalised them, latkit quantized them), so the figure must be equal: float32 subtraction and division
    are exactly rounded in both, and mean/std round-trip through JSON exactly; one image of difference
    (100 / n points) would mean a rounding tie fell the other way, and more, that the metadata is wrong.
    """
    import latkit
    from ai_edge_litert.interpreter import Interpreter
    from latkit.search.supernet.data import load_data

    doc = latkit.inspect(files["tflite"]).document
    summary = json.loads((int8_run.out / "summary.json").read_text())
    recorded, n_images = summary["evaluate"]["files_accuracy_pct"]["tflite"], summary["evaluate"]["n_images"]
    _, h, w, _ = doc["input"]["shape"]
    raw = load_data(doc["dataset"], h, seed=0, normalize=False)  # the run's held-out split, pixels as read
    pixels, labels = raw.x_valid.numpy(), [doc["labels"][int(y)] for y in raw.y_valid]
    assert len(labels) == n_images and float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    norm, q_in, q_out = doc["preprocessing"], doc["input"]["quantization"], doc["output"]["quantization"]
    mean = np.asarray(norm["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    x = (pixels - mean) / std
    if doc["input"]["layout"] == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    q = np.clip(np.round(x / np.float32(q_in["scale"])) + q_in["zero_point"], -128, 127).astype(np.int8)
    interp = Interpreter(model_path=str(files["tflite"]))
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    right = 0
    for k in range(len(q)):
        interp.set_tensor(i, q[k : k + 1])
        interp.invoke()
        scores = (interp.get_tensor(o).astype(np.float32) - q_out["zero_point"]) * q_out["scale"]
        right += doc["labels"][int(np.argmax(scores))] == labels[k]
    assert 100.0 * right / len(labels) == pytest.approx(recorded, abs=1e-9)


def test_the_report_draws_the_deployed_files_measured_per_layer_profile(int8_run, tmp_path) -> None:
    from latkit.pipeline.report import plot_measured_layers, render_markdown

    summary = json.loads((int8_run.out / "summary.json").read_text())
    profile = summary["layer_profile"]
    assert profile["runtime"] == "onnxruntime profiler" and profile["layers"]
    assert profile["end_to_end_ms"] == pytest.approx(summary["measurement"]["latency_ms"])
    text = (int8_run.out / "report.md").read_text()
    assert "## Per-layer time (measured on the device by its runtime's profiler)" in text
    assert "Measured by onnxruntime profiler on the device" in text and "operators measured alone" not in text
    assert "Memory: " in text and "ONNX Runtime arena held" in text
    # a run without a measured profile keeps the LUT chart and says what it is
    older = render_markdown({**summary, "layer_profile": None}, {"layers": "layers.png"})
    assert "## Per-layer share (operators measured alone, scaled to the measured total)" in older
    plt = pytest.importorskip("matplotlib.pyplot")
    figures: list = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)
    try:
        plot_measured_layers(profile, tmp_path / "layers.png")
    finally:
        plt.close = real_close
    ax = figures[0].axes[0]
    assert ax.get_xlabel().startswith("measured per-layer time (ms; sum ")
    assert [t.get_text() for t in ax.get_legend().get_texts()][0].startswith("measured by onnxruntime profiler")
    assert len(ax.patches) == sum(1 for r in profile["layers"] if r["latency_ms"] > 0)
