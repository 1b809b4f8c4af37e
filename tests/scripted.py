"""A device with a deterministic timing source: each session reports the latency a script gives it.

Nothing runs: ``open`` hands out a session whose every timing call returns the
script's figure for that model in that session, so the measurement protocol's
results are known exactly. For tests of what latkit decides on given figures
(a contended host, a statistic), never for tests of timing itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from latkit.devices.base import Device, DeviceInfo, ModelSource, Session

Script = Callable[[str, int], float]  # (model key, how many sessions of it were opened before) -> ms per run


class ScriptedSession(Session):
    def __init__(self, ms: float) -> None:
        self.s = ms / 1e3

    def time(self, iterations: int) -> float:
        return self.s


class ScriptedDevice(Device):
    """A device whose sessions report the script's latency of their model; ``opened`` counts sessions per key."""

    scheme = "scripted"

    def __init__(self, script: Script, uri: str = "scripted:host") -> None:
        super().__init__(uri)
        self.script, self.opened = script, Counter()

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.uri, "scripted", "none", "0", 1)

    def open(self, model: ModelSource) -> Session:
        n = self.opened[model.key]
        self.opened[model.key] += 1
        return ScriptedSession(self.script(model.key, n))
