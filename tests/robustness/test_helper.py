"""The classifier the whole suite relies on, on known outcomes."""

from __future__ import annotations

from rb_cli import CLEAN, HANG, MESSY, OK, SILENT, TRACEBACK, Result, assert_clean_error, classify


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
