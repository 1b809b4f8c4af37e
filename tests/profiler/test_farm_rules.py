"""The farm driver's rules for a failed operator and a device that stops answering, without Ray.

The driver's bookkeeping runs for real on three devices of one identity; Ray is
a stand-in that hands out call tokens, so each rule is checked in milliseconds
(``test_farm_dropout.py`` checks the same on a real cluster with real phones).
"""

from __future__ import annotations

import pytest

from latkit.core.errors import UsageError
from latkit.profiler.farm.driver import FarmRun
from latkit.profiler.farm.identity import DeviceIdentity, FarmDevice
from latkit.profiler.farm.records import FarmConfig
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.protocol import ProtocolConfig

IDENTITY = DeviceIdentity("android", "Pixel", "tensor", "build", "benchmark_model", "abc", 1)


class _Method:
    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args):
        self.calls.append((self.name, args))
        return (self.name, len(self.calls))


class _Actor:
    def __init__(self) -> None:
        self.calls: list = []
        self.measure = _Method(self.calls, "measure")
        self.ready = _Method(self.calls, "ready")


class _Ray:
    """What the driver's bookkeeping calls: ``remote`` (a worker class, then its actors),
    ``get`` (a worker's answer to ``ready``: ``answer``, or ``error`` raised) and ``kill``."""

    def __init__(self) -> None:
        self.killed = 0
        self.answer: dict = {}
        self.error: Exception | None = None

    def remote(self, *args):
        return self if len(args) == 1 else _Actor()

    def options(self, **kw):
        return self

    def get(self, ref, timeout=None):
        if self.error is not None:
            raise self.error
        return self.answer

    def kill(self, actor, no_restart=True):
        self.killed += 1


class _Sink:
    def done_keys(self, device_uri, *, precision="fp32"):
        return set()


def _run(n_devices: int = 3, n_ops: int = 4) -> FarmRun:
    devices = [FarmDevice("node", "10.0.0.1", "host", f"adb+tcp://127.0.0.1:{7000 + i}", f"farm{i}", IDENTITY,
                          f"latkit_adb:127.0.0.1:{7000 + i}") for i in range(n_devices)]
    specs = [OpSpec(OpType.STEM, (8, 8, 3), (4, 4, 4 + i), kernel=3, stride=2, act=Act.RELU6)
             for i in range(n_ops)]
    run = FarmRun(_Ray(), devices, specs, _Sink(), ProtocolConfig(), FarmConfig(), None, None, None, None)
    for st in run.states:
        st.state, st.actor = "idle", _Actor()
    return run


def _fail(run: FarmRun, serial: str, why: str = "MeasurementError: broken") -> str:
    st = next(s for s in run.states if s.device.serial == serial)
    key = st.key
    run._op_error(st, why)
    return key


def test_an_operator_is_tried_on_each_device_before_it_fails():
    run = _run()
    d0, d1, d2 = run.states
    run._dispatch(d0)
    bad = _fail(run, "farm0")
    assert list(run.queues[d0.group])[0] == bad
    run._dispatch(d0)  # farm0 failed it: it takes the next operator, and bad waits for a sibling
    assert d0.key != bad
    run._dispatch(d1)
    assert d1.key == bad
    _fail(run, "farm1")
    run._dispatch(d2)
    assert d2.key == bad and d2.actor.calls[-1][1][1] == 3  # the third try
    _fail(run, "farm2", "MeasurementError: still broken")
    assert bad not in run.queues[d0.group]
    assert run.report.failed[d0.group][bad] == (
        "failed 3 time(s) on 3 device(s): on farm0: MeasurementError: broken; on farm1: MeasurementError: "
        "broken; on farm2: MeasurementError: still broken")
    assert not run.report.dropped and not run.report.fenced


def test_on_one_device_an_operator_gets_its_three_tries_there():
    run = _run(n_devices=1)
    [d0] = run.states
    for _ in range(3):
        run._dispatch(d0)
        key = _fail(run, "farm0")
    assert run.report.failed[d0.group][key].startswith("failed 3 time(s) on 1 device(s): on farm0: ")
    assert d0.state == "fenced"  # three operators in a row failed on it


def test_a_device_that_stops_answering_is_set_aside_and_its_operator_goes_to_a_sibling_untried():
    run = _run()
    d0, d1, d2 = run.states
    run._dispatch(d2)
    lost = d2.key
    run._aside(d2, "DeviceUnreachableError: farm2 stopped answering")
    assert d2.state == "aside" and d2.dropouts == 1 and d2.actor is None
    assert list(run.queues[d2.group])[0] == lost and run.report.requeued == 1
    assert run.report.dropped == [{"lut_device": d2.group, "key": lost, "serial": "farm2",
                                   "reason": "DeviceUnreachableError: farm2 stopped answering"}]
    run._dispatch(d0)
    assert d0.key == lost and d0.actor.calls[-1][1][1] == 1  # its first counted try


