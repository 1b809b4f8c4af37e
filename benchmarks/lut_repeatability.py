"""How repeatable is a LUT? Build the same space's LUT twice, independently, and compare.

Each build runs in its own process (fresh ONNX Runtime sessions, fresh
interleaving order) into its own LUT file; then, per operator, the relative
difference ``|a - b| / mean(a, b)`` of the two latencies is computed. The goal
of the protocol is a median difference <= 3% and a p95 <= 10% on a shared,
noisy machine.

Besides the protocol's own figure (``latency_ms``, by default the 5th
percentile of the samples), the script recomputes other statistics from the raw
samples stored in both LUTs, to show what the choice of statistic buys: the
plain median, the 25th percentile and the minimum sample.

Usage::

    python benchmarks/lut_repeatability.py                       # proxyless_mobile @128
    python benchmarks/lut_repeatability.py --space ofa_mbv3 --resolution 160 --limit 60
    python benchmarks/lut_repeatability.py --compare a.db b.db   # two existing LUTs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEVICE = "cpu:onnxruntime"


def build(path: Path, space: str, resolution: int, limit: int | None, seed: int,
          threads: int, target_ci: float) -> None:  # fmt: skip
    """Profile the space's operators into ``path`` (runs in a child process)."""
    from latkit.devices import open_device
    from latkit.lut.store import LUT
    from latkit.profiler.protocol import ProtocolConfig
    from latkit.profiler.runner import profile_ops
    from latkit.profiler.spaces import get_space

    specs = get_space(space).operators(resolution)
    device = open_device(DEVICE, threads=threads)
    config = ProtocolConfig(seed=seed, target_rel_ci=target_ci)
    with LUT.open(path, create=True) as lut:
        report = profile_ops(device, specs, lut, config, limit=limit)
    print(f"  built {path.name}: {len(report.measured)} measured, {len(report.failed)} failed, "
          f"{len(report.unconverged)} unconverged, {report.elapsed_s:.0f} s", flush=True)


def _estimators(row: dict) -> dict[str, float]:
    raw = np.asarray(row["samples_ms"], dtype=float)
    out = {"latency_ms (protocol)": row["latency_ms"]}
    if raw.size:
        out.update({
            "plain median": float(np.median(raw)),
            "p25": float(np.percentile(raw, 25)),
            "min sample": float(raw.min()),
        })  # fmt: skip
    return out


def compare(a_path: Path, b_path: Path) -> dict[str, np.ndarray]:
    """Per-estimator relative differences between two LUTs (common keys)."""
    from latkit.lut.store import LUT

    with LUT.open(a_path) as a, LUT.open(b_path) as b:
        rows_a = {r["op_key"]: r for r in a.rows()}
        rows_b = {r["op_key"]: r for r in b.rows()}
    common = sorted(set(rows_a) & set(rows_b))
    diffs: dict[str, list[float]] = {}
    worst: list[tuple[float, str, float, float]] = []
    for key in common:
        ea, eb = _estimators(rows_a[key]), _estimators(rows_b[key])
        for name in ea:
            va, vb = ea[name], eb[name]
            diffs.setdefault(name, []).append(abs(va - vb) / ((va + vb) / 2))
        la, lb = rows_a[key]["latency_ms"], rows_b[key]["latency_ms"]
        worst.append((abs(la - lb) / ((la + lb) / 2), key, la, lb))
    print(f"{len(common)} operators in both LUTs")
    print(f"{'statistic':24s} {'median':>8s} {'p95':>8s} {'max':>8s}")
    for name, values in diffs.items():
        v = np.asarray(values) * 100
        print(f"{name:24s} {np.median(v):7.2f}% {np.percentile(v, 95):7.2f}% {v.max():7.2f}%")
    print("largest differences (protocol latency):")
    for rel, key, la, lb in sorted(worst, reverse=True)[:5]:
        print(f"  {rel * 100:6.2f}%  {la:8.4f} vs {lb:8.4f} ms  {key}")
    return {k: np.asarray(v) for k, v in diffs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="proxyless_mobile")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="operators per build (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target-ci", type=float, default=0.02, help="target relative CI half-width")
    ap.add_argument("--out", type=Path, default=None, help="keep the two LUTs in this folder")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(args.build, args.space, args.resolution, args.limit, args.seed, args.threads,
              args.target_ci)  # fmt: skip
        return
    if args.compare:
        compare(*args.compare)
        return
    folder = args.out or Path(tempfile.mkdtemp(prefix="latkit-repeat-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{args.space}_{args.resolution}_run{i}.db" for i in (1, 2)]
    print(f"{args.space} @ {args.resolution}, {DEVICE}, {args.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}; LUTs in {folder}")  # fmt: skip
    for i, path in enumerate(paths):
        path.unlink(missing_ok=True)
        t0 = time.time()
        cmd = [sys.executable, __file__, "--build", str(path), "--space", args.space,
               "--resolution", str(args.resolution), "--seed", str(i + 1),
               "--threads", str(args.threads), "--target-ci", str(args.target_ci)]  # fmt: skip
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        subprocess.run(cmd, check=True)
        print(f"  run {i + 1}: {time.time() - t0:.0f} s, load average now {os.getloadavg()[0]:.2f}")
    compare(*paths)


if __name__ == "__main__":
    main()
