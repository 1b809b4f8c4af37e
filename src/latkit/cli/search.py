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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from latkit.cli import common
from latkit.cli.root import app
from latkit.cli.profile import DEVICE_HELP, open_device
from latkit.core.errors import UsageError

if TYPE_CHECKING:
    from latkit.devices.precision import Precision


_STAGE_NAMES = {"train": "training architectures", "smooth": "scoring for smoothed accuracy"}


# the command's options, one alias each (their help is what `latkit search --help` shows)
_SpaceOpt = Annotated[str, typer.Option("--space", "-s", help="Search space (see `latkit spaces`).")]
_TargetOpt = Annotated[Optional[str], typer.Option(
    "--target-ms", "-T", metavar="MS|PCT%",
    help="Latency budget: ms, or a share of the space's slowest network on this device (60%).",
)]  # fmt: skip
_SpeedupOpt = Annotated[Optional[str], typer.Option(
    "--speedup", metavar="FACTOR", help="Budget as a speed-up over the slowest network (2x); instead of --target-ms.",
)]  # fmt: skip
_ToleranceOpt = Annotated[float, typer.Option(
    "--tolerance", help="How far over the budget still counts as within it (0.1 = 10%).",
)]  # fmt: skip
_AlgorithmOpt = Annotated[str, typer.Option(
    "--algorithm", "-A", help="proxyless-grad | reinforce | ppo | evolution | random (tabular: also parsec).",
)]  # fmt: skip
_LutOpt = Annotated[Optional[Path], typer.Option("--lut", help="Latency from this LUT.")]
_DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", "-d", help=f"Profile (or reuse) this device's LUT. {DEVICE_HELP}",
)]  # fmt: skip
_PredictorOpt = Annotated[Optional[Path], typer.Option("--predictor", help="Latency from a saved predictor.")]
_CalibratedOpt = Annotated[Optional[bool], typer.Option(
    "--calibrated/--raw",
    help="Latency from the LUT's stored calibration for the device and precision (default: whenever it has one; "
         "--calibrated: require it); --raw: the plain sum of isolated operators.",
)]  # fmt: skip
_ClassesOpt = Annotated[Optional[int], typer.Option(
    "--classes", min=1, help="Outputs of the deployed classifier the latency is priced with (default: --data's classes).",
)]  # fmt: skip
_PrecisionOpt = Annotated[Optional[str], typer.Option(
    "--precision", "-p",
    help="Precision the model ships at: fp32, fp16 or int8; the search reads only the LUT's rows at it "
         "(default fp32; with --lut, the one precision the LUT holds).",
)]  # fmt: skip
_ResolutionOpt = Annotated[Optional[int], typer.Option(
    "--resolution", "-r", help="Resolution of the latency model.",
)]  # fmt: skip
_DataOpt = Annotated[str, typer.Option("--data", help="digits (embedded) | cifar10:PATH | folder:PATH.")]
_EpochsOpt = Annotated[int, typer.Option("--epochs", min=1)]
_QueriesOpt = Annotated[int, typer.Option(
    "--queries", min=1, help="Accuracy queries (RL / evolution / random / tabular).",
)]  # fmt: skip
_SeedOpt = Annotated[int, typer.Option("--seed")]
_OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for arch.json, trajectory, plots.")]
_ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint in --out.")]
_AccuracyTableOpt = Annotated[Optional[str], typer.Option(
    "--accuracy-table", help="Tabular mode: CSV:COLUMN of accuracies.",
)]  # fmt: skip
_LatencyTableOpt = Annotated[Optional[str], typer.Option(
    "--latency-table", help="Tabular mode: CSV:COLUMN of latencies (ms).",
)]  # fmt: skip
_LatencySamplesOpt = Annotated[Optional[int], typer.Option(
    "--latency-samples", min=2, help="Tabular mode: fit a latency model on K table rows.",
)]  # fmt: skip
_SmoothOpt = Annotated[Optional[int], typer.Option(
    "--smooth-accuracy", min=4,
    help="Score N random sub-networks with the supernet, fit a GCN to them and search its "
         "smoothed accuracies (reinforce / ppo / evolution / random).",
)]  # fmt: skip
_TrainStepsOpt = Annotated[Optional[int], typer.Option(
    "--train-steps", min=1,
    help="No supernet: train each queried architecture N steps on its own (reinforce / ppo / "
         "evolution / random), starting from the most similar trained one's weights.",
)]  # fmt: skip
_InheritOpt = Annotated[bool, typer.Option(
    "--inherit/--no-inherit", help="With --train-steps: inherit weights from the knowledge pool.",
)]  # fmt: skip
_JsonOpt = Annotated[bool, typer.Option("--json")]


