"""`latkit search`: find an architecture that meets a latency target.

Two modes share the command:

* **supernet search** (``--lut``, ``--device`` or ``--predictor``): train a
  weight-sharing supernet on ``--data`` and search it with ProxylessNAS
  gradients, REINFORCE, evolution or random search, the latency term coming from
  the LUT (or predictor) and a hard target;
* **tabular benchmark** (``--accuracy-table``): accuracies looked up in a table
  (e.g. NAS-Bench-201), latencies from a table or a predictor fitted on K rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from latkit.cli import app, common
from latkit.cli.profile import DEVICE_HELP, open_dev, protocol_config
from latkit.errors import UsageError


_STAGE_NAMES = {"train": "training architectures", "smooth": "scoring for smoothed accuracy"}


@app.command("search")
def search_cmd(
    space: str = typer.Option(..., "--space", "-s", help="Search space (see `latkit spaces`)."),
    target_ms: Optional[str] = typer.Option(
        None, "--target-ms", "-T", metavar="MS|PCT%",
        help="Latency budget: ms, or a share of the space's slowest network on this device (60%).",
    ),
    speedup: Optional[str] = typer.Option(None, "--speedup", metavar="FACTOR",
                                          help="Budget as a speed-up over the slowest network (2x); instead of --target-ms."),
    tolerance: float = typer.Option(0.10, "--tolerance", help="How far over the budget still counts as within it (0.1 = 10%)."),
    algorithm: str = typer.Option(
        "proxyless-grad", "--algorithm", "-A",
        help="proxyless-grad | reinforce | ppo | evolution | random (tabular: also parsec).",
    ),
    lut: Optional[Path] = typer.Option(None, "--lut", help="Latency from this LUT."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help=f"Profile (or reuse) this device's LUT. {DEVICE_HELP}"),
    predictor: Optional[Path] = typer.Option(None, "--predictor", help="Latency from a saved predictor."),
    calibrated: bool = typer.Option(False, "--calibrated", help="Use the LUT's stored calibration."),
    precision: Optional[str] = typer.Option(
        None, "--precision", "-p",
        help="Precision the model ships at: fp32, fp16 or int8; the search reads only the LUT's rows at it "
             "(default fp32; with --lut, the one precision the LUT holds).",
    ),  # fmt: skip
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Resolution of the latency model."),
    data: str = typer.Option("digits", "--data", help="digits (embedded) | cifar10:PATH | folder:PATH."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    queries: int = typer.Option(50, "--queries", min=1, help="Accuracy queries (RL / evolution / random / tabular)."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("search_out"), "--out", "-o", help="Folder for arch.json, trajectory, plots."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out."),
    accuracy_table: Optional[str] = typer.Option(None, "--accuracy-table", help="Tabular mode: CSV:COLUMN of accuracies."),
    latency_table: Optional[str] = typer.Option(None, "--latency-table", help="Tabular mode: CSV:COLUMN of latencies (ms)."),
    latency_samples: Optional[int] = typer.Option(None, "--latency-samples", min=2,
                                                  help="Tabular mode: fit a latency model on K table rows."),
    smooth_accuracy: Optional[int] = typer.Option(
        None, "--smooth-accuracy", min=4,
        help="Score N random sub-networks with the supernet, fit a GCN to them and search its "
             "smoothed accuracies (reinforce / ppo / evolution / random).",
    ),
    train_steps: Optional[int] = typer.Option(
        None, "--train-steps", min=1,
        help="No supernet: train each queried architecture N steps on its own (reinforce / ppo / "
             "evolution / random), starting from the most similar trained one's weights.",
    ),
    inherit: bool = typer.Option(True, "--inherit/--no-inherit",
                                 help="With --train-steps: inherit weights from the knowledge pool."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Search a space for the most accurate architecture within --target-ms."""
    from latkit._files import check_output_dir
    from latkit.search.target import check_tolerance, parse_target

    target = parse_target(target_ms, speedup)
    tolerance = check_tolerance(tolerance)
    if resume and not out.exists():  # refused before the folder check creates it
        raise UsageError(f"nothing to resume: {out} does not exist; drop --resume to start a fresh search there")
    check_output_dir(out, "--out folder")
    if accuracy_table is not None:
        if smooth_accuracy is not None or train_steps is not None:
            raise UsageError("--smooth-accuracy and --train-steps estimate accuracies; the tabular mode looks them up")
        if resume:
            raise UsageError("the tabular mode (--accuracy-table) keeps no checkpoint to resume; drop --resume")
        if target.relative:
            raise UsageError("the tabular mode takes --target-ms in ms (a share or speed-up needs a LUT, device or predictor)")
        _tabular(space, accuracy_table, latency_table, target.resolve(None), algorithm, queries, seed,
                 latency_samples, out, as_json)
        return
    from latkit.devices.precision import parse_precision

    prec = parse_precision(precision) if precision is not None else None
    sources = [s for s in (lut, device, predictor) if s is not None]
    if len(sources) != 1:
        raise UsageError("give exactly one latency source: --lut PATH, --device URI or --predictor PATH "
                         "(or --accuracy-table for the tabular mode)")
    from latkit.profiler.spaces import get_space
    from latkit.search.run import run_search

    sp = get_space(space)
    if resolution is not None:
        sp.check_resolution(resolution)
    if resume:
        _check_resume(out, algorithm, train_steps)
    model = _latency_model(sp, lut, device, predictor, resolution, calibrated, prec)
    target_ms = _resolve_target(sp, model, target, tolerance, as_json)
    from latkit.cli.progress import Stages

    with Stages(enabled=not as_json) as stages:  # one display per stage: epochs, train steps, smoothing
        def on_progress(p) -> None:
            exp = f"expected {p.expected_latency_ms:.3f} ms " if p.expected_latency_ms is not None else ""
            best = (f"best {p.best_latency_ms:.3f} ms acc {p.best_accuracy:.3f}"
                    if p.best_latency_ms is not None and p.best_accuracy is not None else "")
            stages("search epochs", p.epoch, p.epochs, f"loss {p.loss:.3f} {exp}{best}")

        outcome = run_search(sp, model, target_ms, algorithm, data, epochs, seed, out,
                             queries=queries, resume=resume, on_progress=on_progress,
                             smooth_samples=smooth_accuracy, train_steps=train_steps, inherit=inherit,
                             on_stage=lambda stage, d, t, msg: stages(_STAGE_NAMES.get(stage, stage), d, t, msg))
    if target.relative:  # the arch file says what was asked, not only the ms it came to
        _record_target(outcome.files["arch"], target.describe(model.max_latency()[0]))
    result = {
        "space": space, "algorithm": algorithm, "target_ms": target_ms, "target": target.to_dict(),
        "tolerance": tolerance, "arch": outcome.native,
        "precision": model.provenance.get("precision"),
        "latency_ms": outcome.latency_ms, "accuracy": outcome.accuracy, "out": str(outcome.out_dir),
        "files": {k: str(v) for k, v in outcome.files.items()},
    }  # fmt: skip
    if as_json:
        common.print_json(result)
        return
    common.out.print(f"[bold]{common.esc(space)}[/] with {common.esc(algorithm)}: latency {outcome.latency_ms:.3f} ms "
                     f"(target {target_ms:.3f} ms), held-out accuracy {outcome.accuracy:.2f}%")
    common.out.print(f"arch: {common.esc(outcome.native)}")
    for name, path in result["files"].items():
        common.out.print(f"  {common.esc(name)}: {common.esc(path)}")


