"""Does ProxylessNAS gradient search land on the latency target? (CPU, a few minutes)

Builds (once) a LUT of ``proxyless_mobile_w05`` at 64x64 on ``cpu:onnxruntime``
with ``latkit profile``, then runs ``proxyless-grad`` (hard-target mode, additive
latency loss) on the embedded digits dataset for two targets between the
smallest and largest latency the LUT allows, and prints, for each, the LUT
latency of the returned architecture against the target. Goal: ``LAT <= T`` and
``LAT >= 0.9 T``. The argmax architecture before the final projection is
printed too, to show how much of the result the projection contributes. The supernet is trained at 32x32 (reduced resolution, for the
CPU); the latency is that of the 64x64 network the LUT describes.

    python benchmarks/search_target.py [--lut PATH] [--epochs 5] [--steps 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latkit.core.errors import LatkitError
from latkit.lut.store import LUT
from latkit.profiler.spaces import get_space
from latkit.search.supernet.data import load_digits
from latkit.lut.tables import TableLatencyModel
from latkit.search.supernet.proxyless_grad import ProxylessConfig
from latkit.search.run import SearchConfig, run_search

SPACE, RESOLUTION, DEVICE = "proxyless_mobile_w05", 64, "cpu:onnxruntime"


def ensure_lut(path: Path) -> float:
    """Profile the space into ``path`` unless it is complete; return the seconds spent."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "latkit", "profile", "--device", DEVICE, "--space", SPACE,
         "--resolution", str(RESOLUTION), "--lut", str(path), "--max-seconds", "3"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - t0


def lut_model(path: Path) -> tuple[TableLatencyModel, float]:
    """The space's latency model from the LUT at ``path`` (profiled first unless complete), and the seconds spent."""
    space = get_space(SPACE)
    prof_s = 0.0
    try:  # a complete LUT from an earlier run is reused
        with LUT.open(path) as lut:
            return TableLatencyModel.from_lut(space, lut, DEVICE, RESOLUTION), prof_s
    except LatkitError:
        prof_s = ensure_lut(path)
    with LUT.open(path) as lut:
        return TableLatencyModel.from_lut(space, lut, DEVICE, RESOLUTION), prof_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", type=Path, default=Path(tempfile.gettempdir()) / "latkit_bench_pm_w05_r64.db")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15, help="weight steps per epoch")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.6])
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="latkit_search_")))
    args = ap.parse_args()

    space = get_space(SPACE)
    model, prof_s = lut_model(args.lut)
    lo, hi = model.min_latency()[0], model.max_latency()[0]
    print(f"LUT {args.lut} ({model.provenance['n_ops']} ops, profile step {prof_s:.0f} s): "
          f"reachable latency {lo:.4f} .. {hi:.4f} ms")  # fmt: skip
    data = load_digits(32, seed=0)
    cfg = ProxylessConfig(loss_form="add", max_steps_per_epoch=args.steps, batch_size=32)
    ok_all = True
    for frac in args.fractions:
        target = lo + frac * (hi - lo)
        t0 = time.perf_counter()
        res = run_search(space, model, SearchConfig(target, epochs=args.epochs, seed=0, resolution=32, proxyless=cfg,
                                                    eval_samples=1), data, args.out / f"T{frac:g}")  # fmt: skip
        wall = time.perf_counter() - t0
        history = json.loads((res.out_dir / "checkpoint.json").read_text())["history"]
        derived = history[-1]["derived_latency_ms"]
        ratio = res.latency_ms / target
        ok = res.latency_ms <= target and ratio >= 0.9
        ok_all &= ok
        print(f"T = {target:.4f} ms: returned LUT latency {res.latency_ms:.4f} ms = {100 * ratio:.1f}% of T "
              f"({'OK' if ok else 'MISS'}; argmax before projection {derived:.4f} ms = {100 * derived / target:.1f}%); held-out acc {res.accuracy:.1f}% ; {wall:.0f} s; {res.out_dir}")  # fmt: skip
    print("all targets met within 10%" if ok_all else "some target missed")


if __name__ == "__main__":
    main()