@dataclass(frozen=True)
class _Source:
    """Where the latency comes from (exactly one of ``lut``, ``device``, ``predictor``)."""

    lut: Optional[Path]
    device: Optional[str]
    predictor: Optional[Path]
    resolution: Optional[int]
    calibrated: Optional[bool]
    precision: Optional[Precision]  # None: the LUT's only one (fp32 for a device's own LUT)
    classes: Optional[int] = None


@app.command("search")
def search_cmd(
    space: _SpaceOpt, target_ms: _TargetOpt = None, speedup: _SpeedupOpt = None, tolerance: _ToleranceOpt = 0.10,
    algorithm: _AlgorithmOpt = "proxyless-grad", lut: _LutOpt = None, device: _DeviceOpt = None,
    predictor: _PredictorOpt = None, calibrated: _CalibratedOpt = None, precision: _PrecisionOpt = None,
    resolution: _ResolutionOpt = None, data: _DataOpt = "digits", epochs: _EpochsOpt = 10,
    queries: _QueriesOpt = 50, seed: _SeedOpt = 0, out: _OutOpt = Path("search_out"), resume: _ResumeOpt = False,
    accuracy_table: _AccuracyTableOpt = None, latency_table: _LatencyTableOpt = None,
    latency_samples: _LatencySamplesOpt = None, smooth_accuracy: _SmoothOpt = None,
    train_steps: _TrainStepsOpt = None, inherit: _InheritOpt = True, as_json: _JsonOpt = False,
    classes: _ClassesOpt = None,
) -> None:  # fmt: skip
    """Search a space for the most accurate architecture within --target-ms."""
    from latkit.devices.precision import parse_precision
    from latkit.search.run import SearchConfig
    from latkit.search.target import check_tolerance, parse_target

    target = parse_target(target_ms, speedup)
    prec = parse_precision(precision) if precision is not None else None
    tolerance = check_tolerance(tolerance)
    _check_out(out, resume)
    if accuracy_table is not None:
        _check_tabular(target, smooth_accuracy, train_steps, resume)
        _tabular(space, accuracy_table, latency_table, target.resolve(None), algorithm, queries, seed,
                 latency_samples, out, as_json)
        return
    source = _Source(lut, device, predictor, resolution, calibrated, prec, classes)
    if predictor is None and classes is None:
        from latkit.search.supernet.data import data_classes

        source = replace(source, classes=data_classes(data))  # the classifier the trained network will have
    sp, model = _space_and_model(space, source, out, algorithm, train_steps, resume)
    ms, target_text = _resolve_target(sp, model, target, tolerance, as_json)
    config = SearchConfig(ms, algorithm, epochs, seed, queries=queries, resume=resume,
                          smooth_samples=smooth_accuracy, train_steps=train_steps, inherit=inherit)  # fmt: skip
    outcome = _search(sp, model, config, data, out, as_json)
    if target.relative:  # the arch file says what was asked, not only the ms it came to
        _record_target(outcome.files["arch"], target_text)
    _report(space, algorithm, target, tolerance, model, outcome, as_json)


def _check_out(out: Path, resume: bool) -> None:
    """UsageError for an --out folder that cannot be written, or --resume with nothing there."""
    from latkit.core.files import check_output_dir

    if resume and not out.exists():  # refused before the folder check creates it
        raise UsageError(f"nothing to resume: {out} does not exist; drop --resume to start a fresh search there")
    check_output_dir(out, "--out folder")


def _check_tabular(target, smooth_accuracy: Optional[int], train_steps: Optional[int], resume: bool) -> None:
    """UsageError for the options the tabular mode cannot honour."""
    if smooth_accuracy is not None or train_steps is not None:
        raise UsageError("--smooth-accuracy and --train-steps estimate accuracies; the tabular mode looks them up")
    if resume:
        raise UsageError("the tabular mode (--accuracy-table) keeps no checkpoint to resume; drop --resume")
    if target.relative:
        raise UsageError("the tabular mode takes --target-ms in ms (a share or speed-up needs a LUT, device or predictor)")


