"""Small rules shared by the MobileNet-family spaces and the net.config reader."""

from __future__ import annotations

from collections.abc import Iterable

from latkit.core.errors import UsageError
from latkit.profiler.ops import OpSpec, measurable_by_key


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (the MobileNet / OFA rule).

    Rounds to the nearest multiple, never below ``min_value`` (default ``divisor``),
    and goes one step up when rounding would lose more than 10% of ``value``. Used
    for the spaces' widths and the modules' squeeze-excite widths alike.
    """
    new = max(divisor if min_value is None else min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution or pooling of ``stride``."""
    return (size - 1) // stride + 1


def check_resolution(value: object, lowest: int, multiple: int, space: str) -> int:
    """Validate an input resolution: an int >= ``lowest`` divisible by ``multiple``.

    Raises:
        UsageError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{space}: resolution must be an integer, got {value!r}")
    if value < lowest or value % multiple:
        raise UsageError(
            f"{space}: resolution {value} is not supported; use a multiple of {multiple} "
            f"that is at least {lowest}"
        )
    return value


def distinct_measurable(specs: Iterable[OpSpec]) -> list[OpSpec]:
    """The specs that cost time, first occurrence of each key kept, order preserved."""
    return list(measurable_by_key(specs).values())
