"""The device farm on a real local Ray cluster with real loopback phones and a real LUT.

Three ``latkit loopback-device`` processes (simulated timing, so no core is
burned running models) on two Ray nodes of one machine: the head owns LB1 and
LB3 (a different model), the second node owns LB2 (LB1's twin). Rows,
provenance and counts are asserted, never timings.
"""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
pytest.importorskip("adb_shell")

from latkit.devices.android_state import ThermalPolicy  # noqa: E402
from latkit.core.errors import DeviceError, MissingExtraError, UsageError  # noqa: E402
from latkit.devices.precision import Precision  # noqa: E402
from latkit.lut.store import LUT  # noqa: E402
from latkit.profiler.farm import FarmConfig, StandInFactory, farm_devices, farm_profile  # noqa: E402
from latkit.profiler.farm.identity import (  # noqa: E402
    DeviceIdentity,
    FarmDevice,
    group_by_identity,
)
from latkit.profiler.protocol import ProtocolConfig  # noqa: E402
from latkit.profiler.spaces import get_space  # noqa: E402

# serial -> (model, Ray node): LB1 and LB2 are twins on two nodes, LB3 another model beside LB1
PHONES = {"LB1": ("Loopback Pixel", 0), "LB2": ("Loopback Pixel", 1), "LB3": ("Loopback Fold", 0)}
# one sample per operator: the farm's plumbing is under test, not the statistics
PROTOCOL = ProtocolConfig(warmup_runs=1, warmup_s=0.0, min_samples=1, max_samples=1)
OPTIONS = {"thermal": ThermalPolicy(pre_wait_s=0.0), "backoff_s": 0.05}
FAST = FarmConfig(ready_timeout_s=60.0, restart_backoff_s=0.2, op_timeout_s=60.0, poll_s=0.05)


@pytest.fixture(scope="module")
def specs():
    ops = [s for s in get_space("proxyless_mobile_w05").operators(32) if s.measurable]
    return list({s.key: s for s in ops}.values())[:4]


def _rows(path: Path) -> list[dict]:
    with LUT.open(path) as lut:
        return lut.rows()


def _profile(farm, specs, lut_path, pattern, **kw):
    with LUT.open(lut_path, create=True) as lut:
        return farm_profile(specs, lut, pattern, protocol=PROTOCOL, config=kw.pop("config", FAST),
                            device_options=OPTIONS, model_factory=StandInFactory(farm.stub), **kw)


def test_devices_lists_every_node_and_its_phones(loopback_farm):
    uris = loopback_farm.uris
    reports = farm_devices(host=False)
    by_node = {r.node_id: {d.serial for d in r.devices} for r in reports}
    assert sorted(by_node.values(), key=len) == [{"LB2"}, {"LB1", "LB3"}]
    devices = {d.serial: d for r in reports for d in r.devices}
    assert devices["LB1"].identity == devices["LB2"].identity  # twins: one LUT device
    assert devices["LB3"].identity.model == "Loopback Fold"
    assert devices["LB3"].identity.lut_uri() != devices["LB1"].identity.lut_uri()
    assert devices["LB2"].uri == uris["LB2"] and devices["LB2"].identity.soc == "LB8000"
    assert {r.latkit_version for r in reports} == {__import__("latkit").__version__}


def test_three_phones_one_lut_and_a_worker_killed_mid_op(loopback_farm, specs, tmp_path):
    killed: list[str] = []

    def on_event(kind, st, run):  # a twin's worker dies (SIGKILL) in its second operator
        if kind == "started" and st.device.serial in ("LB1", "LB2") and st.measured >= 1 and not killed:
            os.kill(st.pid, signal.SIGKILL)
            killed.append(st.device.serial)

    lut = tmp_path / "farm.db"
    report = _profile(loopback_farm, specs, lut, "LB*", on_event=on_event)
    assert report.ok and report.rows == 2 * len(specs)
    rows = _rows(lut)
    by_device = collections.defaultdict(list)
    for r in rows:
        by_device[r["device_uri"]].append(r)
    assert len(by_device) == 2  # the twins share one LUT device, the Fold has its own
    for uri, group in by_device.items():  # every op once per device model: none lost, none twice
        assert sorted(r["op_key"] for r in group) == sorted(s.key for s in specs)
        serials = {r["provenance"]["farm"]["serial"] for r in group}
        assert serials <= ({"LB3"} if "Fold" in uri else {"LB1", "LB2"})
        for r in group:
            assert r["latency_ms"] == pytest.approx(loopback_farm.sim_ms)  # what the simulated tool printed
            assert r["provenance"]["farm"]["lut_device"] == uri
    twins = next(u for u in by_device if "Pixel" in u)
    assert {r["provenance"]["farm"]["serial"] for r in by_device[twins]} == {"LB1", "LB2"}
    node_of = {r["provenance"]["farm"]["serial"]: r["provenance"]["farm"]["node_id"] for r in rows}
    assert node_of["LB2"] == loopback_farm.nodes[1].node_id != node_of["LB1"]
    # the kill cost exactly the op in flight: requeued, measured once, the worker re-created
    assert killed and report.requeued >= 1
    victim = next(d for d in report.devices if d["serial"] == killed[0])
    assert victim["restarts"] == 1 and "died" in victim["last_error"]
    with LUT.open(lut) as table:
        assert table.devices()[0]["info"]["farm_members"] in (["LB1", "LB2"], ["LB2", "LB1"], ["LB3"])


def test_refuses_a_pattern_that_matches_nothing(loopback_farm, specs, tmp_path):
    with pytest.raises(UsageError, match=r"no device matches 'pixel9\*'.*adb\+tcp://127\.0\.0\.1"):
        _profile(loopback_farm, specs, tmp_path / "none.db", "pixel9*")


