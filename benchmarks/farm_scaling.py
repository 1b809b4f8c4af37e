"""Device-farm throughput: operators per minute with 1, 2 and 4 loopback phones, and the driver's cost.

Each phone is its own ``latkit loopback-device --simulate-latency-ms X``: its
``benchmark_model`` sleeps X ms per run instead of running the model (and
says so in its output), so four phones on a 2-core machine measure in
parallel as four real phones would, while ADB, pushes, the measurement
protocol, Ray and the LUT all run for real. One stand-in file is pushed for
every operator (no TFLite export: converting an operator costs ~5 s of host
CPU, which is a cost of building a farm's models, not of running the farm).

Printed: ops/min per phone count, steady state (each phone's operators over
its time with one in flight, summed; the phones run at once, so contention
counts, the staggered start of their workers does not) and wall (first
operator start to last row), the speed-up over one phone (goal >= 3.5x with 4), the driver's
time per row (fetching the result, the committed SQLite write, bookkeeping;
goal < 5 ms) and its CPU time per row including polling, the LUT's raw write
rate, and what these mean for a farm of many phones.

Run: ``python benchmarks/farm_scaling.py [--ops 16] [--latency-ms 5]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from latkit.devices.android_state import ThermalPolicy
from latkit.lut.store import LUT
from latkit.profiler.farm import FarmConfig, StandInFactory, device_resource, farm_profile
from latkit.profiler.farm.node import measurement_from
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.spaces import get_space


# The simulated phones never heat up, so no cooldown wait, and their clock is sampled
# every 0.5 s instead of 0.1 s: the sampler is a shell loop on the "phone", i.e. on
# this host's 2 cores here, where a real phone would spend its own CPU on it.
THERMAL = ThermalPolicy(pre_wait_s=0.0, sample_s=0.5)


def start_phone(root: Path, serial: str, latency_ms: float) -> tuple[subprocess.Popen, str]:
    """A simulated loopback phone on a free port; returns the process and its URI."""
    log = root.parent / f"{serial}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "latkit", "loopback-device", "--port", "0", "--root", str(root),
         "--serial", serial, "--simulate-latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)  # noqa: SIM115
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()):
            return proc, f"adb+tcp://127.0.0.1:{m.group(1)}"
        time.sleep(0.1)
    raise RuntimeError(f"{serial} did not start: {log.read_text()}")


def run(n: int, specs, stub: Path, out: Path, protocol: ProtocolConfig) -> dict:
    """One farm run on the first ``n`` phones; returns its figures."""
    marks: dict[str, float] = {}

    def on_event(kind, st, run_) -> None:
        now = time.perf_counter()
        if kind == "started":
            marks.setdefault("first", now)
        elif kind == "measured":
            marks["last"] = now

    pattern = ",".join(f"P{i}" for i in range(1, n + 1))
    cpu0 = time.process_time()
    with LUT.open(out / f"farm{n}.db", create=True) as lut:
        report = farm_profile(specs, lut, pattern, protocol=protocol, config=FarmConfig(poll_s=0.05),
                              device_options={"thermal": THERMAL},
                              model_factory=StandInFactory(stub), on_event=on_event)
    cpu = time.process_time() - cpu0
    assert report.ok and report.rows == len(specs), report.to_dict()
    span = marks["last"] - marks["first"]
    # steady state: each phone's own rate while it had an operator in flight, summed (the
    # phones ran at the same time, so contention is in it; workers' start-up skew is not)
    steady = sum(d["measured"] / d["busy_s"] for d in report.devices if d["busy_s"] > 0) * 60
    return {"n": n, "ops_per_min": steady, "wall_ops_per_min": report.rows / span * 60, "span_s": span,
            "driver_ms": report.driver_s_per_row * 1e3, "write_ms": report.write_s_per_row * 1e3,
            "driver_cpu_ms": cpu * 1e3 / report.rows,
            "per_phone": {d["serial"]: d["measured"] for d in report.devices}}


def sqlite_rate(template: Path, out: Path, devices: int = 8) -> float:
    """Rows per second the LUT commits (one transaction per row, WAL, synchronous=FULL)."""
    with LUT.open(template) as src:
        row = src.rows()[0]
    m = measurement_from({k: row[k] for k in ("latency_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
                          "p10_ms", "p90_ms", "mad_ms", "ci_low_ms", "ci_high_ms", "rel_ci", "n_samples",
                          "n_outliers", "iterations", "converged")}
                         | {"key": "", "samples_ms": row["samples_ms"], "provenance": row["provenance"]})
    specs = list({s.key: s for s in get_space("proxyless_mobile_w05").operators(32) if s.measurable}.values())
    n = 0
    with LUT.open(out / "rate.db", create=True) as lut:
        t0 = time.perf_counter()
        for d in range(devices):
            info = {"uri": f"bench:{d}", "runtime": "benchmark_model", "threads": 1}
            for s in specs:
                m.key = s.key
                lut.add(s, m, info)
                n += 1
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=16, help="operators per run")
    ap.add_argument("--latency-ms", type=float, default=5.0, help="simulated latency of one run")
    args = ap.parse_args()
    specs = list({s.key: s for s in get_space("proxyless_mobile_w05").operators(32) if s.measurable}.values())
    specs = specs[: args.ops]
    protocol = ProtocolConfig()  # the full protocol (a phone takes few, long samples: adapt_protocol)
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        out = Path(tmp)
        stub = out / "stub.tflite"
        stub.write_bytes(b"TFL3 stand-in")
        phones = [start_phone(out / f"P{i}", f"P{i}", args.latency_ms) for i in range(1, 5)]
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     resources={device_resource(uri): 1 for _, uri in phones})
            print(f"simulated loopback phones: every benchmark_model run sleeps {args.latency_ms:g} ms "
                  f"(SIMULATED timing, no model runs); {len(specs)} operators per run, full protocol; "
                  f"host: {os.cpu_count()} cores")
            results = []
            for n in (1, 2, 4):
                r = run(n, specs, stub, out, protocol)
                results.append(r)
                print(f"{n} phone(s): {r['ops_per_min']:6.1f} ops/min steady ({r['wall_ops_per_min']:5.1f} from "
                      f"first start to last row, {r['span_s']:5.1f} s)  "
                      f"driver {r['driver_ms']:.2f} ms/row (SQLite write {r['write_ms']:.2f}), "
                      f"driver CPU incl. polling {r['driver_cpu_ms']:.1f} ms/row  rows per phone {r['per_phone']}")
            base = results[0]["ops_per_min"]
            for r in results[1:]:
                print(f"speed-up with {r['n']} phones: {r['ops_per_min'] / base:.2f}x (ideal {r['n']}x)")
            rate = sqlite_rate(out / "farm1.db", out)
            per_phone_h = base * 60
            driver_ms = max(r["driver_ms"] for r in results)
            print(f"ops per device-hour (one simulated phone): {per_phone_h:.0f}")
            print(f"LUT write rate: {rate:.0f} rows/s (one committed transaction per row)")
            ceiling = 1000.0 / driver_ms * 3600
            print(f"one driver handles ~{ceiling:.0f} rows/hour -> ~{ceiling / per_phone_h:.0f} phones at this "
                  "per-phone rate before the driver is the bottleneck")
        finally:
            ray.shutdown()
            for proc, _ in phones:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)


if __name__ == "__main__":
    main()
