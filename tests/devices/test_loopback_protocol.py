"""Wire-level tests of the loopback ADB device with a raw-socket host."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from latkit.devices.loopback.protocol import (A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION,
                                              A_VERSION_MIN, A_WRTE, HEADER, Message,
                                              checksum, pack)
from latkit.devices.loopback.server import LoopbackDevice
from latkit.core.errors import UnknownNameError, UsageError


class RawHost:
    """A minimal host speaking the transport protocol by hand."""

    def __init__(self, port: int, version: int = A_VERSION, max_payload: int = 1 << 20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.version = version
        self.send(Message(A_CNXN, version, max_payload, b"host::\0"))
        self.cnxn, self.raw_check = self.recv_with_check()

    def send(self, msg: Message) -> None:
        self.sock.sendall(pack(msg, self.version))

    def recv_with_check(self, timeout: float = 5) -> tuple[Message, int]:
        self.sock.settimeout(timeout)
        head = self._exact(24)
        cmd, a0, a1, n, check, magic = HEADER.unpack(head)
        assert magic == cmd ^ 0xFFFFFFFF
        return Message(cmd, a0, a1, self._exact(n) if n else b""), check

    def recv(self, timeout: float = 5) -> Message:
        return self.recv_with_check(timeout)[0]

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def open(self, service: str, local_id: int = 1) -> int:
        self.send(Message(A_OPEN, local_id, 0, service.encode() + b"\0"))
        reply = self.recv()
        assert reply.command == A_OKAY and reply.arg1 == local_id, reply
        return reply.arg0

    def read_stream(self, local_id: int, remote_id: int) -> bytes:
        """Collect WRTE payloads (acknowledging each) until the device's CLSE."""
        out = b""
        while True:
            msg = self.recv()
            if msg.command == A_WRTE:
                out += msg.data
                self.send(Message(A_OKAY, local_id, remote_id))
            elif msg.command == A_CLSE:
                self.send(Message(A_CLSE, local_id, remote_id))
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def device(tmp_path):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:  # a raw host has no key
        yield dev


def test_banner_and_negotiation_modern(device):
    host = RawHost(device.port, A_VERSION, 1 << 20)
    assert host.cnxn.command == A_CNXN
    assert host.cnxn.arg0 == A_VERSION and host.cnxn.arg1 == 1 << 20
    banner = host.cnxn.data.decode()
    assert banner.startswith("device::")
    assert "ro.product.model=Loopback Pixel" in banner
    features = banner.split("features=")[1].split(",")
    assert set(features) == {"shell_v2", "cmd", "fixed_push_mkdir"}
    assert host.raw_check == 0  # checksum skipped from A_VERSION on
    host.close()


def test_old_version_gets_checksums_and_small_payload(device):
    host = RawHost(device.port, A_VERSION_MIN, 1 << 20)
    assert host.cnxn.arg0 == A_VERSION_MIN and host.cnxn.arg1 == 4096
    assert host.raw_check == checksum(host.cnxn.data) != 0
    remote = host.open("shell:head -c 10000 /dev/zero | tr '\\0' x")
    total = 0
    while True:
        msg, check = host.recv_with_check()
        if msg.command == A_CLSE:
            break
        assert msg.command == A_WRTE and len(msg.data) <= 4096
        assert check == checksum(msg.data)
        total += len(msg.data)
        host.send(Message(A_OKAY, 1, remote))
    assert total == 10000
    host.close()


def test_bad_checksum_on_old_version_drops_connection(device):
    host = RawHost(device.port, A_VERSION_MIN, 4096)
    data = b"shell:echo hi\0"
    bad = HEADER.pack(A_OPEN, 1, 0, len(data), checksum(data) + 1, A_OPEN ^ 0xFFFFFFFF)
    host.sock.sendall(bad + data)
    with pytest.raises(ConnectionError):
        host.recv(timeout=5)
    host.close()


def test_unknown_service_is_closed(device):
    host = RawHost(device.port)
    for service in ("reconnect", "host:features", "framebuffer:", "shellz:ls"):
        host.send(Message(A_OPEN, 7, 0, service.encode() + b"\0"))
        reply = host.recv()
        assert (reply.command, reply.arg0, reply.arg1) == (A_CLSE, 0, 7)
    # the connection is still usable afterwards
    remote = host.open("shell:echo alive", 8)
    assert host.read_stream(8, remote) == b"alive\n"
    host.close()


