"""The ADB transport wire format: 24-byte headers, commands, checksums.

Every message is a little-endian header ``(command, arg0, arg1, data_length,
data_check, magic)`` followed by ``data_length`` payload bytes. ``magic`` is
``command ^ 0xffffffff``. Protocol version 0x01000000 carries a byte-sum
checksum of the payload; from 0x01000001 on (``A_VERSION_SKIP_CHECKSUM``) the
checksum may be zero and is not checked.
"""

from __future__ import annotations

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
# Accept a little more than we ever advertise: some hosts ignore the negotiated size.
MAX_INCOMING_PAYLOAD = 16 * 1024 * 1024

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


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes or raise :class:`ProtocolError` on EOF."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("connection closed by peer")
        buf += chunk
    return bytes(buf)


def read_message(sock: socket.socket, version: int | None) -> Message:
    """Read one message; verify magic, and the checksum when ``version`` needs it.

    ``version`` is None before the version is negotiated: the checksum is then
    checked only when it is non-zero.
    """
    command, arg0, arg1, length, check, magic = HEADER.unpack(recv_exact(sock, HEADER_BYTES))
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
    if length > MAX_INCOMING_PAYLOAD:
        raise ProtocolError(f"payload of {length} bytes exceeds {MAX_INCOMING_PAYLOAD}")
    data = recv_exact(sock, length) if length else b""
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