def _record_target(arch_path: Path, text: str) -> None:
    from latkit._files import read_json, write_json

    doc = read_json(arch_path, "arch.json")
    doc["target"] = text
    write_json(arch_path, doc, "arch.json", indent=1, nan_to_null=True)


def _resolve_target(sp, model, target, tolerance: float, quiet: bool) -> float:
    """The target in ms (a share resolved on the model's slowest network); warns when it is above the space."""
    import numpy as np

    from latkit.search.framework.base import min_latency
    from latkit.search.target import range_warning

    slowest = model.max_latency()[0] if hasattr(model, "max_latency") else None
    if target.relative and slowest is None:
        raise UsageError("a share or speed-up target needs the space's slowest latency, which a predictor does not "
                         "give; use --lut or --device, or --target-ms in ms")  # fmt: skip
    target_ms = target.resolve(slowest)
    if not quiet and target.relative:
        common.out.print(f"target: {common.esc(target.describe(slowest))}")
    if slowest is not None:
        fastest = min_latency(sp, model, np.random.default_rng(0))[0]
        warning = range_warning(target_ms, (fastest, slowest), sp.name, model.provenance.get("device", "this device"),
                                tolerance)  # fmt: skip
        if warning:
            common.warn(warning)
    return target_ms


def _latency_model(sp, lut: Optional[Path], device: Optional[str], predictor: Optional[Path],
                   resolution: Optional[int], calibrated: bool, precision):
    from latkit.devices.precision import Precision
    from latkit.lut.store import LUT
    from latkit.lut.tables import TableLatencyModel
    from latkit.search.framework.latency import PredictorLatencyModel

    if predictor is not None:
        if precision not in (None, Precision.FP32):
            raise UsageError(f"--precision {precision.value} selects LUT rows; a predictor gives the latency it was "
                             "fitted on: search with --lut or --device at that precision")  # fmt: skip
        return PredictorLatencyModel.from_saved(sp, predictor)
    if device is not None:
        precision = precision or Precision.FP32
        lut = _device_lut(sp, device, resolution, precision)
    with LUT.open(lut) as table:
        return TableLatencyModel.from_lut(sp, table, resolution=resolution, calibrated=calibrated, precision=precision)


