"""LUT estimate vs end-to-end measurement, raw and after a per-device calibration.

For N random networks of a space, measure each end to end on the device and
compare with the sum of its operators' LUT latencies. Operators measured in
isolation are timed with their own call overhead, input/output copies and no
cross-layer fusion, so on ONNX Runtime the raw sum overestimates; the
calibration (``e2e ~ a * lut_sum + b * n_ops + c``, fitted on a few networks)
removes that. Accuracy is reported on the networks *not* used for the fit.

    python benchmarks/lut_vs_e2e.py --space proxyless_mobile --resolution 224 --networks 30

Prints ±5% / ±10% accuracy and MAPE, raw and calibrated (nn-Meter reports 99.0%
±10% accuracy on a Pixel 4 CPU; our goal is >= 99% after calibration).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from latkit.devices import open_device
from latkit.lut.calibration import fit_calibration
from latkit.lut.estimate import estimate
from latkit.lut.store import LUT
from latkit.profiler.export import BuiltModel
from latkit.profiler.protocol import ProtocolConfig, measure_one
from latkit.profiler.runner import profile_ops
from latkit.profiler.spaces import get_space


def accuracy(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """±5% / ±10% accuracy and MAPE of predictions."""
    rel = np.abs(pred - true) / true
    return {
        "acc5_pct": float(100 * np.mean(rel <= 0.05)),
        "acc10_pct": float(100 * np.mean(rel <= 0.10)),
        "mape_pct": float(100 * np.mean(rel)),
        "mean_ratio": float(np.mean(pred / true)),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="proxyless_mobile")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--device", default="cpu:onnxruntime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--networks", type=int, default=30)
    ap.add_argument("--calibration-networks", type=int, default=6)
    ap.add_argument("--lut", type=Path, default=None, help="reuse/extend this LUT (default: a new temp file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = get_space(args.space)
    device = open_device(args.device, threads=args.threads)
    lut_path = args.lut or Path(f"lut_vs_e2e_{args.space}_{args.resolution}.db")
    config = ProtocolConfig()
    t0 = time.time()
    with LUT.open(lut_path, create=True) as lut:
        report = profile_ops(device, space.operators(args.resolution), lut, config)
        if report.failed:
            print(f"operators failed: {report.failed}", file=sys.stderr)
            return 1
        t_lut = time.time() - t0
        rng = np.random.default_rng(args.seed)
        nets = [space.network(space.sample(rng), args.resolution) for _ in range(args.networks)]
        sums, counts, e2e = [], [], []
        for i, net in enumerate(nets):
            est = estimate(lut, net, device=device.uri, calibration=False)
            m = measure_one(device, BuiltModel(net), config)
            sums.append(est.lut_sum_ms)
            counts.append(est.n_measurable)
            e2e.append(m.latency_ms)
            print(f"  net {i:2d}: LUT sum {est.lut_sum_ms:8.3f} ms  end-to-end {m.latency_ms:8.3f} ms",
                  file=sys.stderr)
    sums_a, counts_a, e2e_a = np.array(sums), np.array(counts), np.array(e2e)
    k = args.calibration_networks
    cal = fit_calibration(sums_a[:k], counts_a[:k], e2e_a[:k])
    calibrated = np.array([cal.apply(s, n) for s, n in zip(sums_a, counts_a)])
    held = slice(k, None)
    result = {
        "space": args.space,
        "resolution": args.resolution,
        "device": device.info().to_dict(),
        "networks": args.networks,
        "calibration_networks": k,
        "lut_build_s": round(t_lut, 1),
        "raw": accuracy(sums_a, e2e_a),
        "calibrated_heldout": accuracy(calibrated[held], e2e_a[held]),
        "calibration": cal.to_dict(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(args, result)
    return 0


def _print_table(args: argparse.Namespace, result: dict) -> None:
    raw, calr = result["raw"], result["calibrated_heldout"]
    print(f"{args.space} r={args.resolution} on {args.device} ({args.threads} thread), "
          f"{args.networks} networks, calibration fitted on {result['calibration_networks']}")
    print(f"{'':12s} {'±5% acc':>8s} {'±10% acc':>9s} {'MAPE':>7s} {'LUT/e2e':>8s}")
    for name, r in (("raw", raw), ("calibrated", calr)):
        print(f"{name:12s} {r['acc5_pct']:7.1f}% {r['acc10_pct']:8.1f}% {r['mape_pct']:6.2f}% "
              f"{r['mean_ratio']:8.3f}")


if __name__ == "__main__":
    sys.exit(main())
