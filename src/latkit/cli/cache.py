"""``latkit cache``: what latkit keeps on disk, and clearing it."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from latkit.cli import common

cache_app = typer.Typer(
    help="Show or clear latkit's caches ($LATKIT_CACHE: model files and loopback phones; "
    "$LATKIT_LUT_DIR: LUTs measured by `latkit run`).",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@cache_app.callback()
def show_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the cache folders, their files and sizes."""
    if ctx.invoked_subcommand is not None:
        return
    from latkit.core import cache as _cache

    rows = []
    for a in _cache.areas():
        files, size = a.size()
        rows.append({"area": a.name, "path": str(a.path), "files": files, "bytes": size, "what": a.what})
    if as_json:
        common.print_json(rows)
        return
    grid = Table("area", "path", "files", "size", "what")
    for r in rows:
        grid.add_row(r["area"], common.esc(r["path"]), str(r["files"]), _mb(r["bytes"]), common.esc(r["what"]))
    common.out.print(grid)
    common.out.print(f"total {_mb(sum(r['bytes'] for r in rows))}")


@cache_app.command("clear")
def clear_cmd(
    names: Optional[list[str]] = typer.Argument(None, help="Areas to clear: models, loopback, luts (default: models)."),
    yes: bool = typer.Option(False, "--yes", help="Needed to clear luts: they hold measurements."),
) -> None:
    """Delete latkit's cached files (models by default; LUTs only when named, with --yes).

    Only files latkit names as its own are deleted, and only in a folder it made
    (marked) or at its default place; other files there are never touched.
    """
    from latkit.core import cache as _cache
    from latkit.core.errors import UsageError

    targets = [_cache.area(n) for n in dict.fromkeys(names or ["models"])]
    for t in targets:
        _cache.check_clearable(t)  # all refusals before any deletion
        if t.precious and not yes:
            files, size = t.size()
            raise UsageError(
                f"clearing {t.name} deletes {files} files ({_mb(size)}) of measurements in {t.path}; "
                "add --yes if you mean it"
            )
    for t in targets:
        files, size = _cache.clear(t)
        common.err.print(f"cleared {t.name}: {files} files, {_mb(size)} ({common.esc(str(t.path))})")
