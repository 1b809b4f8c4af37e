"""A phone of the farm that dies, or an operator that fails everywhere, on a real Ray cluster.

Three ``latkit loopback-device`` processes of one identity (simulated timing)
owned by one node of a local Ray cluster (``loopback_farm`` in conftest.py). One
is killed (``SIGKILL``) with an operator in flight: that operator must go to a
sibling after one device wait, without counting as a try, and the dead phone
must be set aside at once. A phone killed before its worker opens it takes the
same path. An operator that cannot be built fails only after a try on each
phone. Counts of rows, tries and waits are asserted, never wall time; the phones
killed are the last tests' (the module's phones serve the tests before them).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
pytest.importorskip("adb_shell")

from latkit.devices.android_state import ThermalPolicy  # noqa: E402
from latkit.lut.store import LUT  # noqa: E402
from latkit.profiler.farm import FarmConfig, StandInFactory, farm_profile  # noqa: E402
from latkit.profiler.protocol import ProtocolConfig  # noqa: E402
from latkit.profiler.spaces import get_space  # noqa: E402

# three phones of one identity, all owned by the head node
PHONES = {s: ("Loopback Pixel", 0) for s in ("farm0", "farm1", "farm2")}
SERIALS = tuple(PHONES)
# one sample per operator, and a short wait for a phone that stops answering (the
# wait a dead phone costs its one operator in flight)
PROTOCOL = ProtocolConfig(warmup_runs=1, warmup_s=0.0, min_samples=1, max_samples=1, outage_wait_s=2.0)
OPTIONS = {"thermal": ThermalPolicy(pre_wait_s=0.0), "backoff_s": 0.05}
CONFIG = FarmConfig(ready_timeout_s=60.0, restart_backoff_s=0.2, op_timeout_s=60.0, poll_s=0.05,
                    probe_s=1.0, unreachable_s=120.0)


@pytest.fixture(scope="module")
def specs():
    ops = [s for s in get_space("proxyless_mobile_w05").operators(32) if s.measurable]
    return list({s.key: s for s in ops}.values())[:6]


class FailingFactory(StandInFactory):
    """The stand-in model, except one operator's, which names a file that does not exist."""

    def __init__(self, path: str | Path, bad_key: str) -> None:
        super().__init__(path)
        self.bad_key = bad_key

    def __call__(self, spec, cache_dir, precision="fp32"):
        model = super().__call__(spec, cache_dir, precision)
        if spec.key == self.bad_key:
            model.path = Path(self.path).with_name("missing.tflite")
        return model


def _profile(farm, specs, lut_path, factory=None, **kw):
    with LUT.open(lut_path, create=True) as lut:
        report = farm_profile(specs, lut, "adb*", protocol=PROTOCOL, config=CONFIG, device_options=OPTIONS,
                              model_factory=factory or StandInFactory(farm.stub), **kw)
        return report, lut.rows()


def test_an_operator_fails_the_run_only_after_failing_on_every_device(loopback_farm, specs, tmp_path):
    bad = specs[2].key
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    try:
        report, rows = _profile(loopback_farm, specs, tmp_path / "bad.db", FailingFactory(loopback_farm.stub, bad))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    [group] = report.groups
    assert not report.ok and list(report.failed[group]) == [bad]
    why = report.failed[group][bad]
    # three tries, one on each phone, and the line names every phone and its reason
    assert why.startswith("failed 3 time(s) on 3 device(s): ") and "\n" not in why
    assert [why.count(f"on {s}: ") for s in SERIALS] == [1, 1, 1]
    assert why.count("FileNotFoundError") == 3
    assert sorted(r["op_key"] for r in rows) == sorted(s.key for s in specs if s.key != bad)
    assert not report.fenced and not report.dropped


def test_a_phone_killed_mid_operator_costs_one_wait_and_no_try(loopback_farm, specs, tmp_path):
    procs = loopback_farm.procs
    killed: dict[str, str] = {}

    def on_event(kind, st, run):  # the first phone to start a second operator dies with it in flight
        if kind == "started" and st.measured >= 1 and not killed:
            os.killpg(procs[st.device.serial].pid, signal.SIGKILL)
            killed[st.key] = st.device.serial

    report, rows = _profile(loopback_farm, specs, tmp_path / "killed.db", on_event=on_event)
    [(victim_key, victim)] = killed.items()
    siblings = [s for s in SERIALS if s != victim]
    assert procs[victim].wait(timeout=10) == -signal.SIGKILL
    [group] = report.groups
    assert report.ok and not report.failed[group] and not report.unmeasured[group]
    # every operator measured exactly once, the killed phone's by a sibling, at its first counted try
    assert sorted(r["op_key"] for r in rows) == sorted(s.key for s in specs)
    serial = {r["op_key"]: r["provenance"]["farm"]["serial"] for r in rows}
    assert serial[victim_key] in siblings
    assert [r["provenance"]["farm"]["attempt"] for r in rows] == [1] * len(specs)
    # one device wait in the whole run: the operator in flight on the dead phone, handed back once
    assert [(d["key"], d["serial"]) for d in report.dropped] == [(victim_key, victim)]
    assert "DeviceUnreachableError" in report.dropped[0]["reason"] and report.requeued == 1
    devices = {d["serial"]: d for d in report.devices}
    assert devices[victim]["state"] in ("aside", "probing") and devices[victim]["dropouts"] == 1
    assert devices[victim]["measured"] >= 1 and not report.fenced
    assert all(devices[s]["restarts"] == 0 and devices[s]["dropouts"] == 0 for s in siblings)
    assert sum(d["measured"] for d in devices.values()) == len(specs)


def test_a_phone_dead_before_its_first_operator_is_set_aside_not_restarted(loopback_farm, specs, tmp_path):
    procs = loopback_farm.procs
    killed: list[str] = []

    def on_event(kind, st, run):  # the first phone whose worker starts dies before it opens the phone
        if kind == "starting" and not killed:
            os.killpg(procs[st.device.serial].pid, signal.SIGKILL)
            killed.append(st.device.serial)

    report, rows = _profile(loopback_farm, specs, tmp_path / "dead.db", on_event=on_event)
    [victim] = killed
    [group] = report.groups
    assert report.ok and not report.failed[group] and not report.unmeasured[group]
    assert sorted(r["op_key"] for r in rows) == sorted(s.key for s in specs)
    assert [r["provenance"]["farm"]["attempt"] for r in rows] == [1] * len(specs)
    assert victim not in {r["provenance"]["farm"]["serial"] for r in rows}
    # no operator was in flight on it: nothing handed back, nothing waited for, no restart
    assert not report.dropped and report.requeued == 0 and not report.fenced
    dead = next(d for d in report.devices if d["serial"] == victim)
    assert dead["state"] in ("aside", "probing") and dead["restarts"] == 0 and dead["measured"] == 0
    assert "DeviceUnreachableError" in dead["last_error"]
