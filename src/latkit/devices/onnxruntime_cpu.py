"""``cpu:onnxruntime``: time ONNX models with ONNX Runtime on the host CPU.

One inference session per model: the CPU execution provider, ``threads``
intra-op threads, one inter-op thread, sequential execution and every graph
optimisation (so batch norm is folded, as a deployed model would be).

It runs fp32 files and int8 files in QDQ form (ONNX Runtime fuses the
QuantizeLinear/DequantizeLinear pairs into integer kernels); ONNX Runtime's
CPU provider has no float16 kernels, so fp16 is refused.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from latkit.core.files import one_line
from latkit.devices.base import (
    DeviceInfo,
    ModelFormat,
    ModelSource,
    Session,
    host_cpu_info,
    load_advice,
    register_device,
)
from latkit.devices.clock import HostDevice
from latkit.devices.layers import LayerProfile, check_runs, ort_layer_profile, peak_rss_rise, undisturbed
from latkit.devices.precision import Precision, check_precision, precision_of
from latkit.core.errors import DeviceError, MeasurementError, UsageError

PROVIDER = "CPUExecutionProvider"
OPT_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
INPUT_SEED = 0
PROFILE_WARMUP = 5  # untimed runs before a per-layer profile (first-run allocation and caches)
# the nodes ONNX Runtime inserts to move a tensor into and out of its blocked channel layout (NCHWc),
# which it runs convolutions and pools in; a network pays them where the layout changes, once at its edges
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput"})
LAYOUT_PROFILE_RUNS = 20
# what ONNX Runtime raises; its pybind errors derive from Exception, not RuntimeError
_ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError)
try:
    from onnxruntime.capi import onnxruntime_pybind11_state as _state

    _ORT_ERRORS += tuple(
        getattr(_state, name)
        for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
                     "NoSuchFile", "NoModel", "RuntimeException", "NotImplemented")
        if hasattr(_state, name)
    )
except ImportError:  # a build without the pybind module: RuntimeError is the catch-all
    pass


_INT_INPUTS = {"tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


def random_input(shape: tuple[int, ...], seed: int = INPUT_SEED, onnx_type: str = "tensor(float)") -> np.ndarray:
    """A fixed random tensor (the same on every call): float32, or int8/uint8 for an integer input."""
    rng = np.random.default_rng(seed)
    if onnx_type in _INT_INPUTS:
        info = np.iinfo(_INT_INPUTS[onnx_type])
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(info.dtype)
    if onnx_type == "tensor(float16)":
        return rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
    return rng.standard_normal(shape, dtype=np.float32)


def _wall_and_cpu(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> tuple[int, int]:
    """One run; its wall time and this thread's CPU time (ns)."""
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    sess.run(None, feeds)
    return time.perf_counter_ns() - wall, time.thread_time_ns() - cpu


