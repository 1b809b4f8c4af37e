"""A device farm on Ray: many phones on many hosts profile in parallel into one LUT.

``latkit farm devices`` lists every node of a Ray cluster and the devices it
reaches; ``latkit farm profile`` runs one worker (a Ray actor) per device on
the node that owns it and measures a space's operators into one LUT, written
by the driver alone (see :mod:`latkit.profiler.farm.driver` for the faults it
survives and their bounds). Ray is optional (``pip install 'latkit[farm]'``)
and imported only when a farm function runs.

The farm writes through the profiler's
:class:`~latkit.profiler.measurement.MeasurementSink` (the LUT implements it),
so the profiler never imports the LUT: resuming needs only ``done_keys``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from latkit.core.errors import UsageError
from latkit.devices.precision import Precision
from latkit.profiler.farm.cluster import NodeReport, check_versions, connect, discover, errors_of, select
from latkit.profiler.farm.driver import EventFn, check_farm_precision, run_farm
from latkit.profiler.farm.identity import DeviceIdentity, FarmDevice, device_resource, group_by_identity
from latkit.profiler.farm.node import ModelFactory, StandInFactory
from latkit.profiler.farm.records import DeviceState, FarmConfig, FarmReport
from latkit.profiler.measurement import MeasurementSink
from latkit.profiler.ops import OpSpec
from latkit.profiler.protocol import ProtocolConfig


def names_host_devices(pattern: str) -> bool:
    """Whether ``pattern`` may name a host CPU backend or GPU (only then are they probed).

    A glob starting with ``cpu``, ``cuda`` or a wildcard, or naming ``host/uri``, may;
    a phone's serial, model or ``adb...`` URI does not, which keeps a phone farm's
    start-up free of loading every host runtime on every node.
    """
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    return any(g.startswith(("cpu", "cuda", "*", "?", "[")) or "/" in g.split("://")[-1] for g in globs)


def farm_devices(address: str | None = None, adb: Iterable[str] = (), threads: int = 1,
                 device_options: dict[str, Any] | None = None, host: bool = True,
                 timeout_s: float = 60.0) -> list[NodeReport]:
    """Every node of the cluster and the devices it reaches.

    Args:
        address: ``auto`` / ``HOST:PORT`` of a ``ray start`` cluster; None starts
            an embedded local one (whose node owns the ``adb`` phones).
        adb: ``adb+tcp://`` phones of the embedded cluster.
        threads: inference threads (part of each device's identity).
        device_options: extra options of the phones (``key_path``...).
        host: also list host CPU backends and GPUs.
        timeout_s: limit of the whole probe.

    Raises:
        MissingExtraError: Ray is not installed (``latkit[farm]``).
        DeviceError: no cluster at ``address``.
        UsageError: a node runs another latkit version than this one.
    """
    with connect(address, tuple(adb)) as ray:
        reports = discover(ray, threads, device_options, timeout_s, host)
    check_versions(reports)
    return reports


def farm_profile(specs: Iterable[OpSpec], sink: MeasurementSink, devices: str, *,
                 address: str | None = None, adb: Iterable[str] = (), threads: int = 1,
                 protocol: ProtocolConfig | None = None, config: FarmConfig | None = None,
                 device_options: dict[str, Any] | None = None,
                 model_factory: ModelFactory | None = None, cache_dir: str | None = None,
                 on_event: EventFn | None = None,
                 on_plan: Any = None, precision: Precision = Precision.FP32) -> FarmReport:
    """Profile ``specs`` on every device matching ``devices`` into ``sink`` (resumable).

    Args:
        specs: the operators.
        sink: where rows go (a :class:`latkit.lut.store.LUT`); only this process writes.
        devices: comma-separated globs over device URI, serial, model or LUT device.
        address, adb, threads, device_options: as :func:`farm_devices`.
        protocol: measurement protocol (default :class:`ProtocolConfig`).
        config: the farm's limits and timeouts.
        model_factory: op spec -> model on the node (default latkit's exporter).
        cache_dir: the nodes' export cache.
        on_event: progress callback ``(kind, device_state, run)``.
        on_plan: called with the chosen devices before measuring starts.
        precision: part of the job's identity; rows are stored at it.

    Raises:
        UsageError: no device pattern, no device matches, a node runs another latkit
            version, or a chosen device does not run ``precision``.
    """
    if not any(g.strip() for g in devices.split(",")):  # refused before a cluster starts
        raise UsageError(f"no device pattern in {devices!r}; give comma-separated globs such as 'adb*' "
                         "(see `latkit farm devices`)")
    with connect(address, tuple(adb)) as ray:
        reports = discover(ray, threads, device_options, host=names_host_devices(devices))
        check_versions(reports)
        chosen = select(reports, devices)
        check_farm_precision(chosen, precision)
        if on_plan is not None:
            on_plan(chosen)
        return run_farm(ray, chosen, specs, sink, protocol, config, device_options=device_options,
                        model_factory=model_factory, cache_dir=cache_dir, on_event=on_event,
                        precision=precision)


__all__ = ["DeviceIdentity", "DeviceState", "FarmConfig", "FarmDevice", "FarmReport", "NodeReport",
           "StandInFactory", "device_resource", "errors_of", "farm_devices", "farm_profile",
           "group_by_identity", "run_farm"]
