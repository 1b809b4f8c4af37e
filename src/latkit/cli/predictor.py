"""`latkit predictor ...`: fit, evaluate and use learned latency predictors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from latkit.cli import common
from latkit.cli.common import PRECISION_HELP, TARGET_CI_HELP, precision_option
from latkit.cli.profile import CLOCK_HELP, DEVICE_HELP, open_checked, protocol_config
from latkit.core.checks import MAX_SAMPLED_ARCHS

predictor_app = typer.Typer(help="Learned latency predictors: sample, fit, predict, eval, design.",
                            no_args_is_help=True)


def _columns(text: Optional[str]) -> Optional[list[str]]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


@predictor_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered predictors."""
    from latkit.predictors.base import list_predictors

    names = list_predictors()
    if as_json:
        common.print_json(names)
    else:
        common.out.print("\n".join(common.esc(n) for n in names))


@predictor_app.command("eval")
def eval_cmd(
    csv: Path = typer.Option(..., "--csv", help="Latency CSV: arch_index, arch, <device>..."),
    space: str = typer.Option(..., "--space", "-s", help="Space of the arch column (fbnet, nasbench201, ...)."),
    target: str = typer.Option(..., "--target", help="The new device's column."),
    k: int = typer.Option(10, "--k", "-k", min=2, help="Archs measured on the new device."),
    known: Optional[str] = typer.Option(None, "--known", help="Comma-separated known-device columns."),
    strict: bool = typer.Option(False, "--strict", help="Leave out every column of the target's hardware."),
    target_csv: Optional[Path] = typer.Option(None, "--target-csv", help="CSV holding the new device's column."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Repeats over seeds."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a predicted-vs-measured scatter PNG."),
    model: str = typer.Option("hwmeta", "--model", help="hwmeta (hardware-conditioned, meta-trained) or fewshot "
                              "(ridge combination of known devices)."),
    design: str = typer.Option("active", "--design", help="How the K archs are chosen: active, farthest, random."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Few-shot transfer to a new device: Spearman, Kendall τ, ±5/±10% accuracy, interval coverage.

    Nested: every model choice is made by a leave-one-device-out loop over the known
    columns, never on the target. --strict also hides every column of the target's
    hardware: columns named <prefix>_<number> that share the prefix with another
    column are batch sizes of one hardware (1080ti_1, 1080ti_32); any other name is
    its own hardware (silver_4114).
    """
    from latkit.predictors.evaluate import evaluate

    summary = evaluate(csv, space, target, k, known=_columns(known), strict=strict, target_csv=target_csv,
                       seeds=seeds, plot=plot, model=_model(model), design=_design(design))
    if as_json:
        common.print_json(summary)
        return
    _print_eval(summary, target, k, seeds)
    if plot is not None:
        common.err.print(f"scatter plot: {common.esc(plot)}")


def _model(text: str) -> Any:
    """``--model`` parsed to a :class:`~latkit.predictors.evaluate.FewShotModel`."""
    from latkit.core.errors import UnknownNameError
    from latkit.predictors.evaluate import FewShotModel

    try:
        return FewShotModel(text)
    except ValueError:
        raise UnknownNameError("--model", text, [m.value for m in FewShotModel]) from None


def _design(text: str) -> Any:
    """``--design`` parsed to a :class:`~latkit.predictors.transfer.Design`."""
    from latkit.core.errors import UnknownNameError
    from latkit.predictors.transfer import Design

    try:
        return Design(text)
    except ValueError:
        raise UnknownNameError("--design", text, [d.value for d in Design]) from None


def _print_eval(summary: dict, target: str, k: int, seeds: int) -> None:
    grid = Table("model", "Spearman", "Kendall τ", "±5%", "±10%", "coverage", "MAPE %", "RMSE ms",
                 title=f"{common.esc(target)}, K={k} ({summary['design']} design), {seeds} seed(s), "
                       f"{len(summary['known'])} known device(s){', strict' if summary['strict'] else ''}")
    rows = [(f"latkit {summary['model']}", summary["method"])]
    if summary.get("ridge"):
        rows.append(("ridge combination of known devices", summary["ridge"]))
    if summary.get("baseline"):
        rows.append(("ridge on 3 reference devices, random K", summary["baseline"]))
    for name, s in rows:
        cover = f"{s['coverage']:.3f}" if "coverage" in s else "-"
        grid.add_row(name, f"{s['spearman']:.4f}", f"{s['kendall']:.4f}", f"{s['acc5']:.3f}", f"{s['acc10']:.3f}",
                     cover, f"{s['mape_pct']:.2f}", f"{s['rmse_ms']:.3f}")
    common.out.print(grid)
    if "coverage" in summary["method"]:
        common.err.print("coverage: share of archs whose measured latency lies in their predicted 90% interval")


@predictor_app.command("fit")
def fit_cmd(
    csv: Path = typer.Option(..., "--csv", help="Latency CSV: arch_index, arch, <device>..."),
    space: str = typer.Option(..., "--space", "-s"),
    target: str = typer.Option(..., "--target", help="Column to predict."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the predictor in (no pickle)."),
    predictor: str = typer.Option("xgboost", "--predictor", help="See `latkit predictor list`; "
                                  "`fewshot` uses the known devices' latencies."),
    k: Optional[int] = typer.Option(None, "--k", "-k", min=2, help="Train on K archs (default: all measured)."),
    known: Optional[str] = typer.Option(None, "--known", help="Known-device columns for fewshot."),
    target_csv: Optional[Path] = typer.Option(None, "--target-csv", help="CSV holding the target column."),
    design: str = typer.Option("active", "--design", help="hwmeta: how the K archs are chosen among those "
                               "measured (active, farthest, random)."),
    seed: int = typer.Option(0, "--seed"),
    old_predictor: Optional[str] = typer.Option(None, "-p", hidden=True),  # -p is --precision everywhere now
) -> None:
    """Fit a latency predictor on a latency CSV and save it.

    `--predictor hwmeta --k K --target-csv MINE.csv` meta-trains on the CSV's known
    columns and adapts to K of your measurements; the result reads architectures, so
    `latkit search --predictor OUT` can use it.
    """
    from latkit.core.files import removed_on_failure
    from latkit.predictors.evaluate import fit_from_csv

    predictor = common.renamed("--predictor", predictor, "-p", old_predictor, "xgboost")
    with removed_on_failure(out):  # a failed fit leaves no empty folder behind
        model = fit_from_csv(csv, space, target, out, predictor=predictor, k=k, known=_columns(known),
                             target_csv=target_csv, random_state=seed, design=_design(design))
    common.err.print(f"saved {type(model).__name__} for {common.esc(target)} to {common.esc(out)}")
    if predictor in ("fewshot", "hwmeta") and known is None:  # the default is every other column: say which
        from latkit.predictors.base import load_metadata

        used = load_metadata(out).get("provenance", {}).get("known", [])
        common.err.print(f"features: the latencies of {len(used)} known device column(s) (--known to choose): "
                         f"{common.esc(', '.join(used))}")


@predictor_app.command("predict")
def predict_cmd(
    predictor: Optional[Path] = typer.Option(None, "--predictor", help="Folder written by `latkit predictor fit`."),
    arch: Optional[list[str]] = typer.Option(None, "--arch", "-a", help="Architecture (native text); repeatable."),
    archs_file: Optional[Path] = typer.Option(None, "--archs-file", help="File with one architecture per line."),
    reference_csv: Optional[Path] = typer.Option(None, "--reference-csv",
                                                 help="Known devices' latencies (fewshot predictors)."),
    as_json: bool = typer.Option(False, "--json"),
    old_predictor: Optional[Path] = typer.Option(None, "-p", hidden=True),  # -p is --precision everywhere now
) -> None:
    """Predict the latency of architectures with a saved predictor."""
    from latkit.core.errors import UsageError
    from latkit.predictors.evaluate import predict_archs

    predictor = common.renamed("--predictor", predictor, "-p", old_predictor, None)
    if predictor is None:
        raise UsageError("give --predictor: the folder written by `latkit predictor fit`")
    archs = list(arch or [])
    if archs_file is not None:
        try:
            text = archs_file.read_bytes().decode("utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {archs_file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise UsageError(f"{archs_file} is not a text file; give one architecture per line") from None
        archs += [ln.strip() for ln in text.splitlines() if ln.strip()]
    pred = predict_archs(predictor, archs, reference_csv=reference_csv)
    if as_json:
        common.print_json([{"arch": a, "latency_ms": float(p)} for a, p in zip(archs, pred)])
        return
    for a, p in zip(archs, pred):
        common.out.print(f"{p:10.3f} ms  {common.esc(a)}")


@predictor_app.command("design")
def design_cmd(
    csv: Path = typer.Option(..., "--csv", help="Latency CSV of the known devices."),
    k: int = typer.Option(10, "--k", "-k", min=2, help="How many archs you will measure."),
    known: Optional[str] = typer.Option(None, "--known", help="Known-device columns."),
    space: Optional[str] = typer.Option(None, "--space", "-s",
                                        help="Space of the arch column (default: the one that reads it)."),
    design: str = typer.Option("active", "--design", help="active (cover what the known devices disagree on), "
                               "farthest (farthest points) or random."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Which K architectures to measure on a new device for few-shot transfer."""
    from latkit.predictors.evaluate import design_from_csv

    for a in design_from_csv(csv, k, known=_columns(known), random_state=seed, space=space,
                             design=_design(design)):
        common.out.print(common.esc(a))


@predictor_app.command("sample")
def sample_cmd(
    device: str = typer.Option("cpu:onnxruntime", "--device", "-d", help=DEVICE_HELP),
    space: str = typer.Option(..., "--space", "-s", help="Space to sample (one with networks: proxyless_*, fbnet, ...)."),
    n: int = typer.Option(..., "--archs", "-n", min=1, max=MAX_SAMPLED_ARCHS,
                          help="Architectures to sample (seeded) and measure."),
    out: Path = typer.Option(..., "--out", "-o", help="Latency CSV to write, or to extend (other rows and "
                             "columns are kept); a rerun measures only what it lacks."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096),
    column: Optional[str] = typer.Option(None, "--column", help="The latency column (default: the device URI)."),
    from_csv: Optional[Path] = typer.Option(
        None, "--from-csv", help="Draw the architectures from this latency CSV's arch column (so the new column "
        "shares rows with its device columns: `predictor eval --csv it --target-csv OUT`)."),
    classes: int = typer.Option(10, "--classes", min=0, help="Classifier outputs of the networks (default 10, as "
                                "`latkit profile` and `lut calibrate`; 0: the space's own)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", "-t", min=1),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help=PRECISION_HELP),
    target_ci: float = typer.Option(0.02, "--target-ci", help=TARGET_CI_HELP),
    quick: bool = typer.Option(False, "--quick", help="Short measurement protocol (smoke runs)."),
    clock: Optional[str] = typer.Option(None, "--clock", help=CLOCK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout (progress stays on stderr)."),
) -> None:
    """Measure N sampled architectures end to end on a device into a latency CSV the predictors fit on."""
    from latkit.cli.progress import Stages
    from latkit.devices.precision import Precision
    from latkit.predictors.collect import sample_latencies
    from latkit.predictors.data import parse_archs, read_latency_csv
    from latkit.profiler.spaces import get_space

    sp = get_space(space)
    sp.check_resolution(resolution)  # before the device opens
    pool = parse_archs(space, read_latency_csv(from_csv).archs) if from_csv is not None else None
    config = protocol_config(target_ci, 30.0, quick)
    dev, prec = open_checked(device, threads, clock, precision_option(precision) or Precision.FP32)
    try:
        with Stages(enabled=not as_json) as shown:
            report = sample_latencies(dev, sp, n, out, resolution=resolution, seed=seed, config=config,
                                      precision=prec, column=column, classes=classes or None, pool=pool,
                                      on_progress=lambda done, total, msg: shown("sampling", done, total, msg))  # fmt: skip
    finally:
        dev.close()
    if as_json:
        common.print_json(report.to_dict())
        return
    common.out.print(f"{len(report.measured)} measured, {report.reused} already there, of {report.n} architecture(s) "
                     f"-> {common.esc(report.out)} (column {common.esc(report.column)})")
    common.out.print(f"fit:  latkit predictor fit --csv {common.esc(report.out)} --space {common.esc(space)} "
                     f"--target {common.esc(report.column)} --out predictor")