def _space_and_model(space: str, source: _Source, out: Path, algorithm: str, train_steps: Optional[int],
                     resume: bool):  # fmt: skip
    """The space and its latency model from the one latency source (checked, and --resume checked)."""
    from latkit.profiler.spaces import get_space

    if len([s for s in (source.lut, source.device, source.predictor) if s is not None]) != 1:
        raise UsageError("give exactly one latency source: --lut PATH, --device URI or --predictor PATH "
                         "(or --accuracy-table for the tabular mode)")
    sp = get_space(space)
    if source.resolution is not None:
        sp.check_resolution(source.resolution)
    if resume:
        _check_resume(out, algorithm, train_steps)
    model = _latency_model(sp, source, source.precision)
    return sp, model


def _search(sp, model, config, data: str, out: Path, quiet: bool):
    """Run the supernet search with a progress display per stage (epochs, train steps, smoothing)."""
    from latkit.cli.progress import Stages
    from latkit.search.run import run_search

    with Stages(enabled=not quiet) as stages:
        if config.gradient:  # its epochs are its one stage: shown with their total before the first one
            stages("search epochs", 0, config.epochs, f"{config.epochs} epoch(s) of the supernet")

        def on_progress(p) -> None:
            exp = f"expected {p.expected_latency_ms:.3f} ms " if p.expected_latency_ms is not None else ""
            best = (f"best {p.best_latency_ms:.3f} ms acc {p.best_accuracy:.3f}"
                    if p.best_latency_ms is not None and p.best_accuracy is not None else "")  # fmt: skip
            stages("search epochs", p.epoch, p.epochs, f"loss {p.loss:.3f} {exp}{best}")

        return run_search(sp, model, config, data, out, on_progress=on_progress,
                          on_stage=lambda stage, d, t, msg: stages(_STAGE_NAMES.get(stage, stage), d, t, msg))


def _report(space: str, algorithm: str, target, tolerance: float, model, outcome, as_json: bool) -> None:
    """Print the outcome (a JSON document with --json)."""
    result = {
        "space": space, "algorithm": algorithm, "target_ms": outcome.target_ms, "target": target.to_dict(),
        "tolerance": tolerance, "arch": outcome.native,
        "precision": model.provenance.get("precision"), "latency_model": _model_facts(model),
        "latency_ms": outcome.latency_ms, "accuracy": outcome.accuracy, "out": str(outcome.out_dir),
        "files": {k: str(v) for k, v in outcome.files.items()},
    }  # fmt: skip
    if as_json:
        common.print_json(result)
        return
    common.out.print(f"[bold]{common.esc(space)}[/] with {common.esc(algorithm)}: latency {outcome.latency_ms:.3f} ms "
                     f"(target {outcome.target_ms:.3f} ms), held-out accuracy {outcome.accuracy:.2f}%")
    common.out.print(f"arch: {common.esc(outcome.native)}")
    for name, path in result["files"].items():
        common.out.print(f"  {common.esc(name)}: {common.esc(path)}")


def _record_target(arch_path: Path, text: str) -> None:
    from latkit.core.files import read_json, write_json

    doc = read_json(arch_path, "arch.json")
    doc["target"] = text
    write_json(arch_path, doc, "arch.json", indent=1, nan_to_null=True)


def _resolve_target(sp, model, target, tolerance: float, quiet: bool) -> tuple[float, str]:
    """The target in ms and in words (a share resolved on the model's slowest network); says what the model's
    figures are, and warns when the target is above the space."""
    import numpy as np

    from latkit.search.framework.base import min_latency
    from latkit.search.target import range_warning, resolve_on_model

    slowest = model.max_latency()[0] if hasattr(model, "max_latency") else None
    if target.relative and slowest is None:
        raise UsageError("a share or speed-up target needs the space's slowest latency, which a predictor does not "
                         "give; use --lut or --device, or --target-ms in ms")  # fmt: skip
    target_ms, text = resolve_on_model(target, model)
    facts = _model_facts(model)
    if facts and not facts["calibrated"]:
        common.warn(facts["note"])
    elif facts and not quiet:
        common.err.print(f"latency: {common.esc(facts['note'])}")
    if not quiet and target.relative:
        common.out.print(f"target: {common.esc(text)}")
    if slowest is not None:
        fastest = min_latency(sp, model, np.random.default_rng(0))[0]
        warning = range_warning(target_ms, (fastest, slowest), sp.name, model.provenance.get("device", "this device"),
                                tolerance)  # fmt: skip
        if warning:
            common.warn(warning)
    return target_ms, text


