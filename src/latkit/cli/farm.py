"""`latkit farm devices` and `latkit farm profile`: many phones, many hosts, one LUT."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.live import Live
from rich.table import Table

from latkit.cli import common
from latkit.cli.common import PRECISION_HELP, TARGET_CI_HELP, precision_option
from latkit.devices.precision import Precision

farm_app = typer.Typer(help="A device farm on Ray: profile on many devices of many hosts into one LUT.",
                       no_args_is_help=True)

ADDRESS_HELP = ("Ray cluster to join: auto or HOST:PORT (started with `ray start`). Default: an embedded "
                "local cluster.")
ADB_HELP = ("A phone the embedded cluster's node owns (adb+tcp://HOST:PORT; repeatable). On a `ray start` "
            "cluster each node declares its phones: --resources '{\"latkit_adb:HOST:PORT\": 1}'.")


def _device_options(key: Optional[Path]) -> dict:
    from latkit.profiler.farm.options import key_options

    return key_options(key)


@farm_app.command("devices")
def devices_cmd(
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    adb: list[str] = typer.Option([], "--adb", help=ADB_HELP),
    threads: int = typer.Option(1, "--threads", "-t", min=1),
    key: Optional[Path] = typer.Option(None, "--key", help="ADB private key (default: latkit's choice)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every node of the cluster and the devices it reaches, with their identity."""
    from latkit.profiler.farm import farm_devices

    reports = farm_devices(address, adb, threads, _device_options(key))
    if as_json:
        common.print_json([r.to_dict() for r in reports])
        return
    grid = Table("node", "device", "serial", "kind", "model", "SoC", "runtime", "LUT device")
    for r in reports:
        node = f"{r.hostname or '?'} {r.node_ip} ({r.node_id[:8]}) latkit {r.latkit_version or '?'}"
        if r.error:
            grid.add_row(common.esc(node), "-", "-", "-", common.esc(r.error), "", "", "")
        for d in r.devices:
            i = d.identity
            grid.add_row(common.esc(node), common.esc(d.uri), common.esc(d.serial), i.kind,
                         common.esc(i.model), common.esc(i.soc), common.esc(f"{i.runtime} {i.runtime_version}"),
                         common.esc(i.lut_uri()))
        for uri, why in r.unreachable.items():
            grid.add_row(common.esc(node), common.esc(uri), "-", "unreachable", common.esc(why[:80]), "", "", "")
    common.out.print(grid)


def _progress_grid(run) -> Table:
    totals = run.totals()
    grid = Table("device", "serial", "state", "measured", "op", "restarts", "note",
                 title=f"{totals['done']}/{totals['todo']} measured, {totals['queued']} queued, "
                        f"{totals['in_flight']} in flight, {totals['failed']} failed")
    for st in run.states:
        note = st.fenced or st.last_error
        grid.add_row(common.esc(st.device.name), common.esc(st.device.serial), st.state, str(st.measured),
                     common.esc((st.key or "")[-48:]), str(st.restarts), common.esc(note[:60]))
    return grid


