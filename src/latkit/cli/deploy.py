"""`latkit export` and `latkit run`: deployable files, and the whole loop in one command."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from latkit.cli import common
from latkit.cli.root import app
from latkit.cli.common import STATISTIC_HELP
from latkit.cli.profile import DEVICE_HELP
from latkit.core.files import removed_on_failure

if TYPE_CHECKING:
    from latkit.pipeline.runner import PipelineResult
    from latkit.search.target import Target

EXIT_CONTENDED = 3  # `latkit run`: over the budget on a host too contended to judge (1 is a judged OVER)
PRECISION_HELP = ("Precision the model ships at: fp32 (the default), fp16 (a TFLite file) or int8 (full-integer "
                  "static int8 TFLite and ONNX QDQ files, calibrated on --data); the float32 files are written too.")


@app.command("export")
def export_cmd(
    arch: Path = typer.Option(..., "--arch", "-a", help="arch.json written by `latkit search` or `latkit run`."),
    weights: Optional[Path] = typer.Option(
        None, "--weights", "-w",
        help="Trained weights: latkit train's weights.safetensors, or a search's checkpoint.safetensors "
             "(the supernet weights of --arch's path), or the folder holding one.",
    ),  # fmt: skip
    random_weights: bool = typer.Option(False, "--random-weights",
                                        help="No --weights: export untrained random weights (latency work only)."),
    formats: str = typer.Option("onnx,tflite", "--format", "-f", help="Comma-separated: onnx, tflite."),
    out: Path = typer.Option(Path("export"), "--out", "-o", help="Folder for the files and their sidecars."),
    layout: str = typer.Option("nhwc", "--layout", help="TFLite input layout: nhwc (what phone apps feed) or nchw. "
                               "ONNX is always NCHW."),
    nhwc: bool = typer.Option(False, "--nhwc", hidden=True, help="Same as --layout nhwc (kept for old scripts)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help=PRECISION_HELP),
    data: Optional[str] = typer.Option(
        None, "--data",
        help="Images the int8 activation ranges are calibrated on: a few hundred of this dataset's training "
             "split (digits | cifar10:PATH | folder:PATH). Default: seeded random inputs (costs accuracy).",
    ),  # fmt: skip
    variants: str = typer.Option("", "--variants", help="Extra TFLite variants: fp16, int8 (full-integer static)."),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="Space of --arch if the file does not say."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r"),
    device: Optional[str] = typer.Option(None, "--device", "-d", help=f"Also measure the files here. {DEVICE_HELP}"),
    as_json: bool = typer.Option(False, "--json"),
    target_ms: Optional[float] = typer.Option(
        None, "--target-ms", "-T", help="With --device: judge the measured files against this budget (ms) as "
        "`latkit run` does (default: the target arch.json records)."),
    tolerance: float = typer.Option(0.10, "--tolerance", help="How far over the budget still counts as within it."),
) -> None:
    """Export a searched architecture as parity-checked ONNX / TFLite files with sidecars.

    With --precision int8 also a full-integer int8 TFLite and an ONNX QDQ file; fp16: an fp16 TFLite.
    """
    from latkit.deploy.export import parse_variants
    from latkit.deploy.layout import parse_layout
    from latkit.devices.precision import parse_precision
    from latkit.search.target import check_target_ms, check_tolerance

    prec = parse_precision(precision)
    extra = parse_variants(variants)
    tflite_layout = parse_layout("nhwc" if nhwc else layout)
    target = check_target_ms(target_ms) if target_ms is not None else None
    tolerance = check_tolerance(tolerance)
    sp = _checked_space(space, resolution)
    dev = _open_checked(device, prec)
    try:
        with removed_on_failure(out, new_files=True):  # a failed export leaves no half-written set
            report = _export_shown(not as_json, arch, data, weights=weights, formats=formats, out_dir=out,
                                   tflite_precisions=extra, precision=prec, layout=tflite_layout, space=sp,
                                   resolution=resolution, device=dev, random_weights=random_weights,
                                   target_ms=target, tolerance=tolerance)  # fmt: skip
    finally:
        if dev is not None:
            dev.close()
    if as_json:
        common.print_json(report.to_dict())
    else:
        _print_report(report, weights)


def _export_shown(enabled: bool, arch: Path, data: Optional[str], **options: Any) -> Any:
    """:func:`~latkit.deploy.export.export_arch` with a progress display that shows its total from the start."""
    from latkit.cli.progress import Stages
    from latkit.deploy.export import export_arch, export_steps

    total = export_steps(options["formats"], precision=options["precision"],
                         tflite_precisions=options["tflite_precisions"], device=options["device"])  # fmt: skip
    steps = itertools.count()  # each message comes before its step: the k-th (from 0) means k steps done
    with Stages(enabled=enabled) as shown:  # opens with the total at the first step, after the door checks
        rep = _representative(data, arch, options["space"], options["resolution"]) if data is not None else None
        report = export_arch(arch, **options, representative=rep,
                             on_progress=lambda msg: shown("export", next(steps), total, msg))  # fmt: skip
        shown("export", total, total, f"{len(report.files)} file(s) written")
    return report


def _checked_space(space: Optional[str], resolution: Optional[int]):
    """The --space given (None without), with --resolution checked against it."""
    from latkit.profiler.spaces import get_space

    sp = get_space(space) if space is not None else None
    if sp is not None and resolution is not None:
        sp.check_resolution(resolution)
    return sp


def _open_checked(device: Optional[str], prec):
    """The device to measure on (None without --device), checked to run ``prec``."""
    if device is None:
        return None
    from latkit.devices import open_device
    from latkit.devices.precision import check_precision

    dev = open_device(device)
    try:
        check_precision(dev, prec)
    except BaseException:
        dev.close()
        raise
    return dev


def _print_report(report: Any, weights: Optional[Path]) -> None:
    """The export's weights line and a table of its files."""
    if weights is None:
        common.err.print("[bold yellow]warning:[/] the files hold untrained RANDOM weights (--random-weights): "
                         "their latency is real, their predictions are not")
    else:
        meta = report.files[0].meta()["weights"]
        common.out.print(f"weights: {common.esc(meta['file'])} ({common.esc(meta['source'])}), {report.classes} classes")
    grid = Table("file", "format", "precision", "layout", "parity (max rel err)", "top-1 agree", "measured ms")
    for f in report.files:
        err = f.parity.get("max_rel_err", f.parity.get("error"))
        agree = f.parity.get("top1_agreement")
        measured = (f.measured or {}).get("latency_ms")
        grid.add_row(common.esc(f.path), common.esc(f.format), common.esc(f.precision), common.esc(f.layout.tag),
                     f"{err:.2e}" if isinstance(err, float) else common.esc(err),
                     "-" if agree is None else f"{agree:.0%}", common.fmt_ms(measured))  # fmt: skip
    common.out.print(grid)
    for line in report.checks:
        if "did not pay" in line or "OVER" in line:
            common.warn(line)
        else:
            common.out.print(common.esc(line))


