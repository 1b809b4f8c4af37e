"""What a LUT measurement row is, and the check every row passes before it is stored.

:func:`check_row` is the one gate: :meth:`~latkit.lut.store.LUT.put_row` (every
profiled, predicted or imported row) calls it, and the JSON / yaml imports call
it on every row before writing anything, naming the row that fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from latkit.devices.precision import PRECISIONS, Precision, parse_precision
from latkit.core.errors import StoreError, UsageError

# the per-measurement numeric columns, in table order; None = not known (imported tables)
STAT_COLUMNS = (
    "latency_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p10_ms", "p90_ms", "mad_ms",
    "ci_low_ms", "ci_high_ms", "rel_ci", "n_samples", "n_outliers", "iterations", "converged",
)  # fmt: skip
ROW_FIELDS = ("op_key", "device_uri", "precision", *STAT_COLUMNS, "samples_ms", "provenance", "source",
              "created_at")  # fmt: skip


_COUNT_COLUMNS = ("n_samples", "n_outliers", "iterations")
_TEXT_FIELDS = ("op_key", "device_uri", "source")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: no operator takes 1000 s: a larger "latency" is a unit mix-up or garbage
MAX_LATENCY_MS = 1e6


def valid_latency(value: Any) -> bool:
    """A latency a LUT may hold: a number of milliseconds > 0 and < :data:`MAX_LATENCY_MS`."""
    return _is_number(value) and math.isfinite(value) and 0 < value < MAX_LATENCY_MS


def _precision(value: Any, bad: Callable[[str], StoreError]) -> Precision:
    """A row's precision; absent in a row of a LUT or export from before precisions: fp32."""
    try:
        return parse_precision(value)
    except UsageError:
        raise bad(f"precision is {value!r}, not one of {', '.join(PRECISIONS)}") from None


def _row_error(where: str) -> Callable[[str], StoreError]:
    """How a bad field of the row named ``where`` is reported."""

    def bad(what: str) -> StoreError:
        return StoreError(f"{where}: {what}; nothing was stored, fix or remove that row")

    return bad


def _check_stat(column: str, value: Any, bad: Callable[[str], StoreError]) -> float | int | None:
    """One statistic other than the latency and ``converged``, as stored (non-finite: unknown)."""
    if not _is_number(value):
        raise bad(f"{column} is {value!r}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0 and column != "ci_low_ms":
        raise bad(f"{column} is {value!r}; it must not be negative")
    if column in _COUNT_COLUMNS:
        if value != int(value):
            raise bad(f"{column} is {value!r}, not a whole number")
        return int(value)
    return float(value)


def _check_samples(samples: Any, bad: Callable[[str], StoreError]) -> list[float]:
    """The raw samples (absent: none), each a finite number of milliseconds > 0."""
    if samples is None:
        samples = []
    if not isinstance(samples, list):
        raise bad(f"samples_ms is {type(samples).__name__}, not a list of milliseconds")
    for j, v in enumerate(samples):
        if not _is_number(v) or not math.isfinite(v) or v <= 0:
            raise bad(f"samples_ms[{j}] is {v!r}; samples must be finite numbers > 0")
    return [float(v) for v in samples]


def check_row(row: Any, where: str = "measurement") -> dict[str, Any]:
    """Check one measurement row (the form :meth:`LUT.rows` returns) before it is stored.

    ``latency_ms`` must be a finite number > 0; the other statistics are absent
    or finite numbers >= 0 (counts whole numbers), ``converged`` a boolean,
    ``samples_ms`` a list of finite numbers > 0, ``provenance`` an object, the
    key, device and source non-empty text, ``precision`` one of fp32, fp16, int8
    (absent: fp32) and ``created_at`` text. Non-finite
    statistics other than the latency (a protocol's NaN CI) are stored as unknown.

    Args:
        row: the row.
        where: how the message names the row (``"file.json: measurement #3"``).

    Returns:
        The row with only :data:`ROW_FIELDS`, statistics as floats / ints, ``precision``
        a :class:`~latkit.devices.precision.Precision`.

    Raises:
        StoreError: the first field that is missing or of the wrong type or value.
    """

    bad = _row_error(where)
    if not isinstance(row, dict):
        raise bad(f"is {type(row).__name__}, not an object")
    out = {f: row.get(f) for f in ROW_FIELDS}
    missing = [f for f in ("op_key", "device_uri", "latency_ms", "source") if out[f] is None]
    if missing:
        raise StoreError(f"{where} lacks {', '.join(missing)}; nothing was stored, fix or remove that row")
    for f in _TEXT_FIELDS:
        if not isinstance(out[f], str) or not out[f].strip():
            raise bad(f"{f} is {out[f]!r}, not a non-empty text")
    out["precision"] = _precision(out["precision"], bad)
    bad = _row_error(f"{where} ({out['op_key']} on {out['device_uri']}, {out['precision']})")
    lat = out["latency_ms"]
    if not valid_latency(lat):
        raise bad(f"latency_ms is {lat!r}; it must be a number of milliseconds > 0 and < {MAX_LATENCY_MS:g}")
    out["latency_ms"] = float(lat)
    for c in STAT_COLUMNS[1:]:
        if out[c] is not None and c != "converged":
            out[c] = _check_stat(c, out[c], bad)
    conv = out["converged"]
    if conv is not None and not isinstance(conv, bool) and conv not in (0, 1):
        raise bad(f"converged is {conv!r}, not true or false")
    out["samples_ms"] = _check_samples(out["samples_ms"], bad)
    prov = out["provenance"]
    if prov is not None and not isinstance(prov, dict):
        raise bad(f"provenance is {type(prov).__name__}, not an object")
    if out["created_at"] is not None and not isinstance(out["created_at"], str):
        raise bad(f"created_at is {out['created_at']!r}, not an ISO 8601 text")
    return out
