"""The measurement protocol: how latkit turns timer readings into a latency.

A LUT is only useful if building it twice gives the same numbers, and the
machines it is built on are rarely quiet. On a shared machine most of the noise
is *other processes taking the CPU*: a sample that gets preempted is slower by
the time the other process ran, so the samples of one operator are a mixture
of clean ones (its true speed, a narrow spread) and contaminated ones (several
times slower), in a proportion that changes with the load from minute to
minute. The median follows that proportion, so it moves between two builds of
one LUT as the load does; the low end of the distribution stays on the clean
samples and does not. ``benchmarks/lut_repeatability.py`` builds one LUT twice
and prints how far each statistic (the protocol's, the median, the 25th
percentile, the minimum) moved between the builds. So the protocol:

1. **Warms up** every model (at least ``warmup_runs`` runs and ``warmup_s``
   seconds) and picks its ``iterations`` so that one *sample* (the mean of
   ``iterations`` back-to-back runs) lasts about ``target_sample_ms``: long
   enough to amortise timer and call overhead, short enough to often fit
   between two preemptions.
2. Measures a **pool** of models in **interleaved rounds**: each round visits
   every unfinished model once, in a freshly shuffled order, takes
   ``touch_runs`` untimed runs (to bring its weights back into cache) and then
   ``samples_per_round`` samples. A burst of load therefore hits all models of
   a round alike instead of a few unlucky ones.
3. Reports the **``quantile``-quantile of the samples** (default 0.05: the 5th
   percentile, a *low robust statistic*: unlike the minimum it ignores a stray
   fast reading, and it stays on the clean samples as long as more than 5% of
   them are clean), with its distribution-free 95% confidence interval
   (:func:`latkit.profiler.stats.quantile_ci`). Outliers (modified z-score)
   are flagged and left out of the descriptive figures (mean, std, p90, ...)
   but kept in the raw samples. ``quantile=0.5`` gives the median instead.
4. Stops a model when that interval's relative half-width is at most
   ``target_rel_ci`` (after ``min_samples`` samples), or when it reaches
   ``max_samples`` or ``max_seconds_per_op`` of timed work (then ``converged``
   is false). A heavily contaminated model thus keeps sampling until enough
   clean samples pin its low quantile down. Each finished model is handed to
   the sink at once and the next waiting model takes its place in the pool.

Every timing a device returns is checked before it is used: a non-finite,
non-positive or implausible one (below a nanosecond per run, or more time than
the call took by the wall clock) fails that model, reported, and the run goes
on. Every loop is bounded whatever the device returns: warm-up batches, samples
per model, rounds, and the wait for a device that stopped answering. When the
device drops out (:class:`~latkit.core.errors.DeviceUnreachableError`), the run
waits with a doubling, logged backoff for up to ``outage_wait_s`` and carries
on where it was; past that it stores every model with at least ``min_samples``
samples and raises one line saying so.

Every :class:`~latkit.profiler.measurement.Measurement` keeps all its raw
samples in the order taken and its provenance: device info and state
before/after, load averages, CPU model, iterations, the protocol, the median
and the share of samples near the reported value, the latkit version and UTC
timestamps.

The settings callers use are named here (:class:`Preset`: ``default``,
``quick``, ``profile``, ``pipeline``, ``network``), not written out at each
caller: the CLI, ``latkit run`` and the benchmarks ask for one by name
(:meth:`ProtocolConfig.preset`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import numpy as np

from latkit._version import __version__
from latkit.devices.base import Device, ModelSource, Session, host_cpu_model
from latkit.devices.precision import Precision, precision_of
from latkit.core.errors import (
    DeviceError,
    DeviceUnreachableError,
    LatkitError,
    MeasurementError,
    UnknownNameError,
    UsageError,
)
from latkit.profiler import stats
from latkit.profiler.measurement import Measurement, MeasurementSink
from latkit.profiler.ops import OpSpec

log = logging.getLogger(__name__)

NEAR = 0.05  # a sample within 5% of the reported value counts as "clean"
RATE_BATCHES = 5  # timed batches that set a model's iterations per sample
MAX_WARMUP_BATCHES = 64  # warm-up batches grow geometrically: 64 covers any real budget
MIN_PLAUSIBLE_S = 1e-9  # no operator runs in under a nanosecond
WALL_FACTOR, WALL_SLACK_S = 1.5, 0.05  # runs * reported time may not exceed the call's wall time
ZERO_READINGS_RETRIED = 2  # a zero reading (a clock that did not tick over one short run) is retried
MAX_OUTAGE_BACKOFF_S = 30.0
OUTAGES_PER_VISIT = 3  # a model whose visit meets more outages than this fails

ProgressFn = Callable[[int, int, str, "Measurement | None"], None]
ErrorFn = Callable[[str, BaseException], None]


class Preset(str, Enum):
    """Named measurement settings: the one place each is chosen (see :meth:`ProtocolConfig.preset`)."""

    DEFAULT = "default"  # a reference LUT: the defaults of ProtocolConfig
    QUICK = "quick"  # smoke runs and tests (--quick): few samples, short warmups; not real LUTs
    PROFILE = "profile"  # the defaults with at most 20 s per op, as `latkit profile` runs (`latkit search --device`)
    PIPELINE = "pipeline"  # operators profiled by `latkit run`: fewer samples, enough for a 10% e2e goal
    NETWORK = "network"  # whole networks measured by `latkit run` (calibration, the exported ones)


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of the measurement protocol (see the module docstring).

    Attributes:
        warmup_runs: untimed runs before a model's first sample (at least).
        warmup_s: seconds of untimed runs before its first sample (at least).
        target_sample_ms: how long one sample (``iterations`` runs) should last.
        max_iterations: upper bound on ``iterations`` (for very fast models).
        min_samples: samples a model takes before it may stop.
        max_samples: samples after which it stops, converged or not.
        target_rel_ci: stop once the 95% CI half-width of ``latency_ms`` is at
            most this fraction of it.
        max_seconds_per_op: stop after this much timed work on one model.
        samples_per_round: samples per model per round (the round size).
        touch_runs: untimed runs at the start of each visit, to bring the
            model back into cache (0 for devices whose every call is a costly
            launch, such as ``benchmark_model`` over ADB, which warms up itself).
        pool_size: models measured together, interleaved (sessions held open).
        quantile: which quantile of the samples ``latency_ms`` is (0.5 = median).
        outlier_z: modified z-score beyond which a sample is an outlier.
        seed: seed of the round shuffles.
        outage_wait_s: how long to wait for a device that stopped answering
            before storing what is measured and stopping.
    """

    warmup_runs: int = 10
    warmup_s: float = 0.2
    target_sample_ms: float = 2.0
    max_iterations: int = 100_000
    min_samples: int = 30
    max_samples: int = 300
    target_rel_ci: float = 0.02
    max_seconds_per_op: float = 8.0  # per-model cap on timed work, warmup excluded
    samples_per_round: int = 3
    touch_runs: int = 1
    pool_size: int = 12
    quantile: float = 0.05
    outlier_z: float = 3.5
    seed: int = 0
    outage_wait_s: float = 120.0

    def __post_init__(self) -> None:
        lowest = {"warmup_runs": 0, "max_iterations": 1, "min_samples": 1, "max_samples": 1,
                  "samples_per_round": 1, "touch_runs": 0, "pool_size": 1}  # fmt: skip
        for name, low in lowest.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"protocol {name} must be an integer >= {low}, got {value!r}")
        for name in ("warmup_s", "target_sample_ms", "max_seconds_per_op", "outlier_z", "outage_wait_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UsageError(f"protocol {name} must be a non-negative number, got {value!r}")
        if self.target_sample_ms <= 0 or self.max_seconds_per_op <= 0 or self.outlier_z <= 0:
            raise UsageError("target_sample_ms, max_seconds_per_op and outlier_z must be positive")
        if self.min_samples > self.max_samples:
            raise UsageError(
                f"min_samples ({self.min_samples}) exceeds max_samples ({self.max_samples})"
            )
        if not 0.0 < self.target_rel_ci < 1.0:
            raise UsageError(f"target_rel_ci must be in (0, 1), got {self.target_rel_ci}")
        if not 0.0 < self.quantile < 1.0:
            raise UsageError(f"quantile must be in (0, 1), got {self.quantile}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in every measurement's provenance)."""
        return asdict(self)

    @classmethod
    def preset(cls, name: str | Preset, **overrides: Any) -> ProtocolConfig:
        """The settings of a named :class:`Preset`, with ``overrides`` on top.

        Raises:
            UnknownNameError: no preset of that name.
        """
        try:
            preset = Preset(name)
        except ValueError:
            raise UnknownNameError("protocol preset", str(name), [p.value for p in Preset]) from None
        return cls(**{**_PRESET_SETTINGS[preset], **overrides})

    @classmethod
    def quick(cls, **overrides: Any) -> ProtocolConfig:
        """Few samples and short warmups (:attr:`Preset.QUICK`): for smoke runs and tests, not real LUTs."""
        return cls.preset(Preset.QUICK, **overrides)


_PRESET_SETTINGS: dict[Preset, dict[str, float | int]] = {
    Preset.DEFAULT: {},
    Preset.QUICK: {"warmup_runs": 5, "warmup_s": 0.03, "min_samples": 12, "max_samples": 40,
                   "target_rel_ci": 0.05, "max_seconds_per_op": 1.0, "pool_size": 8},
    Preset.PROFILE: {"max_seconds_per_op": 20.0},
    Preset.PIPELINE: {"min_samples": 20, "max_samples": 120, "target_rel_ci": 0.03, "max_seconds_per_op": 2.0},
    Preset.NETWORK: {"min_samples": 30, "max_samples": 200, "target_rel_ci": 0.02, "max_seconds_per_op": 4.0},
}  # fmt: skip


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@dataclass
class _Slot:
    """A model in the pool: its session and everything sampled so far."""

    index: int  # position in the caller's list
    model: ModelSource
    session: Session
    iterations: int
    warmup: dict[str, Any]
    state_before: dict[str, Any]
    started_at: str
    samples_ms: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    timed_s: float = 0.0

    @property
    def key(self) -> str:
        return self.model.key


def _timed(session: Session, runs: int) -> float:
    """``session.time(runs)``, refused unless it can be a real time per run.

    A reading of exactly zero is taken again (up to ``ZERO_READINGS_RETRIED`` times):
    a thread CPU clock on a loaded host can read the same tick before and after one
    short run. Only a clock that keeps reading zero fails the model.

    Raises:
        MeasurementError: non-finite, non-positive or implausible (below a
            nanosecond, or ``runs`` times it exceeds the call's wall time).
    """
    for _ in range(ZERO_READINGS_RETRIED + 1):
        t0 = time.perf_counter()
        per_run_s = session.time(runs)
        wall_s = time.perf_counter() - t0
        if not (isinstance(per_run_s, (int, float)) and per_run_s == 0):
            break
    if isinstance(per_run_s, bool) or not isinstance(per_run_s, (int, float)) \
            or not math.isfinite(per_run_s) or per_run_s <= 0:
        raise MeasurementError(
            f"the device reported {per_run_s!r} s per run, not a positive finite time; "
            "its timer or output is broken: check the device, then rerun to measure this op"
        )
    if per_run_s < MIN_PLAUSIBLE_S or per_run_s * runs > wall_s * WALL_FACTOR + WALL_SLACK_S:
        raise MeasurementError(
            f"the device reported an implausible {per_run_s * 1e3:.6g} ms per run for {runs} "
            f"run(s) in a call that took {wall_s:.3g} s; check the device, then rerun to measure this op"
        )
    return float(per_run_s)


def run_limit_s(config: ProtocolConfig) -> float:
    """The longest one inference may run under ``config`` before the device stops it.

    Three times the per-model budget (10 s at least): a model whose single run
    takes longer could never be timed within the budget, and one that never
    ends (an ONNX ``Loop`` without a trip count) must not hang the run.
    """
    return max(3.0 * (config.max_seconds_per_op + config.warmup_s), 10.0)


def _warm_up(session: Session, config: ProtocolConfig) -> tuple[int, dict[str, Any]]:
    """Run until both warmup budgets are spent; return iterations per sample."""
    per_run_s = _timed(session, 1)  # the very first run is often far slower: not a rate estimate
    runs, spent, batch = 1, per_run_s, 1
    for _ in range(MAX_WARMUP_BATCHES):  # bounded: each batch at least doubles or fills 50 ms
        if runs >= config.warmup_runs and spent >= config.warmup_s:
            break
        per_run_s = _timed(session, batch)
        runs += batch
        spent += per_run_s * batch
        # grow batches geometrically so tiny models do not pay per-call overhead
        batch = min(batch * 2, max(1, int(0.05 / max(per_run_s, 1e-7))))
    # the rate that sets iterations: the fastest of a few batches about one sample
    # long (a preempted batch would look slow and give far too few iterations)
    target_s = config.target_sample_ms / 1e3
    rates = []
    for _ in range(RATE_BATCHES):
        batch = max(1, min(config.max_iterations, int(target_s / max(per_run_s, 1e-9))))
        rates.append(_timed(session, batch))
        runs += batch
        spent += rates[-1] * batch
        per_run_s = min(rates)
    iterations = max(1, min(config.max_iterations, int(round(target_s / max(per_run_s, 1e-9)))))
    return iterations, {"runs": runs, "s": round(spent, 4), "per_run_ms": per_run_s * 1e3}


def _summarize(slot: _Slot, config: ProtocolConfig) -> stats.Summary:
    return stats.summarize(slot.samples_ms, z=config.outlier_z, q=config.quantile)


class Statistic(str, Enum):
    """The figure a measurement reports (``--statistic`` of ``profile``, ``measure`` and ``run``): a quantile
    of its samples. ``p5``, the default, is the low robust statistic (see the module docstring); ``median``
    is the middle sample, what most benchmarks report, and follows the load on a shared host."""

    P5 = "p5"
    P10 = "p10"
    P25 = "p25"
    MEDIAN = "median"

    @property
    def quantile(self) -> float:
        """The quantile of the samples this statistic is."""
        return _QUANTILES[self]

    def apply(self, config: ProtocolConfig) -> ProtocolConfig:
        """``config`` reporting this statistic."""
        from dataclasses import replace

        return replace(config, quantile=self.quantile)


_QUANTILES = {Statistic.P5: 0.05, Statistic.P10: 0.10, Statistic.P25: 0.25, Statistic.MEDIAN: 0.5}
STATISTICS = {s.value: q for s, q in _QUANTILES.items()}  # --statistic choices -> quantile


def short_statistic(quantile: float) -> str:
    """The reported statistic as a table heading names it: ``p5``, ``median``, ``p10``..."""
    return "median" if quantile == 0.5 else f"p{100 * quantile:g}"


def parse_statistic(name: str | Statistic | None) -> Statistic:
    """A ``--statistic`` choice as its :class:`Statistic` (None: the default, p5); the doors call it once.

    Raises:
        UsageError: not one of :class:`Statistic`.
    """
    if name is None:
        return Statistic.P5
    try:
        return Statistic(name)
    except ValueError:
        raise UsageError(f"--statistic must be one of {', '.join(s.value for s in Statistic)} (the reported "
                         f"quantile of the samples), got {name!r}") from None


def statistic_name(config: ProtocolConfig) -> str:
    """How ``latency_ms`` is computed under ``config``, for provenance."""
    if config.quantile == 0.5:
        return "median of all samples"
    return f"{config.quantile:g}-quantile of all samples (low robust statistic)"


class _Run:
    """One measure_many call: the pool, the rounds, the bookkeeping."""

    def __init__(self, device: Device, config: ProtocolConfig, sink: MeasurementSink | None,
                 specs: Mapping[str, OpSpec], on_progress: ProgressFn | None,
                 on_error: ErrorFn | None, total: int) -> None:  # fmt: skip
        self.device, self.config, self.sink, self.specs = device, config, sink, specs
        self.on_progress, self.on_error, self.total = on_progress, on_error, total
        self.info = device.info().to_dict()
        self.rng = np.random.default_rng(config.seed)
        self.round = 0
        self.done = 0
        self.outages = 0  # outages waited out
        self.dropped = 0  # pooled models not stored when the device was lost
        self.unanswered: DeviceError | None = None  # the device stopped answering since the last visit
        self.results: list[tuple[int, Measurement]] = []

    def fail(self, key: str, exc: BaseException) -> None:
        if self.on_error is None:
            raise exc
        log.warning("%s failed: %s", key, exc)
        self.on_error(key, exc)
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, key, None)

    def open(self, index: int, model: ModelSource) -> _Slot | None:
        for _ in range(OUTAGES_PER_VISIT + 1):
            try:
                return self._open(index, model)
            except DeviceUnreachableError as exc:
                self.await_device(exc)  # back: open it again; gone for good: raises _Outage
        self.fail(model.key, MeasurementError(f"the device dropped out {OUTAGES_PER_VISIT + 1} "
                                              f"times while opening {model.key}; rerun to measure it"))
        return None

    def _open(self, index: int, model: ModelSource) -> _Slot | None:
        state = self.device.state()
        self.device.run_limit_s = run_limit_s(self.config)
        try:
            session = self.device.open(model)
        except DeviceUnreachableError:
            raise
        except Exception as exc:  # export or runtime errors of one model must not stop a run
            self.fail(model.key, exc)
            return None
        try:
            iterations, warm = _warm_up(session, self.config)
        except DeviceUnreachableError:
            _close_quietly(session)
            raise
        except Exception as exc:
            _close_quietly(session)
            self.fail(model.key, exc)
            return None
        return _Slot(index, model, session, iterations, warm, state, _utc())

    def await_device(self, exc: DeviceError) -> None:
        """Wait, with a doubling and logged backoff, for the device to answer again.

        Raises:
            _Outage: it did not within ``outage_wait_s``.
        """
        start = time.monotonic()
        deadline = start + self.config.outage_wait_s
        delay, tries = 1.0, 0
        while (left := deadline - time.monotonic()) > 0:  # bounded by the deadline
            pause = min(delay, left)
            tries += 1
            log.warning("%s is not answering (%s); trying again in %.0f s (waited %.0f of %.0f s)",
                        self.device.uri, _first_line(exc), pause, time.monotonic() - start,
                        self.config.outage_wait_s)  # fmt: skip
            time.sleep(pause)
            delay = min(2 * delay, MAX_OUTAGE_BACKOFF_S)
            try:
                self.device.state()  # any call that needs the device answering
            except DeviceError as again:
                exc = again
                continue
            log.warning("%s answers again after %.0f s; measuring on", self.device.uri,
                        time.monotonic() - start)
            self.outages += 1
            return
        raise _Outage(exc, time.monotonic() - start)

    def visit(self, slot: _Slot, touch: bool) -> None:
        if touch and self.config.touch_runs:
            _timed(slot.session, self.config.touch_runs)  # back into cache after the others ran
        values = []
        for _ in range(self.config.samples_per_round):
            values.append(_timed(slot.session, slot.iterations) * 1e3)
        slot.samples_ms.extend(values)
        self.unanswered = None  # it answered
        slot.rounds.extend([self.round] * len(values))
        slot.timed_s += sum(values) * slot.iterations / 1e3

    def finished(self, slot: _Slot) -> bool:
        c = self.config
        if len(slot.samples_ms) >= c.max_samples or slot.timed_s >= c.max_seconds_per_op:
            return True
        if len(slot.samples_ms) < c.min_samples:
            return False
        return _summarize(slot, c).rel_ci <= c.target_rel_ci

    def closed_state(self, slot: _Slot) -> dict[str, Any]:
        """Close the slot's session and read the device's state after it.

        Once a call finds the device not answering, :attr:`unanswered` holds that error and
        later finishes do not ask it again: each call would wait out its own retries, a pool's
        worth of them before the run could go on or end. The next visit clears it.
        """
        state_after: dict[str, Any] = {}
        if self.unanswered is None:
            try:
                slot.session.close()
            except DeviceUnreachableError as exc:
                self.unanswered = exc
            except DeviceError as exc:
                log.debug("closing a session failed: %s", exc)
        if self.unanswered is None:
            try:
                state_after = self.device.state()
            except DeviceUnreachableError as exc:
                self.unanswered = exc
            except DeviceError as exc:  # stored anyway: the samples are what counts
                state_after = {"unavailable": _first_line(exc)}
        if self.unanswered is not None:
            state_after = {"unavailable": _first_line(self.unanswered)}
        return state_after

    def finish(self, slot: _Slot) -> Measurement:
        """Store a slot's measurement (its session closed, the device's state read: :meth:`closed_state`)."""
        c = self.config
        summary = _summarize(slot, c)
        raw = np.asarray(slot.samples_ms)
        state_after = self.closed_state(slot)
        provenance = {
            "device": self.info,
            "state_before": slot.state_before,
            "state_after": state_after,
            "host_loadavg": _loadavg(),
            "host_cpu": host_cpu_model(),
            "latkit_version": __version__,
            "protocol": c.to_dict(),
            "statistic": statistic_name(c),
            "median_ms": float(np.median(raw)),
            "near_fraction": round(float(np.mean(raw <= summary.value * (1 + NEAR))), 4),
            "iterations": slot.iterations,
            "samples_per_round": c.samples_per_round,
            "warmup": slot.warmup,
            "timed_s": round(slot.timed_s, 4),
            "started_at": slot.started_at,
            "measured_at": _utc(),
            "sample_rounds": slot.rounds,
            **_precision_provenance(slot.model, getattr(self.device, "model_format", "")),
            **getattr(slot.session, "provenance", dict)(),  # e.g. a phone's delegation summary
        }
        m = Measurement(
            key=slot.key, latency_ms=summary.value, mean_ms=summary.mean, std_ms=summary.std,
            min_ms=summary.min, max_ms=summary.max, p10_ms=summary.p10, p90_ms=summary.p90,
            mad_ms=summary.mad, ci_low_ms=summary.ci_low, ci_high_ms=summary.ci_high,
            rel_ci=summary.rel_ci, n_samples=summary.n, n_outliers=summary.n_outliers,
            iterations=slot.iterations, converged=summary.rel_ci <= c.target_rel_ci,
            samples_ms=[float(v) for v in slot.samples_ms], provenance=provenance,
        )  # fmt: skip
        if self.sink is not None:
            self.sink.add(self.specs[slot.key], m, self.info, precision=model_precision_of(slot.model))
        self.done += 1
        self.results.append((slot.index, m))
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, slot.key, m)
        return m

    def run(self, models: Sequence[ModelSource]) -> None:
        waiting = list(enumerate(models))[::-1]  # popped from the end, in caller order
        pool: list[_Slot] = []
        # every round takes at least one sample from each pooled model, and a model
        # stops at max_samples: this many rounds is more than any run can need
        max_rounds = (len(models) + 1) * (self.config.max_samples + 1)
        try:
            while (waiting or pool) and self.round <= max_rounds:
                while waiting and len(pool) < self.config.pool_size:
                    slot = self.open(*waiting.pop())
                    if slot is not None:
                        pool.append(slot)
                pool = self.one_round(pool)
            for slot in pool:  # pragma: no cover - defensive: the bound above is never reached
                self.fail(slot.key, MeasurementError(f"{slot.key} never finished; rerun to measure it"))
            pool = []
        except _Outage as outage:
            self.unanswered = outage.cause
            saved = self.save_partial(pool)
            pool = []
            raise DeviceUnreachableError(
                f"{self.device.uri} stopped answering and did not come back within "
                f"{outage.waited_s:.0f} s ({_first_line(outage.cause)}); {len(self.results)} "
                f"measurement(s) of this run are saved ({saved} stored early, with the samples "
                f"taken so far), {len(waiting) + self.dropped} op(s) are not measured yet: "
                "reconnect the device and rerun the same command to resume"
            ) from outage.cause
        finally:
            for slot in pool:  # only on an exception: finished slots are closed already
                _close_quietly(slot.session)

    def save_partial(self, pool: list[_Slot]) -> int:
        """Store every pooled model with at least ``min_samples`` samples; drop the rest.

        The device is gone (:attr:`unanswered`): nothing here asks it anything, and the pushed
        files are left for the next run's push to overwrite.
        """
        saved = 0
        for slot in pool:
            if len(slot.samples_ms) >= self.config.min_samples:
                self.finish(slot)
                saved += 1
            else:
                self.dropped += 1
                log.warning("%s had %d of %d samples when the device dropped out: not stored",
                            slot.key, len(slot.samples_ms), self.config.min_samples)
        return saved

    def one_round(self, pool: list[_Slot]) -> list[_Slot]:
        """Visit every model once in shuffled order; return those not finished."""
        touch = len(pool) > 1
        broken: set[int] = set()
        for i in map(int, self.rng.permutation(len(pool))):
            slot = pool[i]
            try:
                self.visit_through_outages(slot, touch)
            except _Outage:
                # the caller stores what the pool holds: not the models failed this round
                pool[:] = [s for j, s in enumerate(pool) if j not in broken]
                raise
            except Exception as exc:  # a model that breaks mid-run is dropped, not the run
                _close_quietly(slot.session)
                if self.on_error is None:
                    pool.remove(slot)  # the caller's cleanup must not close it twice
                    raise
                broken.add(i)
                self.fail(slot.key, exc)
        pool = [s for i, s in enumerate(pool) if i not in broken]
        still = []
        for slot in pool:
            if not self.finished(slot):
                still.append(slot)
                continue
            try:
                self.finish(slot)
            except (MeasurementError, ValueError, FloatingPointError) as exc:
                _close_quietly(slot.session)  # finish closes it only once its summary is made
                if self.on_error is None:
                    raise
                self.fail(slot.key, exc)
        self.round += 1
        return still

    def visit_through_outages(self, slot: _Slot, touch: bool) -> None:
        """:meth:`visit`, waiting out a device that drops out (samples taken are kept)."""
        for _ in range(OUTAGES_PER_VISIT):
            taken = len(slot.samples_ms)
            try:
                self.visit(slot, touch)
                return
            except DeviceUnreachableError as exc:
                if len(slot.samples_ms) != taken:  # pragma: no cover - visit extends at the end
                    raise
                self.await_device(exc)
        self.visit(slot, touch)


