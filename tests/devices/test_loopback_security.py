"""The loopback device's posture: quoting, its folder, authentication, the sandbox, bounds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from latkit.cli import main
from latkit.devices.adb_transport import AdbShellTransport
from latkit.devices.loopback.auth import ensure_key_pair
from latkit.devices.loopback.protocol import (A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE, HEADER,
                                              Message, pack)
from latkit.devices.loopback.streams import HARD_BACKLOG
from latkit.devices.loopback.server import LoopbackDevice
from latkit.core.errors import DeviceError, UsageError

adb_shell = pytest.importorskip("adb_shell")
from adb_shell.adb_device import AdbDeviceTcp  # noqa: E402
from adb_shell.auth.keygen import keygen  # noqa: E402
from adb_shell.auth.sign_pythonrsa import PythonRSASigner  # noqa: E402
from adb_shell.exceptions import (  # noqa: E402
    AdbCommandFailureException,
    DeviceAuthError,
    PushFailedError,
    TcpTimeoutException,
)

SAFETY_S = 30  # only so a broken device fails the test instead of hanging it


def _signer(path: Path) -> PythonRSASigner:
    return PythonRSASigner(path.with_name(path.name + ".pub").read_text(), path.read_text())


def _client(dev: LoopbackDevice) -> AdbDeviceTcp:
    return AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=10)


def _handshake(port: int) -> socket.socket:
    """A raw host that completes CNXN (auth off) and then stays silent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_S)
    sock.sendall(pack(Message(A_CNXN, A_VERSION, 1 << 20, b"host::\0"), A_VERSION))
    head = _recv_exact(sock, 24)
    assert HEADER.unpack(head)[0] == A_CNXN
    _recv_exact(sock, HEADER.unpack(head)[3])
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "device closed the connection"
        buf += chunk
    return buf


def _closed_by_device(sock: socket.socket) -> bool:
    """Wait (bounded by SAFETY_S) for the device to close: True on EOF or reset."""
    sock.settimeout(SAFETY_S)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def _until(predicate, what: str) -> None:
    deadline = time.monotonic() + SAFETY_S
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------ the sandbox folder

def test_root_with_shell_syntax_runs_nothing_and_works(tmp_path):
    root = tmp_path / "r $(touch pwned);y 'q' \"d\" `touch pwned2`"
    key = tmp_path / "key" / "adbkey"
    with LoopbackDevice(root, key_path=key) as dev, \
            AdbShellTransport("127.0.0.1", dev.port, key_path=key) as t:
        assert dev.root == root.resolve()
        assert t.shell(["getprop", "ro.product.model"]).stdout == "Loopback Pixel\n"
        assert t.shell("ls /data/local/tmp").stdout.split() == ["benchmark_model"]
        src = tmp_path / "blob.bin"
        src.write_bytes(os.urandom(50_000))
        t.push(src, "/data/local/tmp/in dir/blob.bin")
        assert (root / "data/local/tmp/in dir/blob.bin").read_bytes() == src.read_bytes()
        assert t.shell("wc -c < '/data/local/tmp/in dir/blob.bin'").stdout.strip() == "50000"
        assert t.shell("sh -c 'cat /sys/devices/system/cpu/cpu4/cpufreq/cpuinfo_max_freq'"
                       ).stdout == "2841600\n"
        assert t.shell("taskset f0 echo pinned").stdout == "pinned\n"
    found = [p for p in tmp_path.rglob("pwned*")] + [p for p in Path("/tmp").glob("pwned*")]
    assert found == []


def test_default_root_is_per_port_in_the_cache_not_the_current_folder(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "cache"))
    with LoopbackDevice(auth="off") as dev:
        assert dev.root == (tmp_path / "cache" / "loopback" / f"port-{dev.port}").resolve()
        assert (dev.root / "system/build.prop").is_file()
        assert dev.key_path == tmp_path / "cache" / "loopback" / "adbkey"
    assert list(cwd.iterdir()) == []


def test_root_of_other_files_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UsageError, match="no loopback device folder"):
        LoopbackDevice(tmp_path, auth="off").start()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_file_in_the_way_is_a_device_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for root in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(DeviceError, match="writable folder"):
            LoopbackDevice(root, auth="off").start()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_root_is_a_device_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DeviceError, match="writable folder"):
            LoopbackDevice(ro / "dev", auth="off").start()
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("kind", ["file", "under-a-file", "other-files"])
def test_cli_bad_root_is_one_error_line(tmp_path, capsys, kind):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes").write_text("x")
    root = {"file": tmp_path / "file", "under-a-file": tmp_path / "file" / "sub",
            "other-files": tmp_path / "full"}[kind]
    code = main(["loopback-device", "--root", str(root), "--port", "0", "--auth", "off"])
    err = capsys.readouterr().err
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--root" in lines[0], err
    assert "Traceback" not in err


