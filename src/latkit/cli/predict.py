"""`latkit predict FILE` and `latkit kernels ...`: kernel-level latency prediction of any model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from latkit.cli import common
from latkit.core.checks import MAX_KERNEL_CONFIGS, MAX_RESOLUTION
from latkit.devices.precision import Precision

kernels_app = typer.Typer(help="Kernel predictors of a device: build them, detect its fusion rules.",
                          no_args_is_help=True)
DEVICE_HELP = "Device URI (cpu:onnxruntime, ...)."
LUT_HELP = "LUT file holding the device's kernel measurements (default: kernels.db in the LUT cache)."


def _lut_path(lut: Optional[Path]) -> Path:
    from latkit.predictors.kernels import default_kernel_lut

    return lut if lut is not None else default_kernel_lut()


def _load_predictors(predictors: Optional[Path], lut: Path, device: str, precision: Precision) -> Any:
    from latkit.predictors.kernels import load_device_predictors

    return load_device_predictors(predictors, lut, device, precision)


@kernels_app.command("build")
def build_cmd(
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    lut: Optional[Path] = typer.Option(None, "--lut", help=LUT_HELP),
    budget: str = typer.Option("30m", "--budget", help="Measuring time: 30m, 90s, 1h."),
    per_type: int = typer.Option(30, "--per-type", min=1, max=MAX_KERNEL_CONFIGS,
                                 help="Configurations first drawn per kernel type."),
    rounds: int = typer.Option(3, "--rounds", min=0, help="Adaptive rounds where the predictors err most."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Predictor folder (default beside the LUT)."),
    quick: bool = typer.Option(False, "--quick", help="Short measurement protocol (smoke runs)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure kernel configurations on the device (resumable) and fit its kernel predictors."""
    from latkit.cli.progress import track
    from latkit.core.files import check_output_dir
    from latkit.devices.base import open_device
    from latkit.lut.store import LUT
    from latkit.predictors.kernel_build import BuildSettings, build_kernel_predictors, parse_budget
    from latkit.predictors.kernels import default_predictor_dir
    from latkit.profiler.protocol import ProtocolConfig

    settings = BuildSettings(budget_s=parse_budget(budget), per_type=per_type, rounds=rounds)
    path = _lut_path(lut)
    if out is not None:  # a file in the way fails now, not after the measuring
        check_output_dir(out, "kernel predictor folder")
    dev = open_device(device)
    try:
        with LUT.open(path, create=True) as store, track("kernels", 0) as advance:
            def progress(phase: str, done: int, total: int, key: str) -> None:
                advance(f"{phase} {done}/{total} {key}")

            preds = build_kernel_predictors(dev, store, settings, on_progress=progress,
                                            protocol=ProtocolConfig.quick() if quick else None)
    finally:
        dev.close()
    folder = preds.save(out or default_predictor_dir(path, dev.uri, preds.precision))
    counts = {t.value: m.n_train for t, m in preds.models.items()}
    if as_json:
        common.print_json({"predictors": str(folder), "lut": str(path), "rows": counts,
                           "overhead_ms": preds.overhead_ms, "rules": preds.rules.to_dict()})
        return
    common.out.print(f"kernel predictors of {common.esc(dev.uri)} saved to {common.esc(folder)} "
                     f"({sum(counts.values())} rows, fusion rules: {common.esc(preds.rules.source)})")


