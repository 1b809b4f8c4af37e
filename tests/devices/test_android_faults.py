"""Fault injection over the loopback phone: bad timings, garbage output, outages.

Every case runs the real profiler (``profile_ops``) into a real SQLite LUT over
a real ADB connection; the loopback device rewrites what its ``benchmark_model``
prints, or goes off the air. Each checks that the bad op fails with its reason,
the run goes on, what was measured is in the LUT, and nothing waits for long.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from latkit.cli import main
from latkit.devices.base import open_device
from latkit.core.errors import DeviceUnreachableError
from latkit.lut.store import LUT
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.runner import profile_ops

pytestmark = pytest.mark.slow

server = pytest.importorskip("latkit.devices.loopback.server")
loopback_tool = pytest.importorskip("latkit.devices.loopback.benchmark_model")
pytest.importorskip("litert_torch")

# fault -> what the op's failure reason must say
EXPECTED = {
    "negative_time": "damaged or impossible",
    "nan_time": "damaged or impossible",
    "inf_time": "damaged or impossible",
    "zero_time": "impossible inference time (0 us)",  # the parser refuses it before the protocol
    "implausible_time": "damaged or impossible",  # 1e9 us and more: refused by the parser
    "damaged_inference": "damaged or impossible",
    "garbage_output": "no inference timings",
    "huge_output": "more than the 2097152 latkit reads",
}
# few, short samples: every sample is one benchmark_model process on the "phone"
FAST = ProtocolConfig(min_samples=2, max_samples=3, target_rel_ci=0.5, pool_size=1,
                      outage_wait_s=3.0)  # fmt: skip


def _spec(c: int) -> OpSpec:
    return OpSpec(OpType.STEM, (8, 8, 3), (4, 4, c), kernel=3, stride=2, act=Act.RELU6)


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    with server.LoopbackDevice(root / "root") as dev:
        yield dev


@pytest.fixture()
def simulated(phone):
    """The phone with the simulated ``benchmark_model`` (the real one is put back after):
    for cases whose faults are in what the tool prints or in the ADB path, not in the model."""
    tool = Path(phone.root) / "data/local/tmp/benchmark_model"
    real = tool.read_bytes()
    loopback_tool.install_simulator(phone.root, 2.0)
    yield phone
    tool.write_bytes(real)
    tool.chmod(0o755)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def _device(phone, **kw):
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("retries", 1)
    kw.setdefault("shell_timeout_s", 10.0)
    kw.setdefault("run_timeout_s", 60.0)
    return open_device(f"adb+tcp://127.0.0.1:{phone.port}", threads=1, **kw)


def _benchmark_runs(phone) -> int:
    log = Path(phone.root) / ".loopback/taskset.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_each_bad_timing_fails_its_op_and_the_run_goes_on(simulated, cache, tmp_path):
    """One run: an op per fault kind (each fault hits that op's first run), then a good op."""
    faults = list(EXPECTED)
    specs = [_spec(4 + i) for i in range(len(faults) + 1)]
    order = {s.key: i for i, s in enumerate(specs)}
    phone = simulated
    device = _device(phone)
    phone.faults.clear()
    phone.faults.arm(faults[0])

    def on_progress(done, total, key, m):  # ops run one by one: arm the next op's fault
        nxt = order[key] + 1
        if nxt < len(faults):
            phone.faults.arm(faults[nxt])

    try:
        with LUT.open(tmp_path / "phone.db", create=True) as lut:
            report = profile_ops(device, specs, lut, FAST, on_progress=on_progress, cache_dir=cache)
            rows = {r["op_key"]: r for r in lut.rows(device.uri)}
    finally:
        phone.faults.clear()
        device.close()
    for spec, kind in zip(specs, faults):
        assert phone.faults.fired(kind) == 1
        assert EXPECTED[kind] in report.failed[spec.key], (kind, report.failed[spec.key])
        assert "\n" not in report.failed[spec.key]
    good = specs[-1].key
    assert report.measured == [good] and set(rows) == {good}  # the run went on after 8 failures
    assert rows[good]["latency_ms"] > 0 and rows[good]["n_samples"] >= 2
    assert all(0 < v < 1e4 for v in rows[good]["samples_ms"])


@pytest.mark.slow
def test_device_back_within_the_wait_loses_nothing(simulated, cache, tmp_path, caplog):
    specs = [_spec(20), _spec(21)]
    phone = simulated
    device = _device(phone, retries=2)
    config = ProtocolConfig(min_samples=2, max_samples=3, target_rel_ci=0.5, pool_size=2,
                            outage_wait_s=60.0)  # fmt: skip
    start = _benchmark_runs(phone)

    def outage_after_warmups():  # both ops warmed up (6 runs each) and sampled once
        deadline = time.monotonic() + 120
        while _benchmark_runs(phone) < start + 14 and time.monotonic() < deadline:
            time.sleep(0.05)
        phone.faults.outage(4.0)

    watcher = threading.Thread(target=outage_after_warmups, daemon=True)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="latkit.profiler.protocol"), \
                LUT.open(tmp_path / "back.db", create=True) as lut:
            report = profile_ops(device, specs, lut, config, cache_dir=cache)
            rows = {r["op_key"]: r for r in lut.rows(device.uri)}
    finally:
        watcher.join(timeout=5)
        phone.faults.clear()
        device.close()
    assert not report.failed and set(report.measured) == set(rows) == {s.key for s in specs}
    messages = [r.getMessage() for r in caplog.records]
    assert any("is not answering" in m and "trying again in" in m for m in messages)
    assert any("answers again after" in m for m in messages)