def test_cli_out_of_the_box_then_latkit_client_connects(tmp_path):
    """`latkit loopback-device --port P` as a user runs it, then latkit connects with no setup."""
    home, cache, cwd = tmp_path / "home", tmp_path / "cache", tmp_path / "cwd"
    for d in (home, cwd):
        d.mkdir()
    env = {**os.environ, "HOME": str(home), "LATKIT_CACHE": str(cache), "XDG_CONFIG_HOME": ""}
    env.pop("XDG_CONFIG_HOME")
    proc = subprocess.Popen([sys.executable, "-m", "latkit.cli", "loopback-device", "--port", "0"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        code = (f"from latkit.devices.adb_transport import open_transport\n"
                f"with open_transport('adb+tcp://127.0.0.1:{port}', connect_timeout_s=10) as t:\n"
                f"    print(t.shell(['getprop', 'ro.product.model']).stdout, end='')\n")
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                             text=True, timeout=SAFETY_S * 2)
        assert out.stdout == "Loopback Pixel\n", out.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=SAFETY_S)
    assert proc.returncode == 0
    assert list(cwd.iterdir()) == []
    assert (cache / "loopback" / f"port-{port}" / "system/build.prop").is_file()


# ------------------------------------------------------------------ authentication

@pytest.fixture()
def stranger_key(tmp_path):
    path = tmp_path / "stranger" / "adbkey"
    path.parent.mkdir()
    keygen(str(path))
    return path


def test_default_auth_accepts_only_the_device_key(tmp_path, stranger_key):
    key = tmp_path / "key" / "adbkey"
    with LoopbackDevice(tmp_path / "dev", key_path=key) as dev:
        assert dev.auth == "key"
        client = _client(dev)
        with pytest.raises(DeviceAuthError):  # no key at all
            client.connect(auth_timeout_s=1)
        client.close()
        client = _client(dev)
        with pytest.raises((DeviceAuthError, TcpTimeoutException)):  # a key it never saw
            client.connect(rsa_keys=[_signer(stranger_key)], auth_timeout_s=0.5)
        client.close()
        assert not (dev.root / "data/misc/adb/adb_keys").exists()  # nothing learnt
        client = _client(dev)  # a stranger's key first, then the device's: in
        assert client.connect(rsa_keys=[_signer(stranger_key), _signer(key)], auth_timeout_s=1)
        assert client.shell("echo in") == "in\n"
        client.close()
    assert (key.stat().st_mode & 0o777) == 0o600


def test_auth_off_is_an_explicit_opt_in(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        client = _client(dev)
        assert client.connect(auth_timeout_s=1)
        assert client.shell("echo open") == "open\n"
        client.close()


def test_latkit_client_tries_the_loopback_key_after_the_users(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "cache"))
    with LoopbackDevice(tmp_path / "dev") as dev, \
            AdbShellTransport("127.0.0.1", dev.port, connect_timeout_s=5) as t:
        assert t.shell(["echo", "ok"]).stdout == "ok\n"
    assert (tmp_path / "home/.config/latkit/adbkey").is_file()  # the user's key, tried first


