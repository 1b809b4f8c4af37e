"""The run report states the supernet's training resolution where it differs from the latency one."""

from __future__ import annotations

from latkit.pipeline.report import render_markdown


def _summary(resolution: int, supernet: int) -> dict:
    return {"target_ms": 5.0, "device": "cpu:onnxruntime", "space": "proxyless_mobile_w05",
            "resolution": resolution, "supernet_resolution": supernet, "verdict": "HIT", "accuracy": 90.0,
            "files": [], "layers": [], "arch": "x", "calibration": None}


def _space_line(summary: dict) -> str:
    return next(ln for ln in render_markdown(summary, {}).splitlines() if ln.startswith("- space:"))


def test_report_names_the_supernet_resolution_when_it_differs() -> None:
    line = _space_line(_summary(64, 32))
    assert "at resolution 64" in line and "supernet trained at 32x32" in line


def test_report_says_nothing_more_when_they_agree() -> None:
    assert _space_line(_summary(32, 32)) == "- space: `proxyless_mobile_w05` at resolution 32"
    legacy = _summary(32, 32)
    del legacy["supernet_resolution"]  # a summary written before the key existed
    assert _space_line(legacy) == "- space: `proxyless_mobile_w05` at resolution 32"
