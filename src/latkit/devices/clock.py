"""Which clock a host-CPU device times with.

On a shared machine the wall clock of an inference includes the time other
processes held the core; with one inference thread that is most of the noise,
and under heavy load the wall-clock median can be several times the thread's
CPU time. So a single-threaded host device times with the calling thread's
CPU clock by default: ONNX Runtime (one intra-op thread),
LiteRT/XNNPACK (one thread) and torch (one thread) all compute on the caller's
thread, so its CPU time is the inference's own time, memory stalls included,
preemption excluded. With more threads the work spreads over pool threads and
only the wall clock means latency. The clock used is recorded in every
measurement's provenance (``DeviceInfo.extra["clock"]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from latkit.devices.base import Device, host_state
from latkit.core.errors import UsageError

CLOCKS = ("auto", "wall", "thread")


def resolve_clock(clock: str, threads: int) -> str:
    """``wall`` or ``thread`` for a device running ``threads`` inference threads.

    Raises:
        UsageError: an unknown clock, or the thread clock with several threads.
    """
    if clock not in CLOCKS:
        raise UsageError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
    if clock == "auto":
        return "thread" if threads == 1 else "wall"
    if clock == "thread" and threads != 1:
        raise UsageError(
            "the thread clock times one thread; with --threads > 1 use --clock wall"
        )
    return clock


def clock_ns(clock: str) -> Callable[[], int]:
    """The nanosecond counter of a resolved clock."""
    return time.thread_time_ns if clock == "thread" else time.perf_counter_ns


class HostDevice(Device):
    """A device that runs models in this process on the host CPU, with a chosen clock."""

    def __init__(self, uri: str, threads: int = 1, clock: str = "auto") -> None:
        super().__init__(uri, threads)
        self.clock = resolve_clock(clock, threads)
        self.now_ns = clock_ns(self.clock)

    def state(self) -> dict[str, Any]:
        """Load averages and the current CPU clock."""
        return host_state()
