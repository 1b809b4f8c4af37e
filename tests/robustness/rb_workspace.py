"""Valid inputs the bad-input corpus is derived from, built once per session.

A small real LUT (three operators measured on ``cpu:onnxruntime`` at 32x32), its JSON
export, a fitted predictor, an arch.json and the shared net.config / yaml / CSV files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rb_cli import isolated_env, run_cli

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / "data"
FIXTURES = REPO / "tests" / "devices" / "fixtures"

W05_ARCH = ["5x5_MBConv6"] + ["zero", "3x3_MBConv3"] * 10


@dataclass
class Workspace:
    """Paths of valid inputs under ``base`` (read them, copy before changing them)."""

    base: Path
    cache: Path
    lut: Path
    export_json: Path
    predictor: Path
    arch_json: Path
    netconfig: Path
    yaml: Path
    csv: Path
    bm_output: Path
    kernels: Path | None = None  # kernel predictors fitted on an analytic latency (no measuring)

    def env(self, case_dir: Path) -> dict[str, str]:
        """An isolated environment for one case (own HOME, the shared op cache)."""
        return isolated_env(case_dir, self.cache)

    def payload(self) -> dict:
        """A fresh copy of the valid LUT export."""
        return json.loads(self.export_json.read_text())

    def netconfig_dict(self) -> dict:
        return json.loads(self.netconfig.read_text())

    def copy_lut(self, dst: Path) -> Path:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.lut, dst)
        return dst


def _must(res, what: str) -> None:
    if res.rc != 0:
        raise RuntimeError(f"building the robustness workspace: {what} failed "
                           f"(exit {res.rc}): {res.stderr[-1500:]}")


def build_workspace(base: Path) -> Workspace:
    """Create the valid inputs under ``base`` (about 10 s: one tiny profile, one fit)."""
    base.mkdir(parents=True, exist_ok=True)
    cache = base / "cache"
    env = isolated_env(base / "setup", cache)
    lut = base / "valid.db"
    if not lut.exists():
        _must(run_cli(["profile", "--device", "cpu:onnxruntime", "--space", "proxyless_mobile",
                       "--resolution", "32", "--limit", "3", "--quick", "--lut", str(lut)],
                      base, timeout=300, env=env), "profile")
    export = base / "valid.json"
    if not export.exists():
        _must(run_cli(["lut", "export", str(lut), "-o", str(export)], base, env=env), "lut export")
    pred = base / "pred"
    if not (pred / "predictor.json").exists():
        _must(run_cli(["predictor", "fit", "--csv", str(SHARED / "fbnet_latency_ms.csv"), "--space",
                       "fbnet", "--target", "pixel3", "--k", "20", "--predictor", "ridge",
                       "--out", str(pred)], base, timeout=300, env=env), "predictor fit")
    kernels = base / "kernels"
    if not (kernels / "predictors.json").is_file():
        _kernel_predictors(kernels)
    arch = base / "arch.json"
    arch.write_text(json.dumps({"space": "proxyless_mobile_w05", "resolution": 32, "arch": W05_ARCH}))
    for p in (lut, export):
        os.chmod(p, 0o444)
    return Workspace(base=base, cache=cache, lut=lut, export_json=export, predictor=pred,
                     arch_json=arch, netconfig=SHARED / "luts" / "proxyless_mobile.config",
                     yaml=SHARED / "luts" / "proxylessnas_mobile_trim.yaml",
                     csv=SHARED / "fbnet_latency_ms.csv",
                     bm_output=FIXTURES / "bm_current_xnnpack.txt", kernels=kernels)


def _kernel_predictors(folder: Path) -> Path:
    """Kernel predictors of cpu:onnxruntime fitted on 1 ns per MAC or element plus 5 us."""
    from latkit.predictors.kernels import fit_predictors
    from latkit.profiler.kernel_sampling import sample_configs
    from latkit.profiler.kernels import KernelType, default_rules, work

    rows = [(c, 0.005 + 1e-6 * work(c)[0]) for t in (KernelType.CONV, KernelType.ELEMENTWISE, KernelType.POINTWISE)
            for c in sample_configs(t, 8, seed=3)]  # fmt: skip
    preds = fit_predictors(rows, {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"},
                           default_rules("onnxruntime"), overhead_ms=0.005)  # fmt: skip
    return preds.save(folder)


def fbnet_arch(ws: Workspace) -> str:
    """The first architecture of the workspace's latency CSV (the predictor's space)."""
    import csv

    with open(ws.csv, newline="") as f:
        return next(csv.DictReader(f))["arch"]
