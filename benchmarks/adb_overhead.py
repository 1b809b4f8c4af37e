"""ADB client overhead against a loopback device: shell round trip (ms) and push speed (MB/s).

Clients compared:

* ``latkit adb-shell``: latkit's transport (TCP_NODELAY, complete writes, exit-status marker);
* ``plain adb-shell``: ``adb_shell.AdbDeviceTcp`` as shipped (no fixes);
* ``latkit adb-server``: latkit's server transport (adbutils) through a Debian ``adb`` server;
* ``Debian adb`` (``/usr/bin/adb``) and ``adbutils' bundled adb``: one CLI process per command,
  each through its own adb server on a private port.

Run: ``python benchmarks/adb_overhead.py [--rounds 30] [--push-mb 8]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from latkit.devices.adb_transport import AdbServerTransport, AdbShellTransport, load_signer
from latkit.devices.loopback.server import LoopbackDevice


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_it(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time of ``fn`` in milliseconds (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def push_rate(fn: Callable[[], object], size_mb: float, limit_s: float) -> str:
    """MB/s of one push, or why it did not finish."""
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # the unfixed clients may stall or break: report, don't crash
        return f"failed ({type(exc).__name__})"
    dt = time.perf_counter() - t0
    return f"{size_mb / dt:.1f}" if dt < limit_s else f"{size_mb / dt:.2f} (slow)"


def bench_latkit(dev: LoopbackDevice, key: Path, blob: Path, mb: float, rounds: int) -> tuple[float, str]:
    with AdbShellTransport("127.0.0.1", dev.port, key_path=key) as t:
        rt = time_it(lambda: t.shell(["true"]), rounds)
        rate = push_rate(lambda: t.push(blob, "/data/local/tmp/bench.bin"), mb, 60)
    return rt, rate


def bench_plain(dev: LoopbackDevice, key: Path, blob: Path, mb: float, rounds: int) -> tuple[float, str]:
    from adb_shell.adb_device import AdbDeviceTcp

    d = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=30)
    d.connect(rsa_keys=[load_signer(key)], auth_timeout_s=10)
    try:
        rt = time_it(lambda: d.shell("true"), rounds)
        rate = push_rate(lambda: d.push(str(blob), "/data/local/tmp/bench.bin", read_timeout_s=60), mb, 60)
    finally:
        d.close()
    return rt, rate


def bench_cli(adb: str, dev: LoopbackDevice, blob: Path, mb: float, rounds: int,
              home: Path) -> tuple[float, str, Callable[[], None], int]:
    port = free_port()
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(port)}

    def run(*args: str) -> None:
        subprocess.run([adb, *args], env=env, check=True, capture_output=True, timeout=120)

    run("start-server")
    run("connect", dev.serial_uri)
    for _ in range(50):
        out = subprocess.run([adb, "devices"], env=env, capture_output=True, timeout=20).stdout
        if b"\tdevice" in out:
            break
        time.sleep(0.1)
    rt = time_it(lambda: run("-s", dev.serial_uri, "shell", "true"), max(5, rounds // 3))
    rate = push_rate(lambda: run("-s", dev.serial_uri, "push", str(blob), "/data/local/tmp/bench.bin"), mb, 60)
    return rt, rate, lambda: run("kill-server"), port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--push-mb", type=float, default=8.0)
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        blob = tmp / "blob.bin"
        blob.write_bytes(os.urandom(int(args.push_mb * 1024 * 1024)))
        key = tmp / "adbkey"
        with LoopbackDevice(tmp / "root", auth="off") as dev:
            rt, rate = bench_latkit(dev, key, blob, args.push_mb, args.rounds)
            rows.append(("latkit adb-shell", f"{rt:.2f}", rate))
            rt, rate = bench_plain(dev, key, blob, args.push_mb, args.rounds)
            rows.append(("plain adb-shell", f"{rt:.2f}", rate))
            clis = [("Debian adb", shutil.which("adb") or "/usr/bin/adb")]
            try:
                import adbutils

                clis.append(("adbutils' bundled adb", adbutils.adb_path()))
            except (ImportError, RuntimeError):
                pass
            for name, path in clis:
                if not Path(path).exists():
                    rows.append((name, "n/a", "n/a"))
                    continue
                rt, rate, stop, port = bench_cli(path, dev, blob, args.push_mb, args.rounds, tmp)
                if name == "Debian adb":  # the python server client rides on this server
                    t = AdbServerTransport(dev.serial_uri, port=port)
                    srt = time_it(lambda: t.shell(["true"]), args.rounds)
                    srate = push_rate(lambda: t.push(blob, "/data/local/tmp/bench.bin"), args.push_mb, 60)
                    rows.append(("latkit adb-server (adbutils)", f"{srt:.2f}", srate))
                stop()
                rows.append((f"{name} (CLI process per call)", f"{rt:.2f}", rate))
    w = max(len(r[0]) for r in rows)
    print(f"{'client':<{w}}  {'shell round trip ms':>20}  {'push MB/s':>14}")
    for name, rt, rate in rows:
        print(f"{name:<{w}}  {rt:>20}  {rate:>14}")


if __name__ == "__main__":
    main()
