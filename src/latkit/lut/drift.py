"""Is a device still in the state its LUT was measured in? Re-measure a few of its operators.

A LUT holds what the device ran when it was profiled; later, the same device may
run slower or faster (load from other programs on a shared host, a warm phone,
another clock). :func:`measure_drift` re-measures a few *reference operators*
(:func:`reference_ops`: the slowest measured rows among a network's operators)
with the same protocol, and reports the median ratio ``now / LUT``: the
device's *drift*. It is about 1.0 when the device runs as it did when profiled
(on a quiet host it stays within a few percent of 1); outside
``1 +- DRIFT_TOLERANCE`` a whole-network measurement taken now says more about
the machine's state than about the network. ``benchmarks/target_hit.py`` prints
the drift measured around each exported network.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from latkit.devices.base import Device
from latkit.devices.precision import Precision
from latkit.lut.store import SOURCE_MEASURED, LUT
from latkit.profiler.ops import OpSpec

DRIFT_TOLERANCE = 0.10  # |drift - 1| beyond which the device is not in its profiled state
REFERENCE_OPS = 3  # reference operators re-measured by default


@dataclass(frozen=True)
class Reference:
    """A LUT operator re-measured to check the device's state."""

    spec: OpSpec
    lut_ms: float
    precision: Precision = Precision.FP32  # the LUT row's, and what the op is rebuilt at


@dataclass
class Drift:
    """The device's speed now relative to its LUT: median of ``now / lut`` over the references."""

    ratio: float
    ops: list[dict[str, Any]]

    @property
    def steady(self) -> bool:
        """Whether the device runs as it did when profiled (within the tolerance)."""
        return abs(self.ratio - 1.0) <= DRIFT_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ratio": self.ratio, "steady": self.steady, "tolerance": DRIFT_TOLERANCE, "ops": self.ops}


def reference_ops(
    lut: LUT,
    device: str,
    keys: Iterable[str],
    n: int = REFERENCE_OPS,
    *,
    precision: Precision = Precision.FP32,
) -> list[Reference]:
    """The ``n`` slowest of ``keys`` that ``lut`` holds as measurements on ``device`` at ``precision``.

    The slowest operators are the ones whose timing is least dominated by fixed
    per-run costs, and they are the ones that weigh most in the network.
    Predicted rows are skipped: a reference must be a figure this device produced.
    """
    wanted = list(dict.fromkeys(keys))
    sources = lut.sources(wanted, device, precision=precision)
    measured = [
        (lut.latency_ms(k, device, precision=precision), k) for k in wanted if sources.get(k) == SOURCE_MEASURED
    ]
    measured.sort(reverse=True)
    return [Reference(lut.spec(k), ms, precision) for ms, k in measured[:n]]


def measure_drift(device: Device, refs: Sequence[Reference], protocol: Any) -> Drift | None:
    """Re-measure ``refs`` on ``device`` (one interleaved run, each at its precision); None without references."""
    from latkit.profiler.export import BuiltModel
    from latkit.profiler.protocol import measure_many

    if not refs:
        return None
    got = measure_many(device, [BuiltModel(r.spec, precision=r.precision) for r in refs], protocol)
    ops = [{"key": r.spec.key, "precision": r.precision, "lut_ms": r.lut_ms, "now_ms": m.latency_ms,
            "ratio": m.latency_ms / r.lut_ms}
           for r, m in zip(refs, got)]  # fmt: skip
    return Drift(statistics.median(o["ratio"] for o in ops), ops)


def combined(before: Drift | None, after: Drift | None) -> Drift | None:
    """One reading from two (before and after a measurement): their mean ratio, all their ops."""
    if before is None or after is None:
        return before or after
    return Drift((before.ratio + after.ratio) / 2, before.ops + after.ops)


__all__ = ["DRIFT_TOLERANCE", "REFERENCE_OPS", "Drift", "Reference", "combined", "measure_drift", "reference_ops"]
