"""The device contract: what every backend that times a model implements.

A :class:`Device` opens a model (given as a :class:`ModelSource`, which can hand
out the model as an ONNX file, a TFLite file or a torch module) and returns a
:class:`Session`. A session times back-to-back invocations; the measurement
protocol (``latkit.profiler.protocol``) decides how many, in what order, and
what statistics to keep. Devices are registered by URI scheme and looked up
with :func:`open_device`; third-party devices come in through the
``latkit.devices`` entry-point group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from latkit.core.errors import DeviceError, UnknownNameError, UsageError
from latkit.core.registry import Registry, name_attribute, subclass_of
from latkit.devices.precision import Precision

log = logging.getLogger(__name__)


class ModelFormat(str, Enum):
    """What a device executes."""

    ONNX = "onnx"
    TFLITE = "tflite"
    TORCH = "torch"


@runtime_checkable
class ModelSource(Protocol):
    """A model a device can open, in whichever format the device runs.

    ``input_shape`` is NCHW. Implementations export lazily and cache by ``key``.
    """

    key: str
    input_shape: tuple[int, ...]

    def file(self, fmt: ModelFormat) -> Path:
        """The model as a file of format ``fmt`` (exported on first use)."""
        ...

    def torch_module(self) -> Any:
        """The model as an ``torch.nn.Module`` in eval mode."""
        ...


def load_advice(model: ModelSource) -> str:
    """What to do when a runtime cannot load ``model``'s file.

    latkit's own cached exports are made again when deleted; a source may say
    otherwise through a ``load_advice`` attribute (a user's own file cannot be).
    """
    return getattr(model, "load_advice", None) or "delete the file to re-export it"


class Session(ABC):
    """A model loaded on a device, ready to be timed."""

    @abstractmethod
    def time(self, iterations: int) -> float:
        """Run ``iterations`` back-to-back inferences; return mean seconds per run."""

    def close(self) -> None:
        """Release the model (default: nothing to release)."""

    def provenance(self) -> dict[str, Any]:
        """What this session adds to each measurement's provenance (default: nothing),
        e.g. a phone's delegation summary."""
        return {}

    def profile_layers(self, runs: int, quantile: float = 0.5) -> Any:
        """Run the model ``runs`` times under the runtime's own per-layer profiler; each layer's
        figure is the ``quantile`` of its runs where the runtime gives every run.

        Returns a :class:`latkit.devices.layers.LayerProfile`.

        Raises:
            UsageError: this backend has no per-layer profiler (the default).
        """
        raise UsageError(f"{type(self).__name__} has no per-layer profiler; --per-layer runs on "
                         "cpu:onnxruntime, cpu:litert (end to end and memory only) and adb devices")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class DeviceInfo:
    """Provenance of a device, recorded with every measurement."""

    uri: str
    kind: str  # "cpu", "cuda", "android", ...
    runtime: str  # "onnxruntime", "litert", "torch", "benchmark_model"
    runtime_version: str
    threads: int
    model: str = ""  # CPU / GPU / phone model
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "uri": self.uri,
            "kind": self.kind,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "threads": self.threads,
            "model": self.model,
            **({"extra": self.extra} if self.extra else {}),
        }


