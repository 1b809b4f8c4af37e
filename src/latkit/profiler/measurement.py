"""What one measurement of one model is, and where finished measurements go."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from latkit.core.reprs import short_repr
from latkit.devices.precision import Precision
from latkit.profiler.ops import OpSpec


@dataclass
class Measurement:
    """The latency of one model on one device, with its statistics and provenance.

    ``latency_ms`` is the value a LUT uses: a robust quantile of the samples,
    by default their 5th percentile (a low statistic that preemptions by other
    processes cannot move; see :mod:`latkit.profiler.protocol`, whose
    ``quantile`` setting gives the median at 0.5), and ``ci_low_ms`` /
    ``ci_high_ms`` / ``rel_ci`` are its 95% confidence interval. The other
    figures describe the samples left after outlier rejection. Every sample is
    the mean of ``iterations`` back-to-back runs; ``samples_ms`` keeps all of
    them, outliers included, in the order taken.
    """

    key: str
    latency_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    mad_ms: float
    ci_low_ms: float
    ci_high_ms: float
    rel_ci: float  # half-width of latency_ms's 95% CI, relative to latency_ms
    n_samples: int
    n_outliers: int
    iterations: int
    converged: bool
    samples_ms: list[float] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return short_repr(self, 'key', 'latency_ms', 'rel_ci', 'n_samples', 'converged')

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


class MeasurementSink(Protocol):
    """Where the profiler puts each finished measurement (a LUT store, say).

    The profiler asks which keys are already done (to resume) and hands over
    every measurement as soon as it is taken, so nothing is lost on a crash.
    """

    def done_keys(self, device_uri: str, *, precision: Precision = Precision.FP32) -> set[str]:
        """Keys already measured on this device at this precision."""
        ...

    def add(self, spec: OpSpec, measurement: Measurement, device: dict[str, Any], *,
            precision: Precision = Precision.FP32) -> None:
        """Store one measurement at ``precision`` durably (committed before returning)."""
        ...
