"""`latkit lut ...`: inspect, move, merge and use latency lookup tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from latkit.cli import common
from latkit.cli.common import PRECISION_HELP, TARGET_CI_HELP, precision_option
from latkit.cli.profile import CLOCK_HELP, DEVICE_HELP, load_arch, open_checked, protocol_config

if TYPE_CHECKING:
    from latkit.devices.precision import Precision

lut_app = typer.Typer(help="Inspect, export, import, merge and estimate with latency LUTs.", no_args_is_help=True)


@lut_app.command("show")
def show_cmd(
    lut: Path = typer.Argument(..., help="LUT file."),
    rows: bool = typer.Option(False, "--rows", help="List every measurement."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summarise a LUT: one line per device and precision, and one per space and resolution
    (never pooled or summed together), sources, delegation warnings.

    A LUT holding invalid latencies (an older latkit's unchecked import) is still
    shown, those rows marked and left out of the statistics, and the command then
    fails with one line naming the first of them.
    """
    from latkit.core.errors import StoreError
    from latkit.lut.store import LUT

    problem: StoreError | None = None
    with LUT.open(lut, readonly=True) as store:
        summary = store.summary()
        listing = store.rows(invalid="keep")
        bad = store.invalid_rows()
        try:
            store.refuse_invalid()
        except StoreError as exc:  # raised once what is valid has been shown
            problem = exc
    _count_warnings(summary, listing)
    summary["groups"] = network_groups(listing, {(k, u) for k, u, _ in bad})
    for d in summary.get("devices", []):  # a device's sum would add up several networks: see groups
        d.pop("total_ms", None)
    _print_show(lut, summary, listing if rows else [], rows, as_json, {(k, u) for k, u, _ in bad})
    if problem is not None:
        raise problem


def _space_keys(listing: list[dict]) -> list[tuple[str, int, set[str]]]:
    """``(space, resolution, operator keys)`` of every registered space at every network
    resolution the LUT's keys show (a 3-channel input), most rows of ``listing`` first."""
    import re

    from latkit.core.errors import LatkitError
    from latkit.profiler.spaces import get_space, list_spaces

    keys = {r["op_key"] for r in listing}
    resolutions = sorted({int(m.group(1)) for k in keys for m in [re.search(r"input:(\d+)x\1x3(?!\d)", k)] if m})
    found = []
    for name in list_spaces():
        for res in resolutions:
            try:
                ops = {spec.key for spec in get_space(name).operators(res)} & keys
            except (LatkitError, ValueError):  # a space without a table, or not at this resolution
                continue
            if ops:
                found.append((name, res, ops))
    return sorted(found, key=lambda f: -len(f[2]))


def network_groups(listing: list[dict], bad: set[tuple[str, str]]) -> list[dict]:
    """Rows grouped per device, precision, search space and resolution (a network's
    operators at one resolution), each with its own statistics and total: latencies of
    different spaces, resolutions or precisions are never summed together. An
    operator of no registered space is grouped under space and resolution ``None``."""
    import statistics

    spaces = _space_keys(listing)
    groups: dict[tuple, list[float]] = {}
    for r in listing:
        where = next(((name, res) for name, res, ops in spaces if r["op_key"] in ops), (None, None))
        group = groups.setdefault((r["device_uri"], r["precision"], *where), [])
        if (r["op_key"], r["device_uri"]) not in bad:
            group.append(float(r["latency_ms"]))
    return [{"device": dev, "precision": prec, "space": space, "resolution": res, "ops": len(ms),
             "min_ms": min(ms, default=None), "median_ms": statistics.median(ms) if ms else None,
             "max_ms": max(ms, default=None), "total_ms": sum(ms) if ms else None}
            for (dev, prec, space, res), ms in sorted(groups.items(), key=lambda g: tuple(map(str, g[0])))]


def delegation_warning(row: dict) -> str:
    """The row's delegation warning (a phone op that fell back to the CPU...), or ''."""
    prov = row.get("provenance")
    warning = prov.get("delegation_warning") if isinstance(prov, dict) else None
    return " ".join(str(warning).split()) if warning else ""


def _count_warnings(summary: dict, listing: list[dict]) -> None:
    """Add ``delegation_warnings`` (rows flagged) to each device/precision entry of ``summary``."""
    counts: dict[tuple[str, Precision], int] = {}
    for r in listing:
        if delegation_warning(r):
            group = (r["device_uri"], r["precision"])
            counts[group] = counts.get(group, 0) + 1
    for d in summary.get("devices", []):
        d["delegation_warnings"] = counts.get((d["uri"], d["precision"]), 0)


