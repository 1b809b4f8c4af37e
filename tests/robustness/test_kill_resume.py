"""kill -9 during a profile at five moments, resumed each time: no row lost, none duplicated."""

from __future__ import annotations

import pytest

from rb_kill import run_kill_experiment


@pytest.mark.slow
def test_kill_nine_then_resume_loses_and_duplicates_nothing(ws, tmp_path):
    report = run_kill_experiment(tmp_path / "kill", ws.cache)
    assert report.reference > 0, report.notes
    assert (report.lost, report.duplicated, report.extra) == (0, 0, 0), report
    assert report.final == report.reference, report
