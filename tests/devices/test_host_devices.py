"""The host backends (ONNX Runtime, LiteRT, torch CPU) and the CUDA one, on real runtimes."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import pytest
import torch

from latkit.devices import list_devices, open_device
from latkit.devices.base import ModelFormat, captured_output
from latkit.devices.litert_cpu import INSTANCES
from latkit.core.errors import DeviceError, UnknownNameError, UsageError
from latkit.devices.precision import Precision
from latkit.profiler.build import flops
from latkit.profiler.export import BuiltModel
from latkit.profiler.ops import Act, OpSpec, OpType

HOST_URIS = ["cpu:onnxruntime", "cpu:litert", "cpu:torch"]
TINY = OpSpec(
    OpType.MBCONV, (7, 7, 16), (7, 7, 16), kernel=3, expand_ratio=1, mid_channels=16, act=Act.RELU6
)
BIG = OpSpec(
    OpType.MBCONV, (28, 28, 24), (28, 28, 24), kernel=5, expand_ratio=6, mid_channels=144,
    act=Act.RELU6, idskip=True,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One export cache for the module, so each op is converted once."""
    return tmp_path_factory.mktemp("models")


def _needs(uri: str) -> None:
    if uri == "cpu:litert":
        pytest.importorskip("litert_torch", reason="TFLite export needs latkit[tflite]")


class GarbageSource:
    """A model source whose files hold bytes no runtime can read."""

    key = "garbage"
    input_shape = (1, 3, 8, 8)

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def file(self, fmt: ModelFormat) -> Path:
        path = self.folder / f"garbage.{ModelFormat(fmt).value}"
        path.write_bytes(b"this is not a model\n" * 10)
        return path

    def torch_module(self):
        raise AssertionError("not used by file-based devices")


@pytest.mark.parametrize("uri", HOST_URIS)
def test_host_device_times_a_small_op(uri, cache):
    _needs(uri)
    device = open_device(uri, threads=1)
    info = device.info()
    assert info.uri == uri and info.kind == "cpu" and info.threads == 1
    assert info.runtime in uri and info.runtime_version and info.model
    assert device.model_format.value in {"onnx", "tflite", "torch"}
    with device.open(BuiltModel(TINY, cache_dir=cache)) as session:
        seconds = session.time(5)
        assert math.isfinite(seconds) and 0 < seconds < 1.0
        with pytest.raises(UsageError):
            session.time(0)
    state = device.state()
    assert len(state["loadavg"]) == 3


@pytest.mark.parametrize("uri", HOST_URIS)
def test_threads_are_recorded(uri):
    _needs(uri)
    assert open_device(uri, threads=2).info().threads == 2
    with pytest.raises(UsageError, match="threads"):
        open_device(uri, threads=0)


def test_onnxruntime_records_its_settings():
    device = open_device("cpu:onnxruntime", threads=2)
    info = device.info()
    assert info.threads == 2 and info.runtime == "onnxruntime"
    assert info.extra["provider"] == "CPUExecutionProvider"
    assert info.extra["graph_optimization_level"] == "ORT_ENABLE_ALL"
    opts = device.session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_litert_records_package_and_delegate():
    pytest.importorskip("ai_edge_litert", reason="needs latkit[tflite]")
    info = open_device("cpu:litert").info()
    assert info.extra["package"] in {"ai-edge-litert", "tflite-runtime"}
    assert "xnnpack" in info.extra["delegate"]
    assert info.extra["interpreters"] == INSTANCES  # recorded: a timing averages that many interpreters


@pytest.mark.parametrize("uri", ["cpu:onnxruntime", "cpu:litert"])
def test_bad_model_file_is_a_device_error(uri, tmp_path):
    _needs(uri)
    source = GarbageSource(tmp_path)
    with pytest.raises(DeviceError) as err:
        open_device(uri).open(source)
    message = str(err.value)
    assert "garbage." in message and "\n" not in message


def test_torch_cpu_restores_the_thread_count(cache):
    before = torch.get_num_threads()
    device = open_device("cpu:torch", threads=1 if before != 1 else 2)
    with device.open(BuiltModel(TINY, cache_dir=cache)) as session:
        session.time(3)
    assert torch.get_num_threads() == before


def test_unknown_uri_is_an_unknown_name():
    with pytest.raises(UnknownNameError, match="cpu:onnxruntime"):
        open_device("tpu:7")
    with pytest.raises(UnknownNameError):
        open_device("cpu")  # no backend answers the bare scheme prefix


def test_every_backend_is_listed():
    rows = {r["uri"]: r for r in list_devices()}
    assert {"cpu:onnxruntime", "cpu:litert", "cpu:torch", "cuda"} <= set(rows)
    assert rows["cpu:onnxruntime"]["usable"] and rows["cpu:onnxruntime"]["format"] == "onnx"
    assert rows["cuda"]["usable"] == torch.cuda.is_available()


def _median_times(device, models, repeats: int = 7, iterations: int = 5) -> list[float]:
    """Median seconds per run of each model, timed in turn so they share the same load."""
    sessions = [device.open(m) for m in models]
    try:
        for s in sessions:
            s.time(2)  # warm-up
        samples = [[] for _ in sessions]
        for _ in range(repeats):
            for s, out in zip(sessions, samples):
                out.append(s.time(iterations))
        return [statistics.median(out) for out in samples]
    finally:
        for s in sessions:
            s.close()


@pytest.mark.parametrize("uri", HOST_URIS)
def test_bigger_op_takes_longer(uri, cache):
    _needs(uri)
    assert flops(BIG) >= 5 * flops(TINY)  # ~400x: a margin no machine noise closes
    device = open_device(uri, threads=1)
    tiny, big = _median_times(device, [BuiltModel(TINY, cache_dir=cache), BuiltModel(BIG, cache_dir=cache)])
    assert big > tiny