def _print_show(lut: Path, summary: dict, listing: list[dict], rows: bool, as_json: bool,
                bad: set[tuple[str, str]]) -> None:
    from latkit.lut.rows import valid_latency

    if as_json:
        for r in listing:  # JSON has no place for text or inf latencies: null, and the stored text
            if not valid_latency(r["latency_ms"]):
                r["invalid_latency"], r["latency_ms"] = repr(r["latency_ms"]), None
        common.print_json({"summary": summary, **({"rows": listing} if rows else {})})
        return
    common.out.print(f"[bold]{common.esc(lut)}[/]  schema v{common.esc(summary.get('schema_version'))}  latkit {common.esc(summary.get('latkit_version'))}")
    # one line per device and precision: their latencies are never pooled or summed together
    devices_grid = Table("device", "precision", "runtime", "threads", "ops", "min ms", "median ms", "max ms", "sources",
                   "delegation warnings")
    for d in summary.get("devices", []):
        warned = d.get("delegation_warnings", 0)
        devices_grid.add_row(
            common.esc(d["uri"]), common.esc(d["precision"]), common.esc(d.get("runtime", "")),
            common.esc(d.get("threads", "")), str(d["ops"]), common.fmt_ms(d.get("min_ms")),
            common.fmt_ms(d.get("median_ms")), common.fmt_ms(d.get("max_ms")),
            common.esc(", ".join(d.get("sources", []))), f"[yellow]{warned}[/]" if warned else "0",
        )
    common.out.print(devices_grid)
    groups = summary.get("groups", [])
    if groups:
        # a LUT may hold several spaces and resolutions: each gets its own line and sum
        groups_grid = Table("device", "precision", "space", "resolution", "ops", "min ms", "median ms", "max ms",
                            "sum ms", title="per space and resolution")
        for g in groups:
            groups_grid.add_row(common.esc(g["device"]), common.esc(g["precision"]), common.esc(g["space"] or "-"),
                                str(g["resolution"] or "-"), str(g["ops"]), common.fmt_ms(g["min_ms"]),
                                common.fmt_ms(g["median_ms"]), common.fmt_ms(g["max_ms"]),
                                common.fmt_ms(g["total_ms"]))  # fmt: skip
        common.out.print(groups_grid)
    by_type = summary.get("by_type", {})
    if by_type:
        common.out.print("operators by type: " + common.esc(", ".join(f"{k} {v}" for k, v in sorted(by_type.items()))))
    if summary.get("invalid"):
        common.out.print(f"invalid latencies (left out of the statistics): {summary['invalid']}")
    if rows:
        _print_rows(listing, bad)


def _print_rows(listing: list[dict], bad: set[tuple[str, str]]) -> None:
    rows_grid = Table("key", "device", "precision", "latency ms", "±CI %", "samples", "source", "delegation")
    for r in listing:
        ms = (f"INVALID {r['latency_ms']!r}" if (r["op_key"], r["device_uri"]) in bad
              else common.fmt_ms(r["latency_ms"]))
        warning = delegation_warning(r)
        rows_grid.add_row(common.esc(r["op_key"]), common.esc(r["device_uri"]), common.esc(r["precision"]),
                          common.esc(ms), f"{100 * (r.get('rel_ci') or 0):.1f}", str(r.get("n_samples", "")),
                          common.esc(r.get("source", "")),
                          f"[yellow]WARNING {common.esc(warning)}[/]" if warning else "")
    common.out.print(rows_grid)


@lut_app.command("export")
def export_cmd(
    lut: Path = typer.Argument(..., help="LUT file."),
    out: Path = typer.Option(..., "--out", "-o", help="JSON file to write."),
) -> None:
    """Export a LUT as versioned JSON."""
    from latkit.core.files import check_output_target
    from latkit.lut.io import export_json
    from latkit.lut.store import LUT

    check_output_target(out, "LUT export")  # before reading anything
    _refuse_overwriting_a_lut(out)
    with LUT.open(lut, readonly=True) as store:
        n = export_json(store, out)
    common.err.print(f"wrote {n} measurements to {common.esc(out)}")


