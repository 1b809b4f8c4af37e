"""Shared pieces of the CLI: consoles, JSON output, option types."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from latkit.core.files import finite_or_null

if TYPE_CHECKING:
    from latkit.devices.precision import Precision


def hide_flag_types() -> None:
    """Show no type beside an on/off flag or a counter in ``--help``.

    Typer's rich help prints ``<bool>`` beside ``--json`` and ``<int>`` beside
    ``-v`` as if a value had to be typed after them; a flag takes none.
    """
    from typer.core import TyperOption

    if getattr(TyperOption.display_type_rich, "_latkit", False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        return shown(self, ctx)

    display_type_rich._latkit = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


# piped output gets wide tables rather than 80 columns of truncated keys
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


# C0 controls but tab and newline, DEL and C1 controls: what a terminal acts on instead of showing
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """``str(value)`` with control characters shown as ``\\xNN`` instead of acted on.

    Text a device or a file reports (a phone's model name, a serial) may hold
    escape sequences that would move the cursor, retitle or clear the terminal.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def esc(value: Any) -> str:
    """``str(value)`` with rich markup escaped and control characters shown, for user text in prints
    and table cells (see :func:`clean`)."""
    return escape(clean(value))


def error(message: str) -> None:
    """Print one error line on stderr (the message is shown literally, brackets included)."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    err.print(f"[bold red]error:[/] {esc(first)}", highlight=False, markup=True)


def warn(message: str) -> None:
    """Print one warning line on stderr (shown literally); stdout stays for results and JSON."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, markup=True)


def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "value"):  # enums
        return obj.value
    return str(obj)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (NaN/inf become null)."""
    text = json.dumps(finite_or_null(json.loads(json.dumps(data, default=_default))), indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fmt_ms(value: float | None) -> str:
    """Milliseconds for tables."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


PRECISION_HELP = ("Numeric precision of the models: fp32, fp16 or int8 (full-integer static); "
                  "the device must run it.")
STATISTIC_HELP = ("The figure measured and reported: p5 (default; the low robust quantile of the samples, steady "
                  "under load), p10, p25 or median.")
TARGET_CI_HELP = "Target relative 95% CI half-width of each latency."


def renamed(new: str, value: Any, old: str, old_value: Any, default: Any) -> Any:
    """The value of option ``new`` that was once called ``old`` (kept as a hidden alias).

    A value given under the old name is taken, with a warning naming the new one, so
    scripts keep working while they move over; both names at once is an error.

    Raises:
        UsageError: both names were given.
    """
    from latkit.core.errors import UsageError

    if old_value is None:
        return value
    if value != default:
        raise UsageError(f"{old} is the old name of {new}; give {new} only")
    warn(f"{old} is deprecated and will be removed: use {new}")
    return old_value


def precision_option(text: str | None) -> Precision | None:
    """``--precision`` parsed to a :class:`~latkit.devices.precision.Precision` (None, not given, stays None).

    Raises:
        UsageError: an unknown word; a number gets told about ``--target-ci``.
    """
    from latkit.devices.precision import PRECISIONS, parse_precision
    from latkit.core.errors import UsageError

    if text is None:
        return None
    try:
        float(text)
    except ValueError:
        return parse_precision(text)
    raise UsageError(
        f"--precision {text}: --precision is now the model's numeric precision ({', '.join(PRECISIONS)}); "
        f"the target relative CI half-width is --target-ci {text}"
    )