def _representative(data: str, arch: Path, sp, resolution: Optional[int]):
    """A seeded draw of training images of ``data`` at the architecture's resolution (NCHW)."""
    import numpy as np

    from latkit.search.supernet.data import load_data
    from latkit.deploy.export import read_arch
    from latkit.pipeline.config import REPRESENTATIVE_IMAGES

    res = read_arch(arch, sp, resolution).resolution
    x = load_data(data, res, seed=0).x_train
    pick = np.sort(np.random.default_rng(29).permutation(len(x))[:REPRESENTATIVE_IMAGES])
    return x[pick].numpy()


@app.command("run")
def run_cmd(
    device: str = typer.Option("cpu:onnxruntime", "--device", "-d", help=DEVICE_HELP),
    space: str = typer.Option("proxyless_mobile_w05", "--space", "-s", help="Search space."),
    target_ms: Optional[str] = typer.Option(
        None, "--target-ms", "-T", metavar="MS|PCT%",
        help="Latency budget on the device: ms, or a share of the space's slowest network there (60%, resolved "
             "after calibration, so the same command trades speed for accuracy on any machine).",
    ),  # fmt: skip
    speedup: Optional[str] = typer.Option(None, "--speedup", metavar="FACTOR",
                                          help="Budget as a speed-up over the slowest network (2x); instead of --target-ms."),
    tolerance: float = typer.Option(0.10, "--tolerance", help="How far over the budget still counts as within it (0.1 = 10%)."),
    out: Path = typer.Option(Path("latkit-run"), "--out", "-o", help="Run folder (a rerun resumes)."),
    data: str = typer.Option("digits", "--data", help="digits (embedded) | cifar10:PATH | folder:PATH."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Default: 64 on cpu devices."),
    search_epochs: int = typer.Option(6, "--search-epochs", min=1,
                                      help="Gradient-search epochs (the first min(2, N-1) train weights only)."),
    train_epochs: int = typer.Option(3, "--train-epochs", min=1),
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", min=1, help="Cap every training epoch at N batches (a smoke run of the whole loop).",
    ),  # fmt: skip
    lut: Optional[Path] = typer.Option(None, "--lut", help="LUT file (default: the device's cached LUT)."),
    quick: bool = typer.Option(False, "--quick", help="Short measurement protocol (smoke runs)."),
    sample: Optional[int] = typer.Option(
        None, "--sample", min=1,
        help="Measure only N operators (the most informative) and predict the rest (slow devices, e.g. phones).",
    ),  # fmt: skip
    seed: int = typer.Option(0, "--seed"),
    precision: Optional[str] = typer.Option(
        None, "--precision", "-p",
        help="Precision the model ships at (fp32, the default, fp16, int8): the LUT is profiled and calibrated at "
             "it, the search reads it, training stays fp32, and the file measured is at it (int8: full-integer "
             "static).",
    ),  # fmt: skip
    layout: str = typer.Option("nhwc", "--layout", help="TFLite input layout: nhwc (phones) or nchw."),
    statistic: Optional[str] = typer.Option(None, "--statistic", help=STATISTIC_HELP + " (LUT, calibration, file)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Profile -> LUT -> search for the target -> train -> export -> measure on the device -> report.

    Exit 0 within the budget, 1 over it, 3 when the host was too contended to judge a network over it."""
    from latkit.cli.progress import Stages
    from latkit.pipeline.config import PipelineConfig
    from latkit.pipeline.runner import run_pipeline
    from latkit.search.target import parse_target

    target = parse_target(target_ms, speedup)
    config = PipelineConfig(
        device=device, space=space, target=target, data=data, resolution=resolution, search_epochs=search_epochs,
        warmup_epochs=min(PipelineConfig.warmup_epochs, search_epochs - 1), train_epochs=train_epochs,
        max_steps_per_epoch=max_steps, profile_quick=quick, profile_sample=sample, seed=seed,
        tolerance=tolerance, **_typed_values(precision, layout, statistic),
    )  # fmt: skip
    with Stages(enabled=not as_json) as on_progress, removed_on_failure(out):  # one display per stage
        result = run_pipeline(config, out, lut=lut, on_progress=on_progress)
    if as_json:
        common.print_json(_run_summary(result, target, tolerance))
    else:
        _print_run(result, device)
    _exit_on_verdict(result)


def _typed_values(precision: Optional[str], layout: str, statistic: Optional[str]) -> dict[str, object]:
    """``run``'s precision, layout and statistic, parsed once at the door."""
    from latkit.deploy.layout import parse_layout
    from latkit.devices.precision import parse_precision
    from latkit.profiler.protocol import parse_statistic

    return {"precision": parse_precision(precision), "layout": parse_layout(layout),
            "statistic": parse_statistic(statistic)}  # fmt: skip


def _exit_on_verdict(result: PipelineResult) -> None:
    """Exit 1 over the budget, :data:`EXIT_CONTENDED` when the host was too contended to judge; else return."""
    if result.contended:  # not a miss: nothing was judged
        raise typer.Exit(EXIT_CONTENDED)
    if not result.met:
        raise typer.Exit(1)


def _run_summary(result: PipelineResult, target: Target, tolerance: float) -> dict[str, object]:
    """``latkit run --json``: the verdict, the latencies and the accuracies of the final network."""
    return {
        "target_ms": result.target_ms, "target": target.to_dict(), "tolerance": tolerance,
        "budget_used": (result.judged_ms or result.measured_ms) / result.target_ms, "warning": result.warning,
        "verdict_kind": result.verdict_kind, "statistic": result.statistic.value, "measured_ms": result.measured_ms,
        "judged_ms": result.judged_ms,
        "host_check": result.host,
        "predicted_ms": result.predicted_ms, "hit": result.hit, "met": result.met, "verdict": result.verdict,
        "arch": str(result.arch_path), "report": str(result.report_path),
        "attempts": result.attempts, "precision": result.precision,
        "fp32_accuracy_pct": result.fp32_accuracy_pct, "deployed_accuracy_pct": result.deployed_accuracy_pct,
        "accuracy_drop_pct": result.accuracy_drop_pct,
    }  # fmt: skip


def figures_line(result: PipelineResult, device: str) -> str:
    """The run's latencies in one line (rich markup, the device escaped). When the host check put
    the verdict on another figure than the measure stage's (the file timed again beside a
    calibration network, or corrected for the host's state), that figure is named as well: the
    verdict line above quotes it, and two unexplained "measured" figures would contradict each other."""
    line = (f"predicted {result.predicted_ms:.3f} ms, measured {result.measured_ms:.3f} ms "
            f"({result.statistic.value}) on {escape(device)} at {result.precision}")
    judged = result.judged_ms
    if judged is not None and f"{judged:.3f}" != f"{result.measured_ms:.3f}":
        line += f", judged on {judged:.3f} ms after the host check"
    return f"{line}, target {result.target_ms:.3f} ms"


def _print_run(result: PipelineResult, device: str) -> None:
    """The verdict in its colour, the latencies, the accuracies and where the report is."""
    colour = "green" if result.hit and not result.warning else "yellow" if result.met or result.contended else "red"
    common.out.print(f"[bold {colour}]{escape(result.verdict)}[/]")
    common.out.print(figures_line(result, device))
    if result.deployed_accuracy_pct is not None:
        common.out.print(f"held-out accuracy: fp32 {result.fp32_accuracy_pct:.2f}%, {result.precision} file "
                         f"{result.deployed_accuracy_pct:.2f}% (drop {result.accuracy_drop_pct:+.2f} points)")
    common.out.print(f"report: {common.esc(result.report_path)}")
