"""latkit's ADB transports against the loopback device (real ADB over TCP, no mocks)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from latkit.devices.adb_transport import (
    AdbServerTransport,
    AdbShellTransport,
    adb_server_version,
    getprops,
    list_android_devices,
    open_transport,
    parse_adb_uri,
)
from latkit.core.errors import DeviceError, UsageError

LoopbackDevice = pytest.importorskip("latkit.devices.loopback.server").LoopbackDevice


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("phone")
    with LoopbackDevice(root / "root", auth="accept") as dev:
        dev.key = root / "adbkey"
        yield dev


@pytest.fixture
def t(loop):
    tr = AdbShellTransport("127.0.0.1", loop.port, key_path=loop.key)
    yield tr
    tr.close()


def test_exit_status_stdout_and_stderr_are_separated(t):
    res = t.shell("echo out; echo err >&2; exit 7")
    assert res.rc == 7
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    ok = t.shell(["printf", "%s", "no-newline"])
    assert ok == (0, "no-newline", "")


@pytest.mark.parametrize("arg", ["two words", "it's \"quoted\"", "a; echo INJECTED", "$(echo INJECTED)",
                                 "`echo INJECTED`", "*", "back\\slash", "tab\there", "new\nline"])
def test_hostile_arguments_arrive_verbatim(t, arg):
    res = t.shell(["printf", "%s", arg])
    assert res.rc == 0 and res.stdout == arg


def test_marker_is_not_confused_by_output_that_looks_like_one(t):
    res = t.shell(["echo", "__LATKIT_RC_0123456789abcdef__5"])
    assert res.rc == 0 and res.stdout == "__LATKIT_RC_0123456789abcdef__5\n"


def test_push_pull_roundtrip_3mb(t, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    t.push(src, "/data/local/tmp/latkit_blob.bin")
    size = t.shell(["wc", "-c", "/data/local/tmp/latkit_blob.bin"]).stdout.split()[0]
    assert int(size) == src.stat().st_size
    back = tmp_path / "back.bin"
    t.pull("/data/local/tmp/latkit_blob.bin", back)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    t.shell(["rm", "-f", "/data/local/tmp/latkit_blob.bin"])


def test_tcp_nodelay_is_set_and_round_trip_is_fast(t):
    t.shell(["true"])
    sock = t.socket()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    start = time.perf_counter()
    for _ in range(10):
        t.shell(["true"])
    # without TCP_NODELAY each round trip stalls ~40 ms on delayed ACKs
    assert (time.perf_counter() - start) / 10 < 0.035


def test_getprops_reads_identity(t):
    props = getprops(t)
    assert props["model"] == "Loopback Pixel"
    assert props["abi"] and props["android"] and props["soc"]


def test_key_is_generated_then_reused(loop, tmp_path):
    key = tmp_path / "cfg" / "adbkey"
    with AdbShellTransport("127.0.0.1", loop.port, key_path=key) as tr:
        assert tr.shell(["true"]).rc == 0
    first = key.read_bytes()
    with AdbShellTransport("127.0.0.1", loop.port, key_path=key) as tr:
        assert tr.shell(["true"]).rc == 0
    assert key.read_bytes() == first and key.with_suffix(".pub").exists()


def test_refused_key_is_a_clear_device_error(tmp_path):
    with LoopbackDevice(tmp_path / "r", auth="refuse") as dev:
        tr = AdbShellTransport("127.0.0.1", dev.port, key_path=tmp_path / "k", connect_timeout_s=3)
        with pytest.raises(DeviceError, match="did not accept"):
            tr.shell(["true"])


def test_unreachable_device_is_a_device_error(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DeviceError, match="cannot connect"):
        AdbShellTransport("127.0.0.1", port, key_path=tmp_path / "k", connect_timeout_s=1).shell(["true"])


def test_hang_times_out_then_reconnects(loop, t):
    loop.faults.arm("hang_shell", count=1)
    start = time.perf_counter()
    with pytest.raises(DeviceError):
        t.shell(["echo", "x"], timeout_s=1.5)
    assert time.perf_counter() - start < 6
    assert t.shell(["echo", "again"]).stdout == "again\n"  # next call reconnects


def test_uri_parsing():
    assert parse_adb_uri("adb+tcp://10.0.0.2:5555") == ("tcp", "10.0.0.2", 5555)
    assert parse_adb_uri("adb:R58M12ABC") == ("serial", "R58M12ABC", None)
    assert parse_adb_uri("adb+tcp://[::1]:6555") == ("tcp", "::1", 6555)
    assert parse_adb_uri("adb+tcp://localhost:65535") == ("tcp", "localhost", 65535)
    # refused at once, before any connection attempt or wait
    for bad in ("adb+tcp://nohost", "adbx:1", "adb+tcp://h:p", "adb+tcp://[::1", "adb+tcp://::1:5555",
                "adb+tcp://127.0.0.1:99999", "adb+tcp://127.0.0.1:0", "adb+tcp://127.0.0.1:١٢",
                "adb+tcp://a b:5555", "adb+tcp://:5555"):
        with pytest.raises(UsageError):
            parse_adb_uri(bad)


def test_uri_options_are_not_part_of_the_address():
    from latkit.devices.adb_transport import canonical_adb_uri, split_adb_options

    assert parse_adb_uri("adb+tcp://10.0.0.2:5555?delegate=gpu") == ("tcp", "10.0.0.2", 5555)
    assert parse_adb_uri("adb:R58M12ABC?threads=4&delegate=nnapi") == ("serial", "R58M12ABC", None)
    assert parse_adb_uri("adb+tcp://[::1]:6555?threads=1") == ("tcp", "::1", 6555)
    assert split_adb_options("adb:X?threads=4&delegate=none") == ("adb:X", {"threads": 4, "delegate": "none"})
    assert split_adb_options("adb:X") == ("adb:X", {})
    assert canonical_adb_uri("adb:X?threads=4&delegate=gpu") == "adb:X?delegate=gpu&threads=4"
    assert canonical_adb_uri("adb+tcp://h:1?threads=08") == "adb+tcp://h:1?threads=8"
    for bad in ("adb:X?", "adb:X?delegate=cuda", "adb:X?threads=257", "adb:X?threads=-1",
                "adb:X?delegate=gpu&", "adb+tcp://h:1?port=2", "adb:X?threads=9" + "9" * 5000):
        with pytest.raises(UsageError) as e:
            parse_adb_uri(bad)
        assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_open_transport_and_list_devices(loop):
    uri = f"adb+tcp://127.0.0.1:{loop.port}"
    with open_transport(uri, key_path=loop.key) as tr:
        assert tr.shell(["echo", "ok"]).stdout == "ok\n"
    rows = list_android_devices([uri], use_server=False, key_path=loop.key)
    assert len(rows) == 1 and rows[0]["model"] == "Loopback Pixel" and rows[0]["uri"] == uri


def test_no_server_on_a_free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert adb_server_version(port=port) is None


def test_a_usb_serial_not_plugged_in_is_one_line_without_the_connect_wait(monkeypatch):
    """A serial the USB bus does not list is a typo or a loose cable: one round of retries, not 20 s of waiting."""
    pytest.importorskip("usb1")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(s.getsockname()[1]))  # no adb server holds the bus
    s.close()
    from latkit.core.errors import DeviceAbsentError, DeviceUnreachableError
    from latkit.devices.android import AndroidDevice

    with pytest.raises(DeviceAbsentError, match="no USB Android device with serial NOPE-42 is plugged in"):
        AdbShellTransport(serial="NOPE-42").shell(["true"])
    dev = AndroidDevice("adb:NOPE-42", backoff_s=0.01, connect_wait_s=600)
    with pytest.raises(DeviceUnreachableError, match=r"serial NOPE-42 is plugged in.*\(tried 3 times over 0 s\)"):
        dev.connect()  # a 600 s wait would hang the test


ADB = Path("/usr/bin/adb")


@pytest.mark.skipif(not ADB.exists(), reason="no adb binary to run a host adb server")
def test_adb_server_transport(tmp_path, monkeypatch):
    """Through a real adb server (Debian adb, given the device's key) connected to the loopback device."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    key = tmp_path / "device-key" / "adbkey"
    env = {**os.environ, "HOME": str(tmp_path), "ANDROID_ADB_SERVER_PORT": str(port),
           "ADB_VENDOR_KEYS": str(key)}
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    with LoopbackDevice(tmp_path / "root", key_path=key) as dev:  # auth="key": only that key
        try:
            subprocess.run([str(ADB), "start-server"], env=env, check=True, timeout=20, capture_output=True)
            subprocess.run([str(ADB), "connect", dev.serial_uri], env=env, check=True, timeout=20,
                           capture_output=True)
            assert adb_server_version(port=port) is not None
            for _ in range(50):  # the server lists the device once its handshake is done
                if b"\tdevice" in subprocess.run([str(ADB), "devices"], env=env, capture_output=True).stdout:
                    break
                time.sleep(0.1)
            tr = open_transport(f"adb:{dev.serial_uri}", use_server=True)
            assert isinstance(tr, AdbServerTransport)
            res = tr.shell(["printf", "%s", "a; $(b) 'c'"])
            assert res == (0, "a; $(b) 'c'", "")
            assert tr.shell("exit 4").rc == 4
            blob = tmp_path / "b.bin"
            blob.write_bytes(os.urandom(300_000))
            tr.push(blob, "/data/local/tmp/b.bin")
            tr.pull("/data/local/tmp/b.bin", tmp_path / "c.bin")
            assert (tmp_path / "c.bin").read_bytes() == blob.read_bytes()
            # USB through adb-shell must refuse while a server holds the devices
            with pytest.raises(DeviceError, match="adb kill-server"):
                AdbShellTransport(serial="XYZ", key_path=tmp_path / "k").shell(["true"])
        finally:
            subprocess.run([str(ADB), "kill-server"], env=env, timeout=20, capture_output=True)
