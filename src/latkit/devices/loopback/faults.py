"""Fault injection switches for the loopback device.

``arm(kind, count)`` makes the next ``count`` matching operations misbehave:

* ``drop_push``: drop the connection during a sync SEND, after the first DATA chunk;
* ``drop_shell``: drop the connection while a shell command streams output;
* ``hang_shell``: never answer a shell stream (no output, no exit, no CLSE);
* ``truncate_output``: send the first half of a command's output, cut mid-line, and close;
* ``garbage_output``, ``negative_time``, ``zero_time``, ``nan_time``, ``inf_time``,
  ``implausible_time``, ``damaged_inference``, ``huge_output``: rewrite what the next
  ``count`` ``benchmark_model`` runs print (see :func:`mangle_output`); other commands
  are untouched.

``outage(seconds)`` takes the whole device off the air for that long: new
connections are closed at once and a connection that starts a command is dropped.
"""

from __future__ import annotations

import re
import threading
import time

from latkit.core.errors import UnknownNameError, UsageError

OUTPUT_FAULTS = ("garbage_output", "negative_time", "zero_time", "nan_time", "inf_time",
                 "implausible_time", "damaged_inference", "huge_output")
FAULT_KINDS = ("drop_push", "drop_shell", "hang_shell", "truncate_output", *OUTPUT_FAULTS)
HUGE_OUTPUT_BYTES = 3 * 2**20  # more than latkit reads of one run (2 MiB)

_AVG_RE = re.compile(rb"\bavg=[-+0-9.eE]+")
_SUMMARY_INF_RE = re.compile(rb"Inference \(avg\): [-+0-9.eE]+")
_VALUES = {"negative_time": b"-1500", "zero_time": b"0", "nan_time": b"nan", "inf_time": b"inf",
           "implausible_time": b"9e15"}  # 9e15 us per run: 285 years


def mangle_output(kind: str, out: bytes) -> bytes:
    """What ``benchmark_model`` output ``out`` becomes under output fault ``kind``.

    The timing faults set every ``avg=`` and the summary's ``Inference (avg)`` to
    a negative, zero, NaN, infinite or absurd (285 years per run) value;
    ``damaged_inference`` garbles the inference phase's stat line and summary
    item but leaves the warmup's intact; ``garbage_output`` replaces the output
    with binary junk; ``huge_output`` puts 3 MiB of log lines before it.
    """
    if kind in _VALUES:
        value = _VALUES[kind]
        out = _AVG_RE.sub(b"avg=" + value, out)
        return _SUMMARY_INF_RE.sub(b"Inference (avg): " + value, out)
    if kind == "damaged_inference":
        stats = [m for m in re.finditer(rb"count=\d+ [^\n]*", out)]
        if len(stats) >= 2:  # the second stat line is the inference phase's
            m = stats[1]
            out = out[:m.start()] + m.group().replace(b" ", b"#", 3)[:40] + out[m.end():]
        return _SUMMARY_INF_RE.sub(b"Inference (avg): 1\x00\xff?", out)
    if kind == "garbage_output":
        return bytes(range(256)) * 8 + b"\n" + out.split(b"\n", 1)[-1][-64:]
    if kind == "huge_output":
        line = b"INFO: " + b"x" * 1018 + b"\n"
        return line * (HUGE_OUTPUT_BYTES // len(line) + 1) + out
    raise UnknownNameError("loopback output fault", kind, OUTPUT_FAULTS)


class Faults:
    """Thread-safe counters of armed faults."""

    def __init__(self) -> None:
        self._armed = dict.fromkeys(FAULT_KINDS, 0)
        self._fired = dict.fromkeys(FAULT_KINDS, 0)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._turned_away = 0

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

    def take_output(self, command: str) -> str | None:
        """The output fault to apply to ``command`` (a ``benchmark_model`` run), if armed."""
        if "benchmark_model" not in command or "--graph=" not in command:
            return None
        for kind in OUTPUT_FAULTS:
            if self.take(kind):
                return kind
        return None

    def outage(self, seconds: float) -> None:
        """Take the device off the air for ``seconds`` from now (0 ends an outage)."""
        if not seconds >= 0:
            raise UsageError(f"outage seconds must be >= 0, got {seconds}")
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def turn_away(self) -> bool:
        """True while an outage lasts, counting the caller's connection or command as turned away."""
        with self._lock:
            down = time.monotonic() < self._down_until
            self._turned_away += down
            return down

    def turned_away(self) -> int:
        """How many connections and commands outages have turned away so far: each is one try of
        the host's, so a test can see how often a client knocked on a device that was gone."""
        with self._lock:
            return self._turned_away

    def clear(self) -> None:
        """Disarm everything (an outage included)."""
        with self._lock:
            self._armed = dict.fromkeys(FAULT_KINDS, 0)
            self._down_until = 0.0
