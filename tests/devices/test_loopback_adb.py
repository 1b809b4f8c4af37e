"""Interoperability: real ADB clients nobody here wrote, against the loopback device."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from latkit.devices.loopback.auth import ensure_key_pair
from latkit.devices.loopback.server import LoopbackDevice

pytestmark = pytest.mark.slow

adb_shell = pytest.importorskip("adb_shell")
from adb_shell.adb_device import AdbDeviceTcp  # noqa: E402
from adb_shell.auth.keygen import keygen  # noqa: E402
from adb_shell.auth.sign_pythonrsa import PythonRSASigner  # noqa: E402
from adb_shell.exceptions import DeviceAuthError, TcpTimeoutException  # noqa: E402


def _bundled_adb() -> str | None:
    try:
        import adbutils
    except ImportError:
        return None
    path = Path(adbutils.__file__).parent / "binaries" / "adb"
    return str(path) if path.is_file() else None


ADB_BINARIES = {"debian": shutil.which("adb") or "/usr/bin/adb", "adbutils": _bundled_adb()}


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 5555 <= port <= 5585:
            return port


class AdbHost:
    """An isolated adb server: its own HOME, port, no mDNS; ``vendor_key`` via ADB_VENDOR_KEYS."""

    def __init__(self, binary: str, home: Path, vendor_key: Path | None = None):
        home.mkdir(parents=True, exist_ok=True)
        self.binary, self.port = binary, _free_port()
        self.env = dict(os.environ, HOME=str(home), ANDROID_USER_HOME=str(home / ".android"),
                        ANDROID_SDK_HOME=str(home), ANDROID_ADB_SERVER_PORT=str(self.port),
                        ADB_MDNS="0", ADB_MDNS_AUTO_CONNECT="0", ADB_LIBUSB="0")
        self.env.pop("ADB_VENDOR_KEYS", None)
        if vendor_key is not None:
            self.env["ADB_VENDOR_KEYS"] = str(vendor_key)

    def __call__(self, *args: str, check: bool = True, timeout: float = 30):
        result = subprocess.run([self.binary, "-P", str(self.port), *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"adb {args} failed: {result.stdout} {result.stderr}")
        return result

    def kill(self) -> None:
        self("kill-server", check=False)


@pytest.fixture(params=sorted(ADB_BINARIES))
def adb_binary(request):
    path = ADB_BINARIES[request.param]
    if not path or not Path(path).is_file():
        pytest.skip(f"{request.param} adb binary not installed (apt install adb / adbutils)")
    return path


@pytest.fixture()
def adb_host(adb_binary, tmp_path):
    host = AdbHost(adb_binary, tmp_path / "home")
    host("start-server")
    yield host
    host.kill()


@pytest.fixture()
def device_key(tmp_path):
    """The loopback device's own key pair, made before any client starts."""
    key = tmp_path / "device-key" / "adbkey"
    ensure_key_pair(key)
    return key


@pytest.fixture(params=["vendor-keys", "home-key"])
def keyed_adb_host(request, adb_binary, tmp_path, device_key):
    """An adb server holding the device's key: through ADB_VENDOR_KEYS or as its own adbkey."""
    home = tmp_path / "keyed-home"
    if request.param == "home-key":
        (home / ".android").mkdir(parents=True)
        shutil.copy(device_key, home / ".android/adbkey")
        host = AdbHost(adb_binary, home)
    else:
        host = AdbHost(adb_binary, home, vendor_key=device_key)
    host("start-server")
    yield host
    host.kill()


def _connect(adb, dev):
    adb("connect", dev.serial_uri)
    adb("-s", dev.serial_uri, "wait-for-device", timeout=20)


def test_adb_connect_devices_shell_push_pull(keyed_adb_host, tmp_path, device_key):
    """The default auth: adb holding the device's own key gets in."""
    adb_host = keyed_adb_host
    with LoopbackDevice(tmp_path / "dev", model="Loopback Pixel", key_path=device_key) as dev:
        _connect(adb_host, dev)
        listing = adb_host("devices", "-l").stdout
        line = next(ln for ln in listing.splitlines() if ln.startswith(dev.serial_uri))
        assert line.split()[1] == "device"
        assert "model:Loopback_Pixel" in line and "product:loopback_pixel" in line

        shell = adb_host("-s", dev.serial_uri, "shell", "echo out; echo err >&2; exit 3",
                         check=False)
        assert (shell.returncode, shell.stdout, shell.stderr) == (3, "out\n", "err\n")

        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
        adb_host("-s", dev.serial_uri, "push", str(blob), "/data/local/tmp/in/blob.bin")
        on_device = dev.root / "data/local/tmp/in/blob.bin"
        back = tmp_path / "back.bin"
        adb_host("-s", dev.serial_uri, "pull", "/data/local/tmp/in/blob.bin", str(back))
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        assert hashlib.sha256(on_device.read_bytes()).hexdigest() == digest
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
        size = adb_host("-s", dev.serial_uri, "shell", "wc -c < /data/local/tmp/in/blob.bin")
        assert int(size.stdout) == blob.stat().st_size