def test_unwritable_cache_for_the_key_is_one_device_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache-file").write_text("x")
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "cache-file"))
    with pytest.raises(DeviceError, match="LATKIT_CACHE"):
        LoopbackDevice(tmp_path / "dev").start()
    code = main(["loopback-device", "--root", str(tmp_path / "dev2"), "--port", "0"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "LATKIT_CACHE" in err, err


def test_key_pair_is_made_once_and_reused(tmp_path):
    key = tmp_path / "k" / "adbkey"
    first = ensure_key_pair(key)
    assert ensure_key_pair(key) == first
    assert key.with_name("adbkey.pub").read_text().split()[0] == first.split()[0]


# ------------------------------------------------------------------ sandbox escapes

def test_symlink_escape_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    src = tmp_path / "payload"
    src.write_text("payload")
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        client = _client(dev)
        client.connect(auth_timeout_s=1)
        assert client.shell(f"ln -s '{outside}' /data/local/tmp/esc && echo made") == "made\n"
        with pytest.raises(PushFailedError):
            client.push(str(src), "/data/local/tmp/esc/planted")
        with pytest.raises(PushFailedError):
            client.push(str(src), "/data/local/tmp/esc/newdir/planted")
        with pytest.raises(AdbCommandFailureException):
            client.pull("/data/local/tmp/esc/secret", str(tmp_path / "got"))
        assert client.stat("/data/local/tmp/esc/secret") == (0, 0, 0)
        assert client.list("/data/local/tmp/esc") == []
        assert "secret" not in client.shell("cat /data/local/tmp/esc/secret 2>/dev/null; true")
        # an in-sandbox link still works
        client.shell("mkdir -p /data/local/tmp/d && ln -s /data/local/tmp/d /sdcard/d")
        client.push(str(src), "/sdcard/d/ok")
        assert (dev.root / "data/local/tmp/d/ok").read_text() == "payload"
        client.close()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    got = tmp_path / "got"  # the client creates its local file before the device answers
    assert not got.exists() or got.read_bytes() == b""


# ------------------------------------------------------------------ bounds

def _conn_threads() -> int:
    return sum(t.name.startswith("loopback-conn-") for t in threading.enumerate())


def test_connection_limit_refuses_extras_cleanly(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off", max_connections=2) as dev:
        held = [_handshake(dev.port) for _ in range(2)]
        extra = socket.create_connection(("127.0.0.1", dev.port), timeout=SAFETY_S)
        assert _closed_by_device(extra)
        extra.close()
        assert dev.refused == 1 and dev.connections() == 2
        held.pop().close()
        _until(lambda: dev.connections() == 1, "a closed connection frees its slot")
        again = _handshake(dev.port)  # a slot is free again
        again.close()
        for s in held:
            s.close()


def test_silent_socket_before_handshake_is_closed_and_frees_its_thread(tmp_path):
    before = _conn_threads()
    with LoopbackDevice(tmp_path / "dev", auth="off", handshake_timeout_s=0.3) as dev:
        silent = socket.create_connection(("127.0.0.1", dev.port), timeout=SAFETY_S)
        _until(lambda: dev.connections() == 1, "the device takes the connection")
        assert _closed_by_device(silent)
        silent.close()
        _until(lambda: dev.connections() == 0 and _conn_threads() == before,
               "the connection's thread ends")


def test_idle_connection_and_stalled_message_are_closed(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off", idle_timeout_s=0.3,
                        message_timeout_s=0.3) as dev:
        idle = _handshake(dev.port)
        assert _closed_by_device(idle)
        idle.close()
        stalled = _handshake(dev.port)
        stalled.sendall(b"OPEN\0\0")  # six bytes of a 24-byte header, then nothing
        assert _closed_by_device(stalled)
        stalled.close()
        _until(lambda: dev.connections() == 0, "both connections end")


def test_busy_connection_is_not_idle(tmp_path):
    """A command running silently longer than the idle timeout is not cut."""
    with LoopbackDevice(tmp_path / "dev", auth="off", idle_timeout_s=0.3) as dev:
        client = _client(dev)
        client.connect(auth_timeout_s=1)
        assert client.shell("sleep 1; echo done", read_timeout_s=SAFETY_S) == "done\n"
        client.close()


@pytest.mark.parametrize("after_handshake", [False, True])
def test_oversized_payload_is_refused_before_it_is_read(tmp_path, after_handshake):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        if after_handshake:
            sock = _handshake(dev.port)
        else:
            sock = socket.create_connection(("127.0.0.1", dev.port), timeout=SAFETY_S)
        size = 15 * 1024 * 1024
        cmd = A_CNXN if not after_handshake else int.from_bytes(b"WRTE", "little")
        sock.sendall(HEADER.pack(cmd, 1, 1, size, 0, cmd ^ 0xFFFFFFFF) + b"x" * 1000)
        assert _closed_by_device(sock)
        sock.close()
        _until(lambda: dev.connections() == 0, "the connection ends")
        ok = _handshake(dev.port)  # the device still serves others
        ok.close()


def test_host_ignoring_flow_control_is_dropped(tmp_path):
    """WRTEs to a command that reads nothing: OKAYs stop, and a host writing on regardless
    is disconnected instead of filling the device's memory."""
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        sock = _handshake(dev.port)
        sock.sendall(pack(Message(A_OPEN, 1, 0, b"shell:sleep 60\0"), A_VERSION))
        head = _recv_exact(sock, 24)
        assert HEADER.unpack(head)[0] == A_OKAY
        remote = HEADER.unpack(head)[1]
        chunk = b"z" * (256 * 1024)
        try:
            for _ in range(HARD_BACKLOG // len(chunk) + 2):
                sock.sendall(pack(Message(A_WRTE, 1, remote, chunk), A_VERSION))
        except (BrokenPipeError, ConnectionResetError):
            pass  # dropped while we were still writing
        assert _closed_by_device(sock)
        sock.close()
        _until(lambda: dev.connections() == 0, "the connection ends")
