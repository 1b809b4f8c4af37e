"""What runs on a farm node: finding its devices, and one worker per device.

:func:`probe_node` runs as a Ray task pinned to one node and lists what that
node can reach: the phones it declares as custom resources
(``latkit_adb:HOST:PORT``), the phones its own adb server lists, its usable
host CPU backends and its GPUs, each with a :class:`DeviceIdentity`.
:class:`DeviceWorker` becomes a Ray actor placed on the node that owns its
device; it measures one operator per call, so a worker that dies loses only
the operator in flight. Neither imports Ray: the driver wraps them.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from latkit.devices.adb_transport import open_transport
from latkit.devices.base import Device, ModelFormat, ModelSource, host_cpu_model, list_devices, open_device
from latkit.devices.precision import Precision
from latkit.core.errors import LatkitError, UsageError
from latkit.profiler.farm.identity import DeviceIdentity, FarmDevice, device_resource
from latkit.profiler.measurement import Measurement
from latkit.profiler.ops import OpSpec
from latkit.profiler.protocol import ProtocolConfig, measure_many

log = logging.getLogger(__name__)

# (op spec, export cache folder, precision) -> the model to measure
ModelFactory = Callable[[OpSpec, "str | None", str], ModelSource]


def latkit_version() -> str:
    """This process's latkit version (read at call time, on the node)."""
    from latkit import _version

    return _version.__version__


def built_model(spec: OpSpec, cache_dir: str | None, precision: Precision = Precision.FP32) -> ModelSource:
    """The default model of an operator: latkit's exporter (and quantizer), cached on the node."""
    from latkit.profiler.export import BuiltModel

    return BuiltModel(spec, cache_dir=cache_dir, precision=precision)


class StandInModel:
    """One ready model file pushed for every operator, under the operator's key.

    For the simulated loopback phone (``latkit loopback-device
    --simulate-latency-ms``), whose ``benchmark_model`` sleeps instead of
    reading the model: the farm's plumbing runs for real without exporting
    every operator. Its timings say nothing about the operators.
    """

    def __init__(self, key: str, path: str | Path, precision: Precision = Precision.FP32) -> None:
        self.key, self.path, self.precision = key, Path(path), precision
        self.input_shape: tuple[int, ...] = (1, 3, 32, 32)

    def file(self, fmt: ModelFormat) -> Path:
        """The stand-in file, whatever the format."""
        return self.path

    def torch_module(self) -> Any:
        """Not available: a stand-in is only a file."""
        raise UsageError("a stand-in model has no torch module; it serves file-based devices only")


