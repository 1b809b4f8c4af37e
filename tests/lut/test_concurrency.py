"""Several processes on one LUT: profilers split the work, creation does not race,
a run that must hold the device alone says which process has it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latkit.cli import main
from latkit.lut.claims import Claims
from latkit.lut.store import LUT, SCHEMA_VERSION

pytestmark = pytest.mark.slow

PROFILE = ["profile", "--device", "cpu:onnxruntime", "--space", "proxyless_mobile_w05",
           "--resolution", "32", "--quick"]  # fmt: skip


def _latkit(cwd: Path, *argv: str) -> subprocess.Popen:
    # run outside the checkout, whose latkit/ folder would shadow the installed package
    return subprocess.Popen([sys.executable, "-m", "latkit", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _measured(err: str) -> int:
    found = re.search(r"measured (\d+), already present", err)
    assert found, err
    return int(found.group(1))


def test_two_profilers_started_together_split_the_operators(tmp_path):
    lut = tmp_path / "shared lut [1].db"  # does not exist yet: both race to create it
    procs = [_latkit(tmp_path, *PROFILE, "--limit", "10", "--lut", str(lut)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "replace" not in err
    with LUT.open(lut, readonly=True) as table:
        rows = table.rows()
    # each run measured 10 operators the other did not: 20 distinct rows, none measured twice
    assert [_measured(err) for _, err in outs] == [10, 10]
    assert len(rows) == 20 == len({r["op_key"] for r in rows})
    assert all(r["latency_ms"] > 0 and r["source"] == "measured" for r in rows)


def test_second_profiler_shares_the_rest_and_both_end_complete(tmp_path):
    lut = tmp_path / "net.db"
    config = Path(__file__).resolve().parents[2] / "data" / "luts" / "proxyless_mobile.config"
    argv = ["profile", "--device", "cpu:onnxruntime", "--arch", str(config), "--resolution", "32",
            "--quick", "--lut", str(lut)]  # fmt: skip
    first = _latkit(tmp_path, *argv)
    time.sleep(0.5)
    second = _latkit(tmp_path, *argv)
    (_, err1), (_, err2) = first.communicate(timeout=300), second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    with LUT.open(lut, readonly=True) as table:
        n_rows = len(table)
        claims_left = table._q("SELECT COUNT(*) FROM claims")[0][0]
    # every operator stored once; the two runs' own counts add up to it
    assert _measured(err1) + _measured(err2) == n_rows > 0
    assert claims_left == 0


def test_sampled_run_refuses_a_busy_lut_naming_the_holder(tmp_path, capsys):
    lut = tmp_path / "busy.db"
    with LUT.open(lut, create=True) as table:
        claims = Claims(table, "cpu:onnxruntime")  # this process, alive: a run in progress
        assert claims.claim(["k1", "k2"], 5) == ["k1", "k2"]
        code = main([*PROFILE, "--sample", "4", "--lut", str(lut)])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), err
        assert "busy" in lines[0] and "pid" in lines[0] and "replace" not in lines[0]
        claims.release()
        assert table._q("SELECT COUNT(*) FROM claims")[0][0] == 0


def test_device_held_alone_stops_a_plain_profiler(tmp_path, capsys):
    lut = tmp_path / "alone.db"
    with LUT.open(lut, create=True) as table:
        Claims(table, "cpu:onnxruntime").claim_device()
        code = main([*PROFILE, "--limit", "2", "--lut", str(lut)])
        err = capsys.readouterr().err
        assert code != 0 and "busy" in err and "whole device" in err, err
        assert "Traceback" not in err
        assert len(table) == 0


def test_claims_of_an_ended_process_are_taken_over(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(ended.stdout)
    with LUT.open(tmp_path / "a.db", create=True) as table:
        mine = Claims(table, "dev")
        mine.claim([], 0)  # makes the claims table
        table._q("INSERT INTO claims(op_key, device_uri, owner, pid, host, renewed_at) "
                 "VALUES ('k1', 'dev', 'gone', ?, ?, ?)", (dead_pid, mine.host, time.time()))  # fmt: skip
        assert mine.claim(["k1", "k2"], 5) == ["k1", "k2"]
        assert mine.held_by_others(["k1"]) == []
        other = Claims(table, "dev")  # a second live run (same pid, other owner) finds both taken
        assert other.claim(["k1", "k2", "k3"], 5) == ["k3"]


def test_many_processes_creating_one_lut_at_once(tmp_path):
    lut = tmp_path / "new.db"
    code = (
        "import sys, time\n"
        "from latkit.lut.store import LUT\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "with LUT.open(sys.argv[1], create=True) as lut:\n"
        "    print(lut.meta['schema'])\n"
    )
    start = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(lut), start], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "latkit.lut"
    with LUT.open(lut, readonly=True) as table:
        assert table.meta["schema_version"] == str(SCHEMA_VERSION)


def test_claim_of_a_reused_pid_is_taken_over(tmp_path):
    with LUT.open(tmp_path / "a.db", create=True) as table:
        mine = Claims(table, "dev")
        mine.claim([], 0)  # makes the claims table
        # a claim made by an earlier process that had this very pid (another start time)
        table._q("INSERT INTO claims(op_key, device_uri, owner, pid, host, renewed_at) VALUES ('k1', 'dev', ?, ?, ?, ?)",
                 (f"{mine.host}:{mine.pid}:1:abc", mine.pid, mine.host, time.time()))  # fmt: skip
        assert mine.claim(["k1"], 5) == ["k1"]
