"""Profile a list of operators into a sink (a LUT), resumably.

:func:`profile_ops` is what ``latkit profile`` runs: it skips what the sink
already holds for the device, exports and measures the rest with
:func:`~latkit.profiler.protocol.measure_many`, and commits each result as it
finishes. An op that fails (export error, runtime error) is recorded as
failed with its reason; the run goes on and nothing measured is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from latkit.devices.base import Device
from latkit.devices.precision import Precision, check_precision
from latkit.errors import UsageError
from latkit.profiler.export import BuiltModel
from latkit.profiler.measurement import MeasurementSink
from latkit.profiler.ops import OpSpec
from latkit.profiler.protocol import ProtocolConfig, measure_many

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str, "Measurement | None"], None]


@dataclass
class ProfileReport:
    """What one profiling run did."""

    device: str
    precision: str = "fp32"
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the sink
    failed: dict[str, str] = field(default_factory=dict)  # key -> one-line reason
    unconverged: list[str] = field(default_factory=list)  # measured, but hit a cap
    left: int = 0  # not attempted because of ``limit``
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _unique_measurable(specs: Iterable[OpSpec]) -> dict[str, OpSpec]:
    """The measurable ops of ``specs`` by key, first occurrence kept, in order."""
    unique: dict[str, OpSpec] = {}
    for spec in specs:
        if spec.measurable:
            unique.setdefault(spec.key, spec)
    return unique


def profile_ops(
    device: Device,
    specs: Iterable[OpSpec],
    sink: MeasurementSink,
    config: ProtocolConfig | None = None,
    limit: int | None = None,
    on_progress: ProgressFn | None = None,
    *,
    cache_dir: Path | str | None = None,
    precision: str | Precision = Precision.FP32,
) -> ProfileReport:
    """Measure every measurable op of ``specs`` on ``device`` that ``sink`` lacks.

    Args:
        device: where to measure.
        specs: the operators (free ops and repeated keys are dropped).
        sink: where each measurement is committed (e.g. a :class:`latkit.lut.store.LUT`).
        config: protocol settings.
        limit: measure at most this many ops in this run (the rest stay for a
            later, resumed run).
        on_progress: ``(done, total, key, measurement or None)`` after each op
            (``total`` counts the ops this run attempts).
        cache_dir: where exported models are cached (default the export cache).
        precision: ``fp32``, ``fp16`` or ``int8``: the ops are built (quantized)
            at it and stored at it; the device must run it.

    Returns:
        The report: measured, skipped, failed (with reasons), unconverged.

    Raises:
        UsageError: a bad limit, or a precision the device does not run.
    """
    p = check_precision(device, precision)
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")
    t0 = time.perf_counter()
    unique = _unique_measurable(specs)
    done = sink.done_keys(device.uri, precision=p.value)
    report = ProfileReport(device=device.uri, precision=p.value)
    report.skipped = [k for k in unique if k in done]
    todo = [s for k, s in unique.items() if k not in done]
    if limit is not None:
        report.left = max(0, len(todo) - limit)
        todo = todo[:limit]
    log.info("profiling %d op(s) on %s at %s (%d already done, %d left for later)",
             len(todo), device.uri, p.value, len(report.skipped), report.left)  # fmt: skip

    def on_error(key: str, exc: BaseException) -> None:
        report.failed[key] = _reason(exc)

    models = [BuiltModel(spec, cache_dir=cache_dir, precision=p) for spec in todo]
    results = measure_many(
        device, models, config, sink, on_progress,
        specs={s.key: s for s in todo}, on_error=on_error,
    )  # fmt: skip
    report.measured = [m.key for m in results]
    report.unconverged = [m.key for m in results if not m.converged]
    report.elapsed_s = time.perf_counter() - t0
    return report
