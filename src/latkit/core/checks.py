"""Argument checks at the door of the Python API: one line per bad argument, before any work.

A script that passes ``threads="4"``, ``limit=0`` or ``latency_model="fast"``
gets a :class:`~latkit.core.errors.UsageError` naming the argument, the value
and what to give, instead of a traceback from deep inside torch or ONNX
Runtime, or a silently odd run. Wrong types raise :class:`ArgumentTypeError`,
which is both a ``UsageError`` and a ``TypeError``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from latkit.core.errors import UsageError

MAX_THREADS = 256  # more inference threads than any CPU latkit runs on has cores
MAX_RESOLUTION = 4096  # input side in pixels; beyond this a tensor does not fit in memory
MAX_DIMENSION = 1 << 20  # one dimension of a model's input; larger ones are no network latkit can time
MAX_ELEMENTS = 2**31 - 1  # elements of one input tensor: past this, int32 sizes overflow in the runtimes
MAX_KERNEL_CONFIGS = 10_000  # drawn per type (kernels build) or in all (transfer): more than any budget measures
MAX_PASSES = 10  # profiling passes: more passes buy no steadier figure, only time
MAX_SAMPLED_ARCHS = 50_000  # networks in one sampled latency table: more than any published table holds
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


__all__ = ["ArgumentTypeError", "UsageError", "MAX_DIMENSION", "MAX_ELEMENTS", "MAX_KERNEL_CONFIGS", "MAX_PASSES", "MAX_RESOLUTION", "MAX_SAMPLED_ARCHS", "MAX_THREADS", "finite_result",
           "flag", "function", "has_methods", "instance", "integer", "known_options", "mapping", "number",
           "options", "path", "text", "texts"]


class ArgumentTypeError(UsageError, TypeError):
    """An API argument of the wrong type."""


def _say(name: str, value: Any, want: str) -> str:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{name} must be {want}, not {shown} ({type(value).__name__})"


def integer(name: str, value: Any, low: int = 1, high: int | None = None, *, none_ok: bool = False) -> None:
    """``value`` is an int (not a bool, float or text) in ``low..high``.

    Raises:
        ArgumentTypeError: not an int. UsageError: out of range.
    """
    if value is None and none_ok:
        return
    span = f"{low}..{high}" if high is not None else f"at least {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(_say(name, value, f"a whole number ({span})"))
    if value < low or (high is not None and value > high):
        raise UsageError(_say(name, value, f"in {span}"))


def number(name: str, value: Any, *, positive: bool = True, none_ok: bool = False) -> None:
    """``value`` is a finite real number (not a bool or text), positive unless told otherwise.

    Raises:
        ArgumentTypeError: not a number. UsageError: NaN, infinite or not positive.
    """
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(_say(name, value, "a number"))
    if not math.isfinite(value) or (positive and value <= 0):
        raise UsageError(_say(name, value, "a finite positive number" if positive else "a finite number"))


def text(name: str, value: Any, *, none_ok: bool = False) -> None:
    """``value`` is non-empty text without control characters (a name, a URI, a key).

    Raises:
        ArgumentTypeError: not text. UsageError: empty or holding control characters.
    """
    if value is None and none_ok:
        return
    if not isinstance(value, str):
        raise ArgumentTypeError(_say(name, value, "text"))
    if not value.strip() or _CONTROL.search(value):
        raise UsageError(_say(name, value, "non-empty text without control characters"))


def path(name: str, value: Any, *, none_ok: bool = False) -> None:
    """``value`` is a path (text or ``os.PathLike``), not empty.

    Raises:
        ArgumentTypeError: not a path. UsageError: empty, or holding a NUL byte.
    """
    if value is None and none_ok:
        return
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(_say(name, value, "a file path (str or pathlib.Path)"))
    shown = os.fspath(value)
    if not isinstance(shown, str) or not shown.strip() or "\0" in shown:
        raise UsageError(_say(name, value, "a non-empty file path"))


def flag(name: str, value: Any) -> None:
    """``value`` is True or False.

    Raises:
        ArgumentTypeError: anything else (``"no"`` would count as true).
    """
    if not isinstance(value, bool):
        raise ArgumentTypeError(_say(name, value, "True or False"))


def function(name: str, value: Any, *, none_ok: bool = True) -> None:
    """``value`` can be called (a progress callback, an accuracy model).

    Raises:
        ArgumentTypeError: it cannot.
    """
    if value is None and none_ok:
        return
    if not callable(value):
        raise ArgumentTypeError(_say(name, value, "a function"))


def texts(name: str, value: Any, *, none_ok: bool = False) -> None:
    """``value`` is a list or tuple of texts (not one text, whose letters would be taken one by one).

    Raises:
        ArgumentTypeError: not a sequence of texts.
    """
    if value is None and none_ok:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(_say(name, value, "a list of texts"))
    for i, item in enumerate(value):
        text(f"{name}[{i}]", item)


def has_methods(name: str, value: Any, methods: Iterable[str], want: str) -> None:
    """``value`` offers every method in ``methods``.

    Raises:
        ArgumentTypeError: one is missing.
    """
    missing = [m for m in methods if not callable(getattr(value, m, None))]
    if missing:
        raise ArgumentTypeError(_say(name, value, f"{want} (it has no {', '.join(missing)})"))


def finite_result(what: str, value: Any) -> float:
    """``value`` as a float when it is a finite number; a model returning NaN is refused.

    Raises:
        UsageError: not a finite number.
    """
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} returned {value!r}, not a number; fix the model") from None
    if not math.isfinite(result) or result < 0:
        raise UsageError(f"{what} returned {result}, not a finite latency in ms; fix the model")
    return result


def instance(name: str, value: Any, kind: type | tuple[type, ...], want: str, *, none_ok: bool = True) -> None:
    """``value`` is a ``kind`` (a protocol config, a mapping of options...).

    Raises:
        ArgumentTypeError: it is not.
    """
    if value is None and none_ok:
        return
    if not isinstance(value, kind):
        raise ArgumentTypeError(_say(name, value, want))


def mapping(name: str, value: Any, *, none_ok: bool = True) -> None:
    """``value`` is a dict whose keys are texts (options passed on by name).

    Raises:
        ArgumentTypeError: not such a dict.
    """
    if value is None and none_ok:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ArgumentTypeError(_say(name, value, "a dict of options by name"))


def known_options(verb: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Every keyword option in ``given`` is one ``verb`` takes.

    Raises:
        ArgumentTypeError: one is not (a misspelt option would otherwise fail deep
            inside, or be ignored).
    """
    allowed = sorted(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ArgumentTypeError(f"{verb}() takes no option {unknown[0]!r}; its options are {', '.join(allowed)}")


def options(given: dict[str, Any], checks: dict[str, Callable[[str, Any], None]]) -> None:
    """Run ``checks[key]`` on every ``given`` keyword option it names (the others are left to the callee)."""
    for key, value in given.items():
        if key in checks:
            checks[key](key, value)
