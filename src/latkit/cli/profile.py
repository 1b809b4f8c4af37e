"""`latkit profile` and `latkit measure`: measure operators into a LUT, or whole networks and model files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from latkit.cli import common
from latkit.cli.root import app
from latkit.core.errors import UsageError
from latkit.core.checks import MAX_PASSES
from latkit.core.files import file_sha256
from latkit.cli.common import PRECISION_HELP, STATISTIC_HELP, TARGET_CI_HELP, precision_option
from latkit.cli.layers import PER_LAYER_HELP, add_layer_profile, print_layer_profile

if TYPE_CHECKING:
    from latkit.devices.precision import Precision

DEVICE_HELP = ("Device URI: cpu:onnxruntime, cpu:litert, cpu:torch, cuda:0, adb:SERIAL[?delegate=D&threads=N], "
               "adb+tcp://HOST:PORT.")


DEVICE_WAIT_HELP = ("Seconds to wait for a device that stops answering; past that, what is measured stays in "
                    "the LUT and the run stops (rerun to resume). Default 120.")

CLOCK_HELP = ("Host CPU clock: auto (thread CPU time with one thread, else wall), thread or wall. "
              "The thread clock leaves out time other processes took the core.")


def open_device(uri: str, threads: int, clock: Optional[str]):
    """Open a device; ``--clock`` applies to the host-CPU backends only."""
    from latkit.devices import open_device as _open
    from latkit.core.errors import UsageError

    if clock is None:
        return _open(uri, threads=threads)
    if not uri.startswith("cpu:"):
        raise UsageError(f"--clock applies to the host CPU devices (cpu:...), not {uri}")
    return _open(uri, threads=threads, clock=clock)


def open_checked(uri: str, threads: int, clock: Optional[str], precision: Precision):
    """Open a device and check it runs ``precision``; returns ``(device, precision)``."""
    from latkit.devices.precision import check_precision

    dev = open_device(uri, threads, clock)
    try:
        return dev, check_precision(dev, precision)
    except BaseException:
        dev.close()
        raise


def protocol_config(target_ci: float, max_seconds: float, quick: bool, device_wait: Optional[float] = None,
                    option: str = "--max-seconds"):
    """The measurement protocol settings chosen on the command line (``--quick`` keeps its own time cap;
    ``device_wait``, when given, is how long a device that stops answering is waited for).

    Raises:
        UsageError: ``max_seconds`` (given as ``option``) is not a positive number; checked
            here because under ``--quick`` the protocol never sees it.
    """
    import math

    from latkit.core.errors import UsageError
    from latkit.profiler.protocol import Preset, ProtocolConfig

    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise UsageError(f"{option} must be a positive number of seconds, got {max_seconds:g}")
    wait = {} if device_wait is None else {"outage_wait_s": device_wait}
    if quick:
        return ProtocolConfig.preset(Preset.QUICK, target_rel_ci=target_ci, **wait)
    return ProtocolConfig.preset(Preset.DEFAULT, target_rel_ci=target_ci, max_seconds_per_op=max_seconds, **wait)


def load_arch(space_name: Optional[str], arch: str, resolution: Optional[int]):
    """The network behind ``--arch`` (a space arch, an arch.json or a net.config file).

    Raises:
        UsageError: ``arch`` names a model file (that is ``latkit measure FILE``'s job).
    """
    from latkit.core.errors import UsageError
    from latkit.profiler.model_file import FORMAT_NAMES, looks_like_model_file
    from latkit.profiler.spaces import get_space
    from latkit.profiler.spaces.load import load_network

    fmt = looks_like_model_file(arch)
    if fmt is not None:
        raise UsageError(
            f"--arch takes an architecture (net.config, arch.json or the space's native text), and {arch} is "
            f"{'an' if fmt.value == 'onnx' else 'a'} {FORMAT_NAMES[fmt]} model file; time it with `latkit measure {arch}` (the file as FILE)"
        )
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
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096, help="Input resolution."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Measure at most N operators."),
    threads: int = typer.Option(1, "--threads", "-t", min=1, help="Inference threads (recorded)."),
    target_ci: float = typer.Option(0.02, "--target-ci", help=TARGET_CI_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help=PRECISION_HELP),
    max_seconds: float = typer.Option(20.0, "--max-seconds", help="Time cap of each operator's measurement."),
    quick: bool = typer.Option(False, "--quick", help="Fewer samples (for smoke runs, not for real LUTs)."),
    sample: Optional[int] = typer.Option(
        None, "--sample", min=1,
        help="Measure only the N most informative operators and predict the rest (op-level predictor).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of --sample."),
    clock: Optional[str] = typer.Option(None, "--clock", help=CLOCK_HELP),
    passes: int = typer.Option(
        1, "--passes", min=1, max=MAX_PASSES,
        help="Measure the operators this many times over, in fresh sessions, and store each one's lowest "
             "figure (a steadier LUT on a shared or thermally noisy device; N times the time)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout (progress stays on stderr)."),
    device_wait: Optional[float] = typer.Option(None, "--device-wait", min=0.0, help=DEVICE_WAIT_HELP),
    classes: int = typer.Option(
        10, "--classes", min=0,
        help="With --space: also measure the classifier with this many outputs, the one a network trained for "
             "deployment has (default 10: the default dataset, digits; 0: only the space's own)."),
    statistic: Optional[str] = typer.Option(None, "--statistic", help=STATISTIC_HELP + " A LUT keeps one."),
    old_max_seconds: Optional[float] = typer.Option(None, "--max-seconds-per-op", hidden=True),  # now --max-seconds
) -> None:
    """Measure every operator of a space on a device into a LUT (resumable)."""
    from latkit.devices.precision import Precision

    max_seconds = common.renamed("--max-seconds", max_seconds, "--max-seconds-per-op", old_max_seconds, 20.0)
    wanted = precision_option(precision) or Precision.FP32
    if space is None and arch is None:
        raise UsageError("give --space (all its operators) or --arch (one network's operators)")
    if sample is not None and passes > 1:
        raise UsageError("--passes measures every operator again; it does not combine with --sample")
    specs, space = _specs_to_profile(space, arch, resolution, classes)
    from latkit.profiler.protocol import parse_statistic

    config = parse_statistic(statistic).apply(protocol_config(target_ci, max_seconds, quick, device_wait))
    dev, prec = open_checked(device, threads, clock, wanted)
    if sample is not None:
        _profile_sampled(dev, specs, lut, config, sample, seed, prec, as_json)
        return
    try:
        report, latencies, by_others = _profile_into(dev, specs, space, lut, config, limit, prec, passes)
    finally:
        dev.close()
    if as_json:
        _print_profile_json(report, prec, parse_statistic(statistic).value, space, lut, latencies, by_others)
    if report.failed:
        raise typer.Exit(1)


def _print_profile_json(report, prec: Precision, statistic: str, space: str, lut: Path, latencies: dict,
                        by_others) -> None:  # fmt: skip
    """``profile --json``: what was measured (figures of ``statistic``), reused, failed and left."""
    common.print_json({
        "device": report.device, "precision": prec.value, "statistic": statistic, "space": space, "lut": str(lut),
        "measured": [{"key": k, "latency_ms": latencies.get(k)} for k in report.measured],
        "already_present": len(report.skipped), "measured_by_other_run": len(by_others),
        "failed": report.failed, "left": report.left, "elapsed_s": report.elapsed_s,
    })


def _specs_to_profile(space: Optional[str], arch: Optional[str], resolution: Optional[int], classes: int):
    """The operators to measure and the name they go by: one network's, or a space's with the deployed classifier."""
    from latkit.profiler.spaces import get_space
    from latkit.profiler.spaces.base import head_specs

    if arch is not None:
        network, _ = load_arch(space, arch, resolution)
        return network.measurable_specs(), network.name
    sp = get_space(space)
    return list(sp.operators(resolution)) + head_specs(sp, resolution, classes or None), space


def _profile_into(dev, specs, space: str, lut: Path, config, limit: Optional[int], prec: Precision,
                  passes: int = 1):  # fmt: skip
    """Profile ``specs`` into ``lut`` at ``prec`` (shared with other runs), with a progress bar.

    Returns the report, the stored latency of each op measured, and the keys other runs measured.
    """
    from latkit.cli.progress import track
    from latkit.lut.claims import profile_shared
    from latkit.core.errors import DeviceUnreachableError
    from latkit.lut.store import LUT, check_statistic
    from latkit.profiler.protocol import short_statistic

    uri = dev.info().uri
    with LUT.open(lut, create=True) as store:
        check_statistic(store, uri, config.quantile, precision=prec)
        done = store.done_keys(uri, precision=prec)
        todo = {s.key for s in specs if s.measurable and s.key not in done}
        n_ops = len({s.key for s in specs if s.measurable})
        total = min(len(todo), limit) if limit else len(todo)
        common.err.print(
            f"{common.esc(space)}: {n_ops} operators, {n_ops - len(todo)} already in {common.esc(lut)}, "
            f"measuring up to {total} on {common.esc(dev.uri)} at {prec.value} ({dev.threads} thread(s)), "
            f"figures are {short_statistic(config.quantile)}"
            + (f", {passes} passes" if passes > 1 else "")
        )
        with track("profiling", total * passes) as advance:
            def on_progress(done, total_, key, measurement):
                note = f"{measurement.latency_ms:.3f} ms" if measurement is not None else "failed"
                advance(f"{key}  {note}")

            def on_wait(holders):
                names = ", ".join(f"{h} ({h.n_ops} operators)" for h in holders)
                common.err.print(f"waiting for another latkit run measuring into {common.esc(lut)}: "
                                 f"{common.esc(names)}")

            try:
                report, by_others = profile_shared(dev, specs, store, config, limit=limit, on_progress=on_progress,
                                                   on_wait=on_wait, precision=prec, passes=passes)  # fmt: skip
            except DeviceUnreachableError as exc:
                gone = f"stopped answering and did not come back within {config.outage_wait_s:g} s"
                raise _stopped_short(uri, gone, store, prec, todo, total, lut) from exc
        if limit is None and report.left:  # a run without --limit ends with every operator measured or failed
            raise _stopped_short(uri, f"left {report.left} operator(s) neither measured nor failed",
                                 store, prec, todo, total, lut)
        stored = store.lookup(report.measured, uri, strict=False, precision=prec)  # what each op keeps
        _print_report(report, lut, by_others)
    return report, {k: stored.get(k) for k in report.measured}, by_others


def _stopped_short(uri: str, what: str, store, prec: Precision, todo: set[str], total: int,
                   lut: Path) -> Exception:  # fmt: skip
    """One line for a run that stopped before its end: the device, what happened, the rows this
    run kept (of the ``total`` it set out to measure) and how to resume."""
    from latkit.core.errors import DeviceUnreachableError

    kept = len(todo & store.done_keys(uri, precision=prec))
    return DeviceUnreachableError(
        f"{uri} {what}; {kept} operator(s) measured since this run started are kept in {lut}, "
        f"{max(total - kept, 0)} are not measured yet: reconnect the device and rerun the same command to resume"
    )


def _profile_sampled(dev, specs, lut: Path, config, n: int, seed: int, prec: Precision,
                     as_json: bool = False) -> None:  # fmt: skip
    from latkit.cli.progress import track
    from latkit.lut.claims import Claims
    from latkit.lut.store import LUT
    from latkit.predictors.sampling import profile_sampled

    try:
        with LUT.open(lut, create=True) as store:
            claims = Claims(store, dev.info().uri, precision=prec)
            claims.claim_device()  # the sample is chosen from what is stored: no other run may add meanwhile
            try:
                with track("profiling (sampled)", n) as advance:
                    def on_progress(done, total_, key, measurement):
                        advance(f"{key}  {measurement.latency_ms:.3f} ms" if measurement is not None
                                else f"{key}  failed")

                    report = profile_sampled(dev, specs, store, config, n, seed, on_progress, precision=prec)
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
    if as_json:
        common.print_json({"device": report.device, "precision": prec.value, "lut": str(lut), "sampled": True,
                           "measured": report.measured, "n_candidates": report.n_candidates,
                           "n_predicted": report.n_predicted, "predictor": report.predictor,
                           "failed": report.failed, "rounds": report.rounds})
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
    file: Optional[Path] = typer.Argument(
        None, help="A model file to time (.onnx or .tflite; the format is read from its content). Or give --arch."),
    arch: Optional[str] = typer.Option(
        None, "--arch", "-a", help="Or a latkit network: native form, arch.json or net.config file."),
    device: str = typer.Option("cpu:onnxruntime", "--device", "-d", help=DEVICE_HELP),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="Search space of --arch (not needed for net.config)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096, help="Input resolution of --arch."),
    threads: int = typer.Option(1, "--threads", "-t", min=1, help="Inference threads (recorded)."),
    precision: Optional[str] = typer.Option(
        None, "--precision", "-p", help="fp32, fp16 or int8. For FILE it must be what the file holds (default: that); "
        "for --arch the network is built at it (default fp32)."),
    lut: Optional[Path] = typer.Option(None, "--lut", help="With --arch: also print this LUT's estimate and its error."),
    target_ci: float = typer.Option(0.02, "--target-ci", help=TARGET_CI_HELP),
    max_seconds: float = typer.Option(30.0, "--max-seconds", help="Time cap of the measurement."),
    quick: bool = typer.Option(False, "--quick", help="Fewer samples (smoke runs)."),
    clock: Optional[str] = typer.Option(None, "--clock", help=CLOCK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
    statistic: Optional[str] = typer.Option(None, "--statistic", help=STATISTIC_HELP + " The median is always "
                                            "shown beside it."),
    sessions: int = typer.Option(
        1, "--sessions", min=1, max=10, help="Measure in this many fresh sessions and report how far they "
        "disagree (the 95% CI covers one session's noise only); the median session's figure is reported."),
    per_layer: bool = typer.Option(False, "--per-layer", help=PER_LAYER_HELP),
) -> None:
    """Time a model file, or a latkit network, end to end with the same protocol as the operators."""
    from latkit.core.errors import UsageError

    wanted = precision_option(precision)
    if (file is None) == (arch is None):
        raise UsageError("give a model FILE (.onnx or .tflite) or --arch (a latkit network), exactly one")
    from dataclasses import replace

    from latkit.profiler.protocol import parse_statistic

    config = protocol_config(target_ci, max_seconds, quick)
    config = parse_statistic(statistic).apply(config)
    config = replace(config, pool_size=sessions) if sessions > 1 else config
    if file is not None:
        extra = [name for name, value in (("--space", space), ("--resolution", resolution), ("--lut", lut))
                 if value is not None]  # fmt: skip
        if extra:
            raise UsageError(f"{', '.join(extra)} go(es) with --arch; a model FILE brings its own input shape")
        result = _measure_file(file, device, threads, clock, wanted, config, sessions, per_layer)
    else:
        result = _measure_arch(arch, space, resolution, lut, device, threads, clock, wanted, config, sessions,
                               per_layer)  # fmt: skip
    if as_json:
        common.print_json(result)
    else:
        _print_measure(result)
        if per_layer:
            print_layer_profile(result["per_layer"])


def _measure_sessions(dev, model, config, sessions: int):
    """The measurement of the median of ``sessions`` fresh sessions, and every session's figure (ms).

    The sessions are measured together, interleaved (one pool), so a burst of
    other load falls on all of them alike; what still separates them is what a
    fresh session changes (memory placement, thread placement, caches).
    """
    from latkit.profiler.protocol import measure_many, measure_one

    if sessions == 1:
        m = measure_one(dev, model, config)
        return m, [m.latency_ms]
    taken = []
    measure_many(dev, [_Session(model, i) for i in range(sessions)], config,
                 on_progress=lambda d, t, key, m: taken.append(m) if m is not None else None)  # fmt: skip
    if not taken:
        from latkit.core.errors import MeasurementError

        raise MeasurementError(f"no session of {getattr(model, 'key', 'the model')} could be measured")
    taken.sort(key=lambda m: m.latency_ms)
    return taken[(len(taken) - 1) // 2], [m.latency_ms for m in taken]


class _Session:
    """A model measured in a session of its own (a distinct key, the same file)."""

    def __init__(self, model, index: int) -> None:
        self._model, self.key = model, f"{getattr(model, 'key', 'model')}#session{index}"

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _measure_file(file: Path, uri: str, threads: int, clock: Optional[str], wanted: Precision | None, config,
                  sessions: int = 1, per_layer: bool = False) -> dict:  # fmt: skip
    """Time a user's model file; the result dict of ``measure --json``."""
    from latkit.devices.precision import Precision, check_precision
    from latkit.core.errors import UsageError
    from latkit.profiler.model_file import ModelFile
    model = ModelFile(file)
    held = model.precision
    if wanted is not None and held is not None and wanted != held:
        raise UsageError(f"{model.path.name} holds a model at {held.value}, not {wanted.value}; "
                         f"give --precision {held.value} or leave it out")
    dev = open_device(uri, threads, clock)
    try:
        model.check_device(dev)
        prec = check_precision(dev, held or wanted or Precision.FP32)
        m, figures = _measure_sessions(dev, model, config, sessions)
        facts = model.describe()
        facts["precision"] = prec.value
        facts["precision_source"] = "file" if held is not None else ("--precision" if wanted else "assumed")
        result = _result(m, facts, figures)
        if per_layer:
            add_layer_profile(result, dev, model, config.quantile)
    finally:
        dev.close()
    return result


def _measure_arch(arch: str, space, resolution, lut, uri: str, threads: int, clock, wanted: Precision | None,
                  config, sessions: int = 1, per_layer: bool = False) -> dict:  # fmt: skip
    """Time a latkit network (``--arch``), with a LUT's estimate beside it when ``lut`` is given."""
    from latkit.devices.precision import Precision
    from latkit.lut.drift import combined, measure_drift
    from latkit.profiler.export import BuiltModel

    network, _ = load_arch(space, arch, resolution)
    prec = wanted or Precision.FP32
    built = BuiltModel(network, precision=prec)
    est, refs = None, []
    if lut is not None:
        est, refs = _lut_estimate(lut, network, prec, config.quantile)
    dev, prec = open_checked(uri, threads, clock, prec)
    try:
        before = measure_drift(dev, refs, config) if refs and est.device == dev.uri else None
        m, figures = _measure_sessions(dev, built, config, sessions)
        drift = combined(before, measure_drift(dev, refs, config)) if before else None
        fmt = dev.model_format
        path = built.file(fmt) if fmt.value in ("onnx", "tflite") else None
        facts = {"network": network.name, "file": str(path) if path else None,
                 "sha256": file_sha256(path) if path else None, "format": fmt.value,
                 "precision": prec.value, "input_shape": list(built.input_shape)}  # fmt: skip
        result = _result(m, facts, figures)
        if per_layer:
            add_layer_profile(result, dev, built, config.quantile)
    finally:
        dev.close()
    if est is not None:
        result["estimate_ms"] = est.total_ms
        result["error_pct"] = 100.0 * (est.total_ms - m.latency_ms) / m.latency_ms
        result["device_drift"] = drift.to_dict() if drift else None
        result["drift_ops"] = len(refs)
    return result


def _sessions_line(result: dict) -> str:
    """How far several sessions disagreed, or the hint to measure more than one."""
    figures = result.get("sessions_ms") or []
    if len(figures) < 2:
        return "; sessions can differ by more (--sessions 3 shows how much)."
    return (f"; {len(figures)} sessions gave {', '.join(f'{v:.4g}' for v in figures)} ms, "
            f"{100 * result['between_sessions_rel']:.1f}% apart (the median session is reported).")


def _lut_estimate(lut: Path, network, prec, quantile: float):
    """The LUT's estimate of ``network`` and its reference operators; refused (UsageError) when the LUT holds
    another statistic than the one measured (an estimate of p5 figures beside a median says nothing)."""
    from latkit.lut.drift import reference_ops
    from latkit.lut.estimate import estimate
    from latkit.lut.store import LUT, check_statistic

    with LUT.open(lut, readonly=True) as store:
        est = estimate(store, network, precision=prec)
        check_statistic(store, est.device, quantile, precision=prec)
        keys = [layer.spec.key for layer in network.layers]
        refs = reference_ops(store, est.device, keys, precision=prec)
    return est, refs


def _result(m, facts: dict, sessions_ms: Optional[list] = None) -> dict:
    """``measure --json``: what was timed, where, the latency (its statistic named) with its CI, the median,
    the between-session spread when several sessions ran, and the full record."""
    from latkit.profiler.protocol import short_statistic

    info = m.provenance.get("device") or {}
    sessions_ms = sessions_ms or [m.latency_ms]
    return {
        "schema": "latkit.measure",
        "schema_version": 2,
        **facts,
        "device": info.get("uri"),
        "device_info": info,
        "latency_ms": m.latency_ms,
        "statistic": m.provenance.get("statistic"),
        "statistic_short": short_statistic(float((m.provenance.get("protocol") or {}).get("quantile", 0.05))),
        "mean_ms": m.mean_ms,
        "sessions_ms": list(sessions_ms),
        "between_sessions_rel": (max(sessions_ms) - min(sessions_ms)) / min(sessions_ms) if len(sessions_ms) > 1
        else None,
        "ci_low_ms": m.ci_low_ms,
        "ci_high_ms": m.ci_high_ms,
        "rel_ci": m.rel_ci,
        "median_ms": m.provenance.get("median_ms"),
        "p90_ms": m.p90_ms,
        "n_samples": m.n_samples,
        "iterations": m.iterations,
        "converged": m.converged,
        "samples_ms": list(m.samples_ms),
        "provenance": m.provenance,
        "measurement": m.to_dict(),
    }


def _print_measure(result: dict) -> None:
    what = result.get("network") or Path(result["file"]).name
    stat = result.get("statistic_short") or "latency"
    grid = Table("model", "precision", "device", f"{stat} ms", "median ms", "95% CI ms (this run)", "p90 ms",
                 "samples", "converged")  # fmt: skip
    grid.add_row(common.esc(what), common.esc(result["precision"]), common.esc(result["device"]),
                 common.fmt_ms(result["latency_ms"]), common.fmt_ms(result.get("median_ms")),
                 f"{common.fmt_ms(result['ci_low_ms'])}-{common.fmt_ms(result['ci_high_ms'])}",
                 common.fmt_ms(result["p90_ms"]), str(result["n_samples"]),
                 "yes" if result["converged"] else "no")
    common.out.print(grid)
    common.out.print(f"{stat}: the {common.esc(result.get('statistic') or '')}; each of the {result['n_samples']} "
                     f"samples is the mean of {result['iterations']} back-to-back runs. The CI covers this "
                     "session's noise only" + _sessions_line(result))
    if result.get("sha256"):
        common.out.print(f"{result['format']} file {common.esc(result['file'])}  sha256 {result['sha256'][:16]}")
    warning = (result["provenance"].get("delegation_warning") or "").strip()
    if warning:
        common.out.print(f"[yellow]delegation:[/] {common.esc(warning)}")
    if "estimate_ms" in result:
        common.out.print(f"LUT estimate {result['estimate_ms']:.3f} ms ({result['error_pct']:+.1f}% vs measured)")
        drift = result.get("device_drift")
        if drift is not None:
            common.out.print(f"device drift {drift['ratio']:.2f}x: the network's {result['drift_ops']} slowest LUT "
                             f"operators now / in the LUT" + ("" if drift.get("steady", True) else
                                                             " - the device is not in its profiled state; "
                                                             "the comparison above says little"))  # fmt: skip
