"""Latency datasets: one row per architecture, one latency column (ms) per device (a CSV).

The format is HW-NAS-Bench's as shipped in ``fbnet_latency_ms.csv``: an optional
``arch_index`` column, an ``arch`` column holding the architecture in the space's
native text form, then one column per device. A user's own measurements of the
same architectures on a new device come as a second CSV with ``arch`` and that
device's column; :func:`join_column` attaches it by ``arch``.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import check_input_file, one_line
from latkit.core.errors import ArchError, ParseError, UnknownNameError, UsageError

log = logging.getLogger(__name__)

ARCH_COLUMN = "arch"
INDEX_COLUMN = "arch_index"
_MISSING_WORDS = ("na", "n/a", "none", "null", "missing")  # refused with the empty-cell hint


@dataclass(frozen=True)
class LatencyDataset:
    """Architectures and their latencies (ms) on several devices.

    ``latency_ms[i, j]`` is the latency of ``archs[i]`` on ``devices[j]``; a
    missing measurement is NaN.
    """

    archs: tuple[str, ...]
    devices: tuple[str, ...]
    latency_ms: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        if self.latency_ms.shape != (len(self.archs), len(self.devices)):
            raise UsageError(
                f"latency dataset shape {self.latency_ms.shape} does not match "
                f"{len(self.archs)} archs x {len(self.devices)} devices"
            )

    def __len__(self) -> int:
        return len(self.archs)

    def column(self, device: str, *, allow_nan: bool = False) -> np.ndarray:
        """The latencies (ms) of one device.

        Raises:
            UnknownNameError: no such column.
            UsageError: the column has missing values and ``allow_nan`` is False.
        """
        return self.columns([device], allow_nan=allow_nan)[:, 0]

    def columns(self, devices: list[str] | tuple[str, ...], *, allow_nan: bool = False) -> np.ndarray:
        """The latencies (ms) of several devices, ``[n_archs, len(devices)]``.

        Raises:
            UnknownNameError: a name that is not a column of the table.
            UsageError: missing values in a column and ``allow_nan`` is False.
        """
        idx = []
        for d in devices:
            if d not in self.devices:
                raise UnknownNameError(f"device column in {self.source or 'the table'}", d, self.devices)
            idx.append(self.devices.index(d))
        out = self.latency_ms[:, idx]
        if not allow_nan:
            bad = ~np.isfinite(out)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise UsageError(
                    f"{int(bad.sum())} missing/NaN latency value(s) in column {devices[col]!r} "
                    f"(first at data row {row + 1}); drop those rows or fill them in"
                )
        return out

    def rows(self, index: np.ndarray | list[int]) -> LatencyDataset:
        """A dataset of the selected rows."""
        index = np.asarray(index, dtype=np.int64)
        return LatencyDataset(
            tuple(self.archs[i] for i in index), self.devices, self.latency_ms[index], self.source
        )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header (empty in an empty file) and the non-blank rows of a CSV file."""
    if path.exists():  # a FIFO would block, /dev/zero never end (a missing file is named below)
        check_input_file(path, "latency CSV")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            body = [r for r in reader if r and any(cell.strip() for cell in r)]
    except FileNotFoundError:
        raise UsageError(f"latency CSV {path} not found; pass an existing file") from None
    except UnicodeDecodeError:
        raise ParseError(f"latency CSV {path} is not UTF-8 text; give a CSV file") from None
    except (OSError, csv.Error) as exc:
        raise ParseError(f"cannot read latency CSV {path}: {one_line(exc)}") from exc
    return header, body


def _device_columns(path: Path, header: list[str]) -> list[int]:
    """The indices of the device columns of a checked header."""
    if not header or ARCH_COLUMN not in header:
        raise ParseError(f"{path} has no {ARCH_COLUMN!r} column; expected header arch,<device>,...")
    seen: set[str] = set()
    for name in (h.strip() for h in header):
        if name in seen:
            raise ParseError(f"{path}: column {name!r} appears twice in the header; rename or drop one")
        seen.add(name)
    dev_cols = [i for i, h in enumerate(header) if h not in (ARCH_COLUMN, INDEX_COLUMN)]
    if not dev_cols:
        raise ParseError(f"{path} has no device column beside {ARCH_COLUMN!r}")
    return dev_cols


def _latency_cell(cell: str, where: str) -> float:
    """One latency cell (``where``: its file, line and column): ms, or NaN when empty."""
    if cell == "":
        return math.nan  # not measured: checked where the column is used
    try:
        value = float(cell)
    except ValueError:
        if cell.lower() in _MISSING_WORDS:
            value = math.nan
        else:
            raise ParseError(f"{where}: {cell!r} is not a number") from None
    if math.isnan(value):  # "nan" is no measurement; an empty cell says "not measured"
        raise ParseError(
            f"{where}: latency {cell!r} is not a number; "
            "leave the cell empty if that arch was not measured"
        )
    if not (math.isfinite(value) and value > 0):
        raise ParseError(
            f"{where}: latency {cell!r} ms is not a positive "
            "finite number; drop or fix that row"
        )
    return value


