"""The ``sync:`` service (file sync protocol v1): STAT, LIST, SEND, RECV, QUIT.

Sync is a byte stream layered on WRTE payloads: a request header or a DATA
chunk may be split across payloads and one payload may carry several requests,
so requests are parsed from a buffer, never from one WRTE.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from .sandbox import contained, to_host
from .streams import Stream, StreamClosed

if TYPE_CHECKING:
    from .server import DeviceContext

log = logging.getLogger(__name__)

REQ = struct.Struct("<4sI")
MAX_DATA = 64 * 1024
MAX_PATH = 1024


class SyncFailure(Exception):
    """A request that must be answered with FAIL."""


class _Reader:
    """Exact reads over the stream's WRTE payloads."""

    def __init__(self, stream: Stream):
        self.stream, self.buf = stream, bytearray()

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.stream.read()
            if data is None:
                raise StreamClosed("sync stream closed")
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class SyncSession:
    """Serves one ``sync:`` stream."""

    def __init__(self, ctx: DeviceContext, stream: Stream):
        self.ctx, self.stream, self.reader = ctx, stream, _Reader(stream)
        self.out = bytearray()

    def run(self) -> None:
        """Answer requests until QUIT or the host closes the stream."""
        try:
            while self._one():
                pass
        except StreamClosed:
            log.debug("sync stream closed")
        finally:
            self.stream.close()

    def _flush(self) -> None:
        if self.out:
            data, self.out = bytes(self.out), bytearray()
            self.stream.write(data)

    def _emit(self, data: bytes) -> None:
        self.out += data
        if len(self.out) >= self.stream.max_payload:
            self._flush()

    def _fail(self, message: str) -> None:
        raw = message.encode()
        self._emit(REQ.pack(b"FAIL", len(raw)) + raw)

    def _one(self) -> bool:
        ident, length = REQ.unpack(self.reader.exact(REQ.size))
        if ident == b"QUIT":
            return False
        if ident not in (b"STAT", b"LIST", b"SEND", b"RECV"):
            self._fail(f"unknown sync request {ident!r}")
            self._flush()
            return False
        if length > MAX_PATH:
            self._fail(f"path too long ({length} bytes)")
            self._flush()
            return False
        arg = self.reader.exact(length).decode("utf-8", "surrogateescape")
        handler = {b"STAT": self._stat, b"LIST": self._list, b"SEND": self._send,
                   b"RECV": self._recv}[ident]
        handler(arg)
        self._flush()
        return True

    def _host(self, device_path: str) -> Path:
        """The host path of ``device_path``; OSError when links lead it out of the sandbox."""
        host = to_host(self.ctx.root, device_path)
        if not contained(self.ctx.root, host):
            log.warning("sync: refusing %s (it leads outside the sandbox)", device_path)
            raise PermissionError(errno.EACCES, "path leads outside the device", device_path)
        return host

    def _stat(self, path: str) -> None:
        try:
            st = os.stat(self._host(path))
            self._emit(struct.pack("<4sIII", b"STAT", st.st_mode & 0xFFFFFFFF,
                                   st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF))
        except OSError:
            self._emit(struct.pack("<4sIII", b"STAT", 0, 0, 0))

    def _list(self, path: str) -> None:
        try:
            with os.scandir(self._host(path)) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    name = entry.name.encode("utf-8", "surrogateescape")
                    self._emit(struct.pack("<4sIIII", b"DENT", st.st_mode & 0xFFFFFFFF,
                                           st.st_size & 0xFFFFFFFF,
                                           int(st.st_mtime) & 0xFFFFFFFF, len(name)) + name)
        except OSError as exc:
            log.debug("LIST %s: %s", path, exc)
        self._emit(struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))

    def _send(self, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"  # 0o100644
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        error: str | None = None
        fh = None
        target = tmp = None
        try:
            target = self._host(path)  # checked before mkdir: a link must not lead it out
            tmp = target.with_name(f".{target.name}.loopback-part")
            target.parent.mkdir(parents=True, exist_ok=True)  # fixed_push_mkdir
            if target.is_dir():
                raise OSError(f"{path} is a directory")
            fh = tmp.open("wb")
        except OSError as exc:
            error = f"cannot open {path}: {exc.strerror or exc}"
        first_chunk = True
        try:
            while True:
                ident, length = REQ.unpack(self.reader.exact(REQ.size))
                if ident == b"DONE":
                    mtime = length
                    break
                if ident != b"DATA":
                    raise StreamClosed(f"unexpected {ident!r} during SEND")
                if length > MAX_DATA:
                    raise StreamClosed(f"DATA chunk of {length} bytes exceeds {MAX_DATA}")
                data = self.reader.exact(length)
                if first_chunk and self.ctx.faults.take("drop_push"):
                    log.warning("fault drop_push: dropping the connection during push of %s",
                                path)
                    self.ctx.drop_connection()
                    raise StreamClosed("dropped by fault injection")
                first_chunk = False
                if fh is not None:
                    fh.write(data)
        except StreamClosed:
            if fh is not None:
                tmp.unlink(missing_ok=True)  # never leave a half-pushed file behind
            raise
        finally:
            if fh is not None:
                fh.close()
        if error is not None or target is None or tmp is None:
            if fh is not None:
                tmp.unlink(missing_ok=True)
            self._fail(error or f"cannot open {path}")
            return
        try:
            os.replace(tmp, target)
            os.chmod(target, stat.S_IMODE(mode) or 0o644)
            os.utime(target, (mtime, mtime))
        except OSError as exc:
            self._fail(f"cannot write {path}: {exc.strerror or exc}")
            return
        self._emit(REQ.pack(b"OKAY", 0))

    def _recv(self, path: str) -> None:
        try:
            fh = self._host(path).open("rb")
        except OSError as exc:
            self._fail(f"cannot read {path}: {exc.strerror or exc}")
            return
        with fh:
            while chunk := fh.read(MAX_DATA):
                self._emit(REQ.pack(b"DATA", len(chunk)) + chunk)
        self._emit(REQ.pack(b"DONE", 0))