def _refuse_overwriting_a_lut(out: Path) -> None:
    """An export never replaces an SQLite file (its own input, or any other LUT)."""
    from latkit.core.errors import UsageError

    try:
        with open(out, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return  # missing (or unreadable: the write will say so)
    if head == b"SQLite format 3\0":
        raise UsageError(f"{out} is an SQLite file (a LUT?); an export would replace it: give a .json path")


@lut_app.command("import")
def import_cmd(
    lut: Path = typer.Argument(..., help="LUT file to import into (created if missing)."),
    sources: list[Path] = typer.Argument(..., help="latkit JSON exports, or OFA / ProxylessNAS yaml tables."),
    device_uri: Optional[str] = typer.Option(None, "--device-uri", help="Device name for a yaml table's rows."),
    family: Optional[str] = typer.Option(None, "--family", help="Yaml table family: ofa | proxylessnas (default: detected)."),
) -> None:
    """Import JSON exports or the public OFA / ProxylessNAS yaml tables (all or nothing)."""
    from latkit.lut.io import import_json, import_public_yaml, writing

    reports = []
    with writing(lut) as store:  # one transaction: a bad source leaves the LUT as it was
        for src in sources:
            if src.suffix.lower() in (".yaml", ".yml"):
                report = import_public_yaml(store, src, device_uri=device_uri, family=family)
            else:
                report = import_json(store, src)
            reports.append((src, report))
    for src, report in reports:
        common.err.print(f"{src}: {report}", markup=False, highlight=False)


@lut_app.command("merge")
def merge_cmd(
    dst: Path = typer.Argument(..., help="LUT file to merge into (created if missing)."),
    sources: list[Path] = typer.Argument(..., help="LUT files to merge from."),
) -> None:
    """Merge LUT files (existing measurements are kept; conflicts are reported).

    All sources are checked first and merged in one transaction: if any is
    missing or damaged, the destination is left as it was.
    """
    from latkit.lut.io import merge, writing

    with writing(dst) as store:
        report = merge(store, sources)
    common.err.print(str(report), markup=False, highlight=False)


@lut_app.command("estimate")
def estimate_cmd(
    lut: Path = typer.Option(..., "--lut", help="LUT file."),
    arch: str = typer.Option(..., "--arch", "-a", help="Architecture: native form, arch.json or net.config file."),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="Search space of --arch."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device in the LUT (if it holds several)."),
    calibrated: bool = typer.Option(True, "--calibrated/--raw", help="Apply the device's calibration if any."),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="Precision of the LUT rows to use: fp32, fp16 or int8 (default: the only one the "
        "LUT holds for the device)."),
    as_json: bool = typer.Option(False, "--json"),
    classes: Optional[int] = typer.Option(
        None, "--classes", min=1, help="Price the network's classifier with this many outputs (the trained "
        "network's classes, e.g. 10 for digits; default: the classifier --arch has)."),
) -> None:
    """Estimate a network's latency as the sum of its operators (at one precision), with a per-layer breakdown."""
    from latkit.lut.estimate import estimate
    from latkit.lut.store import LUT
    from latkit.profiler.spaces.base import with_classes

    wanted = precision_option(precision)
    network, _ = load_arch(space, arch, resolution)
    if classes is not None:
        network = with_classes(network, classes)
    with LUT.open(lut, readonly=True) as store:
        est = estimate(store, network, device=device, calibration=calibrated, precision=wanted)
    if as_json:
        common.print_json(est.to_dict())
        return
    title = f"{common.esc(network.name)} on {common.esc(est.device)} at {common.esc(est.precision)}"
    grid = Table("#", "layer", "key", "ms", "%", "source", title=title)
    for i, row in enumerate(est.layers):
        grid.add_row(str(i), common.esc(row.name), common.esc(row.key), common.fmt_ms(row.latency_ms),
                     f"{row.share_pct:.1f}", common.esc(row.source))
    common.out.print(grid)
    common.out.print(f"[bold]sum of operators: {est.lut_sum_ms:.3f} ms[/]")
    if est.calibrated:
        from latkit.lut.calibration import describe_fit

        common.out.print(f"[bold]calibrated estimate: {est.total_ms:.3f} ms[/] "
                         f"({common.esc(describe_fit(est.calibration or {}))})")
    elif calibrated:
        common.warn(f"no {prec} calibration for {est.device} in {lut}: the figure is the sum of isolated operators, "
                    f"which whole networks usually beat; run `latkit lut calibrate --lut {lut} --device {est.device} "
                    f"--precision {prec} --space ...` for an end-to-end estimate")


