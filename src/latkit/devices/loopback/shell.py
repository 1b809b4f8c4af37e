"""``shell:``, ``shell,v2:`` and ``exec:`` services: run a command in the sandbox.

* shell v1: stdout and stderr merged into one raw stream, no exit code;
* shell v2: packets of ``id (1 byte) + length (4 bytes LE) + data``: 0 stdin,
  1 stdout, 2 stderr, 3 exit (one byte), 4 close-stdin, 5 window size;
* exec: raw stdout only (stderr is discarded), stdin forwarded raw.

Commands run through ``/bin/sh -c`` with device path prefixes rewritten into
the sandbox's alias (see :mod:`.sandbox`: the root's own path never enters a
command line), and a device path whose real location is outside the sandbox
reads as missing. No pty is allocated, even when asked for.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import threading
from typing import TYPE_CHECKING

from .faults import mangle_output
from .sandbox import rewrite_command, shell_env
from .streams import Stream, StreamClosed

if TYPE_CHECKING:
    from .server import DeviceContext

log = logging.getLogger(__name__)

ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW_SIZE = range(6)
V2_HEADER = struct.Struct("<BI")
READ_BYTES = 64 * 1024


def packet(packet_id: int, data: bytes) -> bytes:
    """One shell v2 packet."""
    return V2_HEADER.pack(packet_id, len(data)) + data


def parse_service(service: str) -> tuple[str, str] | None:
    """``(mode, command)`` for a shell/exec service string, mode in v1/v2/exec."""
    if service.startswith("exec:"):
        return "exec", service[5:]
    if not service.startswith("shell"):
        return None
    head, sep, command = service.partition(":")
    if not sep:
        return None
    options = head.split(",")[1:] if head.startswith("shell,") else []
    if head not in ("shell",) and not head.startswith("shell,"):
        return None
    return ("v2" if "v2" in options else "v1"), command


class ShellSession:
    """One running command bound to one stream."""

    def __init__(self, ctx: DeviceContext, stream: Stream, mode: str, command: str):
        self.ctx, self.stream, self.mode, self.command = ctx, stream, mode, command
        self.proc: subprocess.Popen[bytes] | None = None
        self._drop = ctx.faults.take("drop_shell")
        self._truncate = ctx.faults.take("truncate_output")
        self._mangle = ctx.faults.take_output(command)
        self._dropped = False

    def run(self) -> None:
        """Serve the stream until the command exits or the host goes away."""
        if self.ctx.faults.turn_away():  # an outage: the connection dies at its next command
            log.warning("fault outage: dropping the connection at %r", self.command)
            self._dropped = True
            self.ctx.drop_connection()
            return
        if self.ctx.faults.take("hang_shell"):
            log.warning("fault hang_shell: not answering %r", self.command)
            while not self.stream.closed.wait(0.2) and not self.ctx.stopping.is_set():
                pass
            return
        try:
            self._start()
            self._serve()
        except StreamClosed:
            log.debug("shell stream closed by host: %r", self.command)
        finally:
            self._kill()
            if not self._dropped:
                self.stream.close()

    def _start(self) -> None:
        command = self.command.strip() or "/bin/sh"
        argv = ["/bin/sh", "-c", rewrite_command(self.ctx.alias, command, self.ctx.root)]
        log.info("loopback shell (%s): %s", self.mode, command)
        stderr = {"v1": subprocess.STDOUT, "v2": subprocess.PIPE,
                  "exec": subprocess.DEVNULL}[self.mode]
        self.proc = subprocess.Popen(
            argv, cwd=self.ctx.root, env=shell_env(self.ctx.alias),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            start_new_session=True)
        self.ctx.track(self.proc)

    def _serve(self) -> None:
        assert self.proc is not None
        threading.Thread(target=self._pump_stdin, daemon=True,
                         name=f"loopback-stdin-{self.stream.local_id}").start()
        if self._truncate:
            self._serve_truncated()
            return
        if self._mangle:
            self._serve_mangled(self._mangle)
            return
        pumps = [threading.Thread(target=self._pump_out, args=(self.proc.stdout, ID_STDOUT),
                                  daemon=True)]
        if self.mode == "v2":
            pumps.append(threading.Thread(target=self._pump_out,
                                          args=(self.proc.stderr, ID_STDERR), daemon=True))
        for p in pumps:
            p.start()
        for p in pumps:
            p.join()
        code = self.proc.wait()
        if code < 0:  # killed by a signal: report it the way a shell would
            code = 128 - code
        if self._drop and not self._dropped:
            self._drop_now()
        if self.mode == "v2" and not self._dropped and not self.stream.closed.is_set():
            self.stream.write(packet(ID_EXIT, bytes([code & 0xFF])))

    def _serve_mangled(self, kind: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out = mangle_output(kind, self.proc.stdout.read())
        code = self.proc.wait()
        log.warning("fault %s: sending %d bytes of rewritten benchmark_model output", kind, len(out))
        for at in range(0, len(out), READ_BYTES):
            chunk = out[at:at + READ_BYTES]
            self.stream.write(packet(ID_STDOUT, chunk) if self.mode == "v2" else chunk)
        if self.mode == "v2":
            self.stream.write(packet(ID_EXIT, bytes([code & 0xFF])))

    def _serve_truncated(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait()
        cut = len(out) // 2
        if cut < len(out) and out[cut:cut + 1] == b"\n" and cut > 0:
            cut -= 1  # cut inside a line, never on a line break
        log.warning("fault truncate_output: sending %d of %d bytes", cut, len(out))
        if cut:
            self.stream.write(packet(ID_STDOUT, out[:cut]) if self.mode == "v2" else out[:cut])

    def _pump_out(self, pipe, packet_id: int) -> None:
        try:
            while True:
                data = os.read(pipe.fileno(), READ_BYTES)
                if not data:
                    return
                if self._dropped:
                    continue  # keep draining so the command can finish
                self.stream.write(packet(packet_id, data) if self.mode == "v2" else data)
                if self._drop and not self._dropped:
                    self._drop_now()
        except (StreamClosed, OSError):
            self._kill()

    def _drop_now(self) -> None:
        self._dropped = True
        log.warning("fault drop_shell: dropping the connection during %r", self.command)
        self.ctx.drop_connection()

    def _pump_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        stdin, buf = self.proc.stdin, bytearray()
        try:
            while True:
                data = self.stream.read()
                if data is None:
                    self._kill()  # the host hung up: like adbd, end the command
                    return
                if self.mode != "v2":
                    stdin.write(data)
                    stdin.flush()
                    continue
                buf += data
                while len(buf) >= V2_HEADER.size:
                    pid, length = V2_HEADER.unpack_from(buf)
                    if len(buf) < V2_HEADER.size + length:
                        break
                    payload = bytes(buf[V2_HEADER.size:V2_HEADER.size + length])
                    del buf[:V2_HEADER.size + length]
                    if pid == ID_STDIN:
                        stdin.write(payload)
                        stdin.flush()
                    elif pid == ID_CLOSE_STDIN:
                        stdin.close()
        except (OSError, ValueError):
            return  # the command closed its stdin or exited

    def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
