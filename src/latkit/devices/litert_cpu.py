"""``cpu:litert``: time TFLite models with the LiteRT interpreter on the host CPU.

The interpreter comes from ``ai_edge_litert`` or, failing that, the older
``tflite_runtime`` package; both apply the XNNPACK delegate by default, as the
Android runtime does. The input is set once and ``invoke()`` is timed.

One model is opened as :data:`INSTANCES` interpreters and a timing is the
mean over all of them. An XNNPACK kernel's speed can depend on where an
interpreter's buffers land in memory, so the same model opened several times
in one process can run at clearly different speeds in different interpreters.
A network's operators run wherever their interpreter put them, so an
operator's or a network's latency is taken as the mean over several
interpreters, not the one placement a single interpreter drew; otherwise an
operator's LUT row and the network it sits in could each draw a different
placement, and the LUT sum would miss the network by the difference.
``benchmarks/precision.py`` prints how well a calibrated LUT predicts cpu:litert
networks; ``benchmarks/NOTES.md`` keeps the figures that chose :data:`INSTANCES`.

It runs fp32, fp16 (float16 weights, dequantized at load) and full-integer
int8 files. A full-integer file takes and returns int8 tensors: the seeded
float input is quantized with the input tensor's scale and zero point, and
:meth:`LiteRTSession.float_outputs` dequantizes what comes out.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from latkit.core.files import one_line
from latkit.devices.base import (
    DeviceInfo,
    ModelFormat,
    ModelSource,
    Session,
    captured_output,
    host_cpu_info,
    load_advice,
    register_device,
)
from latkit.devices.clock import HostDevice
from latkit.devices.layers import LayerProfile, check_runs, peak_rss_rise, quantile_name
from latkit.devices.precision import Precision, check_precision, precision_of
from latkit.core.errors import DeviceError, MeasurementError, MissingExtraError, UsageError

log = logging.getLogger(__name__)

# (module with an Interpreter, distribution that ships it), in order of preference
_RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)
INSTALL_HINT = "pip install 'latkit[tflite]'"
INPUT_SEED = 0
NO_LAYERS_NOTE = ("LiteRT's Python interpreter exposes no per-operator profiler, so cpu:litert gives no "
                  "per-layer times; a phone (adb:, benchmark_model --enable_op_profiling) gives them for "
                  "a TFLite file")
INSTANCES = 4  # interpreters per model, each with its own buffers; timings average over them


def _runtime() -> tuple[ModuleType, str, str] | None:
    """The interpreter module, its distribution name and version; None if neither is installed."""
    for module_name, dist in _RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
        return module, dist, version
    return None


def quantize_input(detail: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """``x`` (float) in the dtype of the input tensor ``detail``, quantized if it is an integer tensor."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return np.asarray(x, dtype=dtype)
    scale, zero = detail.get("quantization", (0.0, 0))
    if not scale:
        raise DeviceError(f"input {detail.get('name', '')!r} is {dtype.name} without a quantization scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x) / scale) + zero, info.min, info.max).astype(dtype)


def dequantize_output(detail: dict[str, Any], y: np.ndarray) -> np.ndarray:
    """An output tensor as float32 (integer outputs through their scale and zero point)."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        return np.asarray(y, dtype=np.float32)
    scale, zero = detail.get("quantization", (0.0, 0))
    if not scale:
        return np.asarray(y, dtype=np.float32)
    return ((np.asarray(y, dtype=np.float32) - zero) * scale).astype(np.float32)


class LiteRTSession(Session):
    """LiteRT interpreters of one model, their tensors allocated and their input set.

    ``interpreter`` answers :meth:`run` and :meth:`outputs`; :meth:`time`
    spreads its invocations over it and ``others`` (more interpreters of the
    same file, each with its own buffers) and returns the mean.
    """

    def __init__(self, interpreter: Any, path: Path,
                 now_ns: Callable[[], int] = time.perf_counter_ns, others: Sequence[Any] = (),
                 reload: Callable[[], Any] | None = None) -> None:
        self._reload = reload
        self._now = now_ns
        self._interpreter = interpreter
        self._all = [interpreter, *others]
        self._path = path

    def outputs(self) -> list[np.ndarray]:
        """The output tensors of the last invocation."""
        return [self._interpreter.get_tensor(d["index"]) for d in self._interpreter.get_output_details()]

    def float_outputs(self) -> list[np.ndarray]:
        """The outputs of the last invocation as float32 (int8 outputs dequantized)."""
        details = self._interpreter.get_output_details()
        return [dequantize_output(d, self._interpreter.get_tensor(d["index"])) for d in details]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One inference on float input ``x`` (quantized for an int8 file); float32 outputs."""
        detail = self._interpreter.get_input_details()[0]
        self._interpreter.set_tensor(detail["index"], quantize_input(detail, x))
        self._interpreter.invoke()
        return self.float_outputs()

    def time(self, iterations: int) -> float:
        """Mean seconds per ``invoke()``, over back-to-back calls on each interpreter in turn.

        Each interpreter runs ``iterations / len(interpreters)`` calls (at
        least one), so every figure averages all of them.
        """
        if iterations < 1:
            raise UsageError(f"iterations must be >= 1, got {iterations}")
        k = len(self._all)
        counts = [iterations // k + (i < iterations % k) or 1 for i in range(k)]
        elapsed = 0
        try:
            for interp, n in zip(self._all, counts):
                invoke = interp.invoke
                start = self._now()
                for _ in range(n):
                    invoke()
                elapsed += self._now() - start
        except (RuntimeError, ValueError) as exc:
            raise MeasurementError(f"LiteRT failed running {self._path}: {one_line(exc)}") from exc
        return elapsed / sum(counts) / 1e9

    def profile_layers(self, runs: int, quantile: float = 0.5) -> LayerProfile:
        """The end-to-end figure (the ``quantile`` of the runs) and the host memory of ``runs`` runs of a
        fresh interpreter, without layers.

        LiteRT's Python interpreter exposes no per-operator timer, so no per-layer
        times are given (the profile's note says so), never an estimate.

        Raises:
            MeasurementError: LiteRT failed running the file.
        """
        check_runs(runs)
        with peak_rss_rise() as host:
            interp = self._reload() if self._reload is not None else self._interpreter
            times = []
            try:
                for _ in range(runs):
                    start = self._now()
                    interp.invoke()
                    times.append((self._now() - start) / 1e6)
            except (RuntimeError, ValueError) as exc:
                raise MeasurementError(f"LiteRT failed running {self._path}: {one_line(exc)}") from exc
        return LayerProfile("litert", (), float(np.quantile(times, quantile)), runs, quantile_name(quantile),
                            host.figure("host: model loaded and run"), NO_LAYERS_NOTE)

    def close(self) -> None:
        """Drop the interpreter."""
        self._interpreter = None
        self._all = []


@register_device("cpu:litert")
class LiteRTCPU(HostDevice):
    """The LiteRT (TFLite) interpreter with XNNPACK on the host CPU."""

    model_format = ModelFormat.TFLITE
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Usable when ai-edge-litert or tflite-runtime is installed."""
        return (True, "") if _runtime() is not None else (False, INSTALL_HINT)

    def _require(self) -> tuple[ModuleType, str, str]:
        rt = _runtime()
        if rt is None:
            raise MissingExtraError("the cpu:litert device", "tflite")
        return rt

    def info(self) -> DeviceInfo:
        """Runtime (which package and its version), threads, CPU model, delegate."""
        _, dist, version = self._require()
        return host_cpu_info(self, "litert", version, {
            "package": dist, "delegate": "xnnpack (runtime default)", "clock": self.clock,
            "interpreters": INSTANCES,  # a timing is the mean over this many interpreters of the model
        })

    def open(self, model: ModelSource) -> LiteRTSession:
        """Load ``model``'s TFLite file into :data:`INSTANCES` interpreters, set the input, invoke once.

        Raises:
            MissingExtraError: no LiteRT runtime is installed.
            DeviceError: the file cannot be loaded or run.
            UsageError: the model's precision is not one this device runs.
        """
        check_precision(self, precision_of(model))
        module, _, _ = self._require()
        path = Path(model.file(ModelFormat.TFLITE))
        interps = [self._load(module, path, model) for _ in range(INSTANCES)]
        return LiteRTSession(interps[0], path, self.now_ns, interps[1:],
                             reload=lambda: self._load(module, path, model))

    def _load(self, module: ModuleType, path: Path, model: ModelSource) -> Any:
        """One interpreter on ``path``, tensors allocated, the seeded input set, invoked once."""
        try:
            # The runtime announces its XNNPACK delegate on stderr; keep it for debugging.
            with captured_output() as out:
                interp = module.Interpreter(model_path=str(path), num_threads=self.threads)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DeviceError(
                f"LiteRT cannot load {path}: {one_line(exc)}; {load_advice(model)}"
            ) from exc
        if out.text:
            log.debug("LiteRT: %s", out.text)
        detail = interp.get_input_details()[0]
        shape = tuple(int(v) for v in detail["shape"])
        data = np.random.default_rng(INPUT_SEED).standard_normal(shape).astype(np.float32)
        try:
            interp.set_tensor(detail["index"], quantize_input(detail, data))
            interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise DeviceError(f"LiteRT cannot run {path}: {one_line(exc)}") from exc
        return interp
