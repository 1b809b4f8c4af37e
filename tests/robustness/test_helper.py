"""The classifier and the two runners the whole suite relies on, on known outcomes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings

import pytest

from latkit.core.errors import UsageError
from rb_cli import (CLEAN, HANG, MESSY, OK, SILENT, TRACEBACK, Result, assert_clean_error, classify,
                    isolated_env, run_cli)
from rb_inproc import Timeout, alarm


def _r(rc, err="", out=""):
    return Result(["x"], rc, out, err, 0.1)


def test_classes():
    assert classify(_r(2, "error: no such space 'x'; known: a, b\n")).kind == CLEAN
    assert classify(_r(1, "Traceback (most recent call last):\n  File x\nValueError: boom\n")).kind == TRACEBACK
    assert classify(_r(1, "Traceback (most recent call last):\nValueError: boom\n")).detail == "ValueError: boom"
    assert classify(_r(None, "working\n")).kind == HANG
    assert classify(_r(0, "", "fine\n")).kind == SILENT
    assert classify(_r(2, "Usage: x\nError: y\n")).kind == MESSY
    assert classify(_r(2, "")).kind == MESSY
    assert classify(_r(0), expect="ok").kind == OK
    progress = "x: 70 operators, measuring 1\nprofiling ━━ 1/1\nfailed key: bad output\nmeasured 0, failed 1\n"
    assert classify(_r(1, progress), allow_progress=True).kind == CLEAN


def test_assert_clean_error_on_a_real_command(ws, case_dir):
    res = assert_clean_error(["ops", "no_such_space"], case_dir, "no_such_space", env=ws.env(case_dir))
    assert res.rc != 0 and res.stdout == ""


# ---------------------------------------------------------------- the in-process runner


def _patch_get_space(monkeypatch, replacement) -> None:
    """``latkit ops NAME`` looks the space up through this function at call time."""
    import latkit.profiler.spaces as spaces

    monkeypatch.setattr(spaces, "get_space", replacement)


@pytest.mark.parametrize("argv", [["ops", "no_such_space"], ["lut", "show", "nope.db"], ["frobnicate"],
                                  ["ops", "[bold]x[/bold]"], ["--verbose", "lots", "spaces"],
                                  ["lut", "show", os.fsdecode(b"\xff\xfe.db")]])  # not UTF-8: escaped
def test_in_process_prints_what_the_subprocess_prints(argv, case_dir, in_process):
    sub = run_cli(argv, case_dir, env=isolated_env(case_dir))
    here = in_process(argv, case_dir, 30.0, isolated_env(case_dir))
    assert (here.rc, here.stdout, here.stderr) == (sub.rc, sub.stdout, sub.stderr)
    assert classify(here).kind == CLEAN


def test_in_process_runs_in_the_case_folder_and_environment_then_restores(case_dir, in_process,
                                                                          monkeypatch):
    seen = {}

    def look(name):
        seen.update(home=os.environ["HOME"], cwd=os.getcwd(), handlers=list(logging.getLogger().handlers))
        raise UsageError("no such space")

    _patch_get_space(monkeypatch, look)
    before = (dict(os.environ), os.getcwd(), logging.getLogger().handlers[:], sys.stdin, sys.stdout,
              sys.stderr, sys.getrecursionlimit())
    res = in_process(["ops", "x"], case_dir, 30.0, isolated_env(case_dir))
    after = (dict(os.environ), os.getcwd(), logging.getLogger().handlers[:], sys.stdin, sys.stdout,
             sys.stderr, sys.getrecursionlimit())
    assert classify(res).kind == CLEAN and after == before
    assert seen["home"] == str(case_dir / "home") and seen["cwd"] == str(case_dir)
    assert [type(h) for h in seen["handlers"]] == [logging.StreamHandler]  # the CLI's own, not pytest's


def test_in_process_shows_tracebacks_log_lines_and_warnings(case_dir, in_process, monkeypatch):
    def crash(name):
        raise RuntimeError("boom")

    _patch_get_space(monkeypatch, crash)
    verdict = classify(in_process(["ops", "x"], case_dir, 30.0, isolated_env(case_dir)))
    assert (verdict.kind, verdict.detail) == (TRACEBACK, "RuntimeError: boom")

    def chatty(name):
        logging.getLogger("latkit.probe").warning("a logged warning")
        warnings.warn("a python warning", RuntimeWarning)
        raise UsageError("no such space")

    _patch_get_space(monkeypatch, chatty)
    res = in_process(["ops", "x"], case_dir, 30.0, isolated_env(case_dir))
    assert classify(res).kind == MESSY
    assert "WARNING latkit.probe: a logged warning" in res.stderr
    assert "RuntimeWarning: a python warning" in res.stderr


def test_in_process_stops_a_hang(case_dir, in_process, monkeypatch):
    _patch_get_space(monkeypatch, lambda name: time.sleep(60))
    res = in_process(["ops", "x"], case_dir, 0.5, isolated_env(case_dir))
    assert res.rc is None and classify(res).kind == HANG


def test_alarm_interrupts_and_puts_the_old_handler_back():
    old = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Timeout), alarm(0.05):
        time.sleep(10)
    assert signal.getsignal(signal.SIGALRM) is old
