"""The ``latkit`` command line.

Every command is a thin layer over the library: it parses arguments, calls one
library function, and renders the result (a rich table, or JSON with
``--json``). A :class:`~latkit.core.errors.LatkitError` raised anywhere becomes one
``error: ...`` line on stderr and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Any

import typer

from latkit.cli import common
from latkit.cli.root import app
from latkit.core.errors import LatkitError

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as _click_errors

COMPLETE_VAR = "_LATKIT_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@app.command("completion")
def completion_cmd(
    shell: str = typer.Argument(..., help="bash, zsh or fish."),
) -> None:
    """Print the shell completion script: e.g. `eval "$(latkit completion bash)"` in ~/.bashrc."""
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    from latkit.core.errors import UsageError

    if shell not in SHELLS:
        raise UsageError(f"no completion for shell {shell!r}; choose one of {', '.join(SHELLS)}")
    completion_init()
    typer.echo(get_completion_script(prog_name="latkit", complete_var=COMPLETE_VAR, shell=shell))


@functools.cache
def _command() -> Any:
    """The click command tree of ``app``, built once per process.

    Building it walks every command's signature (a noticeable fraction of a second); a
    process that calls :func:`main` many times (the test suite, an embedding tool) pays
    that once, and the sub-apps are added to ``app`` once, not again on every call.
    """
    _register()
    return typer.main.get_command(app)


def _register() -> None:
    # each module adds its commands to `app` (latkit.cli.root) as it is imported
    from latkit.cli import android, deploy, ops, profile, search, train  # noqa: F401
    from latkit.cli import inspect as inspect_cli  # noqa: F401
    from latkit.cli import cache as cache_cli
    from latkit.cli import farm as farm_cli
    from latkit.cli import lut as lut_cli
    from latkit.cli import predict as predict_cli
    from latkit.cli import predictor as predictor_cli

    app.add_typer(lut_cli.lut_app, name="lut")
    app.add_typer(predictor_cli.predictor_app, name="predictor")
    app.add_typer(farm_cli.farm_app, name="farm")
    app.add_typer(cache_cli.cache_app, name="cache")
    app.add_typer(predict_cli.kernels_app, name="kernels")
    app.command("predict")(predict_cli.predict_cmd)


HELP_WIDTH = 120  # columns of --help when stdout is no terminal: wide enough that no option name is cut


def _help_width() -> None:
    """Give ``--help`` :data:`HELP_WIDTH` columns when it goes to a pipe or a file.

    Off a terminal, rich falls back to 80 columns, and typer's help table then
    cuts option names and URIs short (``--latency-sampl…``). A width the user set
    (``COLUMNS``, or typer's ``TERMINAL_WIDTH``) is kept.
    """
    import typer.rich_utils

    if not sys.stdout.isatty() and not os.environ.get("COLUMNS") and not os.environ.get("TERMINAL_WIDTH"):
        typer.rich_utils.MAX_WIDTH = HELP_WIDTH


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns the exit code."""
    command = _command()
    _help_width()
    if os.environ.get(COMPLETE_VAR):  # the shell asks for completions (see `latkit completion`)
        from typer._completion_classes import completion_init

        completion_init()
    try:
        # not standalone: click's usage errors come back here and print as one line
        result = command(args=argv, prog_name="latkit", standalone_mode=False)
        sys.stdout.flush()  # an unwritable stdout fails here, in the handler below, not at exit
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except _click_errors.NoArgsIsHelpError as exc:
        common.out.print(exc.ctx.get_help(), markup=False, highlight=False)
        return 0
    except _click_errors.ClickException as exc:
        common.error(_usage_line(exc))
        return exc.exit_code
    except (typer.Abort, EOFError):
        common.error("interrupted; measurements already taken are saved")
        return 130
    except LatkitError as exc:
        common.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        common.error("interrupted; measurements already taken are saved")
        return 130
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        return _output_lost(exc)
    return result if isinstance(result, int) else 0


# Library code turns every failed file write into a StoreError; an OSError with one of
# these that reaches main is the output stream: stdout on a full disk (/dev/full), a closed pipe.
_OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EDQUOT)


def _output_lost(exc: OSError) -> int:
    """One line for output that could not be written; stdout is then sent to /dev/null, so the
    interpreter's flush at exit fails no second time."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass
    try:
        common.error(f"cannot write the output: {exc.strerror or exc}; results already saved to files are "
                     "kept; send the output to a writable file or a pipe that stays open")
    except OSError:  # stderr is gone too: the exit code is all that is left
        pass
    return 1


def _usage_line(exc: _click_errors.ClickException) -> str:
    """A click usage error as one line naming the command's help."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        return f"{message}; see `{ctx.command_path} --help`"
    return message


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