def test_refuses_an_address_with_no_cluster():
    import socket

    from latkit.profiler.farm.cluster import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceError, match=f"no Ray cluster at 127.0.0.1:{port}"), connect(f"127.0.0.1:{port}"):
        pass


def test_cli_one_error_line_for_an_address_with_no_cluster(capsys):
    import socket

    from latkit.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["farm", "devices", "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no Ray cluster at 127.0.0.1:{port}" in err[0]


def test_missing_ray_names_the_extra(monkeypatch):
    from latkit.profiler.farm.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"latkit\[farm\]"):
        import_ray()


def test_driver_killed_then_resumed_measures_nothing_twice(loopback_farm, specs, tmp_path):
    lut = tmp_path / "resume.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "latkit", "farm", "profile", "--space", "proxyless_mobile_w05", "-r", "32",
         "--limit", str(len(specs)), "--devices", "LB3", "--lut", str(lut),
         "--address", loopback_farm.cluster.address,
         "--stand-in-model", str(loopback_farm.stub), "--quick", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True, cwd=tmp_path)
    before: list[tuple] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and driver.poll() is None:
        if lut.exists():
            with sqlite3.connect(lut) as conn:
                try:
                    before = conn.execute("SELECT op_key, created_at FROM measurements").fetchall()
                except sqlite3.OperationalError:
                    before = []
            if before:
                break
        time.sleep(0.1)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)
    assert 1 <= len(before) < len(specs)
    report = _profile(loopback_farm, specs, lut, "LB3")
    group = next(iter(report.groups))
    assert report.ok and report.skipped[group] >= len(before)
    assert not set(report.measured[group]) & {k for k, _ in before}  # nothing measured twice
    rows = _rows(lut)
    assert sorted(r["op_key"] for r in rows) == sorted(s.key for s in specs)
    kept = {r["op_key"]: r["created_at"] for r in rows}
    assert all(kept[k] == t for k, t in before)


def test_refuses_a_node_with_another_latkit_version(loopback_farm, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import latkit._version as v\nv.__version__ = '0.0.0-elsewhere'\n")
    node = loopback_farm.cluster.add_node(num_cpus=0, env_vars={"PYTHONPATH": str(shim)})
    try:
        with pytest.raises(UsageError, match=r"runs latkit 0\.0\.0-elsewhere but the driver runs latkit "):
            farm_devices(host=False)
    finally:
        loopback_farm.cluster.remove_node(node)


def test_node_removed_mid_run_loses_no_row(loopback_farm, specs, tmp_path):
    removed = []

    def on_event(kind, st, run):
        if kind == "started" and st.device.serial == "LB2" and not removed:
            loopback_farm.cluster.remove_node(loopback_farm.nodes[1])  # LB2's host goes down with an op in flight
            removed.append(st.key)

    lut = tmp_path / "node.db"
    config = FarmConfig(ready_timeout_s=60.0, restart_backoff_s=0.2, op_timeout_s=60.0, poll_s=0.05,
                        max_restarts=1)
    report = _profile(loopback_farm, specs, lut, "LB1,LB2", on_event=on_event, config=config)
    assert removed and report.ok
    rows = _rows(lut)
    keys = [r["op_key"] for r in rows]
    assert sorted(keys) == sorted(s.key for s in specs) and len(set(keys)) == len(keys)
    assert removed[0] in {r["op_key"] for r in rows if r["provenance"]["farm"]["serial"] == "LB1"}


def test_precision_is_part_of_the_identity_but_not_of_the_lut_device():
    ident = DeviceIdentity("android", "Pixel", "tensor", "build", "benchmark_model", "abc", 1)
    int8 = ident.at_precision(Precision.INT8)
    assert ident.precision == "fp32" and int8.precision == "int8" and int8 != ident
    assert int8.lut_uri() == ident.lut_uri()  # the LUT row's precision column tells them apart
    assert DeviceIdentity.from_dict(int8.to_dict()) == int8
    with pytest.raises(UsageError, match="unknown precision 'int4'"):  # a node's report is parsed when read
        DeviceIdentity.from_dict({**ident.to_dict(), "precision": "int4"})
    one = FarmDevice("n1", "10.0.0.1", "h1", "adb:A", "A", ident)
    two = FarmDevice("n1", "10.0.0.1", "h1", "adb:B", "B", int8)
    with pytest.raises(UsageError, match="one farm job measures at one precision, not fp32, int8"):
        group_by_identity([one, two])


def test_int8_job_stores_int8_rows_beside_fp32_on_one_lut_device(loopback_farm, specs, tmp_path):
    lut = tmp_path / "farm.db"
    _profile(loopback_farm, specs[:2], lut, "LB3")
    report = _profile(loopback_farm, specs[:2], lut, "LB3", precision=Precision.INT8)
    assert report.ok and report.rows == 2
    rows = _rows(lut)
    by_precision = collections.defaultdict(list)
    for r in rows:
        by_precision[r["precision"]].append(r)
    assert sorted(by_precision) == ["fp32", "int8"] and len(by_precision["int8"]) == 2
    assert {r["device_uri"] for r in rows} == {rows[0]["device_uri"]}
    assert all(r["provenance"]["precision"] == "int8" for r in by_precision["int8"])
    again = _profile(loopback_farm, specs[:2], lut, "LB3", precision=Precision.INT8)  # resumed: nothing twice
    assert again.rows == 0 and len(_rows(lut)) == 4


def test_refuses_a_precision_a_chosen_device_does_not_run(loopback_farm, specs, tmp_path):
    with pytest.raises(UsageError, match=r"cpu:torch does not run int8 models; it runs fp32"):
        _profile(loopback_farm, specs[:1], tmp_path / "farm.db", "cpu:torch", precision=Precision.INT8)