@farm_app.command("profile")
def profile_cmd(
    space: str = typer.Option(..., "--space", "-s", help="Search space whose operators to measure."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096, help="Input resolution."),
    devices: str = typer.Option(..., "--devices", help="Comma-separated globs over device URI, serial, "
                                "model or LUT device (see `latkit farm devices`), e.g. 'adb*'."),
    lut: Path = typer.Option(..., "--lut", help="LUT file (SQLite); created if missing, resumed if not."),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    adb: list[str] = typer.Option([], "--adb", help=ADB_HELP),
    threads: int = typer.Option(1, "--threads", "-t", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Only the first N operators."),
    quick: bool = typer.Option(False, "--quick", help="Fewer samples (smoke runs, not real LUTs)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help=PRECISION_HELP),
    target_ci: Optional[float] = typer.Option(None, "--target-ci", help=TARGET_CI_HELP + " Default 0.02 (0.05 with --quick)."),
    key: Optional[Path] = typer.Option(None, "--key", help="ADB private key (default: latkit's choice)."),
    op_timeout: float = typer.Option(900.0, "--op-timeout", min=1.0, help="Seconds one operator may take."),
    device_wait: Optional[float] = typer.Option(
        None, "--device-wait", min=0.0, help="Seconds a phone that stops answering is waited for before its "
        "operator goes to a sibling and the phone is set aside (probed, taken back when it answers). "
        "Default 120."),
    stand_in_model: Optional[Path] = typer.Option(
        None, "--stand-in-model", help="Push this one file for every operator instead of exporting each "
        "(only for simulated loopback phones, whose benchmark_model does not read it)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live per-device display."),
) -> None:
    """Profile a space's operators on every matching device of the cluster into one LUT."""
    from latkit.lut.store import LUT
    from latkit.profiler.farm import FarmConfig, farm_profile
    from latkit.profiler.farm.options import farm_protocol, space_operators, stand_in_factory

    prec = precision_option(precision) or Precision.FP32
    specs = space_operators(space, resolution, limit)
    factory = stand_in_factory(stand_in_model)
    protocol = farm_protocol(quick, target_ci, device_wait)
    display = _LiveDisplay(progress)

    def on_plan(chosen) -> None:
        common.err.print(f"{common.esc(space)}: {len(specs)} operators at {prec} on {len(chosen)} device(s) -> "
                         f"{common.esc(lut)}")

    try:
        with LUT.open(lut, create=True) as store:
            report = farm_profile(specs, store, devices, address=address, adb=adb, threads=threads,
                                  protocol=protocol, config=FarmConfig(op_timeout_s=op_timeout),
                                  device_options=_device_options(key), model_factory=factory,
                                  on_event=display.on_event, on_plan=on_plan, precision=prec)
    finally:
        display.stop()
    _print_farm_report(report)
    if not report.ok:
        raise typer.Exit(1)


class _LiveDisplay:
    """The live per-device table of a farm run on stderr, started by its first event."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.live: Optional[Live] = None
        self.last = 0.0

    def on_event(self, kind, st, run) -> None:
        """Redraw on every state change, and at most twice a second on ticks."""
        if not self.enabled:
            return
        if self.live is None:
            self.live = Live(_progress_grid(run), console=common.err, refresh_per_second=4)
            self.live.start()
        now = time.monotonic()
        if kind != "tick" or now - self.last > 0.5:
            self.last = now
            self.live.update(_progress_grid(run))

    def stop(self) -> None:
        """Take the display down (if it was drawn)."""
        if self.live is not None:
            self.live.stop()
            common.err.print()


def _print_farm_report(report) -> None:
    for group, names in report.groups.items():
        common.err.print(f"{common.esc(group)} ({len(names)} device(s)): measured {len(report.measured[group])}, "
                         f"already present {report.skipped[group]}, failed {len(report.failed[group])}, "
                         f"unmeasured {len(report.unmeasured[group])}")
        for k, why in report.failed[group].items():
            common.err.print(f"[red]failed[/] {common.esc(k)}: {common.esc(why)}")
    for d in report.dropped:
        why = d["reason"].split(" (")[0][:160]  # its first clause: the details are in the log
        common.err.print(f"[yellow]stopped answering[/] {common.esc(d['serial'])} with {common.esc(d['key'])} in "
                         f"flight (handed back to its queue): {common.esc(why)}")
    for name, why in report.fenced.items():
        common.err.print(f"[red]fenced[/] {common.esc(name)}: {common.esc(why)}")
    common.err.print(f"{report.rows} rows in {report.elapsed_s:.1f} s; driver {report.driver_s_per_row * 1e3:.2f} "
                     f"ms/row (SQLite write {report.write_s_per_row * 1e3:.2f} ms/row)")