def _check_resume(out: Path, algorithm: str, train_steps: Optional[int]) -> None:
    """An explicit --resume needs something to resume (a fresh start would hide a wrong --out)."""
    if train_steps is not None:  # no supernet, no checkpoint: the recorded queries are the state
        if not (out / "queries.json").is_file():
            raise UsageError(f"nothing to resume: {out} holds no queries.json of a --train-steps search; "
                             "drop --resume to start a fresh search there")
        return
    from latkit.search.supernet.checkpoint import check_resumable

    check_resumable(out, algorithm)


def _device_lut(sp, device: str, resolution: Optional[int], precision) -> Path:
    """The device's cached LUT for the space, with any missing operator profiled now at ``precision``."""
    from latkit.devices.precision import check_precision
    from latkit.lut.store import LUT
    from latkit.profiler.runner import profile_ops
    from latkit.search.pipeline.runner import lut_path_for

    res = resolution or sp.default_resolution
    path = lut_path_for(device, sp.name, res)
    dev = open_dev(device, 1, None)
    try:
        check_precision(dev, precision)  # before a LUT file is made for it
        path.parent.mkdir(parents=True, exist_ok=True)
        with LUT.open(path, create=True) as table:
            specs = sp.operators(res)
            todo = len([s for s in specs if s.key not in table.done_keys(dev.info().uri, precision=precision)])
            with common.progress_bar(f"profiling {device} ({precision.value})", todo, enabled=todo > 0) as advance:
                report = profile_ops(dev, specs, table, protocol_config(0.02, 20.0, False),
                                     on_progress=lambda d, t, key, m: advance(key), precision=precision)
    finally:
        dev.close()
    if report.failed:
        raise UsageError(f"{len(report.failed)} operator(s) failed to measure on {device} at {precision.value}; "
                         f"see `latkit profile --device {device} --space {sp.name} --precision {precision.value} "
                         f"--lut {path}`")
    return path


def _tabular(space: str, accuracy_table: str, latency_table: Optional[str], target_ms: float,
             algorithm: str, queries: int, seed: int, latency_samples: Optional[int],
             out: Path, as_json: bool) -> None:
    from latkit.search.framework.tabular import run_tabular

    result = run_tabular(space, accuracy_table, latency_table, target_ms, algorithm, queries, seed,
                         latency_samples=latency_samples)
    saved = result.save(out / "search.json")
    if as_json:
        common.print_json(result.to_dict())
        return
    table = Table("algorithm", "queries", "best accuracy", "latency ms", "target ms", "oracle", "arch")
    extra = result.extra
    table.add_row(common.esc(algorithm), str(result.queries_used), f"{result.best_accuracy:.2f}",
                  f"{result.best_latency_ms:.3f}", f"{target_ms:.3f}",
                  f"{extra.get('oracle_accuracy', float('nan')):.2f}", common.esc(result.best_arch))
    common.out.print(table)
    if latency_samples is not None:
        common.out.print(f"true latency {extra.get('true_latency_ms', float('nan')):.3f} ms, "
                         f"meets the target: {extra.get('truly_feasible')}")
    common.err.print(f"trajectory: {common.esc(saved)}")
