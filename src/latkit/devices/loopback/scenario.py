"""Thermal and frequency scenarios played into the sandbox's ``/sys`` tree.

A background thread integrates a one-node thermal model and rewrites the sysfs
files on disk, so an agent reading them with ``cat`` sees them change:

* ``cool``: the temperature stays at ambient whatever runs;
* ``heat``: it rises while a ``benchmark_model`` runs and decays back to
  ambient when idle;
* ``throttle``: like ``heat``, and above ``throttle_c`` the big cluster's
  ``scaling_cur_freq`` drops to ``throttle_fraction`` of its maximum until the
  temperature falls below ``recover_c``.

Load is the number of live ``benchmark_model`` stand-ins, which register their
pid under ``<root>/.loopback/running``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from latkit.core.errors import UnknownNameError, UsageError

from .sandbox import STATE_DIR, DeviceProfile, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """Parameters of the thermal model (temperatures in degrees Celsius)."""

    name: str = "cool"
    ambient_c: float = 30.0
    heat_c_per_s: float = 0.0       # rise per second per running benchmark
    cool_per_s: float = 0.5         # fraction of the excess over ambient lost per second
    throttle_c: float | None = None  # None: never throttles
    recover_c: float = 40.0
    throttle_fraction: float = 0.6
    tick_s: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.throttle_fraction <= 1.0:
            raise UsageError(f"throttle_fraction must be in (0, 1], got {self.throttle_fraction}")
        if self.tick_s <= 0 or self.heat_c_per_s < 0 or self.cool_per_s < 0:
            raise UsageError("scenario rates and tick must be non-negative (tick positive)")
        if self.throttle_c is not None and self.recover_c > self.throttle_c:
            raise UsageError("recover_c must not exceed throttle_c")

    @classmethod
    def named(cls, name: str) -> Scenario:
        """One of the built-in scenarios: ``cool``, ``heat`` or ``throttle``."""
        presets = {
            "cool": cls("cool"),
            "heat": cls("heat", heat_c_per_s=8.0, cool_per_s=0.5),
            "throttle": cls("throttle", heat_c_per_s=10.0, cool_per_s=0.5,
                            throttle_c=45.0, recover_c=40.0, throttle_fraction=0.6),
        }
        if name not in presets:
            raise UnknownNameError("loopback scenario", name, list(presets))
        return presets[name]

    def with_(self, **changes: float) -> Scenario:
        """A copy with some parameters changed (e.g. faster heating for tests)."""
        return replace(self, **changes)


def cpufreq_dir(root: Path, cpu: int) -> Path:
    """The sandbox directory of one core's cpufreq files."""
    return Path(root) / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"