def test_flow_control_one_unacknowledged_wrte(device):
    host = RawHost(device.port, A_VERSION, 4096)
    remote = host.open("exec:head -c 40000 /dev/zero")
    received = 0
    while True:
        msg = host.recv()
        if msg.command == A_CLSE:
            break
        assert msg.command == A_WRTE
        received += len(msg.data)
        # while we hold the OKAY, the device must not send anything else on the stream
        host.sock.settimeout(0.15)
        with pytest.raises(TimeoutError):
            host.sock.recv(1, socket.MSG_PEEK)
        host.send(Message(A_OKAY, 1, remote))
    assert received == 40000
    host.close()


def test_many_streams_at_once(device):
    host = RawHost(device.port)
    remotes = {lid: host.open(f"shell:sleep 0.2; echo stream{lid}", lid) for lid in (1, 2, 3)}
    outputs = {lid: b"" for lid in remotes}
    open_streams = set(remotes)
    while open_streams:
        msg = host.recv()
        lid = msg.arg1
        if msg.command == A_WRTE:
            outputs[lid] += msg.data
            host.send(Message(A_OKAY, lid, remotes[lid]))
        elif msg.command == A_CLSE:
            open_streams.discard(lid)
    assert outputs == {lid: f"stream{lid}\n".encode() for lid in remotes}
    host.close()


def _v2_packets(data: bytes) -> list[tuple[int, bytes]]:
    packets, i = [], 0
    while i < len(data):
        pid, n = struct.unpack_from("<BI", data, i)
        packets.append((pid, data[i + 5:i + 5 + n]))
        i += 5 + n
    return packets


def test_shell_v2_separates_streams_and_reports_exit_code(device):
    host = RawHost(device.port)
    remote = host.open("shell,v2,TERM=xterm,raw:echo out; echo err >&2; exit 7")
    packets = _v2_packets(host.read_stream(1, remote))
    stdout = b"".join(d for p, d in packets if p == 1)
    stderr = b"".join(d for p, d in packets if p == 2)
    assert (stdout, stderr) == (b"out\n", b"err\n")
    assert packets[-1] == (3, bytes([7]))
    host.close()


def test_shell_v2_stdin_and_close_stdin(device):
    host = RawHost(device.port)
    remote = host.open("shell,v2,raw:tr a-z A-Z")
    host.send(Message(A_WRTE, 1, remote, struct.pack("<BI", 0, 6) + b"hello\n"
                      + struct.pack("<BI", 4, 0)))
    packets = []
    buf = b""
    while True:
        msg = host.recv()
        if msg.command == A_OKAY:
            continue
        if msg.command == A_CLSE:
            break
        buf += msg.data
        host.send(Message(A_OKAY, 1, remote))
    packets = _v2_packets(buf)
    assert b"".join(d for p, d in packets if p == 1) == b"HELLO\n"
    assert packets[-1] == (3, b"\0")
    host.close()


def test_exec_drops_stderr(device):
    host = RawHost(device.port)
    remote = host.open("exec:echo out; echo err >&2")
    assert host.read_stream(1, remote) == b"out\n"
    host.close()


def _sync_send_bytes(path: str, payload: bytes, chunk: int = 65536) -> bytes:
    spec = f"{path},{0o100644}".encode()
    out = b"SEND" + struct.pack("<I", len(spec)) + spec
    for i in range(0, len(payload), chunk):
        part = payload[i:i + chunk]
        out += b"DATA" + struct.pack("<I", len(part)) + part
    return out + b"DONE" + struct.pack("<I", 1_700_000_000)




