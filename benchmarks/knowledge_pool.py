"""What does FNAS's knowledge pool (block-level weight inheritance) buy a search that trains every architecture?

Each queried architecture of ``proxyless_mobile_w05`` is trained on its own for
``--steps`` SGD steps on the embedded digits (32x32) and scored on the held-out
split (:class:`latkit.search.supernet.train.TrainedAccuracy`). With the pool, it starts
from the weights of the most similar architecture trained before (every layer
built alike is inherited); without, from scratch. Regularised evolution (small
population, so most queries are one-choice mutations) runs both ways for several
seeds under the same latency target, from the LUT of ``benchmarks/search_target.py``.

Printed per mode: mean held-out accuracy of the queried architectures (all, and
the second half), layers inherited per query, the best accuracy found, and the
best architecture's accuracy when trained from scratch for ``--truth-steps``
(the same for both modes: a check that inheritance did not just flatter the
scores of worse architectures). Wall time per query is the same by
construction: both modes run exactly ``--steps`` steps.

    python benchmarks/knowledge_pool.py [--seeds 3] [--queries 24] [--steps 20] [--jobs 2]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_target import SPACE, lut_model  # noqa: E402


def one_run(args: argparse.Namespace, seed: int, inherit: bool) -> dict:
    import torch

    from latkit.profiler.spaces import get_space
    from latkit.search.framework.base import run_algorithm
    from latkit.search.supernet.data import load_digits
    from latkit.search.supernet.train import TrainedAccuracy

    torch.set_num_threads(1)
    space = get_space(SPACE)
    model, _ = lut_model(args.lut)
    lo, hi = model.min_latency()[0], model.max_latency()[0]
    data = load_digits(32, seed=0)
    evaluator = TrainedAccuracy(space, data, resolution=32, steps=args.steps, inherit=inherit, seed=seed)
    t0 = time.perf_counter()
    result = run_algorithm("evolution", space, evaluator, model, lo + 0.6 * (hi - lo), args.queries,
                        np.random.default_rng(seed), seed=seed, population_size=args.population,
                        tournament_size=3)  # fmt: skip
    wall = time.perf_counter() - t0
    truth = TrainedAccuracy(space, data, resolution=32, steps=args.truth_steps, inherit=False, seed=seed + 100)
    best = space.arch_from_native(result.best_arch)
    accs = [h["accuracy"] for h in evaluator.history]
    return {"seed": seed, "inherit": inherit, "mean": float(np.mean(accs)),
            "late": float(np.mean(accs[len(accs) // 2:])),
            "layers": float(np.mean([h["inherited_layers"] for h in evaluator.history])),
            "best": result.best_accuracy, "truth": truth.accuracy(best), "wall": wall}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", type=Path, default=Path(tempfile.gettempdir()) / "latkit_bench_pm_w05_r64.db")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20, help="training steps per queried architecture")
    ap.add_argument("--population", type=int, default=6)
    ap.add_argument("--truth-steps", type=int, default=150, help="from-scratch steps of the best architecture")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    lut_model(args.lut)  # profile once, before the workers start
    runs = [(seed, inherit) for seed in range(args.seeds) for inherit in (True, False)]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one_run, [args] * len(runs), *zip(*runs)))
    print(f"{SPACE}, digits 32x32, evolution (population {args.population}), {args.queries} queries x "
          f"{args.steps} steps each, {args.seeds} seeds; held-out accuracy %, mean over seeds")  # fmt: skip
    print(f"{'mode':<10}{'queried':>9}{'2nd half':>10}{'layers in':>11}{'best found':>12}"
          f"{'best, scratch ' + str(args.truth_steps):>20}{'wall s':>8}")  # fmt: skip
    for inherit in (True, False):
        sel = [r for r in rows if r["inherit"] is inherit]
        m = {k: float(np.mean([r[k] for r in sel])) for k in ("mean", "late", "layers", "best", "truth", "wall")}
        print(f"{'pool' if inherit else 'scratch':<10}{m['mean']:>9.1f}{m['late']:>10.1f}{m['layers']:>11.1f}"
              f"{m['best']:>12.1f}{m['truth']:>20.1f}{m['wall']:>8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
