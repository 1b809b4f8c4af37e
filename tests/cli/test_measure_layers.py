"""`latkit measure FILE --per-layer`: the runtime's per-layer table, the sum against the end-to-end figures,
and memory, in text and in --json, on real ONNX Runtime and LiteRT sessions (files from tests/model_files.py)."""

from __future__ import annotations

import json

import pytest

from cli_checks import run
from model_files import conv_stack_onnx, conv_stack_tflite

pytestmark = pytest.mark.slow  # each command measures with the quick protocol (a few seconds)


def test_per_layer_on_onnxruntime_in_json_and_text(capsys, tmp_path) -> None:
    onnx = conv_stack_onnx(tmp_path / "conv.onnx")
    code, out, err = run(capsys, "measure", onnx, "--quick", "--per-layer", "--json")
    assert code == 0, err
    result = json.loads(out)
    doc = result["per_layer"]
    assert doc["runtime"] == "onnxruntime profiler" and doc["statistic"] == "p5"  # measure's own statistic
    assert [r["op_type"] for r in doc["layers"]][:4] == ["Conv"] * 4
    assert sum(r["share"] for r in doc["layers"]) == pytest.approx(1.0)
    assert doc["sum_ms"] == pytest.approx(sum(r["latency_ms"] for r in doc["layers"]))
    assert doc["end_to_end_ms"] == result["latency_ms"]
    assert doc["sum_over_end_to_end"] == pytest.approx(doc["sum_ms"] / result["latency_ms"])
    assert doc["unprofiled_ms"] > 0 and doc["memory"][0]["what"] == "ONNX Runtime arena held (profiler)"
    from latkit.cli.layers import print_layer_profile  # what the command prints without --json

    print_layer_profile(doc)
    out = capsys.readouterr().out
    assert "onnxruntime profiler" in out and "p5 ms" in out and "share" in out
    lines = out.splitlines()
    assert any(ln.startswith("per-layer sum ") and "of the measured end-to-end" in ln for ln in lines)
    assert any(ln.startswith("memory: ") and "arena" in ln for ln in lines)


def test_per_layer_on_litert_says_there_is_no_profiler(capsys, tmp_path) -> None:
    tflite = conv_stack_tflite(tmp_path / "conv.tflite")
    code, out, err = run(capsys, "measure", tflite, "--device", "cpu:litert", "--quick", "--per-layer", "--json")
    assert code == 0, err
    doc = json.loads(out)["per_layer"]
    assert doc["layers"] == [] and doc["sum_ms"] is None and doc["run_ms"] > 0
    assert "no per-operator profiler" in doc["note"] and doc["memory"][0]["what"].startswith("host:")
    code, out, err = run(capsys, "measure", tflite, "--device", "cpu:litert", "--quick", "--per-layer")
    assert code == 0, err
    assert "per layer: none" in out and "no per-operator profiler" in out
