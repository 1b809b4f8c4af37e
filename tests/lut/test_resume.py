"""Crash safety: SIGKILL a real profiling process, check the LUT, resume it.

A child process profiles 8 small operators on ``cpu:onnxruntime`` into a LUT
file and prints each key once the sink has committed it. The test kills it
with SIGKILL after 3 commits, checks the file is intact and holds at least the
announced rows, reruns the profile to completion, and checks that every op is
present exactly once and that the first run's rows are untouched.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from latkit.lut.store import LUT
from latkit.profiler.ops import Act, OpSpec, OpType

DEVICE = "cpu:onnxruntime"
CHILD = textwrap.dedent(
    """
    import json, sys
    from latkit.devices import open_device
    from latkit.lut.store import LUT
    from latkit.profiler.ops import OpSpec
    from latkit.profiler.protocol import ProtocolConfig
    from latkit.profiler.runner import profile_ops

    lut_path, cache, specs_path = sys.argv[1:4]
    specs = [OpSpec.from_dict(d) for d in json.load(open(specs_path))]
    device = open_device("cpu:onnxruntime")
    config = ProtocolConfig.quick(pool_size=1)  # one op at a time: commits come one by one

    def progress(done, total, key, m):
        print("committed", key, flush=True)

    with LUT.open(lut_path, create=True) as lut:
        report = profile_ops(device, specs, lut, config, on_progress=progress, cache_dir=cache)
    print("done", len(report.measured), len(report.skipped), len(report.failed), flush=True)
    """
)


def _specs() -> list[OpSpec]:
    return [
        OpSpec(OpType.MBCONV, (8, 8, 16), (8, 8, 16), kernel=k, expand_ratio=e,
               mid_channels=16 * e, act=Act.RELU6, idskip=True)
        for k in (3, 5, 7) for e in (3, 6)
    ] + [
        OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 8), kernel=3, stride=2, act=Act.RELU6),
        OpSpec(OpType.LOGITS, (1, 1, 64), (1, 1, 10)),
    ]  # fmt: skip


def _child(tmp_path, lut_path):
    specs_path = tmp_path / "specs.json"
    specs_path.write_text(json.dumps([s.to_dict() for s in _specs()]))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(lut_path), str(tmp_path / "cache"), str(specs_path)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def _rows(path):
    with LUT.open(path) as lut:
        return {r["op_key"]: r for r in lut.rows(DEVICE)}


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    keys = {s.key for s in _specs()}
    lut_path = tmp_path / "lut.db"
    proc = _child(tmp_path, lut_path)
    announced: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while len(announced) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("committed "):
                announced.append(line.split(" ", 1)[1].strip())
        assert len(announced) == 3, f"child ended early: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # the killed run's file opens, passes SQLite's integrity check and holds what it announced
    with LUT.open(lut_path) as lut:
        lut.check()
    first = _rows(lut_path)
    assert set(announced) <= set(first) and len(first) < len(keys)
    for row in first.values():
        assert row["latency_ms"] > 0 and row["source"] == "measured"
        assert len(row["samples_ms"]) == row["n_samples"] >= 12

    # rerun: resumes, measures only the rest
    proc = _child(tmp_path, lut_path)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    done_line = [line for line in out.splitlines() if line.startswith("done ")][-1]
    measured, skipped, failed = (int(v) for v in done_line.split()[1:])
    assert (measured, skipped, failed) == (len(keys) - len(first), len(first), 0)

    conn = sqlite3.connect(lut_path)
    counts = dict(conn.execute("SELECT op_key, COUNT(*) FROM measurements GROUP BY op_key"))
    conn.close()
    assert set(counts) == keys and set(counts.values()) == {1}
    second = _rows(lut_path)
    for key, row in first.items():  # untouched by the rerun
        assert second[key]["latency_ms"] == row["latency_ms"]
        assert second[key]["created_at"] == row["created_at"]
        assert second[key]["samples_ms"] == row["samples_ms"]
