"""How much does fitting a GCN to noisy accuracy estimates help rank architectures?

After "Fitting the search space of weight-sharing NAS with GCNs" (Chen et al.,
2020). Two parts, each printing Kendall tau / Spearman rho:

* ``nasbench201`` (real published accuracies, ground truth for all 15,625
  cells): the estimates are K cells' 12-epoch ``cifar10-val`` accuracy plus an
  added per-cell error of sigma points (sigma = 0 is the table itself); truth is
  ``cifar10-test``. Printed: raw estimates vs truth and out-of-fold GCN vs truth
  on the K cells, and the GCN fitted on all K as a lookup table over all 15,625.
* ``supernet`` (real weight-sharing estimates): a ``proxyless_mobile_w05``
  supernet trained with uniform single-path sampling on the embedded digits
  (32x32, or ``--supernet-data``); N random sub-networks are scored with shared weights (BN
  re-estimated); M of them are then trained standalone from scratch, whose
  held-out accuracy is the truth. Printed: supernet vs truth and GCN vs truth on
  those M, and GCN vs raw supernet estimates (out of fold) on all N. With
  ``--truth-runs R`` each of the M is trained R times (other seeds), the truth is
  the mean, and the runs' agreement with each other is printed: the ceiling for
  any estimate. On digits it is about zero (every network scores 95-98%, and
  a second training reorders them), so that part only shows the plumbing there;
  give ``--supernet-data cifar10:PATH`` for a dataset that tells networks apart.

    python benchmarks/accuracy_gcn.py                     # both parts (~10 min on 2 cores)
    python benchmarks/accuracy_gcn.py --part nasbench201 --k 500 --sigmas 0,4
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from latkit.search.supernet.accuracy_gcn import RankReport, distinct_samples, rank_report  # noqa: E402
from latkit.search.framework.tabular import TabularProblem  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


def _fmt(corr: dict[str, float] | None) -> str:
    return "      -        " if corr is None else f"{corr['kendall']:6.3f} {corr['spearman']:6.3f}  "


def _header(first: str) -> None:
    print(f"{first:>10s}  {'raw vs truth':>14s} {'GCN vs truth':>14s} {'GCN vs raw':>14s} {'table vs truth':>15s}")
    print(f"{'':>10s}  " + "   tau    rho  " * 4)


def _row(label: str, r: RankReport) -> None:
    print(f"{label:>10s}  {_fmt(r.estimate_vs_truth)}{_fmt(r.gcn_vs_truth)}{_fmt(r.gcn_vs_estimate)}"
          f"{_fmt(r.space_vs_truth)}", flush=True)


def part_nasbench201(args: argparse.Namespace) -> None:
    data = Path(args.data)
    lat = f"{data / 'nasbench201_latency_ms.csv'}:pixel3"
    val = TabularProblem.load("nasbench201", f"{data / 'nasbench201_accuracy.csv'}:cifar10-val", lat)
    test = TabularProblem.load("nasbench201", f"{data / 'nasbench201_accuracy.csv'}:cifar10-test", lat)
    cands = test.candidates()
    truth = {a: test.accuracy.accuracy(a) for a in cands}
    print(f"\nNAS-Bench-201: fit on K={args.k} cells' cifar10-val (+ N(0, sigma) error), "
          f"truth cifar10-test; table = all {len(cands)} cells")
    _header("sigma")
    for sigma in (float(v) for v in args.sigmas.split(",")):
        rng = np.random.default_rng(args.seed)
        archs = [cands[i] for i in rng.choice(len(cands), args.k, replace=False)]
        est = np.array([val.accuracy.accuracy(a) for a in archs])
        est = np.maximum(0.0, est + rng.normal(0.0, sigma, len(est))) if sigma > 0 else est
        t0 = time.perf_counter()
        _, report = rank_report("nasbench201", archs, est, truth, folds=args.folds, random_state=args.seed)
        _row(f"{sigma:g}", report)
        print(f"{'':>10s}  ({time.perf_counter() - t0:.0f} s)", flush=True)


def part_supernet(args: argparse.Namespace) -> None:
    import torch

    from latkit.profiler.spaces import get_space
    from latkit.search.supernet.data import load_data
    from latkit.search.supernet.supernet import Supernet
    from latkit.search.supernet.train import SupernetAccuracy, train_step, weight_optimizer

    torch.set_num_threads(1)
    space = get_space("proxyless_mobile_w05")
    data = load_data(args.supernet_data, 32, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    net = Supernet(space, data.n_classes, resolution=32, seed=args.seed)

    def train(model, epochs: int, r: np.random.Generator, paths: bool, lr: float) -> None:
        """SGD with a cosine schedule; ``paths``: a uniformly sampled path per step."""
        opt = weight_optimizer(model.parameters(), lr=lr)
        per_epoch = -(-len(data.y_train) // 64)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * per_epoch)
        model.train()
        for _ in range(epochs):
            for x, y in data.batches("train", 64, r):
                arch = space.sample(r) if paths else None
                train_step((lambda v: model(v, arch)) if paths else model, opt, x, y)
                sched.step()

    train(net, args.supernet_epochs, rng, paths=True, lr=args.lr)
    train_s = time.perf_counter() - t0
    archs = distinct_samples(space, args.n, rng)
    t0 = time.perf_counter()
    evaluator = SupernetAccuracy(net, data, seed=args.seed)
    est = np.array([evaluator.accuracy(a) for a in archs])
    eval_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs = _standalone_runs(args, space, data, archs, est, train)
    truth = {arch: float(v) for arch, v in zip(archs, runs.mean(0))}
    alone_s = time.perf_counter() - t0
    print(f"\nsupernet ({space.name}, {args.supernet_data} 32x32): {args.supernet_epochs} epochs {train_s:.0f} s; "
          f"{args.n} sub-networks scored {eval_s:.0f} s (mean {est.mean():.1f}%, std {est.std():.1f}); "
          f"{args.m} trained standalone {args.standalone_epochs} epochs x {args.truth_runs} {alone_s:.0f} s "
          f"(mean {np.mean(list(truth.values())):.1f}%, std {np.std(list(truth.values())):.1f})")
    if args.truth_runs > 1:  # how well the truth ranks itself: the ceiling for any estimate
        _print_self_rank(runs)
    _, report = rank_report(space.name, archs, est, truth, folds=args.folds, random_state=args.seed)
    _header("")
    _row("supernet", report)


def _standalone_runs(args: argparse.Namespace, space, data, archs: list, est: np.ndarray, train) -> np.ndarray:
    """Held-out accuracy of the first ``args.m`` sub-networks trained from scratch, per run."""
    from latkit.search.supernet.supernet import Supernet
    from latkit.search.supernet.train import accuracy_pct

    runs = np.zeros((args.truth_runs, args.m))
    for run in range(args.truth_runs):  # standalone from scratch: fresh weights, a new seed per run
        for i, arch in enumerate(archs[: args.m]):
            seed = 10_000 + 1000 * run + i
            model = Supernet(space, data.n_classes, resolution=32, seed=seed).extract(arch)
            train(model, args.standalone_epochs, np.random.default_rng(seed), paths=False, lr=args.standalone_lr)
            model.eval()
            runs[run, i] = accuracy_pct(model, data.x_valid, data.y_valid)
            if args.show:
                native = space.arch_to_native(arch)
                print(f"  {est[i]:5.1f}% supernet  {runs[run, i]:5.1f}% standalone  "
                      f"{sum(o == 'zero' for o in native)} skipped  {' '.join(o.split('_')[0] for o in native)}",
                      flush=True)  # fmt: skip
    return runs


def _print_self_rank(runs: np.ndarray) -> None:
    """How well one standalone run ranks the networks against another seed's run."""
    from scipy.stats import kendalltau, spearmanr

    pairs = [(a, b) for a in range(len(runs)) for b in range(a + 1, len(runs))]
    tau = np.mean([kendalltau(runs[a], runs[b])[0] for a, b in pairs])
    rho = np.mean([spearmanr(runs[a], runs[b])[0] for a, b in pairs])
    print(f"standalone run vs run (another seed): tau {tau:.3f}, rho {rho:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["nasbench201", "supernet", "both"], default="both")
    p.add_argument("--data", default=str(DATA), help="folder with the NAS-Bench-201 CSVs")
    p.add_argument("--k", type=int, default=1000, help="NAS-Bench-201 cells the GCN is fitted on")
    p.add_argument("--sigmas", default="0,2,4,6", help="added estimate error (points)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n", type=int, default=150, help="sub-networks scored by the supernet")
    p.add_argument("--m", type=int, default=12, help="of those, trained standalone")
    p.add_argument("--supernet-epochs", type=int, default=20)
    p.add_argument("--standalone-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.05, help="supernet learning rate (cosine schedule)")
    p.add_argument("--standalone-lr", type=float, default=0.05, help="standalone learning rate (cosine schedule)")
    p.add_argument("--supernet-data", default="digits", help="digits | cifar10:PATH | folder:PATH")
    p.add_argument("--truth-runs", type=int, default=1,
                   help="standalone trainings per network (seeds differ); the truth is their mean, and with 2+ "
                        "their agreement is printed")
    p.add_argument("--show", action="store_true", help="print each standalone network's two accuracies")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.part in ("nasbench201", "both"):
        part_nasbench201(args)
    if args.part in ("supernet", "both"):
        part_supernet(args)


if __name__ == "__main__":
    main()