@pytest.mark.slow
def test_device_gone_stores_what_is_complete_and_raises_one_line(phone, cache, tmp_path, caplog):
    specs = [_spec(30), _spec(31)]
    device = _device(phone)
    # never converges (the real tool's timings vary): every op keeps sampling until the device goes away
    config = ProtocolConfig(min_samples=2, max_samples=20, target_rel_ci=0.001, pool_size=2,
                            outage_wait_s=3.0)  # fmt: skip
    start = _benchmark_runs(phone)

    def outage_after_two_rounds():  # 2 ops x 6 warm-up runs, then 2 samples each
        deadline = time.monotonic() + 180
        while _benchmark_runs(phone) < start + 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        phone.faults.outage(600.0)

    watcher = threading.Thread(target=outage_after_two_rounds, daemon=True)
    watcher.start()
    lut_path = tmp_path / "gone.db"
    t0, knocked = time.monotonic(), phone.faults.turned_away()
    try:
        with LUT.open(lut_path, create=True) as lut, pytest.raises(DeviceUnreachableError) as e:
            profile_ops(device, specs, lut, config, cache_dir=cache)
    finally:
        watcher.join(timeout=5)
        knocked = phone.faults.turned_away() - knocked
        phone.faults.clear()
        device.close()
    # the phone was knocked on by the call that found it gone (its command dropped and its reconnect
    # turned away, each tried retries + 1 times) and by the wait's probes, one after each warning (its
    # connection, then perhaps its state read); not twice more for each op stored afterwards (closing
    # it, reading the state: each call waits out its retries). Quiet: 3 knocks for 2 probes; loaded,
    # 5 to 8 (CI, 3 workers)
    probes = sum("is not answering" in r.getMessage() for r in caplog.records)
    assert 1 <= probes and knocked <= 2 * probes + 2 * (device.retries + 1) + 1, (knocked, probes)
    waited = time.monotonic() - t0
    message = str(e.value)
    assert "\n" not in message and "rerun the same command to resume" in message
    with LUT.open(lut_path) as lut:
        rows = {r["op_key"]: r for r in lut.rows(device.uri)}
    # every op had >= min_samples when the device went: all stored, with the samples taken
    assert set(rows) == {s.key for s in specs}
    assert f"{len(rows)} measurement(s) of this run are saved" in message
    for row in rows.values():
        # stored mid-sampling: a tiny op's microsecond timings can agree exactly and converge early
        assert row["n_samples"] >= 2 and row["latency_ms"] > 0 and row["n_samples"] < config.max_samples
    assert waited < 170  # bounded, not a hang (the outage itself lasts 600 s)