class OrtSession(Session):
    """An ONNX Runtime inference session with its input bound once."""

    def __init__(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray], path: Path,
                 now_ns: Callable[[], int] = time.perf_counter_ns, limit_s: float | None = None,
                 options: Callable[[], ort.SessionOptions] | None = None):
        self._options = options or ort.SessionOptions
        self._now = now_ns
        self._session = session
        self._feeds = feeds
        self._path = path
        self._limit_s = limit_s

    @contextlib.contextmanager
    def _watchdog(self) -> Iterator[ort.RunOptions | None]:
        """Run options that ONNX Runtime obeys mid-run: a timer sets ``terminate`` after the limit,
        so a model that never ends (an ONNX ``Loop`` without a trip count) is stopped, not waited on."""
        if self._limit_s is None:
            yield None
            return
        options = ort.RunOptions()
        options.log_severity_level = 4  # the stop is reported below as one line, not logged by ORT
        timer = threading.Timer(self._limit_s, lambda: setattr(options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            yield options
        except _ORT_ERRORS as exc:
            if options.terminate:
                raise MeasurementError(
                    f"one run of {self._path.name} took longer than {self._limit_s:g} s (the time budget) and was "
                    "stopped; the model may never end (an ONNX Loop without a trip count?): fix the model, or "
                    "raise --max-seconds for a model this slow"
                ) from exc
            raise
        finally:
            timer.cancel()

    def run(self) -> list[np.ndarray]:
        """One inference; the outputs.

        Raises:
            MeasurementError: it ran past the device's run limit and was stopped.
        """
        with self._watchdog() as options:
            return self._session.run(None, self._feeds, options)

    def time(self, iterations: int) -> float:
        """Mean seconds per run over ``iterations`` back-to-back runs."""
        if iterations < 1:
            raise UsageError(f"iterations must be >= 1, got {iterations}")
        run, feeds = self._session.run, self._feeds
        try:
            with self._watchdog() as options:
                start = self._now()
                for _ in range(iterations):
                    run(None, feeds, options)
                elapsed = self._now() - start
        except _ORT_ERRORS as exc:
            raise MeasurementError(f"onnxruntime failed running {self._path}: {one_line(exc)}") from exc
        return elapsed / iterations / 1e9

    def profile_layers(self, runs: int, quantile: float = 0.5) -> LayerProfile:
        """Each node's time per run (the ``quantile`` of its runs) from ONNX Runtime's profiler, in a
        fresh session with the same settings.

        The session is loaded and run :data:`PROFILE_WARMUP` times before ``runs``
        profiled runs; the profiler's JSON file is read and deleted. With one
        thread, runs another process interrupted are left out
        (:func:`~latkit.devices.layers.undisturbed`). Each profiled run is followed
        by a run of this session (no profiler) timed with the device's clock, so the
        profile's ``unprofiled_ms`` saw the same load.

        Raises:
            MeasurementError: ONNX Runtime failed loading or running the file.
        """
        check_runs(runs)
        with tempfile.TemporaryDirectory(prefix="latkit-ort-profile-") as tmp, peak_rss_rise() as host:
            so = self._options()
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "profile")
            try:
                sess = ort.InferenceSession(str(self._path), so, providers=[PROVIDER])
                timed, plain = [], []
                for i in range(PROFILE_WARMUP + runs):  # profiled and plain runs in turn: the same load on both
                    timed.append(_wall_and_cpu(sess, self._feeds))
                    plain.append(self.time(1) * 1e3)
                events = json.loads(Path(sess.end_profiling()).read_text())
            except _ORT_ERRORS as exc:
                raise MeasurementError(f"onnxruntime failed profiling {self._path}: {one_line(exc)}") from exc
        # with one intra-op thread ONNX Runtime runs on this thread, whose CPU time tells interrupted runs apart
        keep = undisturbed(timed[PROFILE_WARMUP:]) if so.intra_op_num_threads == 1 else None
        return ort_layer_profile(events, runs, host, quantile, keep, plain[PROFILE_WARMUP:])

    def layout_share(self, runs: int = LAYOUT_PROFILE_RUNS) -> float:
        """The share of a profiled run spent in the layout changes ONNX Runtime inserted
        (:data:`LAYOUT_OPS`): for a lone kernel, the conversions at the model's edges that a
        network runs once, not once per kernel.

        Raises:
            MeasurementError: ONNX Runtime failed profiling the file.
        """
        layers = self.profile_layers(runs).layers
        total = sum(layer.latency_ms for layer in layers)
        layout = sum(layer.latency_ms for layer in layers if layer.op_type in LAYOUT_OPS)
        return layout / total if total > 0 else 0.0

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it with the last reference)."""
        self._session = None  # type: ignore[assignment]


@register_device("cpu:onnxruntime")
class OnnxRuntimeCPU(HostDevice):
    """ONNX Runtime on the host CPU."""

    model_format = ModelFormat.ONNX
    precisions = (Precision.FP32, Precision.INT8)

    def info(self) -> DeviceInfo:
        """Runtime, version, threads, CPU model and session settings."""
        return host_cpu_info(self, "onnxruntime", ort.__version__, {
            "provider": PROVIDER,
            "graph_optimization_level": OPT_LEVEL.name,
            "execution_mode": "sequential",
            "inter_op_threads": 1,
            "clock": self.clock,
        })

    def session_options(self) -> ort.SessionOptions:
        """The session settings every model is opened with."""
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = OPT_LEVEL
        so.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
        return so

    def open(self, model: ModelSource) -> OrtSession:
        """Load ``model``'s ONNX file and run it once to prove it works.

        Raises:
            DeviceError: ONNX Runtime cannot load or run the file.
            UsageError: the model's precision is not one this device runs.
        """
        check_precision(self, precision_of(model))
        path = Path(model.file(ModelFormat.ONNX))
        try:
            sess = ort.InferenceSession(str(path), self.session_options(), providers=[PROVIDER])
        except _ORT_ERRORS as exc:
            raise DeviceError(
                f"onnxruntime cannot load {path}: {one_line(exc)}; {load_advice(model)}"
            ) from exc
        inp = sess.get_inputs()[0]
        shape = tuple(model.input_shape)
        feeds = {inp.name: random_input(shape, onnx_type=inp.type)}
        session = OrtSession(sess, feeds, path, self.now_ns, self.run_limit_s, self.session_options)
        try:
            session.run()
        except _ORT_ERRORS as exc:
            raise DeviceError(f"onnxruntime cannot run {path}: {one_line(exc)}") from exc
        return session