def test_adb_auth_accept_then_silent_reconnect(adb_host, tmp_path):
    keys = tmp_path / "adb_keys"
    with LoopbackDevice(tmp_path / "dev", auth="accept", accepted_keys_path=keys) as dev:
        adb_host("connect", dev.serial_uri)
        adb_host("-s", dev.serial_uri, "wait-for-device", timeout=20)
        assert adb_host("-s", dev.serial_uri, "shell", "echo ok").stdout == "ok\n"
        stored = keys.read_text().splitlines()
        host_key = (Path(adb_host.env["HOME"]) / ".android/adbkey.pub").read_text().split()[0]
        assert len(stored) == 1 and stored[0].split()[0] == host_key
        adb_host("disconnect", dev.serial_uri)
        adb_host.kill()
        # A fresh server with the same key: accepted by signature, no key sent again.
        adb_host("start-server")
        out = adb_host("connect", dev.serial_uri).stdout
        assert out.startswith("connected to"), out
        adb_host("-s", dev.serial_uri, "wait-for-device", timeout=20)
        assert len(keys.read_text().splitlines()) == 1


def test_adb_auth_refused_shows_unauthorized(adb_host, tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="refuse") as dev:
        adb_host("connect", dev.serial_uri, check=False)
        deadline = time.monotonic() + 10
        state = ""
        while time.monotonic() < deadline:
            listing = adb_host("devices").stdout
            state = next((ln.split()[1] for ln in listing.splitlines()
                          if ln.startswith(dev.serial_uri)), "")
            if state == "unauthorized":
                break
            time.sleep(0.2)
        assert state == "unauthorized"
        assert not (dev.root / "data/misc/adb/adb_keys").exists()


# ------------------------------------------------------------------ adb-shell (python)

@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "adbkey"
    keygen(str(path))
    return PythonRSASigner(path.with_suffix(".pub").read_text(), path.read_text())


def test_adb_shell_client_without_auth(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=5)
        assert client.connect(auth_timeout_s=1)
        assert client.shell("echo hello; getprop ro.product.model") == "hello\nLoopback Pixel\n"
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(30_000))
        client.push(str(src), "/sdcard/f.bin")
        assert (dev.root / "sdcard/f.bin").read_bytes() == src.read_bytes()
        client.pull("/sdcard/f.bin", str(tmp_path / "g.bin"))
        assert (tmp_path / "g.bin").read_bytes() == src.read_bytes()
        client.close()


def test_adb_shell_client_auth_accept_and_reuse(tmp_path, signer):
    keys = tmp_path / "keys"
    with LoopbackDevice(tmp_path / "dev", auth="accept", accepted_keys_path=keys) as dev:
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=5)
        assert client.connect(rsa_keys=[signer], auth_timeout_s=2)
        assert client.shell("echo first") == "first\n"
        client.close()
        assert len(keys.read_text().splitlines()) == 1
        before = keys.stat().st_mtime_ns
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=5)
        assert client.connect(rsa_keys=[signer], auth_timeout_s=2)
        assert client.shell("echo second") == "second\n"
        client.close()
        assert keys.stat().st_mtime_ns == before


def test_adb_shell_client_refused(tmp_path, signer):
    with LoopbackDevice(tmp_path / "dev", auth="refuse") as dev:
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=2)
        with pytest.raises((DeviceAuthError, TcpTimeoutException)):
            client.connect(rsa_keys=[signer], auth_timeout_s=0.5)
        client.close()


def test_wrong_signature_is_not_accepted(tmp_path, signer):
    """A stored key authenticates only its own signatures."""
    other = tmp_path / "other"
    keygen(str(other))
    keys = tmp_path / "keys"
    keys.write_text(other.with_suffix(".pub").read_text())
    with LoopbackDevice(tmp_path / "dev", auth="refuse", accepted_keys_path=keys) as dev:
        good = PythonRSASigner(other.with_suffix(".pub").read_text(), other.read_text())
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=2)
        assert client.connect(rsa_keys=[good], auth_timeout_s=0.5)
        client.close()
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=2)
        with pytest.raises((DeviceAuthError, TcpTimeoutException)):
            client.connect(rsa_keys=[signer], auth_timeout_s=0.5)
        client.close()


# ------------------------------------------------------------------ fault injection

def test_faults_drop_push_and_shell_then_recover(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(40_000))
        dev.faults.arm("drop_push")
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=3)
        client.connect(auth_timeout_s=1)
        with pytest.raises(Exception):  # noqa: B017 - any transport error is the point
            client.push(str(src), "/data/local/tmp/f.bin", read_timeout_s=1)
        client.close()
        assert not (dev.root / "data/local/tmp/f.bin").exists()
        assert dev.faults.fired("drop_push") == 1

        dev.faults.arm("drop_shell")
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=3)
        client.connect(auth_timeout_s=1)
        with pytest.raises(Exception):  # noqa: B017
            client.shell("seq 1 50000", read_timeout_s=1)
        client.close()

        # disarmed: everything works again on a fresh connection
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=5)
        client.connect(auth_timeout_s=1)
        client.push(str(src), "/data/local/tmp/f.bin")
        assert (dev.root / "data/local/tmp/f.bin").read_bytes() == src.read_bytes()
        client.close()


def test_faults_truncate_and_hang(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=3)
        client.connect(auth_timeout_s=1)
        full = client.shell("seq 1 2000")
        dev.faults.arm("truncate_output")
        cut = client.shell("seq 1 2000")
        assert full.startswith(cut) and 0 < len(cut) < len(full)
        assert not cut.endswith("\n")  # cut mid-line
        dev.faults.arm("hang_shell")
        with pytest.raises(TcpTimeoutException):
            client.shell("echo never", read_timeout_s=1, transport_timeout_s=1)
        client.close()
