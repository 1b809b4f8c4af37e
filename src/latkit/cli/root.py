"""The root of the ``latkit`` command tree: the Typer app every command module adds to.

Each command module (``latkit.cli.profile``, ``latkit.cli.search``...) imports
:data:`app` from here and registers its commands on it; :mod:`latkit.cli` imports
those modules and runs the app. Keeping the app out of the package's
``__init__`` means a command module never imports the package that imports it.
"""

from __future__ import annotations

import logging
import sys

import typer

from latkit._version import __version__
from latkit.cli import common

common.hide_flag_types()
app = typer.Typer(
    name="latkit",
    help="Hardware-aware latency profiling, lookup tables, predictors and latency-constrained NAS.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-vv: debug)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