@pytest.mark.parametrize("cuts", [(1, 3, 7, 9, 30), (4, 8, 12, 13), (5,), ()])
def test_sync_send_split_at_awkward_boundaries(device, cuts):
    payload = os.urandom(150_000)
    stream = _sync_send_bytes("/data/local/tmp/split/blob.bin", payload)
    # two requests in one payload at the end: STAT right after DONE
    stat_req = b"STAT" + struct.pack("<I", len("/data/local/tmp/split/blob.bin")) + \
        b"/data/local/tmp/split/blob.bin"
    stream += stat_req
    points = sorted({c for c in cuts} | set(range(100, len(stream), 9973)))
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    host = RawHost(device.port)
    remote = host.open("sync:")
    for piece in pieces:
        host.send(Message(A_WRTE, 1, remote, piece))
        ack = host.recv()
        assert ack.command == A_OKAY
    replies = b""
    while len(replies) < 8 + 16:
        msg = host.recv()
        if msg.command == A_WRTE:
            replies += msg.data
            host.send(Message(A_OKAY, 1, remote))
    assert replies[:8] == b"OKAY\0\0\0\0"
    ident, mode, size, mtime = struct.unpack("<4sIII", replies[8:24])
    assert (ident, size, mtime) == (b"STAT", len(payload), 1_700_000_000)
    assert mode & 0o170000 == 0o100000
    host.send(Message(A_WRTE, 1, remote, b"QUIT\0\0\0\0"))
    stored = device.root / "data/local/tmp/split/blob.bin"
    assert stored.read_bytes() == payload
    host.close()


def test_sync_recv_missing_file_fails(device):
    host = RawHost(device.port)
    remote = host.open("sync:")
    path = b"/data/local/tmp/none"
    host.send(Message(A_WRTE, 1, remote, b"RECV" + struct.pack("<I", len(path)) + path))
    data = b""
    while len(data) < 8:
        msg = host.recv()
        if msg.command == A_WRTE:
            data += msg.data
            host.send(Message(A_OKAY, 1, remote))
    assert data[:4] == b"FAIL" and b"/data/local/tmp/none" in data[8:]
    host.close()


def test_rejects_non_loopback_and_bad_options(tmp_path):
    with pytest.raises(UsageError):
        LoopbackDevice(tmp_path, host="0.0.0.0")
    with pytest.raises(UsageError):
        LoopbackDevice(tmp_path, auth="maybe")
    with pytest.raises(UnknownNameError):
        LoopbackDevice(tmp_path, scenario="lava")
    dev = LoopbackDevice(tmp_path)
    with pytest.raises(UnknownNameError):
        dev.faults.arm("explode")


def test_shell_runs_in_sandbox_with_shims(device):
    host = RawHost(device.port)
    cmd = ("getprop ro.product.model; getprop ro.product.cpu.abi; "
           "cat /sys/devices/system/cpu/cpu4/cpufreq/cpuinfo_max_freq; "
           "cat /sys/devices/system/cpu/cpu0/cpufreq/related_cpus; "
           "grep -c processor /proc/cpuinfo; "
           "taskset f0 sh -c 'echo pinned'; ls /data/local/tmp")
    remote = host.open("shell:" + cmd)
    out = host.read_stream(1, remote).decode().splitlines()
    assert out == ["Loopback Pixel", "arm64-v8a", "2841600", "0 1 2 3", "8", "pinned",
                   "benchmark_model"]
    log = (device.root / ".loopback/taskset.log").read_text()
    assert log.startswith("f0 sh -c")
    host.close()


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_reading_a_socket_closed_by_another_thread_is_a_closed_connection(timeout):
    # a dropped connection closes the socket under the reader: select() on fd -1
    # raised ValueError and killed the server thread with a traceback
    from latkit.devices.loopback.protocol import ProtocolError, read_message

    a, b = socket.socketpair()
    a.close()
    try:
        with pytest.raises(ProtocolError, match="closed"):
            read_message(a, A_VERSION, idle_timeout_s=timeout, message_timeout_s=timeout)
    finally:
        b.close()


def test_socket_closed_while_waiting_is_a_closed_connection():
    import threading
    import time

    from latkit.devices.loopback.protocol import ProtocolError, read_message

    a, b = socket.socketpair()
    caught: list[BaseException] = []

    def reader() -> None:
        try:
            read_message(a, A_VERSION, idle_timeout_s=0.05, message_timeout_s=0.05)
        except BaseException as exc:  # noqa: BLE001 - the test inspects what was raised
            caught.append(exc)

    b.sendall(b"\0" * 4)  # half a header: the reader waits for the rest
    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.01)
    a.close()
    t.join(5)
    b.close()
    assert not t.is_alive() and len(caught) == 1 and isinstance(caught[0], ProtocolError), caught
