"""Running loopback phones are findable (issue 26): each registers under the cache while it runs,
``latkit.list_devices()`` lists it, and a connection that fails names it and says how long it tried."""

from __future__ import annotations

import socket
import time
import tomllib
from pathlib import Path

import pytest

from latkit.core.errors import DeviceUnreachableError, MissingExtraError
from latkit.devices import list_devices
from latkit.devices.loopback import running
from latkit.devices.loopback.server import LoopbackDevice


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_running_phone_registers_is_listed_and_is_forgotten_when_it_stops(cache, tmp_path):
    with LoopbackDevice(tmp_path / "elsewhere", port=0, auth="off", serial="lb-7") as phone:
        uri = f"adb+tcp://127.0.0.1:{phone.port}"
        assert (running.registry_dir() / f"port-{phone.port}.json").is_file()
        found = {dev.uri: dev for dev in running.running_loopback()}
        assert found[uri].serial == "lb-7" and found[uri].root == str((tmp_path / "elsewhere").resolve())
        rows = [r for r in list_devices() if r.get("running")]
        assert [r["uri"] for r in rows] == [uri] and rows[0]["format"] == "tflite"
        assert all(not r.get("running") for r in list_devices(loopback=False))
        assert running.loopback_hint(uri) == ""  # the phone asked for is not offered as another
        assert uri in running.loopback_hint("adb+tcp://127.0.0.1:1")
    assert not any(running.registry_dir().glob("*.json"))
    assert [r for r in list_devices() if r.get("running")] == []


def test_a_stale_registration_is_not_listed(cache):
    running.register(_closed_port(), "gone", None)  # a server killed before it could unregister
    assert running.running_loopback() == [] and running.loopback_hint() == ""


def test_a_wrong_port_names_the_running_phone_and_the_time_it_tried(cache, tmp_path):
    from latkit.devices.android import AndroidDevice

    wrong = f"adb+tcp://127.0.0.1:{_closed_port()}"
    with LoopbackDevice(tmp_path / "phone", port=0, auth="off") as phone:
        dev = AndroidDevice(wrong, connect_wait_s=1.0, backoff_s=0.05, retries=2)
        start = time.monotonic()
        with pytest.raises(DeviceUnreachableError) as info:
            dev.connect()
        took = time.monotonic() - start
    message = str(info.value)
    assert f"adb+tcp://127.0.0.1:{phone.port}" in message and "Connection refused" in message
    said = float(message.split(" times over ")[1].split(" s)")[0])
    assert took >= 1.0 and abs(said - took) <= 0.6, (said, took)  # the time it really tried, not less


def test_usb_without_libusb_names_the_emulator_port_and_the_extra(cache, monkeypatch):
    import sys

    from latkit.devices import adb_transport

    monkeypatch.setattr(adb_transport, "adb_server_version", lambda port=None: None)  # no adb server
    monkeypatch.setitem(sys.modules, "adb_shell.transport.usb_transport", None)  # libusb1 missing
    t = adb_transport.AdbShellTransport(serial="emulator-5554")
    with pytest.raises(MissingExtraError, match=r"latkit\[android\].*adb\+tcp://127.0.0.1:5555"):
        t._connect()


def test_the_android_extra_brings_libusb1_for_usb_phones():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    android = pyproject["project"]["optional-dependencies"]["android"]
    assert any(dep.startswith("adb-shell[usb]") or dep.startswith("libusb1") for dep in android), android
