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
from rich.progress import Progress

from latkit.cli import progress
from latkit.cli.progress import (
    ETA_MIN_SECONDS,
    HEARTBEAT_MIN_S,
    PlainLines,
    Stages,
    _EtaColumn,
    _fmt_seconds,
    eta_seconds,
    track,
)

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


def test_a_stage_whose_count_grows_announces_the_new_total(monkeypatch) -> None:
    # calibration measures every network once more while the device is not steady: 10 becomes 15,
    # announced (with the reason) before the extra pass, so no display ends on a total it never showed
    buf = io.StringIO()
    monkeypatch.setenv("LATKIT_PROGRESS_SECONDS", "0")
    with Stages(console=Console(file=buf, force_terminal=False, width=200)) as stages:
        stages("calibrate", 0, 10, "pass 1 of 2 over 5 model(s)")
        for done in range(1, 11):
            stages("calibrate", done, 10, "net")
        stages("calibrate", 10, 15, "pass 3 of up to 6: 1 of 5 model(s) not steady yet")
        for done in range(11, 16):
            stages("calibrate", done, 15, "net")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "calibrate: started, 10 item(s): pass 1 of 2 over 5 model(s)"
    assert lines[10].startswith("calibrate: 10/10 [")
    assert lines[11] == "calibrate: total now 15 (was 10): pass 3 of up to 6: 1 of 5 model(s) not steady yet"
    assert lines[12].startswith("calibrate: 11/15 [") and lines[-1].startswith("calibrate: finished 15/15 in ")
    with track("x", 4, console=Console(file=io.StringIO(), force_terminal=True, width=80)) as advance:
        advance("grown", total=6)  # the terminal bar takes the new total too


def test_a_resumed_stage_ends_when_the_next_one_is_announced(monkeypatch) -> None:
    # a resumed run: "profile 1/1 already done", then calibration builds and converts its networks
    # for a long while before its first figure; announced at its start, the stage owns that time
    buf = io.StringIO()
    monkeypatch.setenv("LATKIT_PROGRESS_SECONDS", "0")
    with Stages(console=Console(file=buf, force_terminal=False, width=200)) as stages:
        stages("profile", 1, 1, "already done")
        stages("calibrate", 0, 10, "5 networks end to end")
        lines = buf.getvalue().splitlines()
    assert lines[0] == "profile: started, 1 item(s)" and lines[1].startswith("profile: 1/1 [")
    assert lines[2].startswith("profile: finished 1/1 in 0:00:0")  # closed at once, not when calibration reports
    assert lines[3] == "calibrate: started, 10 item(s): 5 networks end to end"


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _plain(total: int, clock: _Clock, every: float = 0.0, note: str = "") -> tuple[PlainLines, io.StringIO]:
    buf = io.StringIO()
    return PlainLines(Console(file=buf, force_terminal=False, width=200), "profile", total, every=every,
                      clock=clock, note=note), buf  # fmt: skip


def test_a_long_step_gets_a_still_working_line_every_few_seconds() -> None:
    clock = _Clock()
    lines, buf = _plain(57, clock, every=5.0, note="57 operators")
    assert lines.quiet_s == HEARTBEAT_MIN_S == 5.0
    clock.t = 4.9
    assert not lines.beat()  # quiet for less than 5 s: nothing
    clock.t = 5.0
    assert lines.beat()
    clock.t = 9.0
    assert not lines.beat()  # 4 s since the last line
    clock.t = 10.0
    assert lines.beat()
    lines.advance("op-a  0.1 ms")  # the first item: a line, so the next beat waits again
    clock.t = 14.0
    assert not lines.beat()
    clock.t = 15.0
    assert lines.beat()
    clock.t = 17.0
    lines.advance("op-b  0.2 ms")  # 7 s after the last count (2 s after a heartbeat): counted
    out = buf.getvalue().splitlines()
    assert out == ["profile: started, 57 item(s): 57 operators",
                   "profile: 0/57 done, still working [0:00:05]",  # the start note is not repeated
                   "profile: 0/57 done, still working [0:00:10]",
                   "profile: 1/57 [0:00:10] op-a 0.1 ms",
                   "profile: 1/57 done, still working [0:00:15] (latest: op-a 0.1 ms)",
                   "profile: 2/57 [0:00:17] op-b 0.2 ms"]  # fmt: skip


def test_no_eta_until_a_few_items_and_seconds() -> None:
    # the first phone operator took 82 s (conversion, push): one item must not promise half an hour
    clock = _Clock()
    lines, buf = _plain(100, clock)
    for t in (82.0, 84.0, 86.0, 88.0):
        clock.t = t
        lines.advance("op")
    out = buf.getvalue().splitlines()[1:]
    assert out[0] == "profile: 1/100 [0:01:22] op" and out[1] == "profile: 2/100 [0:01:24] op"
    # from the third item: the rate after the first (2 s an item), not 82 s an item
    assert out[2] == f"profile: 3/100 [0:01:26, eta {_fmt_seconds(97 * 2.0)}] op"
    assert out[3] == f"profile: 4/100 [0:01:28, eta {_fmt_seconds(96 * 2.0)}] op"
    # three quick items in under ETA_MIN_SECONDS: still none
    assert eta_seconds(0.0, 1.0, ETA_MIN_SECONDS - 1, 3, 100) is None
    assert eta_seconds(0.0, 1.0, ETA_MIN_SECONDS, 3, 100) == pytest.approx((ETA_MIN_SECONDS - 1) / 2 * 97)
    assert eta_seconds(0.0, 1.0, 50.0, 100, 100) is None  # done


def test_the_terminal_bar_hides_its_eta_until_it_means_something() -> None:
    clock = _Clock()
    column = _EtaColumn()
    bar = Progress(column, get_time=clock, console=Console(file=io.StringIO(), force_terminal=True))
    task_id = bar.add_task("x", total=100)
    clock.t = 82.0
    bar.update(task_id, advance=1)
    task = bar.tasks[0]
    assert column.render(task).plain == "-:--:--"
    for t in (84.0, 86.0):
        clock.t = t
        bar.update(task_id, advance=1)
    assert column.render(task).plain not in ("-:--:--", "")


def test_the_plain_display_beats_on_its_own_thread(monkeypatch) -> None:
    # track() off a terminal starts the thread that calls beat(); it stops with the display
    started: list[PlainLines] = []
    monkeypatch.setattr(progress._Heartbeat, "_run", lambda self, lines: started.append(lines))
    with track("export", 3, console=Console(file=io.StringIO(), force_terminal=False)) as advance:
        advance("exporting ONNX", steps=0)
    assert len(started) == 1 and started[0].total == 3 and started[0].note == "exporting ONNX"


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


def test_a_stage_that_fails_says_it_stopped_not_finished(monkeypatch) -> None:
    buf = io.StringIO()
    monkeypatch.setenv("LATKIT_PROGRESS_SECONDS", "0")
    with pytest.raises(RuntimeError, match="converter crashed"):
        with Stages(console=Console(file=buf, force_terminal=False, width=200)) as stages:
            stages("export", 0, 3, "exporting ONNX")
            stages("export", 1, 3, "converting to TFLite")
            raise RuntimeError("converter crashed")
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith("export: stopped at 1/3 in ") and not any("finished" in line for line in lines)
