"""How close each search gets to the best feasible NAS-Bench-201 cell, per query budget.

For every device and target (a percentile of the device's latencies) and every
seed, each method searches the real tables once with the largest budget; its gap
after N queries is ``oracle - best feasible accuracy found in the first N``
(percentage points; the oracle is the best feasible cell in the table). Prints the
median gap per method and budget, and the median number of queries each method
needs to come within ``--gap`` points (with the REINFORCE / PPO ratio, FNAS's
"samples saved" figure).

    python benchmarks/search_tabular.py --jobs 2             # full: 4 devices x 2 targets x 10 seeds
    python benchmarks/search_tabular.py --devices pixel3 --seeds 5 --queries 50,100,200
"""

from __future__ import annotations

import os

# the searches solve many small systems; BLAS threads fighting over shared cores
# make them far slower (set before numpy is imported)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from latkit.search.framework.tabular import TabularProblem, run_tabular  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
OFF = {"use_critic": False, "use_replay": False, "use_pool": False}
METHODS: dict[str, tuple[str, dict]] = {
    "random": ("random", {}),
    "evolution": ("evolution", {}),
    "reinforce": ("reinforce", {}),
    "parsec": ("parsec", {}),
    "parsec-transfer": ("parsec", {"transfer": True}),
    "ppo": ("ppo", {}),
    "ppo-no-screen": ("ppo", {"screen": 1}),
    "ppo-no-critic": ("ppo", {"use_critic": False}),
    "ppo-no-replay": ("ppo", {"use_replay": False}),
    "ppo-no-pool": ("ppo", {"use_pool": False}),
    "ppo-plain": ("ppo", OFF),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default="pixel3,gold_6240,1080ti_1,samsung_a50")
    p.add_argument("--percentiles", default="25,50", help="targets, as latency percentiles")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--queries", default="50,100,200,500", help="budgets to report")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--gap", type=float, default=0.3, help="gap for the queries-to-reach figure")
    p.add_argument("--data", default=str(DATA), help="folder with the NAS-Bench-201 CSVs")
    p.add_argument("--dataset", default="cifar10-val")
    p.add_argument("--proxy", default="cifar100-val", help="proxy column for parsec-transfer")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one per core)")
    return p.parse_args()


def proxy_policy(data: Path, device: str, target: float, proxy: str, seed: int, budget: int) -> list:
    """PARSEC's distribution learnt on the proxy dataset (same device and target)."""
    prob = TabularProblem.load(
        "nasbench201",
        f"{data / 'nasbench201_accuracy.csv'}:{proxy}",
        f"{data / 'nasbench201_latency_ms.csv'}:{device}",
    )
    res = run_tabular("nasbench201", prob, None, target, "parsec", budget, seed=10_000 + seed)
    return res.extra["policy"]


def gaps_of(result, oracle: float, budgets: list[int]) -> list[float]:
    out = []
    for n in budgets:
        best = result.best_after(n)
        out.append(math.inf if best is None else oracle - best)
    return out


def queries_to_gap(result, oracle: float, gap: float) -> float:
    for i, q in enumerate(result.trajectory, start=1):
        if q.best_accuracy is not None and oracle - q.best_accuracy <= gap + 1e-9:
            return float(i)
    return math.inf


_PROBLEMS: dict[tuple[str, str, str], TabularProblem] = {}


def load_problem(data: Path, dataset: str, device: str) -> TabularProblem:
    """The tables of one device (read once per process)."""
    key = (str(data), dataset, device)
    if key not in _PROBLEMS:
        _PROBLEMS[key] = TabularProblem.load(
            "nasbench201",
            f"{data / 'nasbench201_accuracy.csv'}:{dataset}",
            f"{data / 'nasbench201_latency_ms.csv'}:{device}",
        )
    return _PROBLEMS[key]


def run_cell(job: tuple) -> dict[str, tuple[list[float], float, float]]:
    """Every method on one (device, target, seed): ``{method: (gaps, queries to gap, seconds)}``."""
    data, dataset, proxy, device, target, oracle, seed, methods, budgets, gap = job
    problem = load_problem(data, dataset, device)
    out = {}
    for m in methods:
        algorithm, opts = METHODS[m]
        opts = dict(opts)
        if opts.pop("transfer", False):
            opts["init_probs"] = proxy_policy(data, device, target, proxy, seed, max(budgets))
        start = time.perf_counter()
        res = run_tabular("nasbench201", problem, None, target, algorithm, max(budgets), seed=seed, **opts)
        out[m] = (gaps_of(res, oracle, budgets), queries_to_gap(res, oracle, gap), time.perf_counter() - start)
    return out


def main() -> None:
    args = parse_args()
    budgets = [int(v) for v in args.queries.split(",")]
    data = Path(args.data)
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    jobs = []
    for device in args.devices.split(","):
        problem = load_problem(data, args.dataset, device)
        lats = np.array(list(problem.latency.column.values.values()))
        for pct in (float(v) for v in args.percentiles.split(",")):
            target = float(np.percentile(lats, pct))
            oracle = problem.oracle(target)[0]
            print(f"{device:12s} p{pct:.0f} target {target:8.3f} ms  oracle {oracle:.3f}", flush=True)
            jobs += [(data, args.dataset, args.proxy, device, target, oracle, seed, methods, budgets, args.gap)
                     for seed in range(args.seeds)]  # fmt: skip
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            cells = list(pool.map(run_cell, jobs))
    else:
        cells = [run_cell(job) for job in jobs]
    runs = len(cells)
    print(f"\nmedian gap to the oracle (accuracy points, {args.dataset}) over {runs} runs")
    print(f"{'method':18s}" + "".join(f"{'@' + str(n):>9s}" for n in budgets)
          + f"{'q<=' + str(args.gap):>10s}{'s/run':>8s}")
    reach = {m: [c[m][1] for c in cells] for m in methods}
    for m in methods:
        med = np.median(np.array([c[m][0] for c in cells]), axis=0)
        secs = sum(c[m][2] for c in cells)
        print(f"{m:18s}" + "".join(f"{v:9.3f}" for v in med)
              + f"{np.median(reach[m]):10.0f}{secs / runs:8.2f}")
    if "ppo" in methods and "reinforce" in methods:
        r, p = np.median(reach["reinforce"]), np.median(reach["ppo"])
        ratio = r / p if math.isfinite(r) and math.isfinite(p) and p > 0 else float("nan")
        print(f"\nqueries to come within {args.gap} points: REINFORCE {r:.0f}, PPO {p:.0f} "
              f"(ratio {ratio:.2f}; inf = not reached within {max(budgets)})")


if __name__ == "__main__":
    main()
