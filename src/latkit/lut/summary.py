"""What a LUT holds, grouped as ``latkit lut show`` reports it (and :func:`latkit.show_lut` returns it).

:func:`describe` adds to :meth:`~latkit.lut.store.LUT.summary` one group per
device, precision, search space and resolution (a network's operators at one
resolution, each with its own statistics and sum: latencies of different spaces,
resolutions or precisions are never summed together) and the count of rows with
a delegation warning and the statistic its latencies are (``p5``, ``median``...)
per device and precision.
"""

from __future__ import annotations

import re
import statistics
from typing import TYPE_CHECKING, Any

from latkit.core.errors import LatkitError

if TYPE_CHECKING:
    from latkit.devices.precision import Precision
    from latkit.lut.store import LUT


def describe(store: LUT) -> tuple[dict[str, Any], list[dict], set[tuple[str, str]]]:
    """``(summary, rows, invalid)`` of ``store``: the summary with its ``groups``, delegation
    warnings and statistics (a device's ``total_ms`` left out: it would add up several networks), every row
    (invalid ones kept), and the ``(op_key, device_uri)`` of the rows with an invalid latency."""
    summary = store.summary()
    listing = store.rows(invalid="keep")
    bad = {(k, u) for k, u, _ in store.invalid_rows()}
    _count_warnings(summary, listing)
    _name_statistics(summary, listing)
    summary["groups"] = network_groups(listing, bad)
    for d in summary.get("devices", []):
        d.pop("total_ms", None)
    return summary, listing, bad


def _space_keys(listing: list[dict]) -> list[tuple[str, int, set[str]]]:
    """``(space, resolution, operator keys)`` of every registered space at every network
    resolution the LUT's keys show (a 3-channel input), most rows of ``listing`` first."""
    from latkit.profiler.spaces import get_space, list_spaces

    keys = {r["op_key"] for r in listing}
    resolutions = sorted({int(m.group(1)) for k in keys for m in [re.search(r"input:(\d+)x\1x3(?!\d)", k)] if m})
    found = []
    for name in list_spaces():
        for res in resolutions:
            try:
                ops = {spec.key for spec in get_space(name).operators(res)} & keys
            except (LatkitError, ValueError):  # a space without a table, or not at this resolution
                continue
            if ops:
                found.append((name, res, ops))
    return sorted(found, key=lambda f: -len(f[2]))


def network_groups(listing: list[dict], bad: set[tuple[str, str]]) -> list[dict]:
    """Rows grouped per device, precision, search space and resolution (a network's
    operators at one resolution), each with its own statistics and total: latencies of
    different spaces, resolutions or precisions are never summed together. An
    operator of no registered space is grouped under space and resolution ``None``."""
    spaces = _space_keys(listing)
    groups: dict[tuple, list[float]] = {}
    for r in listing:
        where = next(((name, res) for name, res, ops in spaces if r["op_key"] in ops), (None, None))
        group = groups.setdefault((r["device_uri"], r["precision"], *where), [])
        if (r["op_key"], r["device_uri"]) not in bad:
            group.append(float(r["latency_ms"]))
    return [{"device": dev, "precision": prec, "space": space, "resolution": res, "ops": len(ms),
             "min_ms": min(ms, default=None), "median_ms": statistics.median(ms) if ms else None,
             "max_ms": max(ms, default=None), "total_ms": sum(ms) if ms else None}
            for (dev, prec, space, res), ms in sorted(groups.items(), key=lambda g: tuple(map(str, g[0])))]


def delegation_warning(row: dict) -> str:
    """The row's delegation warning (a phone op that fell back to the CPU...), or ''."""
    prov = row.get("provenance")
    warning = prov.get("delegation_warning") if isinstance(prov, dict) else None
    return " ".join(str(warning).split()) if warning else ""


def _count_warnings(summary: dict, listing: list[dict]) -> None:
    """Add ``delegation_warnings`` (rows flagged) to each device/precision entry of ``summary``."""
    counts: dict[tuple[str, Precision], int] = {}
    for r in listing:
        if delegation_warning(r):
            group = (r["device_uri"], r["precision"])
            counts[group] = counts.get(group, 0) + 1
    for d in summary.get("devices", []):
        d["delegation_warnings"] = counts.get((d["uri"], d["precision"]), 0)


def row_statistic(row: dict) -> str:
    """The statistic a row's latency is (``p5``, ``median``...: its protocol's quantile), or '' when not recorded."""
    from latkit.profiler.protocol import short_statistic

    prov = row.get("provenance")
    quantile = (prov.get("protocol") or {}).get("quantile") if isinstance(prov, dict) else None
    return short_statistic(float(quantile)) if isinstance(quantile, (int, float)) else ""


def _name_statistics(summary: dict, listing: list[dict]) -> None:
    """Add ``statistic`` (what its latencies are: ``p5``, ``median``...; '' when not recorded, e.g. imported
    rows) to each device/precision entry of ``summary``."""
    found: dict[tuple[str, Precision], set[str]] = {}
    for r in listing:
        found.setdefault((r["device_uri"], r["precision"]), set()).add(row_statistic(r))
    for d in summary.get("devices", []):
        d["statistic"] = ", ".join(sorted(s for s in found.get((d["uri"], d["precision"]), set()) if s))
