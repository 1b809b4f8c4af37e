"""`latkit spaces`, `latkit ops` and `latkit devices`: what is there to measure, and where."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from latkit.cli import common
from latkit.cli.root import app


@app.command("spaces")
def spaces_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the registered search spaces."""
    from latkit.profiler.spaces import get_space, list_spaces

    rows = []
    for name in list_spaces():
        space = get_space(name)
        rows.append(
            {
                "name": name,
                "choices": len(space.choices()),
                "has_lut": space.has_lut,
                "default_resolution": space.default_resolution,
                "description": space.description,
            }
        )
    if as_json:
        common.print_json(rows)
        return
    grid = Table("space", "choices", "LUT", "resolution", "description")
    for r in rows:
        grid.add_row(common.esc(r["name"]), str(r["choices"]), "yes" if r["has_lut"] else "no",
                     str(r["default_resolution"]), common.esc(r["description"]))
    common.out.print(grid)


@app.command("ops")
def ops_cmd(
    space: str = typer.Argument(..., help="Search space, e.g. proxyless_mobile (see `latkit spaces`)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096, help="Input resolution."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List every distinct operator of a search space."""
    from latkit.profiler.spaces import get_space

    specs = get_space(space).operators(resolution)
    if as_json:
        common.print_json([{"key": s.key, **s.to_dict()} for s in specs])
        return
    grid = Table("#", "key", "type", "kernel", "expand", "stride", "se", "act", title=f"{common.esc(space)}: {len(specs)} operators")
    for i, s in enumerate(specs):
        grid.add_row(str(i), common.esc(s.key), s.op_type.value, str(s.kernel), str(s.expand_ratio),
                     str(s.stride), "yes" if s.se else "", s.act.value)
    common.out.print(grid)


@app.command("devices")
def devices_cmd(
    probe: Optional[list[str]] = typer.Option(
        None, "--probe", help="Also probe this phone URI (adb+tcp://HOST:PORT); repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List device backends usable here, attached Android phones and running loopback devices."""
    from latkit.devices import list_devices

    rows = list_devices(loopback=False)  # the running loopback phones are probed below, with the others
    phones = _phones([*_running_loopback_uris(), *(probe or [])])
    if as_json:
        common.print_json({"backends": rows, "android": phones})
        return
    grid = Table("device URI", "runs", "usable here", "why not")
    for r in rows:
        grid.add_row(common.esc(r["uri"]), common.esc(r["format"]), "yes" if r["usable"] else "no",
                     common.esc(r["why"]))
    common.out.print(grid)
    if phones:
        keys = ["uri", *sorted({k for p in phones for k in p} - {"uri"})]
        phones_grid = Table(*(common.esc(k) for k in keys), title="Android devices")
        for p in phones:
            phones_grid.add_row(*(common.esc(p.get(k, "")) for k in keys))
        common.out.print(phones_grid)
    else:
        common.out.print("no Android device reachable (no adb server device, no loopback device "
                         "running; start one with `latkit loopback-device`)")


def _running_loopback_uris() -> list[str]:
    """``adb+tcp://`` URIs of the loopback phones answering now (see latkit.devices.loopback.running)."""
    from latkit.devices.loopback.running import running_loopback

    return [dev.uri for dev in running_loopback()]


def _phones(uris: list[str]) -> list[dict]:
    """Phones the adb server knows plus ``uris``, probed; [] without the android extra."""
    try:
        from latkit.devices.adb_transport import list_android_devices
    except ImportError:  # the android extra is not installed: no phones to list
        return []
    try:
        return list_android_devices(list(dict.fromkeys(uris)))
    except Exception as exc:  # noqa: BLE001 - listing phones must never break the listing of backends
        return [{"uri": "?", "error": str(exc)}]