class _Outage(Exception):
    """The device stayed unreachable past ``outage_wait_s`` (internal to a run)."""

    def __init__(self, cause: DeviceError, waited_s: float) -> None:
        super().__init__(str(cause))
        self.cause, self.waited_s = cause, waited_s


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _close_quietly(session: Session) -> None:
    """Close a session; a device that is gone cannot make that fail the run."""
    try:
        session.close()
    except DeviceError as exc:
        log.debug("closing a session failed: %s", exc)


def _spec_of(model: ModelSource, specs: Mapping[str, OpSpec] | None) -> OpSpec | None:
    if specs is not None and model.key in specs:
        return specs[model.key]
    for attr in ("spec", "target"):
        value = getattr(model, attr, None)
        if isinstance(value, OpSpec):
            return value
    return None


def model_precision_of(model: ModelSource) -> Precision:
    """The precision a model source is built at (fp32 for one that does not say)."""
    return precision_of(model)


def _precision_provenance(model: ModelSource, fmt: Any) -> dict[str, Any]:
    """The model's precision and, for a quantized file the device ran, how it was quantized."""
    fmt = getattr(fmt, "value", fmt)
    precision = model_precision_of(model)
    out: dict[str, Any] = {"precision": precision}
    export_meta = getattr(model, "export_meta", None)
    if precision == Precision.FP32 or export_meta is None or fmt not in ("onnx", "tflite"):
        return out
    try:
        meta = export_meta(fmt)
    except LatkitError:  # provenance only: never fail a finished measurement for it
        meta = None
    if meta:
        out["quantization"] = {k: meta.get(k) for k in ("scheme", "quantizer", "kernels") if k in meta}
    return out


