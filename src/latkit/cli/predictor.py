"""`latkit predictor ...`: fit, evaluate and use learned latency predictors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from latkit.cli import common

predictor_app = typer.Typer(help="Learned latency predictors: fit, predict, eval, design.", no_args_is_help=True)


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
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Few-shot transfer to a new device: RMSE, MAPE, ±5/±10% accuracy, Spearman, Kendall τ."""
    from latkit.predictors.evaluate import evaluate

    summary = evaluate(csv, space, target, k, known=_columns(known), strict=strict,
                       target_csv=target_csv, seeds=seeds, plot=plot)
    if as_json:
        common.print_json(summary)
        return
    grid = Table("model", "RMSE ms", "MAPE %", "±5%", "±10%", "Spearman", "Kendall τ",
                 title=f"{common.esc(target)}, K={k}, {seeds} seed(s), {len(summary['known'])} known device(s)")
    rows = [("latkit few-shot", summary["method"])]
    if summary.get("baseline"):
        rows.append(("ridge on 3 reference devices", summary["baseline"]))
    for name, s in rows:
        grid.add_row(name, f"{s['rmse_ms']:.3f}", f"{s['mape_pct']:.2f}", f"{s['acc5']:.3f}",
                     f"{s['acc10']:.3f}", f"{s['spearman']:.4f}", f"{s['kendall']:.4f}")
    common.out.print(grid)
    if plot is not None:
        common.err.print(f"scatter plot: {common.esc(plot)}")


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
    seed: int = typer.Option(0, "--seed"),
    old_predictor: Optional[str] = typer.Option(None, "-p", hidden=True),  # -p is --precision everywhere now
) -> None:
    """Fit a latency predictor on a latency CSV and save it."""
    from latkit.core.files import removed_on_failure
    from latkit.predictors.evaluate import fit_from_csv

    predictor = common.renamed("--predictor", predictor, "-p", old_predictor, "xgboost")
    with removed_on_failure(out):  # a failed fit leaves no empty folder behind
        model = fit_from_csv(csv, space, target, out, predictor=predictor, k=k, known=_columns(known),
                             target_csv=target_csv, random_state=seed)
    common.err.print(f"saved {type(model).__name__} for {common.esc(target)} to {common.esc(out)}")
    if predictor == "fewshot" and known is None:  # the default is every other column: say which
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
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Which K architectures to measure on a new device for few-shot transfer."""
    from latkit.predictors.evaluate import design_from_csv

    for a in design_from_csv(csv, k, known=_columns(known), random_state=seed, space=space):
        common.out.print(common.esc(a))