@lut_app.command("calibrate")
def calibrate_cmd(
    lut: Path = typer.Option(..., "--lut", help="LUT file holding this device's operators."),
    space: str = typer.Option(..., "--space", "-s"),
    device: str = typer.Option("cpu:onnxruntime", "--device", "-d", help=DEVICE_HELP),
    networks: int = typer.Option(
        6, "--networks", "-n", min=3,
        help="Networks to measure end to end (up to; a network picked twice runs once): spread evenly over the space's LUT latency range, plus the fastest "
             "network with every layer present (as `latkit run` picks them).",
    ),  # fmt: skip
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096),
    threads: int = typer.Option(1, "--threads", "-t", min=1),
    seed: int = typer.Option(0, "--seed"),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    target_ci: float = typer.Option(0.02, "--target-ci", help=TARGET_CI_HELP),
    quick: bool = typer.Option(False, "--quick"),
    clock: Optional[str] = typer.Option(None, "--clock", help=CLOCK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable fit on stdout (progress stays on stderr)."),
    classes: int = typer.Option(
        10, "--classes", min=0, help="The networks measured end their classifier at this many outputs, as the "
        "deployed ones will (default 10, as `latkit profile` adds; 0: the space's own classifier)."),
) -> None:
    """Fit the device's LUT-to-end-to-end calibration (at one precision) on a few measured networks."""
    import numpy as np

    from latkit.cli.progress import Stages
    from latkit.devices.precision import Precision
    from latkit.lut.calibrate import calibrate_device, pick_calibration_archs
    from latkit.lut.store import LUT
    from latkit.lut.tables import TableLatencyModel
    from latkit.profiler.spaces import get_space

    wanted = precision_option(precision) or Precision.FP32
    config = protocol_config(target_ci, 30.0, quick)
    sp = get_space(space)
    dev, prec = open_checked(device, threads, clock, wanted)
    try:
        with LUT.open(lut) as store:
            model = TableLatencyModel.from_lut(sp, store, dev.uri, resolution, precision=prec, classes=classes or None)
            archs = pick_calibration_archs(model, networks - 1, np.random.default_rng(seed))
            nets = [_deployed(sp.network(a, resolution), classes) for a in archs]
            with Stages() as shown:  # opens at the first pass's note, with its total
                cal = calibrate_device(store, dev, nets, config, precision=prec,
                                       on_progress=lambda done, total, name: shown("measuring networks", done,
                                                                                   total, name))  # fmt: skip
        with LUT.open(lut, readonly=True) as store:
            used = _networks_used(store, dev.uri, nets, cal, prec)
    finally:
        dev.close()
    if as_json:
        common.print_json({"device": dev.uri, "precision": prec.value, "lut": str(lut), "calibration": cal.to_dict(),
                           "form": CAL_FORM, "networks": used})
        return
    _print_calibration(dev.uri, prec, cal, used)


def _deployed(network, classes: int):
    """``network`` with its classifier at ``classes`` outputs (0: as it is)."""
    from latkit.profiler.spaces.base import with_classes

    return with_classes(network, classes) if classes else network


CAL_FORM = "e2e_ms = a * lut_sum_ms + b * n_ops + c"
_METHODS = {"lstsq3": "least squares on a, b and c", "lstsq2": "least squares on a and c (b = 0)",
            "ratio": "one ratio (b = c = 0)"}


def _networks_used(store, uri: str, nets, cal, prec: Precision) -> list[dict]:
    """Each calibration network with its LUT sum and calibrated estimate."""
    from latkit.lut.estimate import estimate

    rows = []
    for net in nets:
        est = estimate(store, net, device=uri, calibration=False, precision=prec)
        rows.append({"name": net.name, "n_ops": est.n_measurable, "lut_sum_ms": est.lut_sum_ms,
                     "calibrated_ms": cal.apply(est.lut_sum_ms, est.n_measurable)})
    return rows


def _print_calibration(uri: str, prec: Precision, cal, used: list[dict]) -> None:
    """The fit in words: its form, coefficients, in- and out-of-sample error and the networks it came from."""
    from latkit.lut.calibration import describe_fit

    esc = common.esc
    common.out.print(f"[bold]calibration for {esc(uri)} at {esc(prec)}[/]")
    common.out.print(f"  form:         {esc(CAL_FORM)} ({esc(_METHODS.get(cal.method, cal.method))})")
    common.out.print(f"  coefficients: a = {cal.a:.4g}, b = {cal.b:.4g} ms per operator, c = {cal.c:.4g} ms")
    common.out.print(f"  residual:     RMS {cal.rmse_ms:.4f} ms, largest relative error "
                     f"{100 * cal.max_rel_err:.1f}% over {cal.n_points} network(s) (in sample)")
    loo = cal.loo_max_rel_err
    common.out.print("  out of sample: " + (f"largest leave-one-out error {100 * loo:.1f}% (each network predicted "
                                            "by a fit on the others)" if loo is not None else "not checked (1 network)"))
    if cal.refused:
        common.out.print(f"  not used:     {esc(cal.refused)}")
    if cal.quality == "poor":
        common.warn(f"the calibration did not hold out of sample: {describe_fit(cal.to_dict())}")
    grid = Table("network", "operators", "LUT sum ms", "calibrated ms", title="networks used")
    for row in used:
        grid.add_row(esc(row["name"]), str(row["n_ops"]), common.fmt_ms(row["lut_sum_ms"]),
                     common.fmt_ms(row["calibrated_ms"]))
    common.out.print(grid)
