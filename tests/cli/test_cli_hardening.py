"""Absurd numbers and unusable paths at the command line: one error line, nothing written."""

from __future__ import annotations

import pytest

from latkit.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str, *needles: str) -> str:
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("target", ["1e308", "inf", "nan", "-3", "0"])
def test_search_refuses_absurd_targets(capsys, tmp_path, target):
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", target,
                       "--lut", str(tmp_path / "x.db"), "--out", str(tmp_path / "out"))
    one_error_line(code, err, "latency target", "--target-ms")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["1e308", "nan"])
def test_run_refuses_absurd_targets(capsys, tmp_path, target):
    code, _, err = run(capsys, "run", "--target-ms", target, "--out", str(tmp_path / "run"))
    one_error_line(code, err, "latency target")
    assert not (tmp_path / "run").exists()


def test_search_out_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", "20",
                       "--lut", str(tmp_path / "x.db"), "--out", str(blocker))
    one_error_line(code, err, str(blocker), "folder")
    assert blocker.read_text() == "keep me"


def test_search_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", "20",
                       "--lut", str(tmp_path / "x.db"), "--out", str(blocker / "sub"))
    one_error_line(code, err, "sub")


def test_run_out_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "run", "--target-ms", "20", "--out", str(blocker))
    one_error_line(code, err, str(blocker), "folder")
    assert blocker.read_text() == "keep me"


def test_run_out_read_only(capsys, tmp_path):
    # /proc refuses new files even to root
    code, _, err = run(capsys, "run", "--target-ms", "20", "--out", "/proc/latkit-out")
    one_error_line(code, err, "/proc/latkit-out")
