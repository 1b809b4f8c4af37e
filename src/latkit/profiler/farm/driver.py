"""The farm's driver: one queue of operators per device model, one worker per device.

Identical devices (same :class:`~latkit.profiler.farm.identity.DeviceIdentity`)
pull from one queue and their rows share one LUT device; distinct devices
have their own. The driver is the only writer: each result comes back to it
and goes into the :class:`~latkit.profiler.measurement.MeasurementSink` (the
LUT) as its own committed row, so a driver killed at any moment resumes from
``sink.done_keys`` and measures nothing twice.

Faults and their bounds (every remote call has a deadline; nothing retries
without a limit):

* a device stops answering (phone unplugged or dead: the worker raises
  :class:`~latkit.core.errors.DeviceUnreachableError` once the protocol's
  ``outage_wait_s`` is over, or when it opens a phone that does not answer,
  dead from the start): the operator in flight, if any, goes back to the front
  of its queue at once, for a sibling, without counting as a try; the device is
  put *aside* at this first failure and probed in the background (a fresh
  worker that must open it and find the same phone, every ``probe_s``,
  doubling), re-admitted when it answers and fenced when it has not answered
  for ``unreachable_s``. A dead phone thus costs one operator's wait;
* a worker or its node dies (host down, worker killed): the operator in
  flight goes back to the front of its queue (a sibling takes it, or the
  device once its worker is back); the worker is re-created with backoff at
  most ``max_restarts`` times, then the device is fenced;
* an operator fails on a live device: it is tried again, on a device of its
  model it has not failed on while there is one, and recorded as failed, with
  every device's reason, only once it has failed ``max_attempts`` times and on
  every device of its model that is not fenced (or on ``max_attempts``
  distinct ones); a device whose ``fence_after`` consecutive operators failed
  is fenced;
* a worker that does not become ready within ``ready_timeout_s``, or an
  operator that runs past ``op_timeout_s``, counts as a death.

Operators that keep losing their device are bounded too: one whose device
stopped answering under it ``max_attempts`` times, on every device of its
model (or on that many distinct ones), is failed. A fenced device keeps its
reason for the report. Operators left when every device of their model is
fenced are reported as unmeasured.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from latkit._version import __version__
from latkit.devices.base import device_classes
from latkit.devices.precision import Precision, check_precision
from latkit.core.errors import DeviceUnreachableError, UsageError
from latkit.profiler.farm.identity import FarmDevice, group_by_identity
from latkit.profiler.farm.node import DeviceWorker, ModelFactory, measurement_from
from latkit.profiler.farm.records import DeviceState, FarmConfig, FarmReport
from latkit.profiler.measurement import MeasurementSink
from latkit.profiler.ops import OpSpec, measurable_by_key
from latkit.profiler.protocol import ProtocolConfig

log = logging.getLogger(__name__)

EventFn = Callable[[str, "DeviceState | None", "FarmRun"], None]

MAX_PROBE_GAP_S = 60.0  # probes of a device put aside double their gap up to this
# states in which a device will measure again without having to answer a probe first
_LIVE = ("starting", "idle", "busy", "lost")


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's exception
    err = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(err).split()) or type(err).__name__
    if err is exc and "Traceback" in text:  # keep the last line of a remote traceback
        text = text.rsplit(":", 1)[-1].strip() or text
    return f"{type(err).__name__}: {text[:300]}"


def _unreachable(exc: BaseException) -> bool:
    """Whether a failed operator's error says its device stopped answering (not the operator's fault)."""
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's exception
    err = cause if isinstance(cause, BaseException) else exc
    return isinstance(err, (DeviceUnreachableError, ConnectionError))


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
        self.attempts: dict[tuple[str, str], int] = {}  # counted tries
        self.dropouts: dict[tuple[str, str], int] = {}  # tries whose device stopped answering
        self.failed_on: dict[tuple[str, str], dict[str, str]] = {}  # device name -> last reason
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

    def _start(self, st: DeviceState, probing: bool = False) -> None:
        """Create the device's worker; ``probing``: a device put aside, asked whether it answers again."""
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
        st.state = "probing" if probing else "starting"
        self._emit(st.state, st)

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
        if st.state == "probing":
            self._probe_failed(st, reason)
            return
        self._hand_back(st, reason)
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

    def _aside(self, st: DeviceState, reason: str) -> None:
        """The device stopped answering (under an operator, or before its first): its operator,
        if any, goes to a sibling now (no try counted); the device waits aside, probed in the
        background, until it answers or is fenced."""
        in_flight = st.key is not None
        self._hand_back(st, reason, dropped=True)
        self._kill(st)  # frees the phone's node resource for the probing worker
        now = time.monotonic()
        st.state, st.last_error, st.dropouts = "aside", reason, st.dropouts + in_flight
        st.aside_since, st.probes, st.probe_at = now, 0, now + self.config.probe_s
        log.warning("%s stopped answering (%s); set aside%s; probing it in %.0f s", st.device.name, reason,
                    ", its operator goes to a sibling" if in_flight else "", self.config.probe_s)
        self._emit("aside", st)

    def _probe_failed(self, st: DeviceState, reason: str) -> None:
        """A probe of a device put aside found it still not answering: probe later, or fence it."""
        self._kill(st)
        st.probes += 1
        st.last_error = f"not answering: {reason}"
        now = time.monotonic()
        if now - st.aside_since >= self.config.unreachable_s:
            self._fence(st, f"stopped answering and did not answer again within "
                            f"{self.config.unreachable_s:g} s; last: {reason}")
            return
        st.state = "aside"
        st.probe_at = now + min(self.config.probe_s * 2**st.probes, MAX_PROBE_GAP_S)
        self._emit("aside", st)

    def _hand_back(self, st: DeviceState, reason: str, dropped: bool = False) -> None:
        """The operator in flight on ``st`` goes back to the front of its queue, or fails for good.

        ``dropped``: its device stopped answering, which is not the operator's
        fault: the try is not counted (but bounded, see the module docstring).
        """
        key = st.key
        if key is None:
            return
        st.key, st.ref = None, None
        st.busy_s += time.monotonic() - st.started
        op = (st.group, key)
        self.failed_on.setdefault(op, {})[st.device.name] = reason
        if dropped:
            self.attempts[op] -= 1
            self.dropouts[op] = self.dropouts.get(op, 0) + 1
            self.report.dropped.append({"lut_device": st.group, "key": key, "serial": st.device.serial,
                                        "reason": reason})
        if self._gives_up(op):
            self.report.failed[st.group][key] = self._failure(op)
            self._emit("op_failed", st)
        else:
            self.queues[st.group].appendleft(key)
            self.report.requeued += 1

    def _gives_up(self, op: tuple[str, str]) -> bool:
        """Whether an operator has failed enough, on enough devices, to be recorded as failed."""
        n = self.config.max_attempts
        failed_on = self.failed_on[op]
        able = {s.device.name for s in self.states if s.group == op[0] and s.state in _LIVE}
        everywhere = able <= failed_on.keys() or len(failed_on) >= n
        return everywhere and (self.attempts[op] >= n or self.dropouts.get(op, 0) >= n)

    def _failure(self, op: tuple[str, str]) -> str:
        """One line: how often the operator was tried, and on which devices with what result."""
        serial = {s.device.name: s.device.serial for s in self.states}
        where = "; ".join(f"on {serial.get(name, name)}: {why}" for name, why in self.failed_on[op].items())
        dropped = self.dropouts.get(op, 0)
        lost = f" (and {dropped} time(s) its device stopped answering)" if dropped else ""
        return f"failed {self.attempts[op]} time(s){lost} on {len(self.failed_on[op])} device(s): {where}"

    # ---------------------------------------------------------------- results

    def _may_take(self, st: DeviceState, key: str) -> bool:
        """An operator goes to a device it failed on only when no live device of its model
        has not tried it: its tries are spread over the devices."""
        failed_on = self.failed_on.get((st.group, key))
        if not failed_on or st.device.name not in failed_on:
            return True
        return not any(s.device.name not in failed_on for s in self.states
                       if s.group == st.group and s.state in _LIVE)

    def _dispatch(self, st: DeviceState) -> None:
        queue = self.queues[st.group]
        key = next((k for k in queue if self._may_take(st, k)), None)
        if key is None:
            return
        queue.remove(key)
        n = self.attempts[(st.group, key)] = self.attempts.get((st.group, key), 0) + 1
        st.key, st.state, st.started = key, "busy", time.monotonic()
        st.deadline = st.started + self.config.op_timeout_s
        st.ref = st.actor.measure.remote(self.specs[key].to_dict(), n)
        self._emit("started", st)

    def _on_ready(self, st: DeviceState) -> None:
        try:
            got = self.ray.get(st.ready_ref, timeout=self.config.poll_s + 5)
        except Exception as exc:  # device unreachable, node gone, actor died at birth
            reason = f"worker did not start: {_reason(exc)}"
            # a phone dead from the start goes aside like one that dies under an operator
            (self._aside if _unreachable(exc) and st.state == "starting" else self._lost)(st, reason)
            return
        if st.state == "probing":
            log.warning("%s answers again after %.0f s; measuring on it", st.device.name,
                        time.monotonic() - st.aside_since)
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
            (self._aside if _unreachable(exc) else self._op_error)(st, _reason(exc))
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
        self._hand_back(st, reason)
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
            elif st.state == "aside" and now >= st.probe_at and self.queues[st.group]:
                self._start(st, probing=True)
            elif st.state == "idle":
                self._dispatch(st)
        waiting = {}
        for st in self.states:
            if st.state in ("starting", "probing") and st.ready_ref is not None:
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
                (self._on_result if st.state == "busy" else self._on_ready)(st)
        else:
            time.sleep(self.config.poll_s)
        now = time.monotonic()
        for st in self.states:
            if st.state in ("starting", "probing") and now > st.deadline:
                self._lost(st, f"worker not ready within {self.config.ready_timeout_s:g} s")
            elif st.state == "aside" and now - st.aside_since >= self.config.unreachable_s:
                self._fence(st, f"stopped answering and did not answer again within "
                                f"{self.config.unreachable_s:g} s; last: {st.last_error}")
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
