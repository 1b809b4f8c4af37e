"""Transfer of kernel predictors to a new device: accuracy against the number of new samples.

A source device's kernel predictors (built by ``latkit kernels build``'s code,
or loaded with ``--source-predictors``) are adapted to a target device from
its first N measured kernel configurations
(:func:`latkit.predictors.kernel_transfer.transfer_predictors`) and compared,
on held-out kernel configurations measured on the target, with predictors
fitted from those N samples alone and with the source's unadapted ones.

On one host the "new device" is another configuration of its CPU: by default
ONNX Runtime with 1 thread as the source and ONNX Runtime with 2 threads as
the target (``--target-threads``); ``--target cpu:litert`` makes LiteRT the
target (its kernels measured as TFLite files). Each device's measurements
are kept in its own LUT under ``--workdir`` (rerunning resumes and reuses
them), and the held-out configurations are drawn with another seed than the
samples, never from any model zoo.

    python benchmarks/kernel_transfer.py                       # ORT 1 thread -> ORT 2 threads
    python benchmarks/kernel_transfer.py --target cpu:litert   # ORT -> LiteRT
    python benchmarks/kernel_transfer.py --quick --build-minutes 1 --test-per-type 3 --samples 0,5,10

Printed per N: the held-out kernels' MAPE and share within ±10% for the
transferred, the from-scratch and (N = 0) the unadapted predictors, and the
measuring time N samples cost on the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from latkit.devices import open_device
from latkit.lut.kernel_store import KernelStore
from latkit.lut.store import LUT
from latkit.predictors.kernel_build import BuildSettings, build_kernel_predictors, device_rules
from latkit.predictors.kernel_transfer import transfer_configs, transfer_predictors
from latkit.predictors.kernels import KernelPredictors, fit_predictors
from latkit.profiler.kernel_models import OVERHEAD_CONFIG, measure_kernels
from latkit.profiler.kernel_sampling import sample_configs
from latkit.profiler.kernels import KernelConfig, KernelType
from latkit.profiler.protocol import Preset, ProtocolConfig


def source_predictors(args: argparse.Namespace, config: ProtocolConfig) -> KernelPredictors:
    """``--source-predictors``, or a build on the source device into the work folder (reused when there)."""
    folder = args.source_predictors or args.workdir / "source-predictors"
    if (folder / "predictors.json").is_file():
        return KernelPredictors.load(folder)
    device = open_device(args.source, threads=args.source_threads)
    try:
        settings = BuildSettings(budget_s=args.build_minutes * 60, per_type=args.per_type, rounds=args.rounds)
        with LUT.open(args.workdir / "source.db", create=True) as lut:
            preds = build_kernel_predictors(device, lut, settings, protocol=config)
    finally:
        device.close()
    preds.save(folder)
    return preds


def measure_target(device: Any, lut_path: Path, configs: list[KernelConfig],
                   config: ProtocolConfig) -> tuple[dict[str, float], Any, float | None]:
    """Every configuration's latency on the target (measured once, kept in its LUT), the target's fusion
    rules, and the seconds one configuration took to measure (None when all were in the LUT already)."""
    started = time.monotonic()
    info = device.info().to_dict()
    with LUT.open(lut_path, create=True) as lut:
        store = KernelStore(lut)
        done = store.done_keys(device.uri)
        todo = [c for c in dict.fromkeys(configs) if c.key not in done]

        def keep(c: KernelConfig, m: Any) -> None:
            store.add(c, m, info)
            print(f"  measured {c.key}: {m.latency_ms:.4f} ms", file=sys.stderr)

        for key, why in measure_kernels(device, todo, keep, config).items():
            print(f"  failed {key}: {why}", file=sys.stderr)
        measured = {c.key: ms for c, ms in store.measurements(device.uri)}
        rules = device_rules(store, device)
    return measured, rules, (time.monotonic() - started) / len(todo) if todo else None


def scores(preds: KernelPredictors | None, test: list[KernelConfig], measured: dict[str, float]) -> dict[str, Any]:
    """MAPE and shares within ±10% / ±25% of ``preds`` on the held-out configurations."""
    if preds is None:
        return {"mape_pct": None, "within_10_pct": None, "within_25_pct": None}
    known = [c for c in test if c.key in measured]
    want = np.asarray([measured[c.key] for c in known])
    got = preds.predict_configs(known) + preds.overhead_ms
    err = np.abs(got - want) / want
    return {"mape_pct": float(100 * err.mean()), "within_10_pct": float(100 * np.mean(err <= 0.10)),
            "within_25_pct": float(100 * np.mean(err <= 0.25))}  # fmt: skip


def curve(source: KernelPredictors, pool: list[KernelConfig], test: list[KernelConfig], measured: dict[str, float],
          info: dict[str, Any], rules: Any, counts: list[int]) -> list[dict[str, Any]]:
    """One row per sample count: transferred, from-scratch and unadapted accuracy on the held-out kernels."""
    overhead = measured.get(OVERHEAD_CONFIG.key, source.overhead_ms)
    rows = []
    for n in counts:
        sample = [(c, measured[c.key]) for c in pool[:n] if c.key in measured]
        adapted = transfer_predictors(source, sample, info, overhead_ms=overhead, rules=rules) if sample else None
        # from scratch only once the samples cover every held-out type (a missing type has no predictor)
        covered = {c.type for c, _ in sample} >= {c.type for c in test}
        scratch = fit_predictors(sample, info, rules, overhead_ms=overhead) if covered else None
        row = {"samples": len(sample), "transferred": scores(adapted, test, measured),
               "scratch": scores(scratch, test, measured)}  # fmt: skip
        if n == 0:
            row["unadapted"] = scores(source, test, measured)
        rows.append(row)
    return rows


def _pct(v: float | None) -> str:
    return "    -" if v is None else f"{v:5.1f}"


def report(rows: list[dict[str, Any]], per_sample_s: float | None, args: argparse.Namespace, n_test: int) -> None:
    print(f"transfer {args.source} ({args.source_threads} thread(s)) -> {args.target} ({args.target_threads} "
          f"thread(s)); {n_test} held-out kernel configurations; MAPE % / within ±10 %")  # fmt: skip
    print("samples  transferred      scratch     measuring on target")
    for r in rows:
        t, s = r["transferred"], r["scratch"]
        if "unadapted" in r:
            u = r["unadapted"]
            print(f"{0:7d}  {_pct(u['mape_pct'])} / {_pct(u['within_10_pct'])}   (unadapted source)")
            continue
        cost = "    -" if per_sample_s is None else f"{r['samples'] * per_sample_s / 60:5.1f} min"
        print(f"{r['samples']:7d}  {_pct(t['mape_pct'])} / {_pct(t['within_10_pct'])}   {_pct(s['mape_pct'])} / "
              f"{_pct(s['within_10_pct'])}   {cost}")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="cpu:onnxruntime")
    ap.add_argument("--source-threads", type=int, default=1)
    ap.add_argument("--target", default="cpu:onnxruntime")
    ap.add_argument("--target-threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("kernel_transfer_work"))
    ap.add_argument("--source-predictors", type=Path, default=None, help="reuse this predictor folder")
    ap.add_argument("--build-minutes", type=float, default=6.0, help="the source build's measuring budget")
    ap.add_argument("--per-type", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--test-per-type", type=int, default=15, help="held-out configurations per kernel type")
    ap.add_argument("--samples", default="0,10,20,40,80,160", help="sample counts to adapt with")
    ap.add_argument("--quick", action="store_true", help="short measurement protocol (smoke runs)")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = ProtocolConfig.preset(Preset.QUICK if args.quick else Preset.DEFAULT)
    source = source_predictors(args, config)
    types = sorted(source.models, key=list(KernelType).index)
    counts = sorted({int(v) for v in args.samples.split(",")})
    pool = transfer_configs(types, max(counts), seed=1)
    test = [c for t in types for c in sample_configs(t, args.test_per_type, seed=99)]
    device = open_device(args.target, threads=args.target_threads)
    try:
        lut = args.workdir / f"target-{args.target.replace(':', '_')}-{args.target_threads}t.db"
        measured, rules, per_sample_s = measure_target(device, lut, [OVERHEAD_CONFIG, *pool, *test], config)
        rows = curve(source, pool, test, measured, device.info().to_dict(), rules, counts)
    finally:
        device.close()
    if args.json:
        print(json.dumps({"source": source.uri, "target": args.target, "seconds_per_sample": per_sample_s,
                          "rows": rows}, indent=2))
        return 0
    report(rows, per_sample_s, args, len(test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