def test_cuda_is_reported_unusable_without_a_gpu():
    from latkit.devices.torch_cuda import TorchCUDA

    if torch.cuda.is_available():
        assert TorchCUDA.available() == (True, "")
    else:
        assert TorchCUDA.available() == (False, "no CUDA GPU")
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            open_device("cuda:0")


def _cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this host")


@pytest.mark.gpu
def test_cuda_times_ops_and_keeps_the_cpu_module(cache):
    _cuda_or_skip()
    device = open_device("cuda:0")
    info = device.info()
    assert info.kind == "cuda" and info.model and info.extra["timer"] == "cuda events"
    model = BuiltModel(TINY, cache_dir=cache)
    with device.open(model) as session:
        seconds = session.time(5)
    assert math.isfinite(seconds) and 0 < seconds < 1.0
    assert next(model.torch_module().parameters()).device.type == "cpu"
    assert "mem_allocated_bytes" in device.state()


@pytest.mark.gpu
def test_cuda_bigger_op_takes_longer(cache):
    _cuda_or_skip()
    device = open_device("cuda:0")
    models = [BuiltModel(TINY, cache_dir=cache), BuiltModel(BIG, cache_dir=cache)]
    tiny, big = _median_times(device, models, iterations=50)
    assert big > tiny


@pytest.mark.gpu
def test_cuda_rejects_a_missing_gpu_index():
    _cuda_or_skip()
    with pytest.raises(DeviceError, match="CUDA GPU"):
        open_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(UsageError):
        open_device("cuda:x")


def test_captured_output_catches_native_writes():
    with captured_output() as out:
        os.write(2, b"native stderr noise\n")
        os.write(1, b"native stdout noise\n")
    assert out.text.splitlines() == ["native stderr noise", "native stdout noise"]


@pytest.mark.parametrize("uri", HOST_URIS)
def test_thread_clock_times_the_inference_thread(uri, cache):
    # one inference thread computes on the caller's thread: its CPU time is the
    # inference's own time, so it cannot be far below the best wall-clock reading
    _needs(uri)
    thread_dev = open_device(uri, clock="thread")
    wall_dev = open_device(uri, clock="wall")
    assert thread_dev.info().extra["clock"] == "thread"
    assert wall_dev.info().extra["clock"] == "wall"
    model = BuiltModel(BIG, cache_dir=cache)
    with thread_dev.open(model) as ts, wall_dev.open(model) as ws:
        ts.time(3), ws.time(3)
        cpu = min(ts.time(5) for _ in range(5))
        wall = min(ws.time(5) for _ in range(5))
    assert cpu > 0
    assert cpu > 0.3 * wall, (cpu, wall)


def test_clock_choice_is_validated():
    assert open_device("cpu:onnxruntime").clock == "thread"  # auto, one thread
    assert open_device("cpu:onnxruntime", threads=2).clock == "wall"  # auto, a pool
    with pytest.raises(UsageError, match="--clock wall"):
        open_device("cpu:onnxruntime", threads=2, clock="thread")
    with pytest.raises(UsageError, match="unknown clock"):
        open_device("cpu:onnxruntime", clock="sundial")


class _NoFileSource:
    """A source at some precision whose files must never be asked for (refused first)."""

    key = "refused"
    input_shape = (1, 16, 7, 7)

    def __init__(self, precision: str) -> None:
        self.precision = precision

    def file(self, fmt):
        raise AssertionError("the device exported a model it does not run")

    def torch_module(self):
        raise AssertionError("the device built a model it does not run")


def test_precisions_follow_the_support_matrix():
    from latkit.devices.base import device_classes

    classes = device_classes()
    assert classes["cpu:onnxruntime"].precisions == ("fp32", "int8")
    assert classes["cpu:litert"].precisions == ("fp32", "fp16", "int8")
    assert classes["cpu:torch"].precisions == ("fp32",)
    assert classes["cuda"].precisions == ("fp32", "fp16")


@pytest.mark.parametrize("uri,precision,runs", [
    ("cpu:onnxruntime", "fp16", "fp32, int8"),
    ("cpu:torch", "int8", "fp32"),
    ("cpu:torch", "fp16", "fp32"),
])
def test_device_refuses_a_precision_it_does_not_run(uri, precision, runs):
    device = open_device(uri)
    with pytest.raises(UsageError) as err:
        device.open(_NoFileSource(precision))
    assert str(err.value) == f"device {uri} does not run {precision} models; it runs {runs}"


@pytest.mark.parametrize("uri", ["cpu:onnxruntime", "cpu:litert"])
def test_int8_model_opens_and_times(uri, cache):
    _needs(uri)
    model = BuiltModel(TINY, cache_dir=cache, precision=Precision.INT8)
    with open_device(uri).open(model) as session:
        seconds = session.time(20)
    assert math.isfinite(seconds) and 0 < seconds < 1.0
    assert "-int8-" in model.file(open_device(uri).model_format).name


@pytest.mark.gpu
def test_cuda_fp16_runs_in_half_and_keeps_the_cpu_module(cache):
    _cuda_or_skip()
    model = BuiltModel(TINY, cache_dir=cache, precision=Precision.FP16)
    with open_device("cuda:0").open(model) as session:
        assert next(session._module.parameters()).dtype == torch.float16
        assert session._example.dtype == torch.float16
        assert session.run().dtype == torch.float16
        seconds = session.time(5)
    assert math.isfinite(seconds) and 0 < seconds < 1.0
    assert next(model.torch_module().parameters()).dtype == torch.float32
