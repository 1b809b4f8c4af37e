"""The ADB transport wire format: 24-byte headers, commands, checksums.

Every message is a little-endian header ``(command, arg0, arg1, data_length,
data_check, magic)`` followed by ``data_length`` payload bytes. ``magic`` is
``command ^ 0xffffffff``. Protocol version 0x01000000 carries a byte-sum
checksum of the payload; from 0x01000001 on (``A_VERSION_SKIP_CHECKSUM``) the
checksum may be zero and is not checked.
"""

from __future__ import annotations

import select
import socket
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<6I")
HEADER_BYTES = HEADER.size  # 24


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_WRTE = _cmd(b"WRTE")
A_CLSE = _cmd(b"CLSE")
A_SYNC = _cmd(b"SYNC")
A_STLS = _cmd(b"STLS")

COMMAND_NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY",
                 A_WRTE: "WRTE", A_CLSE: "CLSE", A_SYNC: "SYNC", A_STLS: "STLS"}

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001

MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024
# The most a host may send in one message: what we ever advertise, whatever it negotiated
# (some hosts ignore the negotiated size, none exceeds adb's 1 MiB). A bigger length is
# refused before any of the payload is read, so no connection buffers more than this.
MAX_INCOMING_PAYLOAD = MAX_PAYLOAD
# Before CNXN/AUTH completes only a banner or a public key can arrive: both are small.
MAX_HANDSHAKE_PAYLOAD = 64 * 1024

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3
TOKEN_BYTES = 20


class ProtocolError(Exception):
    """A malformed message or a closed connection (internal to the server)."""


@dataclass(frozen=True)
class Message:
    """One transport message."""

    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        """The four-letter command, or its hex value when unknown."""
        return COMMAND_NAMES.get(self.command, f"0x{self.command:08x}")


def checksum(data: bytes) -> int:
    """The v1 payload checksum: the unsigned sum of all bytes, modulo 2**32."""
    return sum(data) & 0xFFFFFFFF


def pack(msg: Message, version: int) -> bytes:
    """Serialize ``msg`` for a connection speaking protocol ``version``."""
    check = checksum(msg.data) if version < A_VERSION_SKIP_CHECKSUM else 0
    header = HEADER.pack(msg.command, msg.arg0, msg.arg1, len(msg.data), check,
                         msg.command ^ 0xFFFFFFFF)
    return header + msg.data


def _wait_readable(sock: socket.socket, timeout_s: float | None, what: str) -> None:
    # another thread may close the socket (a dropped connection, a shutdown) at any
    # moment: its fileno() is then -1, which select() refuses with ValueError
    if sock.fileno() < 0:
        raise ProtocolError("connection closed")
    if timeout_s is None:
        return
    try:
        readable, _, _ = select.select([sock], [], [], timeout_s)
    except (ValueError, OSError) as exc:  # closed between the check and the select
        raise ProtocolError(f"connection closed ({exc})") from exc
    if not readable:
        raise ProtocolError(f"no data for {timeout_s:g} s {what}")


_SAME = -1.0


def recv_exact(sock: socket.socket, n: int, timeout_s: float | None = None,
               first_timeout_s: float | None = _SAME) -> bytes:
    """Read exactly ``n`` bytes or raise :class:`ProtocolError` on EOF or a stall.

    Args:
        timeout_s: the longest wait for each next chunk (None: no limit).
        first_timeout_s: the longest wait for the first byte (default ``timeout_s``).
    """
    buf = bytearray()
    while len(buf) < n:
        limit = first_timeout_s if not buf and first_timeout_s != _SAME else timeout_s
        _wait_readable(sock, limit, "while idle" if not buf else "in the middle of a message")
        try:
            chunk = sock.recv(n - len(buf))
        except OSError as exc:  # reset, or closed by another thread after the wait
            raise ProtocolError(f"connection closed ({exc})") from exc
        if not chunk:
            raise ProtocolError("connection closed by peer")
        buf += chunk
    return bytes(buf)


def read_message(sock: socket.socket, version: int | None, *,
                 max_payload: int = MAX_INCOMING_PAYLOAD, idle_timeout_s: float | None = None,
                 message_timeout_s: float | None = None) -> Message:
    """Read one message; verify magic, and the checksum when ``version`` needs it.

    ``version`` is None before the version is negotiated: the checksum is then
    checked only when it is non-zero.

    Args:
        max_payload: a longer payload is refused before it is read.
        idle_timeout_s: the longest wait for a message to start (None: forever).
        message_timeout_s: the longest stall once a message has started.
    """
    head = recv_exact(sock, HEADER_BYTES, message_timeout_s, first_timeout_s=idle_timeout_s)
    command, arg0, arg1, length, check, magic = HEADER.unpack(head)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds {max_payload}")
    data = recv_exact(sock, length, message_timeout_s) if length else b""
    must_check = (version is not None and version < A_VERSION_SKIP_CHECKSUM) or (
        version is None and check != 0)
    if must_check and checksum(data) != check:
        raise ProtocolError(f"bad checksum on {COMMAND_NAMES.get(command, hex(command))}")
    return Message(command, arg0, arg1, data)


def negotiate(host_version: int, host_max_payload: int) -> tuple[int, int]:
    """Version and max payload for a host's CNXN (the minimum of both sides)."""
    version = min(max(host_version, A_VERSION_MIN), A_VERSION)
    ours = MAX_PAYLOAD if version >= A_VERSION_SKIP_CHECKSUM else MAX_PAYLOAD_V1
    return version, max(256, min(host_max_payload, ours))