def test_parse_benchmark_refuses_devices_and_garbage_with_one_line(capsys, tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (2 * 2**20 + 1))
    damaged = tmp_path / "damaged.txt"
    fixture = Path(__file__).parent / "fixtures/bm_current_xnnpack.txt"
    damaged.write_text(fixture.read_text().replace("avg=1196.42", "avg=-1196.42"))
    for path, says in (("/dev/zero", "not a regular file"), (str(tmp_path), "cannot read"),
                       (str(big), "larger than"), (str(damaged), "damaged or impossible")):
        code = main(["parse-benchmark", path])
        err = capsys.readouterr().err.strip()
        assert code != 0 and says in err and len(err.splitlines()) == 1, (path, err)


@pytest.mark.slow
def test_profile_on_a_device_that_is_down_is_one_line(phone, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LATKIT_ADB_CONNECT_WAIT_S", "3")  # the CLI's device keeps trying this long
    phone.faults.outage(60.0)
    try:
        code = main(["profile", "--device", f"adb+tcp://127.0.0.1:{phone.port}", "--space",
                     "proxyless_mobile_w05", "--resolution", "32", "--limit", "1", "--quick",
                     "--lut", str(tmp_path / "down.db")])  # fmt: skip
    finally:
        phone.faults.clear()
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert " times over " in err
    assert float(err.split(" times over ")[1].split(" s)")[0]) < 20  # not the default 20 s wait


@pytest.mark.slow
def test_profile_device_gone_keeps_its_rows_fails_and_resumes(capsys, tmp_path):
    """`latkit profile` whose phone goes away for longer than --device-wait: exit 2, one line naming
    the device and the rows kept; the rerun goes on where it stopped and changes no kept row."""
    from latkit.devices.loopback.benchmark_model import install_simulator
    from latkit.profiler.ops import measurable_by_key
    from latkit.profiler.spaces import get_space

    lut_path = tmp_path / "gone.db"
    # one more operator than the quick protocol measures together (8): the 9th is unmeasured when the 8 land
    n = 9
    argv = ["profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--limit", str(n), "--quick",
            "--max-seconds", "0.5", "--device-wait", "2", "--lut", str(lut_path)]
    with server.LoopbackDevice(tmp_path / "root") as phone:
        install_simulator(phone.root, 1.0)
        uri = f"adb+tcp://127.0.0.1:{phone.port}"

        def outage_after_first_row():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    with sqlite3.connect(f"file:{lut_path}?mode=ro", uri=True) as conn:
                        if conn.execute("SELECT count(*) FROM measurements").fetchone()[0]:
                            break
                except sqlite3.OperationalError:  # not created yet
                    pass
                time.sleep(0.05)
            phone.faults.outage(600.0)

        watcher = threading.Thread(target=outage_after_first_row, daemon=True)
        watcher.start()
        try:
            code = main([*argv, "--device", uri])
        finally:
            watcher.join(timeout=5)
        err = capsys.readouterr().err.strip().splitlines()
        with LUT.open(lut_path, readonly=True) as lut:
            kept = {r["op_key"]: r["created_at"] for r in lut.rows()}
        assert code == 2 and 1 <= len(kept) < n
        assert err[-1].startswith(f"error: {uri} stopped answering and did not come back within 2 s; "
                                  f"{len(kept)} operator(s) measured since this run started are kept in ")
        assert err[-1].endswith(f"{n - len(kept)} are not measured yet: reconnect the device and rerun the "
                                "same command to resume")
        phone.faults.clear()
        assert main([*argv, "--device", uri]) == 0
        err = capsys.readouterr().err
        with LUT.open(lut_path, readonly=True) as lut:
            rows = {r["op_key"]: r["created_at"] for r in lut.rows()}
    # the rerun measured n more, beginning with the ones the first run left: the first n are all in
    assert f"measured {n}, already present {len(kept)}, failed 0" in err
    first = list(measurable_by_key(get_space("proxyless_mobile_w05").operators(32)))[:n]
    assert len(rows) == len(kept) + n and set(first) <= set(rows)
    assert all(rows[k] == t for k, t in kept.items())  # no kept row measured again
