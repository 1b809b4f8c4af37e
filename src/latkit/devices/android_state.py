"""Thermal and clock state of an Android device: clusters, baseline, cooldown, throttling.

Phones heat up while they benchmark and then cap their big cores' clock, which
silently inflates latencies. This module reads the state from sysfs (one shell
round trip per snapshot), waits before each measurement until the device is
back to its baseline (bounded), and judges whether a run was throttled from
the big cluster's clock sampled while the run went on.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from latkit.devices.adb_transport import AdbTransport
from latkit.core.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

CPU_ROOT = "/sys/devices/system/cpu"

# Each script is one round trip. Files are read with the shell's own `read`: no process per
# file (`$(cat ...)` forks twice per file, and a snapshot is read before every benchmark
# run); a missing file leaves its field empty (errors go to /dev/null).
_CLUSTERS_SH = (  # per-cpu cluster layout and max clock
    f"for c in {CPU_ROOT}/cpu[0-9]*; do n=${{c##*/cpu}}; r=; m=; "
    "read -r r <$c/cpufreq/related_cpus; read -r m <$c/cpufreq/cpuinfo_max_freq; "
    "echo \"$n|$r|$m\"; done 2>/dev/null"
)
_SNAPSHOT_SH = (  # clocks, governors, thermal zones, battery
    f"for c in {CPU_ROOT}/cpu[0-9]*; do n=${{c##*/cpu}}; f=; m=; g=; "
    "read -r f <$c/cpufreq/scaling_cur_freq; read -r m <$c/cpufreq/scaling_max_freq; "
    "read -r g <$c/cpufreq/scaling_governor; echo \"cpu|$n|$f|$m|$g\"; done 2>/dev/null; "
    "for z in /sys/class/thermal/thermal_zone*; do k=; v=; read -r k <$z/type; read -r v <$z/temp; "
    "echo \"zone|$k|$v\"; done 2>/dev/null; "
    "b=; read -r b </sys/class/power_supply/battery/temp 2>/dev/null; echo \"battery|$b\""
)


@dataclass(frozen=True)
class Cluster:
    """Cores sharing one clock domain."""

    cpus: tuple[int, ...]
    max_freq_khz: int

    @property
    def mask(self) -> str:
        """The ``taskset`` hex mask of these cores."""
        return format(sum(1 << c for c in self.cpus), "x")


@dataclass
class Snapshot:
    """Clocks and temperatures at one instant."""

    t: float
    cur_freq_khz: dict[int, int]
    max_freq_khz: dict[int, int]  # scaling_max_freq: thermal caps show up here on phones
    governors: dict[int, str]
    zones_c: dict[str, float]
    battery_c: float | None

    def hottest_c(self) -> float | None:
        """The hottest plausible thermal zone (bogus sensors left out)."""
        temps = [v for v in self.zones_c.values() if -20.0 < v < 150.0]
        return max(temps) if temps else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (cpu keys become strings)."""
        d = asdict(self)
        for k in ("cur_freq_khz", "max_freq_khz", "governors"):
            d[k] = {str(c): v for c, v in d[k].items()}
        return d


@dataclass
class ThermalPolicy:
    """How long and how close to baseline to wait, and what counts as throttled.

    Attributes:
        pre_wait_s: longest wait before a measurement for the device to cool down
            (0 disables the wait).
        throttle_wait_s: longest wait after a throttled run before measuring again.
        poll_s: polling interval while waiting.
        temp_margin_c: how far above the baseline temperature counts as cool.
        freq_ratio: a big-cluster clock below this fraction of baseline max is throttled.
        max_remeasures: re-measures of one run after throttling, at most.
        sample_s: clock sampling interval during a run.
    """

    pre_wait_s: float = 60.0
    throttle_wait_s: float = 120.0
    poll_s: float = 0.5
    temp_margin_c: float = 3.0
    freq_ratio: float = 0.95
    max_remeasures: int = 2
    sample_s: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.freq_ratio <= 1.0:
            raise UsageError(f"freq_ratio must be in (0, 1], got {self.freq_ratio}")
        if min(self.pre_wait_s, self.throttle_wait_s, self.temp_margin_c) < 0 or self.poll_s <= 0:
            raise UsageError("thermal waits and margins must be >= 0 and poll_s > 0")
        if self.max_remeasures < 0 or self.sample_s <= 0:
            raise UsageError("max_remeasures must be >= 0 and sample_s > 0")


MAX_CPUS = 1024  # a cpu number beyond this is garbage, not a core
MAX_LINES = 4096  # of one state read: a garbled sysfs cannot make latkit parse forever


def _int(text: str) -> int | None:
    text = text.strip()
    if len(text) > 18:  # garbage (and int() refuses more than 4300 digits)
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _temp_c(raw: str, battery: bool = False) -> float | None:
    v = _int(raw)
    if v is None:
        return None
    if battery:
        return v / 10.0  # power_supply reports tenths of a degree
    # thermal zones report millidegrees on most kernels, whole degrees on a few
    return v / 1000.0 if abs(v) >= 1000 else float(v)


def _parse_cpu_list(text: str) -> tuple[int, ...]:
    cpus: list[int] = []
    for part in text.replace(",", " ").split():
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()) and len(lo) < 5 and len(hi) < 5:
            cpus.extend(range(int(lo), min(int(hi or lo), MAX_CPUS - 1) + 1))
    return tuple(sorted(set(cpus)))


