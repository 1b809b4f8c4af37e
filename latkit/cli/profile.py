"""`latkit profile` and `latkit measure`: measure operators into a LUT, or whole networks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from latkit.cli import app, common

DEVICE_HELP = "Device URI: cpu:onnxruntime, cpu:litert, cpu:torch, cuda:0, adb:SERIAL, adb+tcp://HOST:PORT."


CLOCK_HELP = ("Host CPU clock: auto (thread CPU time with one thread, else wall), thread or wall. "
              "The thread clock leaves out time other processes took the core.")


def open_dev(uri: str, threads: int, clock: Optional[str]):
    """Open a device; ``--clock`` applies to the host-CPU backends only."""
    from latkit.devices import open_device
    from latkit.errors import UsageError

    if clock is None:
        return open_device(uri, threads=threads)
    if not uri.startswith("cpu:"):
        raise UsageError(f"--clock applies to the host CPU devices (cpu:...), not {uri}")
    return open_device(uri, threads=threads, clock=clock)


def protocol_config(precision: float, max_seconds: float, quick: bool):
    """The measurement protocol settings chosen on the command line."""
    from latkit.profiler.protocol import ProtocolConfig

    if quick:
        return ProtocolConfig.quick(target_rel_ci=precision)
    return ProtocolConfig(target_rel_ci=precision, max_seconds_per_op=max_seconds)


def load_arch(space_name: Optional[str], arch: str, resolution: Optional[int]):
    """The network behind ``--arch`` (a space arch, an arch.json or a net.config file)."""
    from latkit.profiler.spaces import get_space
    from latkit.profiler.spaces.load import load_network

    space = get_space(space_name) if space_name else None
    return load_network(space, arch, resolution)


@app.command("profile")
def profile_cmd(
    device: str = typer.Option("cpu:onnxruntime", "--device", "-d", help=DEVICE_HELP),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="Search space whose operators to measure."),
    arch: Optional[str] = typer.Option(
        None, "--arch", "-a", help="Measure only this network's operators (arch of --space, or a net.config)."
    ),
    lut: Path = typer.Option(..., "--lut", help="LUT file (SQLite); created if missing, resumed if not."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Input resolution."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Measure at most N operators."),
    threads: int = typer.Option(1, "--threads", "-t", min=1, help="Inference threads (recorded)."),
    precision: float = typer.Option(0.02, "--precision", help="Target relative 95% CI half-width of each median."),
    max_seconds: float = typer.Option(20.0, "--max-seconds-per-op", help="Time cap per operator."),
    quick: bool = typer.Option(False, "--quick", help="Fewer samples (for smoke runs, not for real LUTs)."),
    sample: Optional[int] = typer.Option(
        None, "--sample", min=1,
        help="Measure only the N most informative operators and predict the rest (op-level predictor).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of --sample."),
    clock: Optional[str] = typer.Option(None, "--clock", help=CLOCK_HELP),
) -> None:
    """Measure every operator of a space on a device into a LUT (resumable)."""
    from latkit.errors import UsageError
    from latkit.lut.claims import profile_shared
    from latkit.lut.store import LUT
    from latkit.profiler.spaces import get_space

    if space is None and arch is None:
        raise UsageError("give --space (all its operators) or --arch (one network's operators)")
    if arch is not None:
        network, _ = load_arch(space, arch, resolution)
        specs, space = network.measurable_specs(), network.name
    else:
        specs = get_space(space).operators(resolution)
    config = protocol_config(precision, max_seconds, quick)
    dev = open_dev(device, threads, clock)
    if sample is not None:
        _profile_sampled(dev, specs, lut, config, sample, seed)
        return
    try:
        with LUT.open(lut, create=True) as table:
            uri = dev.info().uri
            done = table.done_keys(uri)
            todo = {s.key for s in specs if s.measurable and s.key not in done}
            n_ops = len({s.key for s in specs if s.measurable})
            total = min(len(todo), limit) if limit else len(todo)
            common.err.print(
                f"{common.esc(space)}: {n_ops} operators, {n_ops - len(todo)} already in {common.esc(lut)}, "
                f"measuring up to {total} on {common.esc(dev.uri)} ({threads} thread(s))"
            )
            with common.progress_bar("profiling", total) as advance:
                def on_progress(done, total_, key, measurement):
                    note = f"{measurement.latency_ms:.3f} ms" if measurement is not None else "failed"
                    advance(f"{note}  {key}")

                def on_wait(holders):
                    names = ", ".join(f"{h} ({h.n_ops} operators)" for h in holders)
                    common.err.print(f"waiting for another latkit run measuring into {common.esc(lut)}: "
                                     f"{common.esc(names)}")

                report, by_others = profile_shared(dev, specs, table, config, limit=limit,
                                                   on_progress=on_progress, on_wait=on_wait)
            _print_report(report, lut, by_others)
    finally:
        dev.close()
    if report.failed:
        raise typer.Exit(1)


def _profile_sampled(dev, specs, lut: Path, config, n: int, seed: int) -> None:
    from latkit.lut.claims import Claims
    from latkit.lut.store import LUT
    from latkit.predictors.sampling import profile_sampled

    try:
        with LUT.open(lut, create=True) as table:
            claims = Claims(table, dev.info().uri)
            claims.claim_device()  # the sample is chosen from what is stored: no other run may add meanwhile
            try:
                with common.progress_bar("profiling (sampled)", n) as advance:
                    def on_progress(done, total_, key, measurement):
                        advance(f"{measurement.latency_ms:.3f} ms  {key}" if measurement is not None
                                else f"failed {key}")

                    report = profile_sampled(dev, specs, table, config, n, seed, on_progress)
            finally:
                claims.release()
    finally:
        dev.close()
    common.err.print(
        f"measured {len(report.measured)} of {report.n_candidates} operators in {report.rounds} round(s); "
        f"predicted {report.n_predicted} with {common.esc(report.predictor)} (trained on {report.n_train}) -> {common.esc(lut)}"
    )
    for key, reason in report.failed.items():
        common.err.print(f"[red]failed[/] {common.esc(key)}: {common.esc(reason)}")
    if report.failed:
        raise typer.Exit(1)


def _print_report(report, lut: Path, by_others=()) -> None:
    others = f", measured by another run {len(by_others)}" if by_others else ""
    left = f", left for a later run {report.left}" if report.left else ""
    common.err.print(
        f"measured {len(report.measured)}, already present {len(report.skipped)}{others}, "
        f"failed {len(report.failed)}{left} -> {common.esc(lut)}"
    )
    for key, reason in report.failed.items():
        common.err.print(f"[red]failed[/] {common.esc(key)}: {common.esc(reason)}")


@app.command("measure")
def measure_cmd(
    arch: str = typer.Option(..., "--arch", "-a", help="Architecture: native form, arch.json or net.config file."),
    device: str = typer.Option("cpu:onnxruntime", "--device", "-d", help=DEVICE_HELP),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="Search space of --arch (not needed for net.config)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Input resolution."),
    threads: int = typer.Option(1, "--threads", "-t", min=1),
    lut: Optional[Path] = typer.Option(None, "--lut", help="Also print this LUT's estimate and its error."),
    precision: float = typer.Option(0.02, "--precision"),
    max_seconds: float = typer.Option(30.0, "--max-seconds"),
    quick: bool = typer.Option(False, "--quick"),
    clock: Optional[str] = typer.Option(None, "--clock", help=CLOCK_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure a whole network end to end with the same protocol as the operators."""
    from latkit.profiler.export import BuiltModel
    from latkit.profiler.protocol import measure_one

    import math

    from latkit.errors import UsageError
    from latkit.lut.drift import combined, measure_drift, reference_ops

    # --quick has its own time cap, so the protocol would never see a bad --max-seconds
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise UsageError(f"--max-seconds must be a positive number of seconds, got {max_seconds:g}")
    network, _ = load_arch(space, arch, resolution)
    config = protocol_config(precision, max_seconds, quick)
    refs = []
    if lut is not None:
        from latkit.lut.estimate import estimate
        from latkit.lut.store import LUT

        with LUT.open(lut, readonly=True) as table:
            est = estimate(table, network)
            refs = reference_ops(table, est.device, [layer.spec.key for layer in network.layers])
    dev = open_dev(device, threads, clock)
    try:
        before = measure_drift(dev, refs, config) if refs and est.device == dev.uri else None
        m = measure_one(dev, BuiltModel(network), config)
        drift = combined(before, measure_drift(dev, refs, config)) if before else None
    finally:
        dev.close()
    result = {"network": network.name, "device": device, "measurement": m.to_dict()}
    if lut is not None:
        result["estimate_ms"] = est.total_ms
        result["error_pct"] = 100.0 * (est.total_ms - m.latency_ms) / m.latency_ms
        result["device_drift"] = drift.to_dict() if drift else None
    if as_json:
        common.print_json(result)
        return
    table = Table("network", "latency ms", "95% CI ms", "samples", "converged")
    table.add_row(common.esc(network.name), common.fmt_ms(m.latency_ms),
                  f"{common.fmt_ms(m.ci_low_ms)}-{common.fmt_ms(m.ci_high_ms)}",
                  f"{m.n_samples} (x{m.iterations})", "yes" if m.converged else "no")
    common.out.print(table)
    if lut is not None:
        common.out.print(f"LUT estimate {result['estimate_ms']:.3f} ms ({result['error_pct']:+.1f}% vs measured)")
        if drift is not None:
            common.out.print(f"device drift {drift.ratio:.2f}x: the network's {len(refs)} slowest LUT operators "
                             f"now / in the LUT" + ("" if drift.steady else " - the device is not in its profiled "
                                                    "state; the comparison above says little"))  # fmt: skip
