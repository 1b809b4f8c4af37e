"""Fault injection switches for the loopback device.

``arm(kind, count)`` makes the next ``count`` matching operations misbehave:

* ``drop_push``: drop the connection during a sync SEND, after the first DATA chunk;
* ``drop_shell``: drop the connection while a shell command streams output;
* ``hang_shell``: never answer a shell stream (no output, no exit, no CLSE);
* ``truncate_output``: send the first half of a command's output, cut mid-line, and close.
"""

from __future__ import annotations

import threading

from latkit.errors import UnknownNameError, UsageError

FAULT_KINDS = ("drop_push", "drop_shell", "hang_shell", "truncate_output")


class Faults:
    """Thread-safe counters of armed faults."""

    def __init__(self) -> None:
        self._armed = dict.fromkeys(FAULT_KINDS, 0)
        self._fired = dict.fromkeys(FAULT_KINDS, 0)
        self._lock = threading.Lock()

    def arm(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` operations of ``kind`` fail."""
        if kind not in self._armed:
            raise UnknownNameError("loopback fault", kind, FAULT_KINDS)
        if count < 0:
            raise UsageError(f"fault count must be >= 0, got {count}")
        with self._lock:
            self._armed[kind] = count

    def take(self, kind: str) -> bool:
        """Consume one armed ``kind`` fault; True when the caller must misbehave."""
        with self._lock:
            if self._armed[kind] <= 0:
                return False
            self._armed[kind] -= 1
            self._fired[kind] += 1
            return True

    def armed(self, kind: str) -> int:
        """How many ``kind`` faults are still armed."""
        with self._lock:
            return self._armed[kind]

    def fired(self, kind: str) -> int:
        """How many ``kind`` faults have fired so far."""
        with self._lock:
            return self._fired[kind]

    def clear(self) -> None:
        """Disarm everything."""
        with self._lock:
            self._armed = dict.fromkeys(FAULT_KINDS, 0)