def read_clusters(t: AdbTransport, timeout_s: float = 10.0) -> list[Cluster]:
    """The device's clock domains, from ``related_cpus`` and ``cpuinfo_max_freq``."""
    res = t.shell(_CLUSTERS_SH, timeout_s)
    seen: dict[tuple[int, ...], int] = {}
    for line in res.stdout.splitlines()[:MAX_LINES]:
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 4:
            continue
        related = _parse_cpu_list(parts[1]) or (int(parts[0]),)
        freq = _int(parts[2])
        if freq is None:
            continue  # offline core or no cpufreq
        seen[related] = max(seen.get(related, 0), freq)
    if not seen:
        raise DeviceError("the device exposes no cpufreq data under /sys/devices/system/cpu; "
                          "pass an explicit CPU mask (cpu_mask=...)")
    return [Cluster(cpus, f) for cpus, f in sorted(seen.items(), key=lambda kv: kv[0])]


def big_cluster(clusters: list[Cluster]) -> Cluster:
    """The fastest cluster (highest max clock; on a tie the larger one)."""
    return max(clusters, key=lambda c: (c.max_freq_khz, len(c.cpus)))


def read_snapshot(t: AdbTransport, timeout_s: float = 10.0) -> Snapshot:
    """Clocks, governors, thermal zones and battery temperature, now."""
    res = t.shell(_SNAPSHOT_SH, timeout_s)
    cur: dict[int, int] = {}
    mx: dict[int, int] = {}
    gov: dict[int, str] = {}
    zones: dict[str, float] = {}
    battery = None
    for line in res.stdout.splitlines()[:MAX_LINES]:
        parts = line.split("|")
        if parts[0] == "cpu" and len(parts) == 5 and parts[1].isdigit() and len(parts[1]) <= 4:
            cpu = int(parts[1])
            if (f := _int(parts[2])) is not None:
                cur[cpu] = f
            if (f := _int(parts[3])) is not None:
                mx[cpu] = f
            if parts[4].strip():
                gov[cpu] = parts[4].strip()
        elif parts[0] == "zone" and len(parts) == 3:
            temp = _temp_c(parts[2])
            if temp is not None:
                name = parts[1].strip() or f"zone{len(zones)}"
                if name in zones:  # phones repeat zone types
                    name = name + "'" if name + "'" not in zones else f"{name}'{len(zones)}"
                zones[name] = temp
        elif parts[0] == "battery" and len(parts) == 2:
            battery = _temp_c(parts[1], battery=True)
    return Snapshot(time.time(), cur, mx, gov, zones, battery)


@dataclass
class Baseline:
    """What 'cool and unthrottled' means for this device."""

    temp_c: float | None
    big_max_freq_khz: int

    def cool_enough(self, snap: Snapshot, big: Cluster, policy: ThermalPolicy) -> tuple[bool, str]:
        """Whether ``snap`` is back to baseline, and if not why."""
        hot = snap.hottest_c()
        if self.temp_c is not None and hot is not None and hot > self.temp_c + policy.temp_margin_c:
            return False, f"{hot:.1f} C > baseline {self.temp_c:.1f}+{policy.temp_margin_c:.0f} C"
        limit = policy.freq_ratio * self.big_max_freq_khz
        caps = [snap.max_freq_khz[c] for c in big.cpus if c in snap.max_freq_khz]
        if caps and min(caps) < limit:
            return False, f"big cluster capped at {min(caps) // 1000} MHz"
        return True, ""


def take_baseline(snap: Snapshot, big: Cluster) -> Baseline:
    """The baseline from a snapshot taken while the device idles."""
    return Baseline(snap.hottest_c(), big.max_freq_khz)


def wait_for_baseline(t: AdbTransport, baseline: Baseline, big: Cluster, policy: ThermalPolicy,
                      max_wait_s: float, timeout_s: float = 10.0) -> dict[str, Any]:
    """Poll until the device is back to baseline or ``max_wait_s`` passes.

    Returns:
        A record: ``waited_s``, ``reached`` (bool), ``reason`` (why it was not
        cool at first, or at the end), ``before``/``after`` snapshots.
    """
    start = time.monotonic()
    first = snap = read_snapshot(t, timeout_s)
    ok, why = baseline.cool_enough(snap, big, policy)
    first_why = why
    while not ok and time.monotonic() - start < max_wait_s:
        time.sleep(min(policy.poll_s, max(0.0, max_wait_s - (time.monotonic() - start))))
        snap = read_snapshot(t, timeout_s)
        ok, why = baseline.cool_enough(snap, big, policy)
    waited = time.monotonic() - start
    if first_why:
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "cooldown %s after %.1f s (%s)", "reached" if ok else "NOT reached",
                waited, first_why if ok else why)
    return {"waited_s": round(waited, 3), "reached": ok, "reason": first_why or "",
            "before": first.to_dict(), "after": snap.to_dict()}


@dataclass
class ThrottleVerdict:
    """Whether a run's big-cluster clock stayed at baseline."""

    throttled: bool
    min_held_khz: int | None
    median_khz: float | None
    n_samples: int
    reason: str = ""
    samples_khz: list[int] = field(default_factory=list)


def judge_samples(samples_khz: list[int], baseline: Baseline, policy: ThermalPolicy) -> ThrottleVerdict:
    """Judge clock samples taken during a run.

    A run is throttled when the clock stayed below ``freq_ratio`` of baseline for
    two samples in a row (one low sample is a governor blip, not a thermal cap).
    """
    if not samples_khz:
        return ThrottleVerdict(False, None, None, 0, "no clock samples")
    # a pair is low only if both samples are low
    held = [max(a, b) for a, b in zip(samples_khz, samples_khz[1:])] or samples_khz
    min_held = min(held)
    limit = policy.freq_ratio * baseline.big_max_freq_khz
    throttled = min_held < limit
    reason = (f"big cluster throttled {baseline.big_max_freq_khz // 1000}->{min_held // 1000} MHz"
              if throttled else "")
    return ThrottleVerdict(throttled, min_held, statistics.median(samples_khz), len(samples_khz),
                           reason, list(samples_khz))
