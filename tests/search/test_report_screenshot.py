"""benchmarks/report_screenshot.py: a run's report.html renders alone in headless Chromium."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from latkit.pipeline.report import write_report

pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).parent))
from test_report_decide import _summary  # noqa: E402  (the same real summary)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report_screenshot.py"


def _script():
    spec = importlib.util.spec_from_file_location("report_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checker_flags_a_page_that_leans_on_files_beside_it() -> None:
    shot = _script()
    page = ('<img src="layers.png"><img src="data:image/png;base64,iVBOR">'
            '<link rel="stylesheet" href="https://x/s.css"><div style="background:url(bg.png)">')  # fmt: skip
    assert shot.external_resources(page) == ["layers.png", "https://x/s.css", "bg.png"]
    assert shot.embedded_images(page) == 1


@pytest.mark.slow  # starts a headless browser
def test_report_html_screenshot_in_headless_chromium(tmp_path) -> None:
    shot = _script()
    if shot.find_browser() is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium); the page checks above still ran")
    write_report(tmp_path / "run", _summary())
    figures = shot.check(tmp_path / "run" / "report.html", tmp_path / "shot.png")
    assert figures["external"] == [] and figures["embedded_images"] == 4
    assert figures["size"] == "1200x4000"
    # the plots drew: the page's bars and points in #4477aa (a page of broken images has none)
    assert figures["plot_pixels"] > 2000
    assert shot.main([str(tmp_path / "run" / "report.html"), "--out", str(tmp_path / "again.png"),
                      "--min-images", "4"]) == 0  # fmt: skip
