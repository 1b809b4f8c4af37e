"""The Python API, continued: the device farm on Ray (``latkit farm devices``, ``farm profile``).

Like :mod:`latkit.api`, each function is a thin, typed wrapper over the library
function the matching CLI command calls (:mod:`latkit.profiler.farm`), with the
CLI's defaults and its arguments checked at the door, before a cluster starts.
Ray is optional (``pip install 'latkit[farm]'``) and imported only when a farm runs.

Example::

    import latkit

    for node in latkit.farm_devices(adb=["adb+tcp://127.0.0.1:6555"]):
        print(node.node_ip, [d.uri for d in node.devices])
    report = latkit.farm_profile("proxyless_mobile_w05", "adb*", "farm.db", adb=["adb+tcp://127.0.0.1:6555"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latkit.api import StageProgress, _count, _precision, _resolution
from latkit.core import checks

if TYPE_CHECKING:  # typing only: these imports are heavy
    from latkit.devices.precision import Precision
    from latkit.profiler.farm import FarmReport, NodeReport

__all__ = ["farm_devices", "farm_profile"]


def _cluster(address: Any, adb: Any, threads: Any, key: Any) -> dict[str, Any]:
    """The cluster arguments both farm verbs take, checked; the phones' options for ``key``."""
    checks.text("address", address, none_ok=True)
    checks.texts("adb", adb)
    checks.integer("threads", threads, 1, checks.MAX_THREADS)
    checks.path("key", key, none_ok=True)
    from latkit.profiler.farm.options import key_options

    return key_options(key, "key")


def farm_devices(
    *,
    address: str | None = None,
    adb: Sequence[str] = (),
    threads: int = 1,
    key: str | Path | None = None,
) -> list[NodeReport]:
    """Every node of a Ray cluster and the devices it reaches, with their identity (``latkit farm devices``).

    Args:
        address: the cluster to join, ``auto`` or ``HOST:PORT`` (started with ``ray start``);
            None (the default) starts an embedded local one.
        adb: phones the embedded cluster's node owns (``adb+tcp://HOST:PORT``).
        threads: inference threads (part of each device's identity).
        key: the ADB private key (default latkit's choice).

    Returns:
        One :class:`~latkit.profiler.farm.NodeReport` per node: its address, latkit version,
        devices and the ones it could not reach.

    Raises:
        MissingExtraError: Ray is not installed (``latkit[farm]``). DeviceError: no cluster at ``address``.
    """
    options = _cluster(address, adb, threads, key)
    from latkit.profiler.farm import farm_devices as _devices

    return _devices(address, list(adb), threads, options)


def farm_profile(
    space: str,
    devices: str,
    lut: str | Path,
    *,
    resolution: int | None = None,
    address: str | None = None,
    adb: Sequence[str] = (),
    threads: int = 1,
    limit: int | None = None,
    quick: bool = False,
    precision: str | Precision | None = None,
    target_ci: float | None = None,
    key: str | Path | None = None,
    op_timeout_s: float = 900.0,
    device_wait_s: float | None = None,
    stand_in_model: str | Path | None = None,
    on_progress: StageProgress | None = None,
) -> FarmReport:
    """Profile a space's operators on every matching device of the cluster into one LUT
    (``latkit farm profile``); resumable, and only this process writes the LUT.

    Args:
        space: the search space whose operators are measured.
        devices: comma-separated globs over device URI, serial, model or LUT device
            (see :func:`farm_devices`), e.g. ``"adb*"``.
        lut: the LUT file, created if missing, resumed if not.
        resolution: input resolution (default the space's).
        address, adb, threads, key: the cluster and its phones, as :func:`farm_devices`.
        limit: only the first ``limit`` operators.
        quick: fewer samples (smoke runs, not real LUTs).
        precision: ``fp32`` (None, the default), ``fp16`` or ``int8``; every chosen device must run it.
        target_ci: relative CI half-width to stop sampling at (default 0.02, 0.05 with ``quick``).
        op_timeout_s: seconds one operator may take.
        device_wait_s: seconds a phone that stops answering is waited for before its operator
            goes to a sibling (default 120).
        stand_in_model: push this one file for every operator instead of exporting each (only
            for simulated loopback phones, whose benchmark_model does not read it).
        on_progress: called as ``("farm", done, total, "event device op")`` on every change of a
            device's state, ``total`` being the operators to measure over every device model.

    Returns:
        The :class:`~latkit.profiler.farm.FarmReport`: per device model what was measured, skipped,
        failed or left unmeasured, the devices fenced, and ``ok``.
    """
    checks.text("space", space)
    checks.text("devices", devices)
    checks.path("lut", lut)
    settings = _farm_settings(quick, precision, target_ci, op_timeout_s, device_wait_s, stand_in_model, on_progress)
    _resolution("resolution", resolution)
    _count("limit", limit)
    device_options = _cluster(address, adb, threads, key)
    from latkit.lut.store import LUT
    from latkit.profiler.farm import farm_profile as _profile
    from latkit.profiler.farm.options import space_operators

    specs = space_operators(space, resolution, limit)
    with LUT.open(lut, create=True) as store:
        return _profile(specs, store, devices, address=address, adb=list(adb), threads=threads,
                        device_options=device_options, **settings)


def _farm_settings(quick: Any, precision: Any, target_ci: Any, op_timeout_s: Any, device_wait_s: Any,
                   stand_in_model: Any, on_progress: Any) -> dict[str, Any]:
    """:func:`farm_profile`'s measuring arguments checked at the door, as the library's keywords."""
    checks.flag("quick", quick)
    _precision("precision", precision)
    checks.number("target_ci", target_ci, none_ok=True)
    checks.number("op_timeout_s", op_timeout_s)
    if op_timeout_s < 1.0:
        raise checks.UsageError(f"op_timeout_s must be at least 1 second, not {op_timeout_s!r}")
    checks.number("device_wait_s", device_wait_s, positive=False, none_ok=True)
    if device_wait_s is not None and device_wait_s < 0:
        raise checks.UsageError(f"device_wait_s must not be negative, not {device_wait_s!r}")
    checks.path("stand_in_model", stand_in_model, none_ok=True)
    checks.function("on_progress", on_progress)
    from latkit.devices.precision import parse_precision
    from latkit.profiler.farm import FarmConfig
    from latkit.profiler.farm.options import farm_protocol, stand_in_factory

    return {"protocol": farm_protocol(quick, target_ci, device_wait_s),
            "config": FarmConfig(op_timeout_s=op_timeout_s), "precision": parse_precision(precision),
            "model_factory": stand_in_factory(stand_in_model, "stand_in_model"),
            "on_event": _farm_events(on_progress) if on_progress is not None else None}


def _farm_events(on_progress: StageProgress) -> Any:
    """The farm's ``(kind, device state, run)`` events as ``("farm", done, total, message)``: every
    change of a device's state, and the driver's ticks at most once a second (a sign of life)."""
    import time

    last = [0.0]

    def on_event(kind: str, state: Any, run: Any) -> None:
        if kind == "tick" and time.monotonic() - last[0] < 1.0:
            return
        last[0] = time.monotonic()
        totals = run.totals()
        where = f" {state.device.name} {state.key or ''}".rstrip() if state is not None else ""
        on_progress("farm", totals["done"], totals["todo"], f"{kind}{where}")

    return on_event