def read_latency_csv(path: str | Path) -> LatencyDataset:
    """Read a latency CSV (``[arch_index,] arch, <device>...``).

    An empty latency cell is an arch not measured on that device (NaN in the
    table); any other cell must be a positive finite number of milliseconds.

    Raises:
        UsageError: the file is missing.
        ParseError: no ``arch`` column, no device column, a column named twice,
            or a cell that is not a positive finite number (``nan`` included).
    """
    path = Path(path)
    header, body = _read_rows(path)
    dev_cols = _device_columns(path, header)
    arch_col = header.index(ARCH_COLUMN)
    if not body:
        raise ParseError(f"{path} has a header but no rows")
    lat = np.full((len(body), len(dev_cols)), np.nan)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise ParseError(
                f"{path} line {r + 2} has {len(row)} fields, the header has {len(header)}"
            )
        for j, c in enumerate(dev_cols):
            lat[r, j] = _latency_cell(row[c].strip(), f"{path} line {r + 2}, column {header[c]!r}")
    archs = tuple(row[arch_col].strip() for row in body)
    _check_duplicates(path, archs, tuple(header[c] for c in dev_cols), lat)
    return LatencyDataset(archs, tuple(header[c] for c in dev_cols), lat, str(path))


def _check_duplicates(path: Path, archs: tuple[str, ...], devices: tuple[str, ...], lat: np.ndarray) -> None:
    """Refuse an architecture listed twice with different latencies (identical repeats are kept)."""
    first: dict[str, int] = {}
    for r, arch in enumerate(archs):
        if not arch:
            raise ParseError(f"{path} line {r + 2}: the {ARCH_COLUMN!r} cell is empty")
        if arch not in first:
            first[arch] = r
            continue
        f = first[arch]
        a, b = lat[f], lat[r]
        both = np.isfinite(a) & np.isfinite(b)
        if np.any(both & (a != b)):
            j = int(np.argmax(both & (a != b)))
            raise ParseError(
                f"{path} lines {f + 2} and {r + 2} list the same arch with different {devices[j]!r} "
                f"latencies ({a[j]:g} vs {b[j]:g} ms); keep one row per architecture"
            )


def join_column(dataset: LatencyDataset, other: LatencyDataset, device: str) -> np.ndarray:
    """``device``'s latencies from ``other`` aligned to ``dataset``'s rows by ``arch`` text.

    Rows of ``dataset`` that ``other`` does not hold are NaN (not measured).

    Raises:
        UnknownNameError: ``other`` has no such column.
        UsageError: ``other`` shares no architecture with ``dataset``.
    """
    col = other.column(device, allow_nan=True)
    by_arch = {a: v for a, v in zip(other.archs, col) if np.isfinite(v)}
    out = np.array([by_arch.get(a, np.nan) for a in dataset.archs])
    if not np.isfinite(out).any():
        raise UsageError(
            f"{other.source or 'the target CSV'} shares no 'arch' value with "
            f"{dataset.source or 'the latency CSV'}; write the archs exactly as in that CSV"
        )
    return out


def encode_archs(space_name: str, archs: list[str] | tuple[str, ...]) -> np.ndarray:
    """One-hot encodings ``[n, d]`` of architectures given in native text.

    Raises:
        UnknownNameError: no such space.
        ArchError: an architecture that does not parse, naming its row.
    """
    from latkit.profiler.spaces import get_space

    space = get_space(space_name)
    out = []
    cache: dict[str, np.ndarray] = {}
    for i, text in enumerate(archs):
        if text not in cache:
            try:
                cache[text] = space.encode(space.parse_arch(text))
            except ArchError as exc:
                raise ArchError(f"arch #{i + 1} ({text[:60]!r}): {exc}") from None
        out.append(cache[text])
    return np.stack(out).astype(np.float32)


def check_unique_archs(space_name: str, dataset: LatencyDataset) -> list:
    """Parse every arch of ``dataset``; refuse one architecture written twice with other latencies.

    Two rows may spell the same architecture differently (spacing, list or
    text form); they are compared after parsing.

    Returns:
        The parsed architectures, in row order.

    Raises:
        ArchError: an arch that does not parse, naming its row.
        ParseError: the same architecture on two rows with different latencies.
    """
    parsed = parse_archs(space_name, dataset.archs)
    first: dict[Any, int] = {}
    for r, arch in enumerate(parsed):
        f = first.setdefault(arch, r)
        if f == r:
            continue
        a, b = dataset.latency_ms[f], dataset.latency_ms[r]
        differ = np.isfinite(a) & np.isfinite(b) & (a != b)
        if differ.any():
            j = int(np.argmax(differ))
            raise ParseError(
                f"{dataset.source or 'the dataset'} lines {f + 2} and {r + 2} hold the same architecture "
                f"with different {dataset.devices[j]!r} latencies ({a[j]:g} vs {b[j]:g} ms); "
                "keep one row per architecture"
            )
    return parsed


def parse_archs(space_name: str, archs: list[str] | tuple[str, ...]) -> list:
    """:class:`~latkit.profiler.spaces.base.Arch` objects from native text, with row numbers in errors."""
    from latkit.profiler.spaces import get_space

    space = get_space(space_name)
    out = []
    for i, text in enumerate(archs):
        try:
            out.append(space.parse_arch(text))
        except ArchError as exc:
            raise ArchError(f"arch #{i + 1} ({str(text)[:60]!r}): {exc}") from None
    return out
