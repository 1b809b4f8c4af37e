"""Does the pipeline hit the latency target? Measured latency of the exported model vs target.

Runs :func:`latkit.run` (:func:`latkit.pipeline.runner.run_pipeline`) on ``cpu:onnxruntime`` for three
targets spread over the space's calibrated latency range at the default CPU settings
(resolution 64, the embedded digits) and prints, per target, the calibrated
prediction, the latency of the exported ONNX file measured on the device, the
error relative to the target and whether it is within +-10%. The LUT is
profiled once (cached) and shared by the three runs.

Usage::

    python benchmarks/target_hit.py [--space proxyless_mobile_w05] [--out /tmp/target_hit] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

import latkit
from latkit.devices.base import open_device
from latkit.lut.calibrate import calibrate_device
from latkit.lut.calibration import load_calibration
from latkit.lut.store import LUT
from latkit.profiler.protocol import Preset, ProtocolConfig
from latkit.profiler.runner import profile_ops
from latkit.profiler.spaces import get_space
from latkit.lut.tables import TableLatencyModel
from latkit.lut.cache import lut_path_for
from latkit.pipeline.config import CPU_RESOLUTION
from latkit.pipeline.stages import exported_file

DEVICE = "cpu:onnxruntime"
FRACTIONS = (0.25, 0.5, 0.75)  # where in the space's calibrated [fastest, slowest] the targets sit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="proxyless_mobile_w05")
    ap.add_argument("--resolution", type=int, default=CPU_RESOLUTION)
    ap.add_argument("--out", type=Path, default=Path("/tmp/latkit_target_hit"))
    ap.add_argument("--quick", action="store_true", help="tiny search and training (a smoke run)")
    args = ap.parse_args()
    space = get_space(args.space)
    lut_path = lut_path_for(DEVICE, args.space, args.resolution)
    t0 = time.perf_counter()
    with LUT.open(lut_path, create=True) as lut:  # the pipeline's own first stage, done once up front
        profile_ops(open_device(DEVICE), space.operators(args.resolution), lut,
                    ProtocolConfig.preset(Preset.PIPELINE))
        if load_calibration(lut, DEVICE) is None:  # targets are end-to-end figures: calibrate first
            rng = np.random.default_rng(0)
            calibrate_device(lut, open_device(DEVICE), [space.network(space.sample(rng), args.resolution)
                                                        for _ in range(5)])
        lm = TableLatencyModel.from_lut(space, lut, DEVICE, args.resolution, calibrated=True)
    lo, hi = lm.min_latency(space)[0], lm.max_latency()[0]
    print(f"{args.space} @ {args.resolution}px on {DEVICE}: calibrated predictions span {lo:.3f} .. {hi:.3f} ms "
          f"(profiled/reused in {time.perf_counter() - t0:.0f} s)")
    settings = dict(resolution=args.resolution, formats=("onnx",))
    if args.quick:
        settings.update(search_epochs=2, warmup_epochs=1, train_epochs=1, max_steps_per_epoch=3)
    rows = []
    for frac in FRACTIONS:
        target = round(lo + frac * (hi - lo), 3)
        t1 = time.perf_counter()
        shutil.rmtree(args.out / f"t{target:g}", ignore_errors=True)  # a leftover run folder would resume
        res = latkit.run(DEVICE, args.space, target, args.out / f"t{target:g}", lut=lut_path, **settings)
        err = (res.measured_ms - target) / target
        rows.append({"target_ms": target, "predicted_ms": res.predicted_ms, "measured_ms": res.measured_ms,
                     "error": err, "hit": res.hit, "attempts": len(res.attempts),
                     "first_measured_ms": res.attempts[0]["measured_ms"], "wall_s": time.perf_counter() - t1,
                     "drift": (exported_file(res.export, "onnx").meta()["measured_latency"].get("device_drift") or {})
                     .get("ratio")})  # fmt: skip
        print(f"target {target:7.3f} ms | predicted {res.predicted_ms:7.3f} | measured {res.measured_ms:7.3f} "
              f"| {err:+6.1%} | {'HIT ' if res.hit else 'MISS'} | attempts {len(res.attempts)} "
              f"(first measured {res.attempts[0]['measured_ms']:.3f}) | device drift {rows[-1]['drift'] or 0:.2f}x "
              f"| {rows[-1]['wall_s']:.0f} s", flush=True)
    hits = sum(r["hit"] for r in rows)
    print(f"{hits}/{len(rows)} targets within +-10%")
    (args.out / "target_hit.json").write_text(json.dumps({"space": args.space, "resolution": args.resolution,
                                                          "device": DEVICE, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
