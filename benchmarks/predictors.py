"""Predictor figures: few-shot transfer, full-data accuracy, op-level accuracy, throughput.

Prints tables; not a test. Defaults run in a few minutes on 2 cores::

    python benchmarks/predictors.py                      # everything, 2 seeds
    python benchmarks/predictors.py --seeds 1 --only fewshot --spaces fbnet
    python benchmarks/predictors.py --only full --full-model gcn --devices pixel3,gold_6240

Few-shot: leave-one-device-out over every column (or ``--devices``): the target
column is hidden except at the K archs the method chooses to measure. "loose"
counts the target GPU's other batch sizes as known devices, "strict" removes every
column of the target's hardware. The baseline is least squares on the 3 known
devices best correlated with the target on K random archs.

Op-level: held-out ±10% accuracy of the op regressors on the public OFA Note10
tables (random 80/20 splits, and one resolution held out), and on a LUT measured
here when ``--cpu-lut`` names one (built by ``latkit profile``). LUT-sum: the
vectorised estimator's throughput (archs/s) on the ProxylessNAS mobile table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from latkit.predictors.base import get_predictor
from latkit.predictors.data import encode_archs, read_latency_csv
from latkit.predictors.evaluate import few_shot
from latkit.predictors.metrics import score

DATA = Path(__file__).resolve().parents[1] / "data"
SPACES = {"fbnet": "fbnet_latency_ms.csv", "nasbench201": "nasbench201_latency_ms.csv"}


def _devices(table, wanted: str | None) -> list[str]:
    if not wanted:
        return list(table.devices)
    return [d for d in wanted.split(",") if d in table.devices]


def bench_fewshot(space: str, ks: list[int], seeds: int, devices: str | None, verbose: bool) -> None:
    table = read_latency_csv(DATA / SPACES[space])
    cols = _devices(table, devices)
    for variant in ("loose", "strict"):
        for k in ks:
            t0 = time.perf_counter()
            rows = []
            for target in cols:
                res, _, _ = few_shot(table, target, k, strict=variant == "strict", seeds=seeds)
                s = res.summary()
                rows.append((target, s["method"], s["baseline"]))
                if verbose:
                    m, b = s["method"], s["baseline"]
                    print(
                        f"  {target:15s} ours rho {m['spearman']:.3f} acc10 {m['acc10']:.3f} "
                        f"| base rho {b['spearman']:.3f} acc10 {b['acc10']:.3f}"
                    )
            mean = lambda key, i: np.mean([r[i][key] for r in rows])  # noqa: E731
            print(
                f"few-shot {space:12s} K={k:<3d} {variant:6s} ({len(rows)} targets x {seeds} seeds): "
                f"ours rho {mean('spearman', 1):.4f} acc10 {mean('acc10', 1):.4f} "
                f"acc5 {mean('acc5', 1):.4f} tau {mean('kendall', 1):.4f} | "
                f"baseline rho {mean('spearman', 2):.4f} acc10 {mean('acc10', 2):.4f} "
                f"[{time.perf_counter() - t0:.0f}s]",
                flush=True,
            )


def bench_full(space: str, model: str, n_train: int, devices: str | None) -> None:
    table = read_latency_csv(DATA / SPACES[space])
    X = encode_archs(space, table.archs)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(table))
    train, test = perm[:n_train], perm[n_train:]
    params = {"space": space} if model == "gcn" else {}
    accs, rhos = [], []
    t0 = time.perf_counter()
    for target in _devices(table, devices):
        y = table.column(target)
        p = get_predictor(model, **params).fit(X[train], y[train])
        s = score(y[test], p.predict(X[test]))
        accs.append(s.acc10)
        rhos.append(s.spearman)
        print(f"  {space:12s} {model:8s} {target:15s} acc10 {s.acc10:.3f} acc5 {s.acc5:.3f} rho {s.spearman:.3f}", flush=True)
    print(
        f"full-data {space:12s} {model} ({n_train} train rows): mean acc10 {np.mean(accs):.4f} "
        f"rho {np.mean(rhos):.4f} [{time.perf_counter() - t0:.0f}s]",
        flush=True,
    )


def bench_throughput(space: str, n: int) -> None:
    table = read_latency_csv(DATA / SPACES[space])
    X = encode_archs(space, table.archs)
    y = table.column(table.devices[0])
    big = np.tile(X, (n // len(X) + 1, 1))[:n]
    for threads in (1, 2):
        p = get_predictor("gcn", space=space, epochs=2, threads=threads).fit(X[:500], y[:500])
        p.predict(big[:1000])  # warm up
        t0 = time.perf_counter()
        p.predict(big)
        dt = time.perf_counter() - t0
        print(
            f"GCN throughput {space:12s}: {n / dt:,.0f} archs/s ({n} archs, batched, "
            f"{threads} torch thread(s), one-hot-to-graph included)",
            flush=True,
        )


def bench_oplevel(cpu_lut: Path | None) -> None:
    import tempfile

    from latkit.lut.io import import_public_yaml
    from latkit.lut.store import LUT
    from latkit.predictors.oplevel import XGBOpPredictor, heldout_accuracy, measured_ops, oplevel_heldout_report

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ofa.db"
        specs, lat, res = [], [], []
        with LUT.open(path, create=True) as lut:
            for r in (160, 176, 192, 208, 224):
                import_public_yaml(lut, DATA / "luts" / f"ofa_note10_{r}_lookup_table.yaml", device_uri=f"note10:r{r}")
                s_, v = measured_ops(lut, f"note10:r{r}")
                specs += s_
                lat.append(v)
                res += [r] * len(s_)
        lat_a, res_a = np.concatenate(lat), np.asarray(res)
        for r in (176, 224):
            fig = heldout_accuracy(specs, lat_a, XGBOpPredictor(), res_a == r)
            print(f"op-level xgb, OFA Note10, resolution {r} held out: ±10% acc {fig['within_10pct']:.3f}", flush=True)
    if cpu_lut is not None:
        with LUT.open(cpu_lut) as lut:
            rows = oplevel_heldout_report(lut)
        for row in rows:
            print(f"op-level {row['predictor']}, {cpu_lut.name}, split {row['split']}: "
                  f"±10% acc {row['within_10pct']:.3f}", flush=True)


def bench_lutsum() -> None:
    import tempfile

    from latkit.lut.io import import_public_yaml
    from latkit.lut.store import LUT
    from latkit.predictors.lutsum import LutSumPredictor, lutsum_throughput

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "proxyless.db"
        with LUT.open(path, create=True) as lut:
            import_public_yaml(lut, DATA / "luts" / "proxylessnas_mobile_trim.yaml")
        pred = LutSumPredictor(lut_path=path, space="proxyless_mobile", resolution=224).fit()
        fig = lutsum_throughput(pred)
    print(f"LUT-sum throughput proxyless_mobile: {fig['archs_per_s']:,.0f} archs/s "
          f"({int(fig['n_archs'])} archs, vectorised)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", default="fbnet,nasbench201")
    ap.add_argument("--only", choices=("fewshot", "full", "throughput", "oplevel", "lutsum"), default=None)
    ap.add_argument("--cpu-lut", type=Path, default=None, help="a LUT measured here, for the op-level figure")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--k", default="10,20", help="comma-separated K values")
    ap.add_argument("--devices", default=None, help="comma-separated target columns (default all)")
    ap.add_argument("--full-model", default="xgboost", help="predictor for the full-data figure")
    ap.add_argument("--train-rows", type=int, default=1000)
    ap.add_argument("--throughput-archs", type=int, default=100_000)
    ap.add_argument("--verbose", action="store_true", help="per-device few-shot rows")
    args = ap.parse_args()
    spaces = args.spaces.split(",")
    ks = [int(k) for k in args.k.split(",")]
    for space in spaces:
        if args.only in (None, "fewshot"):
            bench_fewshot(space, ks, args.seeds, args.devices, args.verbose)
        if args.only in (None, "full"):
            bench_full(space, args.full_model, args.train_rows, args.devices)
        if args.only in (None, "throughput"):
            bench_throughput(space, args.throughput_archs)
    if args.only in (None, "oplevel"):
        bench_oplevel(args.cpu_lut)
    if args.only in (None, "lutsum"):
        bench_lutsum()


if __name__ == "__main__":
    main()
