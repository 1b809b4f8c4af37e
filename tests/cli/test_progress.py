"""The CLI's one progress display: plain lines off a terminal, names kept from the start at
80 columns, and the machine-readable results of `profile --json`, and `lut calibrate`'s readable fit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from artefacts import copy_lut
from cli_checks import run
from latkit.cli.progress import Stages, track

LONG_KEY = "expanded_conv-input:16x16x16-output:16x16x8-expand:1-kernel:3-stride:1-idskip:0"


def _latkit(*args: str, tmp_path: Path, every: str = "0") -> subprocess.CompletedProcess:
    env = {**os.environ, "LATKIT_PROGRESS_SECONDS": every, "COLUMNS": "80",
           "LATKIT_CACHE": os.environ.get("LATKIT_CACHE", str(tmp_path / "cache"))}
    return subprocess.run([sys.executable, "-m", "latkit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)  # fmt: skip


def test_profile_json_in_process_measures_and_stores_one_operator(capsys, tmp_path) -> None:
    # the quick companion of the subprocess test below: the command itself, its JSON and its LUT
    lut = tmp_path / "p.db"
    code, out, err = run(capsys, "profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--limit", "1",
                         "--quick", "--lut", str(lut), "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["device"] == "cpu:onnxruntime" and doc["lut"] == str(lut) and doc["left"] == 70  # 70 + the 10-class head
    assert len(doc["measured"]) == 1 and 0 < doc["measured"][0]["latency_ms"] < 100
    from latkit.lut.store import LUT

    with LUT.open(lut, readonly=True) as table:
        assert table.done_keys("cpu:onnxruntime") == {doc["measured"][0]["key"]}


def test_profile_passes_stores_each_operators_lowest_figure(capsys, tmp_path) -> None:
    lut = tmp_path / "p.db"
    code, out, err = run(capsys, "profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--limit", "2",
                         "--quick", "--passes", "2", "--lut", str(lut), "--json")  # fmt: skip
    assert code == 0, err
    assert "2 passes" in err
    doc = json.loads(out)
    from latkit.lut.store import LUT

    with LUT.open(lut, readonly=True) as table:
        rows = {r["op_key"]: r for r in table.rows("cpu:onnxruntime")}
    assert sorted(rows) == sorted(m["key"] for m in doc["measured"]) and len(rows) == 2
    for m in doc["measured"]:  # the JSON gives the stored figure: the lowest of both passes
        passes = rows[m["key"]]["provenance"]["passes_ms"]
        assert len(passes) == 2 and m["latency_ms"] == rows[m["key"]]["latency_ms"] == min(passes)
    code, _, err = run(capsys, "profile", "--space", "proxyless_mobile_w05", "--lut", str(lut), "--passes", "2",
                       "--sample", "5")  # fmt: skip
    assert code != 0 and "does not combine with --sample" in err and "Traceback" not in err
    code, _, err = run(capsys, "profile", "--space", "proxyless_mobile_w05", "--lut", str(lut), "--passes", "0")
    assert code != 0 and "--passes" in err


@pytest.mark.slow  # profiles operators in a latkit subprocess
def test_profile_off_a_terminal_prints_plain_lines_and_json(tmp_path) -> None:
    lut = tmp_path / "p.db"
    proc = _latkit("profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--limit", "3", "--quick",
                   "--lut", lut, "--json", tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout holds the JSON only; progress went to stderr
    assert doc["device"] == "cpu:onnxruntime" and doc["precision"] == "fp32" and doc["lut"] == str(lut)
    assert len(doc["measured"]) == 3 and doc["left"] == 68 and doc["failed"] == {}
    assert all(0 < row["latency_ms"] < 100 for row in doc["measured"])
    lines = proc.stderr.splitlines()
    assert "profiling: started, 3 item(s)" in lines
    steps = [line for line in lines if line.startswith("profiling: ") and "/3 [" in line]
    assert [s.split()[1] for s in steps] == ["1/3", "2/3", "3/3"]  # one line per operator at interval 0
    longest = max((row["key"] for row in doc["measured"]), key=len)  # operators may finish in any order
    assert sum(longest in s for s in steps) == 1  # the operator's full name, not cut
    assert any(line.startswith("profiling: finished 3/3 in ") for line in lines)
    assert "\x1b[" not in proc.stderr  # no terminal control codes in a log


def test_plain_lines_are_rate_limited() -> None:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=False, width=200)
    os.environ["LATKIT_PROGRESS_SECONDS"] = "3600"
    try:
        with track("training", 500, console=con) as advance:
            for i in range(500):
                advance(f"step {i}")
    finally:
        del os.environ["LATKIT_PROGRESS_SECONDS"]
    lines = buf.getvalue().splitlines()
    assert lines[0] == "training: started, 500 item(s)"
    assert lines[1].startswith("training: 1/500 [") and lines[1].endswith("step 0")  # the first item at once
    assert len(lines) == 3 and lines[2].startswith("training: finished 500/500 in ")


def test_a_stage_whose_count_grows_shows_the_new_total(monkeypatch) -> None:
    # calibration measures every network once more while the device is not steady: 10 becomes 15
    buf = io.StringIO()
    monkeypatch.setenv("LATKIT_PROGRESS_SECONDS", "0")
    with Stages(console=Console(file=buf, force_terminal=False, width=200)) as stages:
        for done in range(1, 16):
            stages("calibrate", done, 10 if done <= 10 else 15, "net")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "calibrate: started, 10 item(s)"
    assert lines[10].startswith("calibrate: 10/10") and lines[11].startswith("calibrate: 11/15")
    assert lines[-1].startswith("calibrate: finished 15/15 in ")
    with track("x", 4, console=Console(file=io.StringIO(), force_terminal=True, width=80)) as advance:
        advance("grown", total=6)  # the terminal bar takes the new total too

def test_a_long_operator_name_keeps_its_start_at_80_columns() -> None:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=80, color_system=None)
    with track("profiling proxyless_mobile_w05 at fp32", 3, console=con) as advance:
        for _ in range(3):
            advance(f"{LONG_KEY}  0.027 ms")
    final = buf.getvalue().split("\r")[-1].split("\n")[0]
    text = final.replace("\x1b[2K", "")
    assert len(text) <= 80  # one line, nothing wrapped
    assert "3/3" in text and "profiling proxyless" in text
    assert "expanded_conv-input" in text  # cut from the right: the op type and shape stay
    assert "idskip:0" not in text


@pytest.mark.slow
def test_lut_calibrate_prints_plain_progress_and_a_readable_fit(profiled_lut, tmp_path) -> None:
    lut = copy_lut(profiled_lut, tmp_path / "c.db")  # the space profiled (tests/artefacts.py); calibrate writes
    # the JSON of `lut calibrate --json` is checked in-process in tests/lut/test_calibration_picking.py
    proc = _latkit("lut", "calibrate", "--lut", lut, "--space", "proxyless_mobile_w05", "--resolution", "32",
                   "--networks", "3", "--quick", tmp_path=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "measuring networks" in proc.stderr and "finished" in proc.stderr  # plain progress lines, on stderr
    assert "\x1b[" not in proc.stderr
    assert "Calibration(" not in proc.stdout  # not a dataclass repr
    assert "e2e_ms = a * lut_sum_ms + b * n_ops + c" in proc.stdout
    assert "coefficients: a = " in proc.stdout and "residual:" in proc.stdout and "networks used" in proc.stdout
