"""What a measured export tells: whether int8 / fp16 paid against fp32, and the verdict on the target
(issue 24, cases 1 and 5), written into the sidecars."""

from __future__ import annotations

import json

import pytest

from latkit.deploy.checks import check_files, precision_check, target_check
from latkit.deploy.exported_file import ExportedFile
from latkit.deploy.layout import InputLayout
from latkit.devices.precision import Precision


def _file(tmp_path, name: str, fmt: str, precision: Precision, ms: float | None) -> ExportedFile:
    sidecar = tmp_path / f"{name}.json"
    sidecar.write_text(json.dumps({"schema": "latkit.export", "variant": precision.value}))
    return ExportedFile(tmp_path / name, sidecar, fmt, precision, InputLayout.NCHW, (1, 3, 32, 32), {"passed": True},
                        None if ms is None else {"latency_ms": ms})  # type: ignore[arg-type]


def test_a_quantized_file_slower_than_fp32_is_said_not_to_pay():
    slow = precision_check(Precision.INT8, 0.093, 0.072)
    assert not slow["paid"] and slow["speedup"] == pytest.approx(0.072 / 0.093)
    assert "int8 did not pay on this device: 0.093 ms, 1.29x the fp32 file's 0.072 ms" in slow["text"]
    fast = precision_check(Precision.INT8, 0.036, 0.072)
    assert fast["paid"] and fast["speedup"] == pytest.approx(2.0) and "2.00x faster than fp32" in fast["text"]


def test_the_target_verdict_is_the_runs():
    over = target_check(0.072, 0.05)
    assert over["kind"] == "OVER" and over["budget_used"] == pytest.approx(1.44) and over["text"].startswith("OVER")
    assert target_check(0.052, 0.05)["kind"] == "HIT"  # within the 10% tolerance


def test_check_files_writes_both_findings_into_the_measured_sidecars(tmp_path):
    files = [_file(tmp_path, "m.onnx", "onnx", Precision.FP32, 0.072), _file(tmp_path, "m_int8.onnx", "onnx", Precision.INT8, 0.093),
             _file(tmp_path, "m.tflite", "tflite", Precision.FP32, None)]
    said = check_files(files, target_ms=0.08)
    fp32 = json.loads(files[0].sidecar.read_text())
    int8 = json.loads(files[1].sidecar.read_text())
    assert fp32["target_check"]["kind"] == "HIT" and "precision_check" not in fp32
    assert int8["target_check"]["kind"] == "OVER" and int8["precision_check"]["paid"] is False
    assert int8["schema"] == "latkit.export"  # the rest of the sidecar is kept
    assert "target_check" not in json.loads(files[2].sidecar.read_text())  # not measured: nothing to judge
    assert len(said) == 3 and any(s.startswith("m_int8.onnx: int8 did not pay") for s in said)
    # no target: only the precision finding
    assert check_files(files, target_ms=None) == [s for s in said if "did not pay" in s]
