"""Profile a list of operators into a sink (a LUT), resumably.

:func:`profile_ops` is what ``latkit profile`` runs: it skips what the sink
already holds for the device, exports and measures the rest with
:func:`~latkit.profiler.protocol.measure_many`, and commits each result as it
finishes. An op that fails (export error, runtime error) is recorded as
failed with its reason; the run goes on and nothing measured is lost.

With ``passes > 1`` the op list is measured that many times over, each time
in fresh sessions, and each op keeps its lowest figure, as calibration does
for whole networks (:func:`latkit.lut.calibrate.measure_passes`). On a
shared host other processes slow even a thread-CPU-time figure down (cache
and memory contention, which the thread clock does not remove), in episodes
that can outlast one op's whole measurement; passes some seconds apart let an
op escape one episode, and since load only ever slows a run down, the lowest
figure is the one closest to the op's own speed. Every pass's figure is kept
in the row's provenance (``passes_ms``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latkit.core.reprs import short_repr
from latkit.devices.base import Device
from latkit.devices.precision import Precision, check_precision
from latkit.core.errors import UsageError
from latkit.profiler.export import BuiltModel
from latkit.profiler.measurement import Measurement, MeasurementSink
from latkit.profiler.ops import OpSpec, measurable_by_key
from latkit.profiler.protocol import ProtocolConfig, measure_many

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str, "Measurement | None"], None]


@dataclass
class ProfileReport:
    """What one profiling run did."""

    device: str
    precision: Precision = Precision.FP32
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

    def __repr__(self) -> str:
        return short_repr(self, 'device', 'precision', 'measured', 'skipped', 'failed', 'left', 'elapsed_s')


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def profile_ops(
    device: Device,
    specs: Iterable[OpSpec],
    sink: MeasurementSink,
    config: ProtocolConfig | None = None,
    limit: int | None = None,
    on_progress: ProgressFn | None = None,
    *,
    cache_dir: Path | str | None = None,
    precision: Precision = Precision.FP32,
    passes: int = 1,
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
        precision: the ops are built (quantized)
            at it and stored at it; the device must run it.
        passes: measure the ops this many times over, in fresh sessions, and
            store each op's lowest figure (its provenance lists every pass's
            figure in ``passes_ms``); the last pass commits, or, when the run stops
            before it, the passes measured so far.

    Returns:
        The report: measured, skipped, failed (with reasons), unconverged.

    Raises:
        UsageError: a bad limit or number of passes, or a precision the device does not run.
    """
    p = check_precision(device, precision)
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise UsageError(f"passes must be an integer >= 1, got {passes!r}")
    t0 = time.perf_counter()
    unique = measurable_by_key(specs)
    done = sink.done_keys(device.uri, precision=p)
    report = ProfileReport(device=device.uri, precision=p)
    report.skipped = [k for k in unique if k in done]
    todo = [s for k, s in unique.items() if k not in done]
    if limit is not None:
        report.left = max(0, len(todo) - limit)
        todo = todo[:limit]
    log.info("profiling %d op(s) on %s at %s (%d already done, %d left for later)",
             len(todo), device.uri, p, len(report.skipped), report.left)  # fmt: skip

    models = [BuiltModel(spec, cache_dir=cache_dir, precision=p) for spec in todo]
    results = _measure(device, models, {s.key: s for s in todo}, sink, config, on_progress, passes, report.failed)
    report.measured = [m.key for m in results]
    report.unconverged = [m.key for m in results if not m.converged]
    report.elapsed_s = time.perf_counter() - t0
    return report


def _measure(device: Device, models: list[BuiltModel], specs: dict[str, OpSpec], sink: MeasurementSink,
             config: ProtocolConfig | None, on_progress: ProgressFn | None, passes: int,
             failed: dict[str, str]) -> list[Measurement]:
    """``models`` measured ``passes`` times over, each op's lowest figure stored; failures go to ``failed``."""

    def on_error(key: str, exc: BaseException) -> None:
        failed[key] = _reason(exc)

    earlier: dict[str, list[Measurement]] = {}
    n = len(models)
    try:
        for k in range(passes - 1):  # the earlier passes: stored only if the run stops before the last
            models = [m for m in models if m.key not in failed]
            for m in measure_many(device, models, config, None, _offset(on_progress, k, passes, n),
                                  on_error=on_error):  # fmt: skip
                earlier.setdefault(m.key, []).append(m)
    except BaseException:  # an unreachable device, Ctrl-C: what the passes so far measured is kept
        _store_lowest(device, models, specs, sink, earlier)
        raise
    results = measure_many(
        device, [m for m in models if m.key not in failed], config,
        _LowestSink(sink, earlier) if earlier else sink, _offset(on_progress, passes - 1, passes, n),
        specs=specs, on_error=on_error,
    )  # fmt: skip
    return [_lowest(m, earlier.get(m.key, [])) for m in results]


def _offset(on_progress: ProgressFn | None, k: int, passes: int, n: int) -> ProgressFn | None:
    """``on_progress`` of pass ``k`` of ``passes`` over ``n`` ops: counted on from the passes before it.

    An op that failed in an earlier pass is left out of the later ones; it counts as done in them, so
    the count never goes back and the total stays ``passes * n``.
    """
    if on_progress is None or passes == 1:
        return on_progress

    def progress(done: int, total: int, key: str, m: Measurement | None) -> None:
        on_progress(k * n + (n - total) + done, passes * n, key, m)

    return progress


def _store_lowest(device: Device, models: list[BuiltModel], specs: dict[str, OpSpec], sink: MeasurementSink,
                  earlier: dict[str, list[Measurement]]) -> None:
    """Commit each op's lowest figure of the passes measured so far (a run stopped before its last pass)."""
    info = device.info().to_dict()
    precision = {m.key: m.precision for m in models}
    for key, figures in earlier.items():
        if key in specs and key in precision:
            sink.add(specs[key], _lowest(figures[-1], figures[:-1]), info, precision=precision[key])


def _lowest(last: Measurement, earlier: list[Measurement]) -> Measurement:
    """The lowest of an op's figures over the passes, its provenance naming every pass's figure."""
    if not earlier:
        return last
    best = min([*earlier, last], key=lambda m: m.latency_ms)
    figures = [m.latency_ms for m in [*earlier, last]]
    return replace(best, provenance={**best.provenance, "passes_ms": figures})


class _LowestSink:
    """A sink that stores, for each op, the lowest of its figures over the passes."""

    def __init__(self, inner: MeasurementSink, earlier: dict[str, list[Measurement]]) -> None:
        self.inner, self.earlier = inner, earlier

    def done_keys(self, device_uri: str, *, precision: Precision = Precision.FP32) -> set[str]:
        return self.inner.done_keys(device_uri, precision=precision)

    def add(self, spec: OpSpec, measurement: Measurement, device: dict[str, Any], *,
            precision: Precision = Precision.FP32) -> None:
        self.inner.add(spec, _lowest(measurement, self.earlier.get(measurement.key, [])), device,
                       precision=precision)
