"""The farm's driver: one queue of operators per device model, one worker per device.

Identical devices (same :class:`~latkit.profiler.farm.identity.DeviceIdentity`)
pull from one queue and their rows share one LUT device; distinct devices
have their own. The driver is the only writer: each result comes back to it
and goes into the :class:`~latkit.profiler.measurement.MeasurementSink` (the
LUT) as its own committed row, so a driver killed at any moment resumes from
``sink.done_keys`` and measures nothing twice.

Faults and their bounds (every remote call has a deadline; nothing retries
without a limit):

* a worker or its node dies (phone unplugged, host down): the operator in
  flight goes back to the front of its queue (a sibling takes it, or the
  device once its worker is back); the worker is re-created with backoff at
  most ``max_restarts`` times, then the device is fenced;
* an operator fails on a live device: it is retried (on any sibling) up to
  ``max_attempts`` times in all, then recorded as failed with its reason; a
  device whose ``fence_after`` consecutive operators failed is fenced;
* a worker that does not become ready within ``ready_timeout_s``, or an
  operator that runs past ``op_timeout_s``, counts as a death.

A fenced device keeps its reason for the report. Operators left when every
device of their model is fenced are reported as unmeasured.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from latkit._version import __version__
from latkit.devices.base import device_classes
from latkit.devices.precision import Precision, check_precision
from latkit.core.errors import UsageError
from latkit.profiler.farm.identity import FarmDevice, group_by_identity
from latkit.profiler.farm.node import DeviceWorker, ModelFactory, measurement_from
from latkit.profiler.measurement import MeasurementSink
from latkit.profiler.ops import OpSpec, measurable_by_key
from latkit.profiler.protocol import ProtocolConfig

log = logging.getLogger(__name__)

EventFn = Callable[[str, "DeviceState | None", "FarmRun"], None]


@dataclass(frozen=True)
class FarmConfig:
    """Limits of a farm run (seconds unless named otherwise).

    Attributes:
        op_timeout_s: an operator running longer is abandoned (its worker killed).
        ready_timeout_s: a worker must open its device within this.
        max_attempts: tries of one operator, on any device of its model.
        fence_after: consecutive failed operators that fence a device.
        max_restarts: re-creations of one device's worker after deaths.
        restart_backoff_s: first wait before a re-creation (doubles each time).
        poll_s: how long the driver waits for results between checks.
    """

    op_timeout_s: float = 900.0
    ready_timeout_s: float = 60.0
    max_attempts: int = 3
    fence_after: int = 3
    max_restarts: int = 3
    restart_backoff_s: float = 2.0
    poll_s: float = 0.2

    def __post_init__(self) -> None:
        for name in ("op_timeout_s", "ready_timeout_s", "restart_backoff_s", "poll_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"farm {name} must be a positive number, got {value!r}")
        for name, low in (("max_attempts", 1), ("fence_after", 1), ("max_restarts", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"farm {name} must be an integer >= {low}, got {value!r}")


@dataclass
class DeviceState:
    """The driver's view of one device's worker."""

    device: FarmDevice
    group: str
    state: str = "starting"  # starting | idle | busy | lost | fenced
    actor: Any = None
    ready_ref: Any = None
    deadline: float = 0.0
    key: str | None = None
    ref: Any = None
    started: float = 0.0
    pid: int | None = None
    measured: int = 0
    failures: int = 0  # consecutive
    restarts: int = 0
    restart_at: float = 0.0
    fenced: str = ""
    last_error: str = ""
    busy_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """What a progress display or report shows."""
        return {"name": self.device.name, "serial": self.device.serial, "node_ip": self.device.node_ip,
                "lut_device": self.group, "state": self.state, "op": self.key, "measured": self.measured,
                "restarts": self.restarts, "failures": self.failures, "fenced": self.fenced,
                "last_error": self.last_error, "busy_s": round(self.busy_s, 3)}


@dataclass
class FarmReport:
    """What a farm run did, per LUT device (device model) and per device."""

    groups: dict[str, list[str]] = field(default_factory=dict)  # LUT device -> device names
    measured: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # already in the sink
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> reason
    unmeasured: dict[str, list[str]] = field(default_factory=dict)  # no live device left
    fenced: dict[str, str] = field(default_factory=dict)  # device name -> reason
    devices: list[dict[str, Any]] = field(default_factory=list)
    requeued: int = 0
    elapsed_s: float = 0.0
    driver_s_per_row: float = 0.0  # driver time per result: fetch, write, bookkeeping
    write_s_per_row: float = 0.0  # of which the sink's committed write

    @property
    def rows(self) -> int:
        """Rows written in this run."""
        return sum(len(v) for v in self.measured.values())

    @property
    def ok(self) -> bool:
        """True when every operator of every device model is in the sink."""
        return not any(self.failed.values()) and not any(self.unmeasured.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"groups": self.groups, "measured": self.measured, "skipped": self.skipped,
                "failed": self.failed, "unmeasured": self.unmeasured, "fenced": self.fenced,
                "devices": self.devices, "requeued": self.requeued, "rows": self.rows,
                "elapsed_s": round(self.elapsed_s, 3),
                "driver_ms_per_row": round(self.driver_s_per_row * 1e3, 3),
                "write_ms_per_row": round(self.write_s_per_row * 1e3, 3), "ok": self.ok}


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's exception
    err = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(err).split()) or type(err).__name__
    if err is exc and "Traceback" in text:  # keep the last line of a remote traceback
        text = text.rsplit(":", 1)[-1].strip() or text
    return f"{type(err).__name__}: {text[:300]}"


class FarmRun:
    """One farm profiling run (see the module docstring); use :func:`run_farm`."""

    def __init__(self, ray: Any, devices: list[FarmDevice], specs: Iterable[OpSpec],
                 sink: MeasurementSink, protocol: ProtocolConfig, config: FarmConfig,
                 device_options: dict[str, Any] | None, model_factory: ModelFactory | None,
                 cache_dir: str | None, on_event: EventFn | None,
                 precision: Precision = Precision.FP32) -> None:
        self.ray, self.sink, self.protocol, self.config = ray, sink, protocol, config
        self.precision = precision
        check_farm_precision(devices, self.precision)
        devices = [replace(d, identity=d.identity.at_precision(self.precision)) for d in devices]
        self.options, self.factory, self.cache_dir = device_options, model_factory, cache_dir
        self.on_event = on_event
        self.specs: dict[str, OpSpec] = measurable_by_key(specs)
        self.report = FarmReport()
        self.groups = group_by_identity(devices)
        self.queues: dict[str, deque[str]] = {}
        self.done: dict[str, set[str]] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.info: dict[str, dict[str, Any]] = {}
        for uri, members in self.groups.items():
            done = set(sink.done_keys(uri, precision=self.precision))
            self.done[uri] = done
            self.queues[uri] = deque(k for k in self.specs if k not in done)
            self.report.groups[uri] = [d.name for d in members]
            self.report.skipped[uri] = sum(1 for k in self.specs if k in done)
            self.report.measured[uri], self.report.failed[uri] = [], {}
            ident = members[0].identity
            self.info[uri] = {"uri": uri, **ident.to_dict(), "farm_members": [d.serial for d in members]}
        self.states = [DeviceState(d, d.identity.lut_uri()) for d in devices]
        self.worker = ray.remote(DeviceWorker)
        self._driver_s = 0.0
        self._write_s = 0.0

    # ---------------------------------------------------------------- events

    def _emit(self, kind: str, st: DeviceState | None) -> None:
        if self.on_event is not None:
            self.on_event(kind, st, self)

    def totals(self) -> dict[str, int]:
        """Operators in all: to do at the start, done now, queued, in flight."""
        todo = sum(len(self.specs) - self.report.skipped[g] for g in self.groups)
        return {"todo": todo, "done": self.report.rows,
                "failed": sum(len(v) for v in self.report.failed.values()),
                "queued": sum(len(q) for q in self.queues.values()),
                "in_flight": sum(1 for s in self.states if s.state == "busy")}

    # ---------------------------------------------------------------- workers

    def _start(self, st: DeviceState) -> None:
        d = st.device
        opts: dict[str, Any] = {"num_cpus": 0 if d.identity.kind == "android" else 1,
                                "max_restarts": 0, "max_task_retries": 0}
        if d.resource:
            opts["resources"] = {d.resource: 1}  # lands wherever the phone's owner node is (again)
        else:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(d.node_id, soft=False)
        st.actor = self.worker.options(**opts).remote(
            d.to_dict(), self.protocol.to_dict(), self.options, self.factory, self.cache_dir)
        st.ready_ref = st.actor.ready.remote()
        st.deadline = time.monotonic() + self.config.ready_timeout_s
        st.state = "starting"
        self._emit("starting", st)

    def _kill(self, st: DeviceState) -> None:
        if st.actor is not None:
            try:
                self.ray.kill(st.actor, no_restart=True)
            except Exception as exc:  # already gone with its node
                log.debug("kill of %s: %s", st.device.name, exc)
        st.actor = st.ready_ref = st.ref = None

    def _fence(self, st: DeviceState, reason: str) -> None:
        self._kill(st)
        st.state, st.fenced = "fenced", reason
        self.report.fenced[st.device.name] = reason
        log.warning("fenced %s: %s", st.device.name, reason)
        self._emit("fenced", st)

    def _lost(self, st: DeviceState, reason: str) -> None:
        """The worker died or hung: requeue its operator, re-create it later (bounded)."""
        self._requeue(st, reason)
        self._kill(st)
        st.last_error = reason
        if st.restarts >= self.config.max_restarts:
            self._fence(st, f"worker lost {st.restarts + 1} time(s); last: {reason}")
            return
        st.restart_at = time.monotonic() + self.config.restart_backoff_s * 2**st.restarts
        st.restarts += 1
        st.state = "lost"
        log.warning("lost %s (%s); re-creating it in %.1f s", st.device.name, reason,
                    st.restart_at - time.monotonic())
        self._emit("lost", st)

    def _requeue(self, st: DeviceState, reason: str) -> None:
        key = st.key
        if key is None:
            return
        st.key, st.ref = None, None
        st.busy_s += time.monotonic() - st.started
        tries = self.attempts[(st.group, key)]
        if tries >= self.config.max_attempts:
            self.report.failed[st.group][key] = f"failed {tries} time(s); last on {st.device.serial}: {reason}"
            self._emit("op_failed", st)
        else:
            self.queues[st.group].appendleft(key)
            self.report.requeued += 1

    # ---------------------------------------------------------------- results

    def _dispatch(self, st: DeviceState) -> None:
        queue = self.queues[st.group]
        if not queue:
            return
        key = queue.popleft()
        n = self.attempts[(st.group, key)] = self.attempts.get((st.group, key), 0) + 1
        st.key, st.state, st.started = key, "busy", time.monotonic()
        st.deadline = st.started + self.config.op_timeout_s
        st.ref = st.actor.measure.remote(self.specs[key].to_dict(), n)
        self._emit("started", st)

    def _on_ready(self, st: DeviceState) -> None:
        try:
            got = self.ray.get(st.ready_ref, timeout=self.config.poll_s + 5)
        except Exception as exc:  # device unreachable, node gone, actor died at birth
            self._lost(st, f"worker did not start: {_reason(exc)}")
            return
        st.ready_ref, st.pid, st.state = None, got["pid"], "idle"
        if got["latkit_version"] != __version__:  # a node re-installed since the probe
            self._fence(st, f"its node runs latkit {got['latkit_version']} but the driver runs latkit "
                            f"{__version__}; install one version everywhere")
            return
        self._emit("ready", st)

    def _on_result(self, st: DeviceState) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        t0 = time.perf_counter()
        try:
            value = self.ray.get(st.ref, timeout=self.config.poll_s + 5)
        except RayActorError as exc:
            self._lost(st, f"worker died: {_reason(exc)}")
            return
        except RayTaskError as exc:
            self._op_error(st, _reason(exc))
            return
        except Exception as exc:  # object lost with its node, and the like
            self._lost(st, f"result lost: {_reason(exc)}")
            return
        key, group = st.key, st.group
        assert key is not None
        st.key, st.ref, st.state, st.failures = None, None, "idle", 0
        st.busy_s += time.monotonic() - st.started
        if key in self.done[group]:  # cannot happen with one driver; never write a row twice
            log.warning("ignoring a second measurement of %s on %s", key, group)
            return
        m = measurement_from(value)
        w0 = time.perf_counter()
        self.sink.add(self.specs[key], m, self.info[group], precision=self.precision)
        self._write_s += time.perf_counter() - w0
        self.done[group].add(key)
        st.measured += 1
        self.report.measured[group].append(key)
        self._driver_s += time.perf_counter() - t0
        self._emit("measured", st)

    def _op_error(self, st: DeviceState, reason: str) -> None:
        st.failures += 1
        st.last_error = reason
        self._requeue(st, reason)
        st.state = "idle"
        if st.failures >= self.config.fence_after:
            self._fence(st, f"{st.failures} operators in a row failed; last: {reason}")

    # ---------------------------------------------------------------- loop

    def _finished(self) -> bool:
        for group, queue in self.queues.items():
            members = [s for s in self.states if s.group == group]
            if any(s.state == "busy" for s in members):
                return False
            if queue and any(s.state != "fenced" for s in members):
                return False
        return True

    def run(self) -> FarmReport:
        """Measure until every queue is empty or has no device left; return the report."""
        t0 = time.monotonic()
        try:
            for st in self.states:
                if self.queues[st.group]:
                    self._start(st)
                else:
                    st.state = "idle"
            while not self._finished():
                self._step()
        finally:
            for st in self.states:
                if st.state != "fenced":
                    self._kill(st)
        for group, queue in self.queues.items():
            self.report.unmeasured[group] = list(queue)
        rows = max(1, self.report.rows)
        self.report.elapsed_s = time.monotonic() - t0
        self.report.driver_s_per_row = self._driver_s / rows
        self.report.write_s_per_row = self._write_s / rows
        self.report.devices = [s.to_dict() for s in self.states]
        return self.report

    def _step(self) -> None:
        now = time.monotonic()
        for st in self.states:
            if st.state == "lost" and now >= st.restart_at and self.queues[st.group]:
                self._start(st)
            elif st.state == "idle":
                self._dispatch(st)
        waiting = {}
        for st in self.states:
            if st.state == "starting" and st.ready_ref is not None:
                waiting[st.ready_ref] = st
            elif st.state == "busy" and st.ref is not None:
                waiting[st.ref] = st
        if waiting:
            refs = list(waiting)
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=self.config.poll_s)
            if ready:
                ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                st = waiting[ref]
                (self._on_ready if st.state == "starting" else self._on_result)(st)
        else:
            time.sleep(self.config.poll_s)
        now = time.monotonic()
        for st in self.states:
            if st.state == "starting" and now > st.deadline:
                self._lost(st, f"worker not ready within {self.config.ready_timeout_s:g} s")
            elif st.state == "busy" and now > st.deadline:
                self._lost(st, f"operator {st.key} ran past {self.config.op_timeout_s:g} s")
        self._emit("tick", None)


def check_farm_precision(devices: list[FarmDevice], precision: Precision) -> None:
    """Refuse, before anything starts, a precision one of ``devices`` does not run.

    Raises:
        UsageError: one line naming the device and the precisions it runs.
    """
    classes = sorted(device_classes().items(), key=lambda t: -len(t[0]))
    for d in devices:
        for scheme, cls in classes:
            if d.uri == scheme or d.uri.startswith(scheme + ":"):
                try:
                    check_precision(cls, precision)
                except UsageError as exc:
                    raise UsageError(f"{d.name}: {exc}") from None
                break


def run_farm(ray: Any, devices: list[FarmDevice], specs: Iterable[OpSpec], sink: MeasurementSink,
             protocol: ProtocolConfig | None = None, config: FarmConfig | None = None, *,
             device_options: dict[str, Any] | None = None, model_factory: ModelFactory | None = None,
             cache_dir: str | None = None, on_event: EventFn | None = None,
             precision: Precision = Precision.FP32) -> FarmReport:
    """Measure ``specs`` on every device model of ``devices`` into ``sink``.

    Args:
        ray: the connected ``ray`` module.
        devices: the chosen devices (identical ones split their model's operators).
        specs: the operators.
        sink: the only writer's target (a LUT); resumed from its ``done_keys``.
        protocol: measurement protocol of every operator.
        config: the farm's limits.
        device_options: extra :func:`~latkit.devices.open_device` options of phones.
        model_factory: op spec -> model, on the node (default latkit's exporter).
        cache_dir: the nodes' export cache.
        on_event: ``(kind, device_state, run)`` on every change, for progress displays.
        precision: what the operators are built and stored at; every device must run it.

    Raises:
        UsageError: no devices, or a device that does not run ``precision``.
    """
    if not devices:
        raise UsageError("no devices to profile on")
    run = FarmRun(ray, devices, specs, sink, protocol or ProtocolConfig(), config or FarmConfig(),
                  device_options, model_factory, cache_dir, on_event, precision)
    return run.run()
