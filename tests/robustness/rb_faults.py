"""Fault injection over the loopback phone: garbage tool output, timeouts, outages.

Each case starts a :class:`LoopbackDevice` in this process on a free 127.0.0.1 port
(sandbox and HOME under the case folder) with the simulated ``benchmark_model`` (a
shell script printing the real tool's report: the faults are in the ADB path and in
what the tool prints, not in the model), arms a fault or replaces the sandbox's
``benchmark_model`` with a script printing garbage, runs ``latkit profile`` against
it in a subprocess and checks the outcome *and* the LUT: a recoverable fault (one
dropped connection) must still give a correct row; an unrecoverable one one error
and no bad row stored.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rb_cli import CLEAN, HANG, OK, SILENT, Result, Verdict, classify, run_cli
from rb_corpus import bm_text, lut_rows_problem
from rb_workspace import Workspace

GROUP = "profile over loopback"
# Short ADB waits (the environment variables AndroidDevice reads): every unreachable or
# hung case waits them out, so they set its time. The outcome is the same as with the
# defaults, only sooner.
WAITS = {"LATKIT_ADB_CONNECT_WAIT_S": "4", "LATKIT_ADB_CONNECT_TIMEOUT_S": "3",
         "LATKIT_ADB_SHELL_TIMEOUT_S": "5"}
DEVICE_WAIT_S = 5  # --device-wait: how long a run waits for a phone gone mid-profile
SIMULATED_MS = 2.0  # the simulated benchmark_model's latency per run


@dataclass
class FaultCase:
    """One fault scenario: ``arrange(device, folder)`` runs before the profile starts."""

    name: str
    arrange: Callable[[object, Path], None]
    expect: str = "error"  # "ok": the fault must be absorbed (retried) and the row stored
    timeout: float = 150.0
    limit: int = 1
    during: Callable[[object, Path], None] | None = None  # runs in a thread while profiling
    keep_rows: int | None = None  # rows that must survive (outage mid-profile)
    waits: dict[str, str] | None = None  # ADB waits other than WAITS

    @property
    def id(self) -> str:
        return f"{GROUP}: {self.name}"

    group = GROUP


def _arm(kind: str, count: int) -> Callable[[object, Path], None]:
    return lambda dev, folder: dev.faults.arm(kind, count)


def _garbage(text: str | bytes, rc: int = 0) -> Callable[[object, Path], None]:
    """Replace the phone's benchmark_model with a script printing ``text``."""

    def arrange(dev, folder: Path) -> None:
        out = folder / "bm_out.txt"
        out.write_bytes(text if isinstance(text, bytes) else text.encode())
        shim = Path(dev.root) / "data/local/tmp/benchmark_model"
        shim.write_text(f"#!/bin/sh\ncat {shlex.quote(str(out))}\nexit {rc}\n")
        shim.chmod(0o755)

    return arrange


def _output_faults() -> tuple[str, ...]:
    from latkit.devices.loopback import faults

    return getattr(faults, "OUTPUT_FAULTS", ())


def _outage(seconds: float) -> Callable[[object, Path], None]:
    def arrange(dev, folder: Path) -> None:
        if not hasattr(dev.faults, "outage"):
            raise RuntimeError("this loopback device has no outage switch")
        dev.faults.outage(seconds)

    return arrange


def _after_first_row(action: Callable[[object], None]) -> Callable[[object, Path], None]:
    def during(dev, folder: Path) -> None:
        lut = folder / "p.db"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if lut_count(lut) >= 1:
                action(dev)
                return
            time.sleep(0.05)

    return during


def _after_models_pushed(action: Callable[[object], None], n_models: int = 3,
                         delay_s: float = 4.0) -> Callable[[object, Path], None]:
    def during(dev, folder: Path) -> None:
        pushed = Path(dev.root) / "data/local/tmp/latkit"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if len(list(pushed.glob("*.tflite"))) >= n_models if pushed.is_dir() else False:
                time.sleep(delay_s)
                action(dev)
                return
            time.sleep(0.05)

    return during