def measure_many(
    device: Device,
    models: Iterable[ModelSource],
    config: ProtocolConfig | None = None,
    sink: MeasurementSink | None = None,
    on_progress: ProgressFn | None = None,
    *,
    specs: Mapping[str, OpSpec] | None = None,
    on_error: ErrorFn | None = None,
) -> list[Measurement]:
    """Measure ``models`` on ``device`` with the interleaved protocol.

    Args:
        device: an open device.
        models: the models; keys must be distinct.
        config: protocol settings (default :class:`ProtocolConfig`).
        sink: receives ``sink.add(spec, measurement, device_info, precision=p)``
            for each model the moment it finishes (spec from ``specs`` or the
            model's ``spec``/``target`` attribute; ``p`` the model's
            ``precision``, fp32 when it has none).
        on_progress: called as ``(done, total, key, measurement or None)``
            after each model finishes (None when it failed).
        specs: op spec of each key, for the sink.
        on_error: called as ``(key, exception)`` when a model fails to load or
            run; the run goes on. Without it the first failure is raised.

    Returns:
        The measurements of the models that did not fail, in the input order.

    Raises:
        UsageError: duplicate keys, or a sink without a spec for some model.
        MeasurementError / DeviceError: a model failed and no ``on_error`` was given.
        DeviceUnreachableError: the device stopped answering for longer than
            ``config.outage_wait_s``; the models with at least ``min_samples``
            samples were handed to the sink first.
    """
    config = device.adapt_protocol(config or ProtocolConfig())
    models = list(models)
    keys = [m.key for m in models]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise UsageError(f"models to measure must have distinct keys; repeated: {', '.join(dup[:3])}")
    resolved: dict[str, OpSpec] = {}
    if sink is not None:
        for m in models:
            spec = _spec_of(m, specs)
            if spec is None:
                raise UsageError(f"no op spec for {m.key}; pass specs= to store it in a sink")
            resolved[m.key] = spec
    run = _Run(device, config, sink, resolved, on_progress, on_error, len(models))
    run.run(models)
    return [m for _, m in sorted(run.results, key=lambda t: t[0])]


def measure_one(
    device: Device, model: ModelSource, config: ProtocolConfig | None = None
) -> Measurement:
    """Measure one model (e.g. a whole network, end to end) with the same protocol.

    With a single model there is nothing to interleave with (and no untimed
    run before each visit); everything else (warmup, iterations, statistic,
    stopping rule, provenance) is the same, so LUT sums and end-to-end figures
    are comparable.

    Raises:
        DeviceError / MeasurementError: the model cannot be loaded or run.
    """
    result = measure_many(device, [model], config)
    if not result:  # pragma: no cover - failures raise without on_error
        raise MeasurementError(f"{model.key} produced no measurement")
    return result[0]


__all__ = ["STATISTICS", "Preset", "ProtocolConfig", "Statistic", "measure_many", "measure_one", "parse_statistic",
           "short_statistic", "statistic_name"]
