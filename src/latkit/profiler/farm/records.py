"""What a farm run is told and what it tells: its limits, each device's state, its report.

Plain records of :mod:`latkit.profiler.farm.driver`, which runs the farm; kept
apart so the driver module holds the scheduling alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from latkit.core.errors import UsageError
from latkit.core.reprs import short_repr
from latkit.profiler.farm.identity import FarmDevice


@dataclass(frozen=True)
class FarmConfig:
    """Limits of a farm run (seconds unless named otherwise).

    Attributes:
        op_timeout_s: an operator running longer is abandoned (its worker killed).
        ready_timeout_s: a worker must open its device within this.
        max_attempts: tries of one operator, spread over the devices of its
            model (see the module docstring); a try whose device stopped
            answering does not count.
        fence_after: consecutive failed operators that fence a device.
        max_restarts: re-creations of one device's worker after deaths.
        restart_backoff_s: first wait before a re-creation (doubles each time).
        poll_s: how long the driver waits for results between checks.
        probe_s: first wait before probing a device put aside because it
            stopped answering (doubles after each unanswered probe).
        unreachable_s: a device put aside that has not answered for this long
            is fenced.
    """

    op_timeout_s: float = 900.0
    ready_timeout_s: float = 60.0
    max_attempts: int = 3
    fence_after: int = 3
    max_restarts: int = 3
    restart_backoff_s: float = 2.0
    poll_s: float = 0.2
    probe_s: float = 5.0
    unreachable_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("op_timeout_s", "ready_timeout_s", "restart_backoff_s", "poll_s", "probe_s",
                     "unreachable_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"farm {name} must be a positive number, got {value!r}")
        for name, low in (("max_attempts", 1), ("fence_after", 1), ("max_restarts", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"farm {name} must be an integer >= {low}, got {value!r}")


@dataclass
class DeviceState:
    """The driver's view of one device's worker."""

    device: FarmDevice
    group: str
    state: str = "starting"  # starting | idle | busy | lost | aside | probing | fenced
    actor: Any = None
    ready_ref: Any = None
    deadline: float = 0.0
    key: str | None = None
    ref: Any = None
    started: float = 0.0
    pid: int | None = None
    measured: int = 0
    failures: int = 0  # consecutive
    restarts: int = 0
    restart_at: float = 0.0
    fenced: str = ""
    last_error: str = ""
    busy_s: float = 0.0
    dropouts: int = 0  # times it stopped answering with an operator in flight
    aside_since: float = 0.0
    probe_at: float = 0.0
    probes: int = 0  # unanswered probes since it was put aside

    def to_dict(self) -> dict[str, Any]:
        """What a progress display or report shows."""
        return {"name": self.device.name, "serial": self.device.serial, "node_ip": self.device.node_ip,
                "lut_device": self.group, "state": self.state, "op": self.key, "measured": self.measured,
                "restarts": self.restarts, "failures": self.failures, "fenced": self.fenced,
                "last_error": self.last_error, "busy_s": round(self.busy_s, 3), "dropouts": self.dropouts}


@dataclass
class FarmReport:
    """What a farm run did, per LUT device (device model) and per device."""

    groups: dict[str, list[str]] = field(default_factory=dict)  # LUT device -> device names
    measured: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # already in the sink
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> every device's reason
    unmeasured: dict[str, list[str]] = field(default_factory=dict)  # no live device left
    fenced: dict[str, str] = field(default_factory=dict)  # device name -> reason
    devices: list[dict[str, Any]] = field(default_factory=list)
    requeued: int = 0
    # one per operator whose device stopped answering under it (each cost one device wait):
    # lut_device, key, serial, reason
    dropped: list[dict[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    driver_s_per_row: float = 0.0  # driver time per result: fetch, write, bookkeeping
    write_s_per_row: float = 0.0  # of which the sink's committed write

    def __repr__(self) -> str:
        return short_repr(self, "rows", "ok", "groups", "fenced", "elapsed_s")

    @property
    def rows(self) -> int:
        """Rows written in this run."""
        return sum(len(v) for v in self.measured.values())

    @property
    def ok(self) -> bool:
        """True when every operator of every device model is in the sink."""
        return not any(self.failed.values()) and not any(self.unmeasured.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"groups": self.groups, "measured": self.measured, "skipped": self.skipped,
                "failed": self.failed, "unmeasured": self.unmeasured, "fenced": self.fenced,
                "devices": self.devices, "requeued": self.requeued, "dropped": self.dropped,
                "rows": self.rows,
                "elapsed_s": round(self.elapsed_s, 3),
                "driver_ms_per_row": round(self.driver_s_per_row * 1e3, 3),
                "write_ms_per_row": round(self.write_s_per_row * 1e3, 3), "ok": self.ok}