class Device(ABC):
    """A place models run: open a model, time it, describe yourself."""

    scheme: str = ""  # URI scheme this class answers, e.g. "cpu:onnxruntime"
    model_format: ModelFormat = ModelFormat.ONNX
    # the precisions this backend can run
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    # The longest one inference (or one timing call) may run before the device stops it;
    # the measurement protocol sets it from its time budget. None: no limit.
    run_limit_s: float | None = None
    closed: bool = False  # set by close(); latkit.api refuses a closed device at its door

    def __init__(self, uri: str, threads: int = 1) -> None:
        from latkit.core.checks import MAX_THREADS, integer

        integer("threads", threads, 1, MAX_THREADS)  # 100000 threads hang the runtime's pool start
        self.uri = uri
        self.threads = threads

    @abstractmethod
    def info(self) -> DeviceInfo:
        """What this device is, for provenance."""

    @abstractmethod
    def open(self, model: ModelSource) -> Session:
        """Load ``model`` and return a session ready to be timed.

        Raises:
            DeviceError: the model cannot be loaded or run here.
        """

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the backend can run here, and why not if it cannot."""
        return True, ""

    def state(self) -> dict[str, Any]:
        """Dynamic state worth recording with a measurement (load, clocks...)."""
        return {}

    def adapt_protocol(self, config: Any) -> Any:
        """The measurement protocol settings this device can afford (default: as given).

        A device whose every timing call is expensive (a phone starting
        ``benchmark_model`` per call) takes fewer, longer samples.
        """
        return config

    def close(self) -> None:
        """Release connections held by the device; the API refuses to measure on it after this."""
        self.closed = True


DEVICES: Registry[type[Device]] = Registry(
    "device",
    "latkit.devices",
    builtins=(
        "latkit.devices.onnxruntime_cpu",
        "latkit.devices.litert_cpu",
        "latkit.devices.torch_cpu",
        "latkit.devices.torch_cuda",
        "latkit.devices.android",
    ),
    on_register=name_attribute("scheme"),
    check=subclass_of(Device),
)


def register_device(scheme: str) -> Callable[[type[Device]], type[Device]]:
    """Class decorator: register a device class for URIs starting with ``scheme``."""
    return DEVICES.register(scheme)


def device_classes(pattern: str = "*") -> dict[str, type[Device]]:
    """Registered device classes by scheme, filtered by a glob."""
    return DEVICES.items(pattern)


def _resolve(uri: str) -> tuple[type[Device], str]:
    classes = DEVICES.items()
    # longest scheme first, so "cpu:onnxruntime" is never taken for a shorter one
    for scheme in sorted(classes, key=len, reverse=True):
        if uri == scheme or uri.startswith(scheme + ":"):
            return classes[scheme], uri
    raise UnknownNameError("device", uri, list(classes))


def open_device(uri: str, threads: int = 1, **options: Any) -> Device:
    """Create the device for ``uri`` (``cpu:onnxruntime``, ``cuda:0``, ``adb:SERIAL``...).

    Raises:
        UnknownNameError: no backend handles this URI.
        DeviceError: the backend exists but cannot run here.
    """
    cls, uri = _resolve(uri)
    ok, why = cls.available()
    if not ok:
        raise DeviceError(f"device {uri} is not usable here: {why}")
    import inspect

    takes = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in takes.values()):
        unknown = sorted(set(options) - set(takes))
        if unknown:  # else a TypeError from deep inside the backend
            known = sorted(set(takes) - {"self", "uri", "threads"})
            raise UsageError(f"device {uri} takes no option {unknown[0]!r}; its options are "
                             f"{', '.join(known) or 'none'}")
    return cls(uri, threads=threads, **options)


def host_cpu_model() -> str:
    """The host CPU's model name, for provenance."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_cpu_info(device: Device, runtime: str, runtime_version: str, extra: dict[str, object]) -> DeviceInfo:
    """The provenance of a backend that runs ``device``'s models on this host's CPU."""
    return DeviceInfo(
        uri=device.uri,
        kind="cpu",
        runtime=runtime,
        runtime_version=runtime_version,
        threads=device.threads,
        model=host_cpu_model(),
        extra=extra,
    )


class CapturedOutput:
    """What :func:`captured_output` caught (filled in when the block ends)."""

    text: str = ""


@contextlib.contextmanager
def captured_output() -> Iterator[CapturedOutput]:
    """Catch everything written to file descriptors 1 and 2 inside the block.

    Native runtimes (TFLite, the LiteRT converter) log from C++ straight to
    stderr, past Python's logging; only redirecting the descriptors quiets them.
    The text is on the yielded object after the block, for logging at DEBUG.
    The descriptors are process-wide: other threads' output is caught too.
    """
    out = CapturedOutput()
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [(fd, os.dup(fd)) for fd in (1, 2)]
        try:
            for fd, _ in saved:
                os.dup2(sink.fileno(), fd)
            yield out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            out.text = sink.read().decode(errors="replace").strip()


def host_state() -> dict[str, Any]:
    """The host's load averages and mean current CPU clock (MHz), where readable."""
    state: dict[str, Any] = {}
    try:
        state["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass  # not available on this platform
    try:
        mhz = [
            float(line.split(":", 1)[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
    except (OSError, ValueError):
        mhz = []
    if mhz:
        state["cpu_mhz"] = round(sum(mhz) / len(mhz), 1)
    return state


def list_devices(*, loopback: bool = True) -> list[dict[str, Any]]:
    """Every registered backend with whether it is usable here, then every loopback phone running now.

    Args:
        loopback: also list the loopback phones answering on this machine (``latkit
            loopback-device``; see :mod:`latkit.devices.loopback.running`), each as the
            URI that opens it, with ``"running": True``.
    """
    rows = []
    for scheme, cls in device_classes().items():
        ok, why = cls.available()
        rows.append({"uri": scheme, "usable": ok, "why": why, "format": cls.model_format.value})
    if loopback:
        from latkit.devices.loopback.running import running_loopback

        adb = next((r for r in rows if r["uri"] == "adb+tcp"), {"usable": False, "why": "no adb+tcp backend"})
        rows += [{"uri": dev.uri, "usable": adb["usable"], "why": adb["why"], "format": ModelFormat.TFLITE.value,
                  "running": True, "serial": dev.serial, "root": dev.root} for dev in running_loopback()]
    return rows