class ScenarioPlayer:
    """Owns the ``/sys`` files and the thread that keeps them current."""

    def __init__(self, root: Path, profile: DeviceProfile, scenario: Scenario):
        self.root, self.profile, self.scenario = Path(root), profile, scenario
        self.temp_c = scenario.ambient_c
        self.throttled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- layout
    def build(self) -> None:
        """Create the static sysfs files and write the initial state."""
        cpu_root = self.root / "sys/devices/system/cpu"
        cpu_root.mkdir(parents=True, exist_ok=True)
        span = f"0-{self.profile.ncpus - 1}"
        for name in ("online", "possible", "present"):
            (cpu_root / name).write_text(span + "\n")
        for cluster in self.profile.clusters:
            related = " ".join(str(c) for c in cluster.cpus)
            for cpu in cluster.cpus:
                d = cpufreq_dir(self.root, cpu)
                d.mkdir(parents=True, exist_ok=True)
                (d / "cpuinfo_max_freq").write_text(f"{cluster.max_freq_khz}\n")
                (d / "cpuinfo_min_freq").write_text(f"{cluster.min_freq_khz}\n")
                (d / "scaling_max_freq").write_text(f"{cluster.max_freq_khz}\n")
                (d / "scaling_min_freq").write_text(f"{cluster.min_freq_khz}\n")
                (d / "scaling_governor").write_text("schedutil\n")
                (d / "scaling_available_governors").write_text("schedutil performance powersave\n")
                (d / "related_cpus").write_text(related + "\n")
                (d / "affected_cpus").write_text(related + "\n")
        for i, (ztype, _) in enumerate(self._zones()):
            zdir = self.root / f"sys/class/thermal/thermal_zone{i}"
            zdir.mkdir(parents=True, exist_ok=True)
            (zdir / "type").write_text(ztype + "\n")
        bat = self.root / "sys/class/power_supply/battery"
        bat.mkdir(parents=True, exist_ok=True)
        (bat / "type").write_text("Battery\n")
        (bat / "status").write_text("Discharging\n")
        self._write_state()

    def _zones(self) -> list[tuple[str, float]]:
        excess = self.temp_c - self.scenario.ambient_c
        return [
            ("cpu-0-0-usr", self.scenario.ambient_c + 0.7 * excess),  # little cluster
            ("cpu-1-0-usr", self.temp_c),                             # big cluster
            ("skin-therm", self.scenario.ambient_c + 0.4 * excess),
            ("battery", self.scenario.ambient_c + 0.3 * excess),
        ]

    def _write_state(self) -> None:
        # Frequencies first: whoever sees a hot zone also sees the matching clock.
        for cluster in self.profile.clusters:
            freq = cluster.max_freq_khz
            if cluster.name == "big" and self.throttled:
                freq = int(cluster.max_freq_khz * self.scenario.throttle_fraction)
            for cpu in cluster.cpus:
                write_atomic(cpufreq_dir(self.root, cpu) / "scaling_cur_freq", f"{freq}\n")
        for i, (_, temp) in enumerate(self._zones()):
            write_atomic(self.root / f"sys/class/thermal/thermal_zone{i}/temp",
                         f"{round(temp * 1000)}\n")
        battery_c = self._zones()[3][1]
        write_atomic(self.root / "sys/class/power_supply/battery/temp",
                     f"{round(battery_c * 10)}\n")

    # ---------------------------------------------------------------- dynamics
    def running_benchmarks(self) -> int:
        """Number of live ``benchmark_model`` stand-ins (stale pid files are removed)."""
        count = 0
        for pidfile in (self.root / STATE_DIR / "running").glob("*"):
            try:
                os.kill(int(pidfile.name), 0)
                count += 1
            except (ValueError, ProcessLookupError):
                pidfile.unlink(missing_ok=True)
            except PermissionError:
                count += 1
        return count

    def step(self, dt_s: float) -> None:
        """Advance the thermal model by ``dt_s`` seconds and rewrite the files."""
        s = self.scenario
        load = self.running_benchmarks()
        with self._lock:
            self.temp_c += s.heat_c_per_s * load * dt_s
            self.temp_c -= min(1.0, s.cool_per_s * dt_s) * (self.temp_c - s.ambient_c)
            if s.throttle_c is not None:
                if not self.throttled and self.temp_c >= s.throttle_c:
                    self.throttled = True
                    log.info("loopback: big cluster throttled at %.1f C", self.temp_c)
                elif self.throttled and self.temp_c <= s.recover_c:
                    self.throttled = False
                    log.info("loopback: big cluster recovered at %.1f C", self.temp_c)
            self._write_state()

    def start(self) -> None:
        """Start the background thread (a no-op for ``cool``, whose files never change)."""
        if self.scenario.heat_c_per_s == 0 and self.scenario.throttle_c is None:
            return
        self._thread = threading.Thread(target=self._run, name="loopback-scenario", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.scenario.tick_s):
            now = time.monotonic()
            try:
                self.step(now - last)
            except OSError as exc:  # the sandbox may vanish while stopping
                log.debug("scenario step failed: %s", exc)
            last = now

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