def test_an_operator_that_loses_every_device_under_it_fails_bounded():
    run = _run()
    key = None
    for st in run.states:  # the operator goes from one device to the next, and each stops answering
        run._dispatch(st)
        key = key or st.key
        assert st.key == key
        run._aside(st, f"DeviceUnreachableError: {st.device.serial} gone")
    group = run.states[0].group
    assert len(run.report.dropped) == 3 and key in run.report.failed[group]
    assert run.report.failed[group][key].startswith(
        "failed 0 time(s) (and 3 time(s) its device stopped answering) on 3 device(s): on farm0: ")


def test_a_device_set_aside_is_taken_back_when_a_probe_finds_it_and_fenced_when_none_does():
    from latkit import __version__
    from latkit.core.errors import DeviceError

    run = _run()
    d2 = run.states[2]
    run._dispatch(d2)
    run._aside(d2, "DeviceUnreachableError: gone")
    run.ray.error = DeviceError("cannot connect to Android device: Connection refused")
    run._start(d2, probing=True)
    assert d2.state == "probing"
    run._on_ready(d2)  # still not answering: aside again, the next probe later
    assert d2.state == "aside" and d2.probes == 1 and d2.probe_at > d2.aside_since + run.config.probe_s
    run.ray.error, run.ray.answer = None, {"pid": 42, "latkit_version": __version__}
    run._start(d2, probing=True)
    run._on_ready(d2)
    assert d2.state == "idle" and d2.pid == 42  # answers again: measures on
    run._dispatch(d2)
    run._aside(d2, "DeviceUnreachableError: gone again")
    d2.aside_since -= run.config.unreachable_s  # and this time it stays away
    run.ray.error = DeviceError("cannot connect")
    run._start(d2, probing=True)
    run._on_ready(d2)
    assert d2.state == "fenced" and d2.dropouts == 2
    assert run.report.fenced[d2.device.name].startswith("stopped answering and did not answer again within 300 s")


def test_probe_settings_are_validated():
    with pytest.raises(UsageError, match="farm probe_s must be a positive number"):
        FarmConfig(probe_s=0)
    with pytest.raises(UsageError, match="farm unreachable_s must be a positive number"):
        FarmConfig(unreachable_s=float("inf"))


def test_a_device_dead_at_the_start_is_set_aside_and_probed_not_restarted():
    from latkit import __version__
    from latkit.core.errors import DeviceUnreachableError

    run = _run()
    d0, d1, d2 = run.states
    run.ray.error = DeviceUnreachableError("farm2 does not answer: cannot connect to Android device farm2")
    run._start(d2)
    run._on_ready(d2)  # its worker could not open it: the same path as a phone dying under an operator
    assert d2.state == "aside" and d2.restarts == 0 and d2.dropouts == 0 and d2.actor is None
    assert d2.last_error.startswith("worker did not start: DeviceUnreachableError: farm2 does not answer")
    assert not run.report.dropped and run.report.requeued == 0 and not run.report.fenced
    run._dispatch(d0)
    run._dispatch(d1)  # the siblings take the operators meanwhile
    assert {d0.key, d1.key} == set(list(run.specs)[:2]) and len(run.queues[d0.group]) == 2
    run.ray.error, run.ray.answer = None, {"pid": 7, "latkit_version": __version__}
    run._start(d2, probing=True)
    run._on_ready(d2)  # a probe finds it answering: it measures too
    assert d2.state == "idle" and d2.restarts == 0
    run._dispatch(d2)
    assert d2.key == list(run.specs)[2]


def test_a_worker_that_fails_to_start_for_another_reason_is_re_created():
    from latkit.core.errors import DeviceError

    run = _run()
    d2 = run.states[2]
    run.ray.error = DeviceError("no benchmark_model on farm2; install LiteRT's benchmark_model there")
    run._start(d2)
    run._on_ready(d2)
    assert d2.state == "lost" and d2.restarts == 1 and d2.dropouts == 0


def test_a_phone_that_does_not_answer_its_worker_says_unreachable():
    pytest.importorskip("adb_shell")
    import socket

    from latkit.core.errors import DeviceUnreachableError
    from latkit.profiler.farm.node import DeviceWorker

    with socket.socket() as s:  # a port nothing listens on: the phone is dead
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"adb+tcp://127.0.0.1:{port}"
    fd = FarmDevice("node", "10.0.0.1", "host", uri, "farm9", IDENTITY, f"latkit_adb:127.0.0.1:{port}")
    worker = DeviceWorker(fd.to_dict(), ProtocolConfig().to_dict(), {"connect_wait_s": 0.0}, timeout_s=2.0)
    with pytest.raises(DeviceUnreachableError, match=f"127.0.0.1:{port}"):
        worker.ready()
