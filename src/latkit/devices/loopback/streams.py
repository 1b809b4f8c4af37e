"""One ADB stream (a host-opened service) with WRTE/OKAY flow control.

The device keeps at most ONE unacknowledged WRTE per stream: :meth:`Stream.write`
sends a payload-sized chunk and waits for the host's OKAY before the next one.
Host writes are acknowledged as soon as they are queued for the service, while
less than :data:`MAX_BACKLOG` bytes wait there; past that the OKAY waits until
the service has read, so a host can make a stream buffer at most about
``MAX_BACKLOG`` plus one payload. A host that keeps writing without waiting for
OKAY breaks the protocol: past :data:`HARD_BACKLOG` its connection is dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from .protocol import A_CLSE, A_OKAY, A_WRTE, MAX_PAYLOAD, Message

MAX_BACKLOG = 1024 * 1024
HARD_BACKLOG = MAX_BACKLOG + 4 * MAX_PAYLOAD


class BacklogOverflow(Exception):
    """The host wrote far past flow control (the connection must be dropped)."""


class StreamClosed(Exception):
    """The stream (or its whole connection) went away."""


class Stream:
    """A service endpoint: ``local_id`` is ours, ``remote_id`` the host's."""

    def __init__(self, send: Callable[[Message], None], local_id: int, remote_id: int,
                 max_payload: int, alive: Callable[[], bool]):
        self._send, self.local_id, self.remote_id = send, local_id, remote_id
        self.max_payload = max_payload
        self._alive = alive
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._acked = threading.Event()
        self._acked.set()
        self._write_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._close_sent = False
        self.closed = threading.Event()
        self.unacked_max = 0  # the most WRTEs ever in flight (kept for tests: always <= 1)
        self._in_flight = 0
        self._backlog = 0  # bytes queued for the service, not yet read
        self._okay_owed = False  # an OKAY held back until the service reads
        self._backlog_lock = threading.Lock()

    # ---------------------------------------------------------------- host side events
    def on_okay(self) -> None:
        """The host acknowledged our last WRTE."""
        self._in_flight = 0
        self._acked.set()

    def on_data(self, data: bytes) -> None:
        """The host wrote ``data``: queue it for the service and acknowledge it

        (now, or once the service has read, when much is already waiting).

        Raises:
            BacklogOverflow: the host ignored flow control.
        """
        with self._backlog_lock:
            self._backlog += len(data)
            if self._backlog > HARD_BACKLOG:
                raise BacklogOverflow(f"stream {self.local_id}: host wrote {self._backlog} "
                                      "bytes without waiting for OKAY")
            hold = self._backlog > MAX_BACKLOG
            self._okay_owed = self._okay_owed or hold
        self._inbox.put(data)
        if not hold:
            self._send(Message(A_OKAY, self.local_id, self.remote_id))

    def on_host_close(self) -> None:
        """The host closed the stream: answer with CLSE and wake the service."""
        self._mark_closed()
        self._send_close()

    def on_connection_lost(self) -> None:
        """The transport died: wake the service; nothing can be sent any more."""
        with self._close_lock:
            self._close_sent = True
        self._mark_closed()

    def _mark_closed(self) -> None:
        self.closed.set()
        self._acked.set()
        self._inbox.put(None)

    # ---------------------------------------------------------------- service side
    def read(self, timeout: float | None = None) -> bytes | None:
        """Next chunk the host wrote; None once the stream is closed.

        Raises:
            queue.Empty: when ``timeout`` passes without data.
        """
        item = self._inbox.get(timeout=timeout)
        if item is None:
            self._inbox.put(None)  # keep reporting EOF to later readers
            return None
        with self._backlog_lock:
            self._backlog -= len(item)
            owed = self._okay_owed and self._backlog <= MAX_BACKLOG
            if owed:
                self._okay_owed = False
        if owed and not self.closed.is_set():
            try:
                self._send(Message(A_OKAY, self.local_id, self.remote_id))
            except OSError:
                pass  # the connection is gone; the reader will see EOF next
        return item

    def write(self, data: bytes) -> None:
        """Send ``data`` in payload-sized WRTEs, one unacknowledged at a time.

        Raises:
            StreamClosed: when the host closes the stream or the connection drops.
        """
        if not data:
            return
        view = memoryview(data)
        with self._write_lock:
            for start in range(0, len(view), self.max_payload):
                chunk = bytes(view[start:start + self.max_payload])
                self._wait_ack()
                self._acked.clear()
                self._in_flight += 1
                self.unacked_max = max(self.unacked_max, self._in_flight)
                self._send(Message(A_WRTE, self.local_id, self.remote_id, chunk))
            self._wait_ack()

    def _wait_ack(self) -> None:
        while not self._acked.wait(0.25):
            if not self._alive():
                break
        if self.closed.is_set() or not self._alive():
            raise StreamClosed(f"stream {self.local_id} closed")

    def close(self) -> None:
        """Close the stream from the device side (sends CLSE once)."""
        self._send_close()
        self._mark_closed()

    def _send_close(self) -> None:
        with self._close_lock:
            if self._close_sent:
                return
            self._close_sent = True
        try:
            self._send(Message(A_CLSE, self.local_id, self.remote_id))
        except OSError:
            pass  # the connection is already gone; nobody is left to tell