def _model_facts(model) -> dict | None:
    """What a LUT table model's figures are (calibrated or not, the classifier priced), or None for a predictor."""
    from latkit.lut.tables import latency_note

    prov = getattr(model, "provenance", {})
    if prov.get("kind") not in ("lut", "lut-calibrated"):
        return None
    return {"calibrated": prov["kind"] == "lut-calibrated", "classes": prov.get("classes"),
            "calibration": prov.get("calibration"), "note": latency_note(prov)}


def _latency_model(sp, source: _Source, precision: Optional[Precision]):
    """The latency model of the one source: a LUT's tables (calibrated when the device has a calibration, with the
    deployed classifier) or a saved predictor."""
    from latkit.devices.precision import Precision
    from latkit.lut.store import LUT
    from latkit.lut.tables import TableLatencyModel
    from latkit.search.framework.latency import PredictorLatencyModel

    if source.predictor is not None:
        if precision not in (None, Precision.FP32):
            raise UsageError(f"--precision {precision.value} selects LUT rows; a predictor gives the latency it was "
                             "fitted on: search with --lut or --device at that precision")  # fmt: skip
        return PredictorLatencyModel.from_saved(sp, source.predictor)
    lut = source.lut
    if source.device is not None:
        precision = precision or Precision.FP32
        lut = _device_lut(sp, source.device, source.resolution, precision, source.classes)
    with LUT.open(lut) as store:
        return TableLatencyModel.from_lut(sp, store, resolution=source.resolution, calibrated=source.calibrated,
                                          precision=precision, classes=source.classes)  # fmt: skip


def _check_resume(out: Path, algorithm: str, train_steps: Optional[int]) -> None:
    """An explicit --resume needs something to resume (a fresh start would hide a wrong --out)."""
    if train_steps is not None:  # no supernet, no checkpoint: the recorded queries are the state
        if not (out / "queries.json").is_file():
            raise UsageError(f"nothing to resume: {out} holds no queries.json of a --train-steps search; "
                             "drop --resume to start a fresh search there")
        return
    from latkit.search.supernet.checkpoint import check_resumable

    check_resumable(out, algorithm)


def _device_lut(sp, device: str, resolution: Optional[int], precision: Precision,
                classes: Optional[int] = None) -> Path:
    """The device's cached LUT for the space (and its classifier at ``classes``), with any missing operator
    profiled now at ``precision``."""
    from latkit.cli.progress import track
    from latkit.devices.precision import check_precision
    from latkit.lut.store import LUT
    from latkit.profiler.protocol import Preset, ProtocolConfig
    from latkit.profiler.runner import profile_ops
    from latkit.lut.cache import lut_path_for
    from latkit.profiler.spaces.base import head_specs

    res = resolution or sp.default_resolution
    path = lut_path_for(device, sp.name, res)
    dev = open_device(device, 1, None)
    try:
        check_precision(dev, precision)  # before a LUT file is made for it
        path.parent.mkdir(parents=True, exist_ok=True)
        with LUT.open(path, create=True) as store:
            specs = list(sp.operators(res)) + head_specs(sp, res, classes)
            todo = len([s for s in specs if s.key not in store.done_keys(dev.info().uri, precision=precision)])
            with track(f"profiling {device} ({precision.value})", todo, enabled=todo > 0) as advance:
                report = profile_ops(dev, specs, store, ProtocolConfig.preset(Preset.PROFILE),
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
    grid = Table("algorithm", "queries", "best accuracy", "latency ms", "target ms", "oracle", "arch")
    extra = result.extra
    grid.add_row(common.esc(algorithm), str(result.queries_used), f"{result.best_accuracy:.2f}",
                 f"{result.best_latency_ms:.3f}", f"{target_ms:.3f}",
                 f"{extra.get('oracle_accuracy', float('nan')):.2f}", common.esc(result.best_arch))
    common.out.print(grid)
    if latency_samples is not None:
        common.out.print(f"true latency {extra.get('true_latency_ms', float('nan')):.3f} ms, "
                         f"meets the target: {extra.get('truly_feasible')}")
    common.err.print(f"trajectory: {common.esc(saved)}")
