"""What a farm device is: one identity value per device, and the devices of a cluster.

A :class:`DeviceIdentity` is everything that makes two devices' measurements
interchangeable (kind, model, SoC, build, runtime and its version, threads).
Devices with equal identities are *identical*: they split one queue of
operators and their rows share one LUT device, :meth:`DeviceIdentity.lut_uri`,
while each row's provenance names the serial and node that measured it.
Devices that differ in any field get their own LUT device and their own rows.
A later setting is one more field here, nowhere else. The precision is one:
a farm job measures at one precision, and it is part of the identity, but not
of :meth:`DeviceIdentity.lut_uri`, because a LUT row's precision is its own
column (fp32 farm LUT devices keep the names they had).

Nothing here imports Ray: these records travel between nodes as plain dicts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from latkit.devices.precision import Precision, parse_precision
from latkit.core.errors import UsageError

RESOURCE_PREFIX = "latkit_adb:"  # a node's custom resource per phone it owns: latkit_adb:HOST:PORT


def device_resource(uri: str) -> str:
    """The Ray custom resource that marks the node owning ``uri`` (an ``adb+tcp://`` phone)."""
    if not uri.startswith("adb+tcp://"):
        raise UsageError(f"only adb+tcp:// phones are declared as node resources, not {uri!r}")
    return RESOURCE_PREFIX + uri[len("adb+tcp://"):]


def uri_of_resource(name: str) -> str | None:
    """The phone URI a node resource declares, or None for other resources."""
    return "adb+tcp://" + name[len(RESOURCE_PREFIX):] if name.startswith(RESOURCE_PREFIX) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "unknown"


@dataclass(frozen=True)
class DeviceIdentity:
    """What makes two devices' measurements interchangeable.

    Attributes:
        kind: ``android``, ``cpu`` or ``cuda``.
        model: phone / CPU / GPU model name.
        soc: the phone's SoC (empty for host devices).
        build: the phone's build fingerprint, or the host's OS and kernel.
        runtime: ``benchmark_model``, ``onnxruntime``, ``litert``, ``torch``.
        runtime_version: the runtime's version (for a phone: the benchmark
            binary's SHA-256 prefix, as the tool prints no version before a run).
        threads: inference threads.
        precision: the precision the job measures at.
    """

    kind: str
    model: str
    soc: str
    build: str
    runtime: str
    runtime_version: str
    threads: int = 1
    precision: Precision = Precision.FP32

    def __post_init__(self) -> None:
        if not self.kind or not self.runtime:
            raise UsageError("a device identity needs a kind and a runtime")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise UsageError(f"threads must be an integer >= 1, got {self.threads!r}")

    def at_precision(self, precision: Precision) -> DeviceIdentity:
        """This identity measuring at ``precision``."""
        return replace(self, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceIdentity:
        """Inverse of :meth:`to_dict` (a node's report: the precision is read from its text)."""
        return cls(**{**d, "precision": parse_precision(d.get("precision"))})

    def lut_uri(self) -> str:
        """The LUT device shared by every device of this identity (one place derives it).

        The precision is left out: LUT rows carry it in their own column.
        """
        fields = {k: v for k, v in self.to_dict().items() if k != "precision"}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        return f"farm:{self.kind}/{_slug(self.model)}/t{self.threads}/{digest}"


@dataclass(frozen=True)
class FarmDevice:
    """One device of the cluster: where it is, how to reach it there, what it is.

    Attributes:
        node_id: the Ray node that owns it (the only one that can reach it).
        node_ip, hostname: that node, for people.
        uri: the device URI on that node (``adb+tcp://...``, ``adb:SERIAL``, ``cpu:...``).
        serial: the phone's serial (for host devices, ``hostname/uri``).
        identity: what it is.
        resource: the node's custom resource for it ("" when it is pinned by node id).
        details: more for people (Android release, SDK, ABI, clusters...).
    """

    node_id: str
    node_ip: str
    hostname: str
    uri: str
    serial: str
    identity: DeviceIdentity
    resource: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``hostname/uri``: unique in the cluster."""
        return f"{self.hostname}/{self.uri}"

    def matches(self, pattern: str) -> bool:
        """Whether any comma-separated glob of ``pattern`` matches the URI, serial,
        name, model or LUT device."""
        fields = (self.uri, self.serial, self.name, self.identity.model, self.identity.lut_uri())
        globs = [p.strip() for p in pattern.split(",") if p.strip()]
        return any(fnmatch.fnmatch(f, g) for g in globs for f in fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["identity"] = self.identity.to_dict()
        d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FarmDevice:
        """Inverse of :meth:`to_dict`."""
        d = {k: v for k, v in d.items() if k != "name"}
        return cls(**{**d, "identity": DeviceIdentity.from_dict(d["identity"])})


def group_by_identity(devices: list[FarmDevice]) -> dict[str, list[FarmDevice]]:
    """Devices by LUT device URI (identical devices together), in first-seen order.

    Raises:
        UsageError: the devices are not all at one precision (one job, one precision).
    """
    precisions = sorted({d.identity.precision for d in devices})
    if len(precisions) > 1:
        raise UsageError(f"one farm job measures at one precision, not {', '.join(map(str, precisions))}")
    groups: dict[str, list[FarmDevice]] = {}
    for d in devices:
        groups.setdefault(d.identity.lut_uri(), []).append(d)
    return groups