def _stop(dev) -> None:
    dev.stop()


def _long_outage(dev) -> None:
    dev.faults.outage(600.0)


def lut_count(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        n = con.execute("SELECT count(*) FROM measurements").fetchone()[0]
        con.close()
        return int(n)
    except sqlite3.Error:
        return 0


def fault_cases() -> list[FaultCase]:
    F = FaultCase
    return [
        F("one dropped push (retried)", _arm("drop_push", 1), expect="ok"),
        F("one dropped shell stream (retried)", _arm("drop_shell", 1), expect="ok"),
        F("one truncated output (retried)", _arm("truncate_output", 1), expect="ok"),
        F("every push dropped", _arm("drop_push", 1000)),
        F("every shell stream dropped", _arm("drop_shell", 1000)),
        F("every output truncated", _arm("truncate_output", 1000)),
        F("every shell stream hangs", _arm("hang_shell", 1000), timeout=150),
        F("benchmark_model avg negative", _garbage(bm_text(avg="-1196.42"))),
        F("benchmark_model avg NaN", _garbage(bm_text(avg="nan"))),
        F("benchmark_model avg inf", _garbage(bm_text(avg="inf"))),
        F("benchmark_model avg 0", _garbage(bm_text(avg="0"))),
        F("benchmark_model count of 5000 digits", _garbage(bm_text(count="9" * 5000))),
        F("benchmark_model 80 kB line only", _garbage("INFO: " + "9" * 80_000 + "\n")),
        F("benchmark_model prints nothing, exit 0", _garbage("")),
        F("benchmark_model prints non-UTF-8 bytes", _garbage(b"\xff\xfe\xfd INFO: count=\x80\x81\n")),
        F("benchmark_model stops after STARTING", _garbage("INFO: STARTING!\n")),
        F("benchmark_model crashes (exit 139)", _garbage("Segmentation fault\n", rc=139)),
        *[F(f"every benchmark_model run: {kind}", _arm(kind, 1000)) for kind in _output_faults()],
        # the first connection must outlast the outage: a longer connect wait
        F("5 s outage of the whole device (waited out)", _outage(5.0), expect="ok",
          waits={"LATKIT_ADB_CONNECT_WAIT_S": "20"}),
        # the phone path pushes its operators, then measures them in interleaved rounds and
        # stores them at the end, so the outage starts once both models are on the phone (at
        # once: the rounds of two simulated operators can end within a second)
        F("device shut down mid-profile", lambda dev, folder: None, limit=2,
          during=_after_models_pushed(_stop, n_models=2, delay_s=0.0), timeout=240),
        F("device off the air (600 s outage) mid-profile", lambda dev, folder: None, limit=2,
          during=_after_models_pushed(_long_outage, n_models=2, delay_s=0.0), timeout=240),
    ]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def profile_argv(uri: str, lut: Path, limit: int) -> list[str]:
    return ["profile", "--device", uri, "--space", "proxyless_mobile", "--resolution", "32",
            "--limit", str(limit), "--quick", "--device-wait", str(DEVICE_WAIT_S), "--lut", str(lut)]


def _env(ws: Workspace, folder: Path, waits: dict[str, str] | None = None) -> dict[str, str]:
    """The workspace's CLI environment with short ADB waits."""
    return {**ws.env(folder), **WAITS, **(waits or {})}


def run_fault_case(case: FaultCase, folder: Path, ws: Workspace) -> Verdict:
    """Run one fault case; the verdict also checks the LUT's rows."""
    from latkit.devices.loopback.benchmark_model import install_simulator
    from latkit.devices.loopback.server import LoopbackDevice

    folder.mkdir(parents=True, exist_ok=True)
    lut = folder / "p.db"
    with _cache_env(ws):  # the device's own ADB key lives in LATKIT_CACHE, shared with the client
        dev = LoopbackDevice(folder / "phone", port=0)
        dev.start()
    install_simulator(dev.root, SIMULATED_MS)
    thread = None
    try:
        case.arrange(dev, folder)
        if case.during is not None:
            thread = threading.Thread(target=case.during, args=(dev, folder), daemon=True)
            thread.start()
        res = run_cli(profile_argv(f"adb+tcp://127.0.0.1:{dev.port}", lut, case.limit), folder,
                      timeout=case.timeout, env=_env(ws, folder, case.waits))
    except Exception as exc:
        return Verdict("corpus error", f"{type(exc).__name__}: {exc}")
    finally:
        dev.faults.clear()
        try:
            dev.stop()
        except Exception:
            pass
        if thread is not None:
            thread.join(timeout=5)
    verdict = classify(res, case.expect, allow_progress=True)
    return _check_rows(case, verdict, res, lut)


def _check_rows(case: FaultCase, verdict: Verdict, res: Result, lut: Path) -> Verdict:
    if verdict.kind == HANG:
        return verdict
    problem = lut_rows_problem(lut)
    if problem:
        return Verdict(SILENT, problem[1], res)
    n = lut_count(lut)
    if case.keep_rows is not None and verdict.kind == SILENT:
        verdict = Verdict(SILENT, f"{verdict.detail}; the LUT holds {n} of {case.limit} rows", res)
    if case.expect == "ok" and verdict.kind == OK and n != case.limit:
        return Verdict("wrongly failed", f"exit 0 but the LUT holds {n} rows, want {case.limit}", res)
    if case.keep_rows is not None and n < case.keep_rows:
        return Verdict("measurement lost", f"{n} rows kept, {case.keep_rows} were measured before the outage",
                       res)
    return verdict


@contextlib.contextmanager
def _cache_env(ws: Workspace):
    old = os.environ.get("LATKIT_CACHE")
    os.environ["LATKIT_CACHE"] = str(ws.cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LATKIT_CACHE", None)
        else:
            os.environ["LATKIT_CACHE"] = old


def run_unreachable(folder: Path, ws: Workspace) -> list[tuple[str, Verdict]]:
    """Devices that cannot be reached: a closed port, a refusing authoriser."""
    from latkit.devices.loopback.server import LoopbackDevice

    out = []
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    res = run_cli(profile_argv(f"adb+tcp://127.0.0.1:{port}", folder / "a.db", 1), folder, timeout=90,
                  env=_env(ws, folder))
    out.append((f"{GROUP}: nothing listening on the port", classify(res, "error", allow_progress=True)))
    with _cache_env(ws), LoopbackDevice(folder / "phone", port=0, auth="refuse") as dev:
        res = run_cli(profile_argv(f"adb+tcp://127.0.0.1:{dev.port}", folder / "b.db", 1), folder,
                      timeout=90, env=_env(ws, folder))
    out.append((f"{GROUP}: device refuses authorisation", classify(res, "error", allow_progress=True)))
    # a server that accepts and says nothing (a hung adbd)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    try:
        res = run_cli(profile_argv(f"adb+tcp://127.0.0.1:{s.getsockname()[1]}", folder / "c.db", 1), folder,
                      timeout=90, env=_env(ws, folder))
    finally:
        s.close()
    out.append((f"{GROUP}: port accepts and never answers", classify(res, "error", allow_progress=True)))
    # a server that answers with garbage bytes
    g = socket.socket()
    g.bind(("127.0.0.1", 0))
    g.listen(4)
    stop = threading.Event()

    def serve() -> None:
        g.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = g.accept()
            except OSError:
                continue
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 8)
            except OSError:
                pass
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = run_cli(profile_argv(f"adb+tcp://127.0.0.1:{g.getsockname()[1]}", folder / "d.db", 1), folder,
                      timeout=90, env=_env(ws, folder))
    finally:
        stop.set()
        t.join(2)
        g.close()
    out.append((f"{GROUP}: port answers with garbage bytes", classify(res, "error", allow_progress=True)))
    return out


__all__ = ["CLEAN", "FaultCase", "fault_cases", "run_fault_case", "run_unreachable", "lut_count"]
