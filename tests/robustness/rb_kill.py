"""kill -9 a running ``latkit profile`` at chosen moments, resume, and count rows lost/duplicated.

The reference is a complete uninterrupted profile of the same operators. The
interrupted LUT is profiled in several runs, each SIGKILLed at one moment (before
the first row, right after a commit, mid-operator, during a commit, late), then
resumed; at the end it must hold exactly the reference's operators, each once, and
every row that was committed before a kill must still be there unchanged.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rb_cli import isolated_env, run_cli

N_OPS = 8  # enough for the five kill moments (the late one leaves one of them)
PROFILE = ["--device", "cpu:onnxruntime", "--space", "proxyless_mobile", "--resolution", "32", "--quick"]


def rows(path: Path) -> list[tuple[str, str, float, str]]:
    """(op_key, device, latency_ms, created_at) of every row (read-only)."""
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [tuple(r) for r in con.execute(
            "SELECT m.op_key, d.uri, m.latency_ms, m.created_at FROM measurements m "
            "JOIN devices d ON d.id = m.device_id ORDER BY m.id")]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def _op_seconds(path: Path) -> float:
    """Typical time between two committed rows of the reference profile."""
    from datetime import datetime

    stamps = sorted(datetime.fromisoformat(r[3]) for r in rows(path))
    if len(stamps) < 2:
        return 0.5
    return max(0.02, (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1))


def _count(path: Path) -> int:
    try:
        return len(rows(path))
    except sqlite3.Error:
        return -1


@dataclass
class KillReport:
    """What the experiment found."""

    moments: list[str] = field(default_factory=list)
    killed_at_rows: list[int] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    extra: int = 0
    missing: int = 0
    notes: list[str] = field(default_factory=list)
    reference: int = 0
    final: int = 0


def _start(lut: Path, limit: int, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(cwd / "killed-run.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "latkit", "profile", *PROFILE, "--limit", str(limit),
                                 "--lut", str(lut)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)


def _wait(cond, proc: subprocess.Popen, timeout: float = 120.0, poll: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_kill_experiment(base: Path, cache: Path) -> KillReport:
    """Profile N_OPS operators with 5 SIGKILLs and resumes; compare with a reference profile."""
    base.mkdir(parents=True, exist_ok=True)
    env = isolated_env(base, cache)
    report = KillReport()
    ref = base / "reference.db"
    res = run_cli(["profile", *PROFILE, "--limit", str(N_OPS), "--lut", str(ref)], base, timeout=300, env=env)
    if res.rc != 0:
        report.notes.append(f"reference profile failed: {res.stderr.strip().splitlines()[-1:]}")
        return report
    ref_keys = {r[0] for r in rows(ref)}
    report.reference = len(ref_keys)
    lut = base / "killed.db"
    wal = Path(str(lut) + "-wal")
    op_s = _op_seconds(ref)

    def wal_sig():
        try:
            st = wal.stat()
            return (st.st_size, st.st_mtime_ns)
        except OSError:
            return None

    moments = [
        ("during the first operator", lambda p, n0: _wait(lut.exists, p) and (time.sleep(op_s * 0.7) or True)),
        ("right after a commit", lambda p, n0: _wait(lambda: _count(lut) > n0, p, poll=0.001)),
        ("mid-operator", lambda p, n0: _wait(lambda: _count(lut) > n0, p) and (time.sleep(op_s * 0.5) or True)),
        ("during a commit (WAL changing)", None),
        ("late (one operator left)", lambda p, n0: _wait(lambda: _count(lut) >= N_OPS - 1, p, poll=0.001)),
    ]
    for label, trigger in moments:
        before = rows(lut)
        remaining = N_OPS - len(before)
        if remaining <= 0:
            report.notes.append(f"{label}: nothing left to measure")
            continue
        proc = _start(lut, remaining, base, env)
        if trigger is None:
            sig0 = wal_sig()
            hit = _wait(lambda: wal_sig() is not None and wal_sig() != sig0, proc, poll=0.0005)
        else:
            hit = trigger(proc, len(before))
        alive = proc.poll() is None
        _kill(proc)
        after = rows(lut)
        report.moments.append(label + ("" if hit and alive else " (process ended before the kill)"))
        report.killed_at_rows.append(len(after))
        before_map, after_map = {r[0]: r for r in before}, {r[0]: r for r in after}
        lost = set(before_map) - set(after_map)
        changed = {k for k in before_map if k in after_map and after_map[k] != before_map[k]}
        report.lost += len(lost)
        report.duplicated += len(changed)
        if lost or changed:
            report.notes.append(f"{label}: lost {sorted(lost)[:3]}, re-measured {sorted(changed)[:3]}")
        check = run_cli(["lut", "show", str(lut)], base, timeout=60, env=env) if lut.exists() else None
        if check is not None and check.rc != 0:
            report.notes.append(f"{label}: LUT unreadable after the kill: {check.stderr.strip()[:200]}")
    committed = rows(lut)
    remaining = N_OPS - len(committed)
    if remaining > 0:
        fin = run_cli(["profile", *PROFILE, "--limit", str(remaining), "--lut", str(lut)], base, timeout=300,
                      env=env)
        if fin.rc != 0:
            report.notes.append(f"final resume failed: {fin.stderr.strip().splitlines()[-1:]}")
    final = rows(lut)
    report.final = len(final)
    keys = [r[0] for r in final]
    report.duplicated += len(keys) - len(set(keys))
    kept = {r for r in committed}
    report.lost += len([r for r in kept if r not in final])
    report.missing = len(ref_keys - set(keys))
    report.lost += report.missing
    report.extra = len(set(keys) - ref_keys)
    return report