class StandInFactory:
    """A picklable :data:`ModelFactory` handing out :class:`StandInModel` s of one file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def __call__(self, spec: OpSpec, cache_dir: str | None, precision: Precision = Precision.FP32) -> ModelSource:
        return StandInModel(spec.key, self.path, precision)


# ------------------------------------------------------------------ probing


def _android_device(uri: str, threads: int, options: dict[str, Any], timeout_s: float) -> Device:
    """The phone at ``uri``, made directly: resolving a URI through the device registry
    imports every backend (torch among them), seconds a phone's worker would spend at
    every start, and a probe of a phone set aside is a worker start."""
    from latkit.devices.android import AndroidDevice

    opts = {"retries": 1, "shell_timeout_s": timeout_s, **options}
    return AndroidDevice(uri, threads=threads, **opts)


_IDENTITY_PROPS = ("ro.product.model", "ro.soc.model", "ro.board.platform", "ro.build.fingerprint",
                   "ro.serialno", "ro.build.version.release", "ro.build.version.sdk", "ro.product.cpu.abi")
_BINARY = "/data/local/tmp/benchmark_model"


def android_identity(transport: Any, threads: int, timeout_s: float) -> tuple[DeviceIdentity, str, dict[str, Any]]:
    """Identity, serial and details of a phone, in one shell round trip.

    Raises:
        DeviceUnreachableError: the phone does not answer (worth waiting for).
        DeviceError: no ``benchmark_model`` on it.
    """
    import shlex

    from latkit.core.errors import DeviceError, DeviceUnreachableError

    props = "; ".join(f'echo "$(getprop {p})"' for p in _IDENTITY_PROPS)
    binary = shlex.quote(_BINARY)
    script = (f"{props}; b={binary}; [ -x \"$b\" ] || b=$(command -v benchmark_model); "
              "if [ -n \"$b\" ]; then sha256sum \"$b\" 2>/dev/null || md5sum \"$b\"; else echo; fi")
    try:
        res = transport.shell(script, timeout_s)
    except DeviceUnreachableError:
        raise
    except DeviceError as exc:  # connecting or the shell failed: the phone, not its answer
        raise DeviceUnreachableError(f"{transport.serial} does not answer: {exc}") from exc
    lines = res.stdout.split("\n")
    values = dict(zip(_IDENTITY_PROPS, (line.strip() for line in lines)))
    digest = lines[len(_IDENTITY_PROPS)].split() if len(lines) > len(_IDENTITY_PROPS) else []
    if not digest:
        raise DeviceError(f"no benchmark_model on {transport.serial} (looked in {_BINARY} and PATH); "
                          "install LiteRT's benchmark_model there")
    identity = DeviceIdentity(
        kind="android", model=values.get("ro.product.model", ""),
        soc=values.get("ro.soc.model") or values.get("ro.board.platform", ""),
        build=values.get("ro.build.fingerprint", ""), runtime="benchmark_model",
        runtime_version=f"sha256:{digest[0][:16]}", threads=threads,
    )  # fmt: skip
    details = {"android": values.get("ro.build.version.release", ""),
               "sdk": values.get("ro.build.version.sdk", ""), "abi": values.get("ro.product.cpu.abi", ""),
               "transport_serial": transport.serial}
    return identity, values.get("ro.serialno") or transport.serial, details


def _host_identity(uri: str, threads: int) -> tuple[DeviceIdentity, dict[str, Any]]:
    dev = open_device(uri, threads=threads)
    try:
        info = dev.info()
    finally:
        dev.close()
    build = f"{platform.system()} {platform.release()}"
    model = info.model or host_cpu_model()
    return DeviceIdentity(kind=info.kind, model=model, soc="", build=build, runtime=info.runtime,
                          runtime_version=info.runtime_version, threads=threads), {}


def _server_phones() -> list[str]:
    from latkit.devices.adb_transport import adb_server_port, adb_server_version

    if adb_server_version() is None:
        return []
    try:
        import adbutils

        client = adbutils.AdbClient(host="127.0.0.1", port=adb_server_port())
        return [f"adb:{d.serial}" for d in client.device_list()]
    except Exception as exc:  # adbutils raises its own and socket errors
        log.warning("cannot list the adb server's devices: %s", exc)
        return []


def _gpus() -> list[str]:
    try:
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # a broken CUDA install must not stop the probe
        return []


def probe_node(node_id: str, node_ip: str, declared: list[str], threads: int = 1,
               device_options: dict[str, Any] | None = None, timeout_s: float = 10.0,
               host: bool = True) -> dict[str, Any]:
    """Every device this node can reach, with its identity (runs on the node).

    Args:
        node_id, node_ip: this node (as the driver knows it).
        declared: ``adb+tcp://`` phones the node declares as custom resources.
        threads: inference threads of every device.
        device_options: extra options of the phones (``key_path``...).
        timeout_s: limit of each shell call to a phone.
        host: also list the host CPU backends and GPUs.

    Returns:
        ``latkit_version``, ``hostname``, ``devices`` (FarmDevice dicts) and
        ``unreachable`` (``{uri: reason}``).
    """
    options = dict(device_options or {})
    hostname = socket.gethostname()
    devices: list[FarmDevice] = []
    unreachable: dict[str, str] = {}
    targets = [(u, device_resource(u), {}) for u in declared]
    targets += [(u, "", {"adb_server": True}) for u in _server_phones()]

    def probe(target: tuple[str, str, dict[str, Any]]) -> FarmDevice | str:
        uri, resource, extra = target
        started = time.perf_counter()
        try:
            with open_transport(uri, use_server=bool(extra), key_path=options.get("key_path"),
                                connect_timeout_s=timeout_s) as t:
                identity, serial, details = android_identity(t, threads, timeout_s)
        except LatkitError as exc:
            return str(exc)
        finally:
            log.debug("probed %s in %.0f ms", uri, (time.perf_counter() - started) * 1e3)
        return FarmDevice(node_id, node_ip, hostname, uri, serial, identity, resource,
                          {**details, **({"adb_server": True} if extra else {})})

    if targets:  # phones answer in parallel; each call is bounded by timeout_s
        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            for (uri, _, _), got in zip(targets, pool.map(probe, targets)):
                if isinstance(got, str):
                    unreachable[uri] = got
                else:
                    devices.append(got)
    if host:
        uris = [r["uri"] for r in list_devices() if r["usable"] and r["uri"].startswith("cpu:")]
        for uri in uris + _gpus():
            try:
                identity, details = _host_identity(uri, threads)
            except LatkitError as exc:
                unreachable[f"{hostname}/{uri}"] = str(exc)
                continue
            devices.append(FarmDevice(node_id, node_ip, hostname, uri, f"{hostname}/{uri}", identity,
                                      "", details))
    return {"latkit_version": latkit_version(), "hostname": hostname, "pid": os.getpid(),
            "devices": [d.to_dict() for d in devices], "unreachable": unreachable}


# ------------------------------------------------------------------ worker


class DeviceWorker:
    """One device, held open on its node, measuring one operator per call.

    Args:
        device: the :class:`FarmDevice` (dict form).
        protocol: :class:`ProtocolConfig` (dict form).
        device_options: extra options for :func:`open_device` (phones: ``key_path``...).
        model_factory: turns an op spec into the model to measure.
        cache_dir: the node's export cache (default latkit's).
        timeout_s: limit of each shell call to a phone.
    """

    def __init__(self, device: dict[str, Any], protocol: dict[str, Any],
                 device_options: dict[str, Any] | None = None,
                 model_factory: ModelFactory | None = None, cache_dir: str | None = None,
                 timeout_s: float = 20.0) -> None:
        self.fd = FarmDevice.from_dict(device)
        self.config = ProtocolConfig(**protocol)
        self.options = dict(device_options or {})
        if self.fd.details.get("adb_server"):
            self.options["adb_server"] = True
        self.factory = model_factory or built_model
        self.cache_dir, self.timeout_s = cache_dir, timeout_s
        self.dev: Any = None
        self.count = 0

    def _open(self) -> Any:
        if self.dev is None:
            fd = self.fd
            if fd.identity.kind == "android":
                self.dev = _android_device(fd.uri, fd.identity.threads,
                                           {"retries": 2, **self.options}, self.timeout_s)
            else:
                self.dev = open_device(fd.uri, threads=fd.identity.threads)
        return self.dev

    def ready(self) -> dict[str, Any]:
        """Open the device and check it is still what the driver planned for.

        A phone that does not answer raises :class:`DeviceUnreachableError`, as one
        that stops answering under an operator does, so the driver sets it aside and
        probes it whether it was dead from the start or died later.

        Raises:
            DeviceUnreachableError: the phone does not answer.
            DeviceError: another device now answers at this URI, or it has no ``benchmark_model``.
        """
        from latkit.core.errors import DeviceError, DeviceUnreachableError

        dev = self._open()
        if self.fd.identity.kind == "android":
            try:
                transport = open_transport(self.fd.uri, use_server=bool(self.options.get("adb_server")),
                                           key_path=self.options.get("key_path"), connect_timeout_s=self.timeout_s)
            except DeviceError as exc:  # e.g. the adb server no longer lists the phone
                raise DeviceUnreachableError(f"{self.fd.uri} does not answer: {exc}") from exc
            with transport as t:
                identity, serial, _ = android_identity(t, self.fd.identity.threads, self.timeout_s)
            dev.connect()
            if identity.at_precision(self.fd.identity.precision) != self.fd.identity or serial != self.fd.serial:
                raise DeviceError(f"{self.fd.uri} is now {identity.model} serial {serial}, not the "
                                  f"{self.fd.identity.model} serial {self.fd.serial} the farm planned "
                                  "for; run `latkit farm devices` again")
        return {"pid": os.getpid(), "latkit_version": latkit_version()}

    def measure(self, spec: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
        """Measure one operator; return the measurement (dict) with the farm's provenance.

        Raises:
            LatkitError: the operator could not be measured on this device.
        """
        op = OpSpec.from_dict(spec)
        model = self.factory(op, self.cache_dir, self.fd.identity.precision)
        [m] = measure_many(self._open(), [model], self.config)
        self.count += 1
        fd = self.fd
        m.provenance["farm"] = {
            "serial": fd.serial, "device_uri": fd.uri, "node_id": fd.node_id, "node_ip": fd.node_ip,
            "hostname": fd.hostname, "worker_pid": os.getpid(), "attempt": attempt,
            "lut_device": fd.identity.lut_uri(),
        }  # fmt: skip
        return m.to_dict()

    def close(self) -> None:
        """Release the device."""
        if self.dev is not None:
            self.dev.close()
            self.dev = None


def measurement_from(d: dict[str, Any]) -> Measurement:
    """The :class:`Measurement` a worker returned."""
    return Measurement.from_dict(d)
