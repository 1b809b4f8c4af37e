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

Operators are a weak witness of a contended host: under load from other
processes a whole network slows down far more than an isolated operator does
(cache and memory-bandwidth contention grow with the working set), so the
reference operators can read "steady" while a whole network runs far slower.
:class:`HostReading` is the network-level witness: the network being judged
and a *calibration network* (one the device's calibration measured, with its
figure stored there) timed side by side in the same fresh sessions. The
calibration network's ratio ``now / stored`` in a session is the host's state
for that session, and the judged network's figure divided by it is what the
network would have measured in the calibration's state, the state every
prediction of the LUT refers to. When that ratio is beyond
:data:`CONTENDED_RATIO` either way, or the sessions' corrected figures
disagree by more than :data:`SESSIONS_AGREE`, the host is too contended to
judge (:attr:`HostReading.unjudgeable` says why).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from latkit.core.errors import UsageError
from latkit.devices.base import Device
from latkit.devices.precision import Precision
from latkit.lut.store import SOURCE_MEASURED, LUT
from latkit.profiler.ops import OpSpec

DRIFT_TOLERANCE = 0.10  # |drift - 1| beyond which the device is not in its profiled state
REFERENCE_OPS = 3  # reference operators re-measured by default
CONTENDED_RATIO = 1.75  # a calibration network reading beyond this factor of its stored figure: not correctable
SESSIONS_AGREE = 0.15  # corrected figures of one reading's sessions further apart than this: they disagree
HOST_SESSIONS = 2  # fresh sessions in one reading of the host (as the calibration's two passes)


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


@dataclass(frozen=True)
class CalibrationNetwork:
    """A network the device's calibration measured end to end, and the figure it stored for it."""

    model: Any  # a ModelSource of the network, at the calibration's precision
    name: str
    stored_ms: float


@dataclass(frozen=True)
class HostReading:
    """A judged network and a calibration network timed side by side, one figure each per fresh session."""

    network_ms: tuple[float, ...]  # the judged network, one figure per session
    calibration_ms: tuple[float, ...]  # the calibration network, in the same sessions
    stored_ms: float  # the calibration network's figure in the calibration

    def __post_init__(self) -> None:
        if not self.network_ms or len(self.network_ms) != len(self.calibration_ms):
            raise UsageError("a host reading needs one judged and one calibration figure per session")

    @property
    def ratios(self) -> list[float]:
        """The host's state in each session: the calibration network now / its stored figure."""
        return [c / self.stored_ms for c in self.calibration_ms]

    @property
    def ratio(self) -> float:
        """The network-level drift: the median of :attr:`ratios`."""
        return statistics.median(self.ratios)

    @property
    def corrected(self) -> list[float]:
        """Each session's figure of the judged network, divided by that session's ratio."""
        return [n / r for n, r in zip(self.network_ms, self.ratios)]

    @property
    def corrected_ms(self) -> float:
        """The judged network's figure in the calibration's state: the median of :attr:`corrected`."""
        return statistics.median(self.corrected)

    @property
    def spread(self) -> float:
        """How far the sessions' corrected figures disagree: ``max / min - 1``."""
        return max(self.corrected) / min(self.corrected) - 1

    @property
    def unjudgeable(self) -> str:
        """Why this reading cannot judge the network ("" when it can)."""
        if not 1 / CONTENDED_RATIO <= self.ratio <= CONTENDED_RATIO:
            return (f"the calibration network read {self.ratio:.2f}x its stored {self.stored_ms:.3f} ms, beyond "
                    f"the {CONTENDED_RATIO:g}x a correction can bridge")  # fmt: skip
        if self.spread > SESSIONS_AGREE:
            return (f"{len(self.network_ms)} fresh sessions disagree by {self.spread:.0%} after correction "
                    f"(more than {SESSIONS_AGREE:.0%})")  # fmt: skip
        return ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived figures."""
        return {"network_ms": list(self.network_ms), "calibration_ms": list(self.calibration_ms),
                "stored_ms": self.stored_ms, "ratio": self.ratio, "corrected_ms": self.corrected_ms,
                "spread": self.spread, "unjudgeable": self.unjudgeable}  # fmt: skip


def read_host(device: Device, network: Any, calibration: CalibrationNetwork, protocol: Any,
              sessions: int = HOST_SESSIONS) -> HostReading:  # fmt: skip
    """Time ``network`` beside ``calibration``'s network in ``sessions`` fresh sessions (one pool each).

    Both models share each session's pool, interleaved, so load that comes and
    goes during a session falls on both alike.
    """
    from latkit.profiler.protocol import measure_many

    network_ms, calibration_ms = [], []
    for _ in range(sessions):
        got = measure_many(device, [network, calibration.model], protocol)
        network_ms.append(got[0].latency_ms)
        calibration_ms.append(got[1].latency_ms)
    return HostReading(tuple(network_ms), tuple(calibration_ms), calibration.stored_ms)


__all__ = ["CONTENDED_RATIO", "DRIFT_TOLERANCE", "HOST_SESSIONS", "REFERENCE_OPS", "SESSIONS_AGREE",
           "CalibrationNetwork", "Drift", "HostReading", "Reference", "combined", "measure_drift", "read_host",
           "reference_ops"]