@kernels_app.command("transfer")
def transfer_cmd(
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    source: Path = typer.Option(..., "--from", help="Predictor folder of a known device to adapt."),
    samples: int = typer.Option(40, "--samples", "-n", min=1, max=MAX_KERNEL_CONFIGS,
                                help="Kernel configurations measured on the device."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads the device runs with."),
    lut: Optional[Path] = typer.Option(None, "--lut", help=LUT_HELP),
    budget: str = typer.Option("10m", "--budget", help="Measuring time: 10m, 90s, 1h."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Predictor folder (default beside the LUT)."),
    quick: bool = typer.Option(False, "--quick", help="Short measurement protocol (smoke runs)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Adapt a known device's kernel predictors to this device from a few measured kernels."""
    from latkit.cli.progress import track
    from latkit.core.files import check_output_dir
    from latkit.devices.base import open_device
    from latkit.lut.store import LUT
    from latkit.predictors.kernel_build import parse_budget, transfer_to_device
    from latkit.predictors.kernels import KernelPredictors, default_predictor_dir
    from latkit.profiler.protocol import ProtocolConfig

    known = KernelPredictors.load(source)
    budget_s, path = parse_budget(budget), _lut_path(lut)
    if out is not None:  # a file in the way fails now, not after the measuring
        check_output_dir(out, "kernel predictor folder")
    dev = open_device(device, threads=threads)
    try:
        with LUT.open(path, create=True) as store, track("kernels", 0) as advance:
            preds = transfer_to_device(dev, store, known, samples, budget_s=budget_s,
                                       protocol=ProtocolConfig.quick() if quick else None, precision=known.precision,
                                       on_progress=lambda phase, done, total, key: advance(f"{phase} {done}/{total}"))
    finally:
        dev.close()
    folder = preds.save(out or default_predictor_dir(path, dev.uri, preds.precision))
    info = preds.provenance["transfer"]
    if as_json:
        common.print_json({"predictors": str(folder), "lut": str(path), **info})
        return
    common.out.print(f"kernel predictors of {common.esc(known.uri)} adapted to {common.esc(dev.uri)} from "
                     f"{info['rows']} measured kernels (overall speed ratio {math.exp(-info['pooled_log_ratio']):.2f}x) "
                     f"-> {common.esc(folder)}")


@kernels_app.command("detect-fusion")
def fusion_cmd(
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    lut: Optional[Path] = typer.Option(None, "--lut", help=LUT_HELP),
    quick: bool = typer.Option(False, "--quick", help="Short measurement protocol (smoke runs)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Time A, B and A->B for candidate pairs; store the pairs the runtime fuses in the LUT."""
    from latkit.devices.base import open_device
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.profiler.fusion import detect_fusion
    from latkit.profiler.protocol import ProtocolConfig

    with LUT.open(_lut_path(lut), create=True) as store:  # a bad LUT fails before the measuring
        dev = open_device(device)
        try:
            rules = detect_fusion(dev, ProtocolConfig.quick() if quick else None)
            runtime = dev.info().runtime
        finally:
            dev.close()
        KernelStore(store).save_rules(dev.uri, runtime, rules)
    if as_json:
        common.print_json(rules.to_dict())
        return
    table_out = Table("pair", "A ms", "B ms", "A->B ms", "fused", title=f"fusion on {common.esc(dev.uri)}")
    for pair, ev in rules.evidence.items():
        table_out.add_row(common.esc(pair), f"{ev['a_ms']:.4f}", f"{ev['b_ms']:.4f}", f"{ev['ab_ms']:.4f}",
                          "yes" if ev["fused"] else "no")  # fmt: skip
    common.out.print(table_out)


@kernels_app.command("calibrate")
def calibrate_cmd(
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    space: str = typer.Option("proxyless_mobile", "--space", "-s", help="Search space whose members are measured."),
    networks: int = typer.Option(5, "--networks", "-n", min=2, help="Members measured end to end."),
    resolution: int = typer.Option(224, "--resolution", "-r", min=8, max=MAX_RESOLUTION),
    precision: Optional[str] = typer.Option(None, "--precision", "-p",
                                            help="The predictors' precision: fp32 (the default), fp16 or int8."),
    lut: Optional[Path] = typer.Option(None, "--lut", help=LUT_HELP),
    predictors: Optional[Path] = typer.Option(None, "--predictors",
                                              help="Kernel predictor folder (default beside the LUT)."),
    quick: bool = typer.Option(False, "--quick", help="Short measurement protocol (smoke runs)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure a few search-space networks end to end; store the kernel sum's calibration with the predictors."""
    from latkit.devices.base import open_device
    from latkit.predictors.kernel_calibration import calibrate_on_space
    from latkit.predictors.kernels import default_predictor_dir
    from latkit.profiler.protocol import ProtocolConfig

    prec = common.precision_option(precision) or Precision.FP32
    path = _lut_path(lut)
    preds = _load_predictors(predictors, path, device, prec)
    dev = open_device(device)
    try:
        fit = calibrate_on_space(preds, dev, space, networks, resolution,
                                 protocol=ProtocolConfig.quick() if quick else None)
    finally:
        dev.close()
    folder = preds.save(predictors or default_predictor_dir(path, device, prec))
    if as_json:
        common.print_json({"predictors": str(folder), **fit.to_dict()})
        return
    common.out.print(f"calibration of {common.esc(device)}: {fit.form.value}, scale {fit.scale:.4f}, offset "
                     f"{fit.offset_ms:.4f} ms on {fit.networks} {common.esc(space)} networks (leave-one-out MAPE "
                     f"{fit.loo_mape_pct:.1f}%, uncalibrated {fit.raw_mape_pct:.1f}%) -> {common.esc(folder)}")


def predict_cmd(
    model: Path = typer.Argument(..., help="An ONNX or TFLite file."),
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="The predictors' precision: fp32, fp16 "
                                            "or int8 (default: what the file holds)."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="Fix the input shape, e.g. 1x3x224x224."),
    lut: Optional[Path] = typer.Option(None, "--lut", help=LUT_HELP),
    predictors: Optional[Path] = typer.Option(None, "--predictors", help="Kernel predictor folder "
                                              "(default: the one `latkit kernels build` wrote beside the LUT)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict a model's latency on a device from its kernels: total, per-kernel table, coverage."""
    from latkit.predictors.kernel_network import predict_model
    from latkit.profiler.graph import parse_input_shape

    prec = common.precision_option(precision) or _file_precision(model)
    preds = _load_predictors(predictors, _lut_path(lut), device, prec)
    result = predict_model(model, preds, parse_input_shape(input_shape))
    if as_json:
        common.print_json(result.to_dict())
        return
    _render(result)


def _file_precision(model: Path) -> Precision:
    """The precision ``model``'s kernels are stored in (int8 / fp16 TFLite, QDQ int8 ONNX), fp32 otherwise.

    A file latkit cannot inspect is left to the graph reader, which says why in one line.
    """
    from latkit.core.errors import LatkitError
    from latkit.profiler.quantize import model_precision

    try:
        return model_precision(model)
    except LatkitError:
        return Precision.FP32


def _render(result: Any) -> None:
    total = result.kernel_sum_ms or 1.0
    table = Table("kernel", "shape", "ops", "predicted ms", "share", title=f"{common.esc(result.name)} on "
                  f"{common.esc(result.device)} ({result.precision.value}, fusion: {common.esc(result.rules_source)})")
    for k in result.kernels:
        table.add_row(common.esc(k.kernel + (" (fallback)" if k.fallback else "")), common.esc(k.key or "-"),
                      common.esc("+".join(k.op_types)), f"{k.latency_ms:.4f}", f"{k.latency_ms / total:.1%}")
    common.out.print(table)
    d = result.to_dict()["coverage"]
    common.out.print(f"predicted {result.latency_ms:.3f} ms (kernel sum {result.kernel_sum_ms:.3f} ms + overhead "
                     f"{result.overhead_ms:.3f} ms{', calibrated' if result.calibrated else ''})")
    common.out.print(f"coverage: {d['in_predicted_kernels']} of {d['operators']} operators in predicted kernels, "
                     f"{len(d['folded'])} folded at load time, {len(d['not_covered'])} kernel(s) not covered")
    for k in d["not_covered"]:
        common.out.print(f"  not covered: {common.esc('+'.join(k['op_types']))} ({common.esc(', '.join(k['nodes']))}): "
                         f"{common.esc(k['fallback'])}")


__all__ = ["kernels_app", "predict_cmd"]
