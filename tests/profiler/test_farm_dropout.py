"""A phone of the farm that dies, or an operator that fails everywhere, on a real Ray cluster.

Three ``latkit loopback-device`` processes of one identity (simulated timing)
owned by one node of a local Ray cluster. One is killed (``SIGKILL``) with an
operator in flight: that operator must go to a sibling after one device wait,
without counting as a try, and the dead phone must be set aside at once. An
operator that cannot be built fails only after a try on each phone. Counts of
rows, tries and waits are asserted, never wall time; the phone killed is the
last test's (the module's phones serve the tests before it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
pytest.importorskip("adb_shell")

from ray.cluster_utils import Cluster  # noqa: E402

from latkit.devices.android_state import ThermalPolicy  # noqa: E402
from latkit.lut.store import LUT  # noqa: E402
from latkit.profiler.farm import FarmConfig, StandInFactory, farm_profile  # noqa: E402
from latkit.profiler.farm.identity import device_resource  # noqa: E402
from latkit.profiler.protocol import ProtocolConfig  # noqa: E402
from latkit.profiler.spaces import get_space  # noqa: E402

SERIALS = ("farm0", "farm1", "farm2")
# one sample per operator, and a short wait for a phone that stops answering (the
# wait a dead phone costs its one operator in flight)
PROTOCOL = ProtocolConfig(warmup_runs=1, warmup_s=0.0, min_samples=1, max_samples=1, outage_wait_s=2.0)
OPTIONS = {"thermal": ThermalPolicy(pre_wait_s=0.0), "backoff_s": 0.05}
CONFIG = FarmConfig(ready_timeout_s=60.0, restart_backoff_s=0.2, op_timeout_s=60.0, poll_s=0.05,
                    probe_s=1.0, unreachable_s=120.0)


def _start_phone(root: Path, serial: str) -> tuple[subprocess.Popen, str]:
    log = root.parent / f"{serial}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "latkit", "loopback-device", "--port", "0", "--root", str(root),
         "--serial", serial, "--simulate-latency-ms", "2"],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,  # noqa: SIM115
        cwd=root.parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()):
            return proc, f"adb+tcp://127.0.0.1:{m.group(1)}"
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"loopback device {serial} did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def phones(tmp_path_factory):
    base = tmp_path_factory.mktemp("dropout")
    started = {s: _start_phone(base / s, s) for s in SERIALS}
    stub = base / "stub.tflite"
    stub.write_bytes(b"TFL3 stand-in: the simulated benchmark_model never reads it")
    yield {s: p for s, (p, _) in started.items()}, {s: u for s, (_, u) in started.items()}, stub
    for proc, _ in started.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(phones, tmp_path_factory):
    _, uris, _ = phones
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path_factory.mktemp("ray-cwd"))  # Ray's workers must import the installed latkit
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "resources": {device_resource(u): 1 for u in uris.values()}})
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()
    mp.undo()


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


def _profile(phones, specs, lut_path, factory=None, **kw):
    _, _, stub = phones
    with LUT.open(lut_path, create=True) as lut:
        report = farm_profile(specs, lut, "adb*", protocol=PROTOCOL, config=CONFIG, device_options=OPTIONS,
                              model_factory=factory or StandInFactory(stub), **kw)
        return report, lut.rows()


def test_an_operator_fails_the_run_only_after_failing_on_every_device(cluster, phones, specs, tmp_path):
    _, _, stub = phones
    bad = specs[2].key
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    try:
        report, rows = _profile(phones, specs, tmp_path / "bad.db", FailingFactory(stub, bad))
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


def test_a_phone_killed_mid_operator_costs_one_wait_and_no_try(cluster, phones, specs, tmp_path):
    procs, _, _ = phones
    killed: dict[str, str] = {}

    def on_event(kind, st, run):  # the first phone to start a second operator dies with it in flight
        if kind == "started" and st.measured >= 1 and not killed:
            os.killpg(procs[st.device.serial].pid, signal.SIGKILL)
            killed[st.key] = st.device.serial

    report, rows = _profile(phones, specs, tmp_path / "killed.db", on_event=on_event)
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
