"""Per-layer profiles (``measure --per-layer``): ONNX Runtime's profiler, benchmark_model's op table on the
loopback phone, and LiteRT's lack of one, on real runtimes; the parsers on known output."""

from __future__ import annotations

from pathlib import Path

import pytest

from latkit.core.errors import UsageError
from latkit.devices.base import ModelFormat, open_device
from latkit.devices.benchmark_parser import parse_benchmark_output
from latkit.devices.layers import benchmark_layer_profile, ort_layer_profile
from latkit.profiler.layers import profile_layers

FIXTURES = Path(__file__).parent / "fixtures"


def _node(name: str, op: str, ts: int, dur: int, arena: int = 0) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "mem_arena_held": str(arena)}}


def test_ort_events_give_each_nodes_median_over_the_profiled_runs_only() -> None:
    events = [{"cat": "Session", "name": "model_loading_uri", "ts": 0, "dur": 5}]
    for i, (conv, relu) in enumerate([(900, 90), (100, 10), (110, 30), (120, 20)]):  # run 0: warmup
        start = 1000 * (i + 1)
        events += [{"cat": "Session", "name": "model_run", "ts": start, "dur": conv + relu + 50},
                   _node("conv", "Conv", start + 10, conv, arena=4096 * (i + 1)), _node("relu", "Relu", start + 20 + conv, relu)]
    profile = ort_layer_profile(events, runs=3)
    assert [(x.name, x.op_type) for x in profile.layers] == [("conv", "Conv"), ("relu", "Relu")]
    assert [x.latency_ms for x in profile.layers] == pytest.approx([0.110, 0.020])  # medians of runs 1-3
    assert profile.run_ms == pytest.approx(0.190) and profile.runs == 3 and profile.statistic == "median"
    assert profile.sum_ms == pytest.approx(0.130) and profile.share(profile.layers[0]) == pytest.approx(110 / 130)
    assert [(m.what, m.bytes) for m in profile.memory] == [("ONNX Runtime arena held (profiler)", 16384)]
    low = ort_layer_profile(events, runs=3, quantile=0.0)
    assert [x.latency_ms for x in low.layers] == pytest.approx([0.100, 0.010]) and low.statistic == "p0"
    doc = profile.to_dict(end_to_end_ms=0.2)
    assert doc["sum_over_end_to_end"] == pytest.approx(0.65) and doc["sum_over_run"] == pytest.approx(130 / 180)
    with pytest.raises(UsageError, match="no model_run"):
        ort_layer_profile(events[1:2], runs=3)


def test_benchmark_model_op_table_becomes_the_profile() -> None:
    result = parse_benchmark_output((FIXTURES / "bm_op_profiling.txt").read_text())
    profile = benchmark_layer_profile(result, runs=20)
    assert [(x.op_type, x.name) for x in profile.layers] == [
        ("CONV_2D", "conv/Relu6"), ("DEPTHWISE_CONV_2D", "dw/Relu6"), ("ADD", "Identity")]
    assert profile.sum_ms == pytest.approx(1.688 + 0.598 + 0.306)
    assert profile.run_ms == pytest.approx(2.6227) and profile.statistic == "mean" and profile.runs == 381
    assert abs(profile.sum_ms / profile.run_ms - 1) < 0.15
    assert [m.bytes for m in profile.memory] == [int(1.75 * 2**20)] and "benchmark_model" in profile.memory[0].what


@pytest.fixture(scope="module")
def conv_files(tmp_path_factory) -> dict[str, Path]:
    """A conv block heavy enough (about a millisecond) that ONNX Runtime's per-node overhead is small beside it,
    as ONNX and as TFLite."""
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
    folder = tmp_path_factory.mktemp("conv-files")
    x = torch.randn(1, 16, 32, 32)
    torch.onnx.export(net, (x,), str(folder / "conv.onnx"), dynamo=False, input_names=["image"])
    litert_torch.convert(net, (x,)).export(str(folder / "conv.tflite"))
    return {"onnx": folder / "conv.onnx", "tflite": folder / "conv.tflite"}


def test_onnxruntime_profile_sums_to_the_end_to_end_time(conv_files) -> None:
    from latkit.profiler.model_file import ModelFile

    model = ModelFile(conv_files["onnx"])
    dev = open_device("cpu:onnxruntime", threads=1)
    try:
        profile = profile_layers(dev, model, runs=30, quantile=0.05)
        with dev.open(model) as session:  # end to end, unprofiled: the lowest of 15 means of 5 runs
            end_to_end_ms = min(session.time(5) for _ in range(15)) * 1e3
    finally:
        dev.close()
    assert {x.op_type for x in profile.layers} >= {"Conv"} and profile.statistic == "p5"
    assert sum(profile.share(x) for x in profile.layers) == pytest.approx(1.0)
    assert abs(profile.sum_ms / end_to_end_ms - 1) < 0.15, (profile.sum_ms, end_to_end_ms)
    assert profile.run_ms >= profile.sum_ms * 0.99  # the profiled runs hold their layers
    whats = [m.what for m in profile.memory]
    assert whats[0] == "ONNX Runtime arena held (profiler)" and whats[1].startswith("host: model loaded and run")
    assert all(m.bytes > 0 for m in profile.memory[:1])


def test_litert_says_it_has_no_per_layer_profiler(conv_files) -> None:
    from latkit.profiler.model_file import ModelFile

    dev = open_device("cpu:litert", threads=1)
    try:
        profile = profile_layers(dev, ModelFile(conv_files["tflite"]), runs=5)
    finally:
        dev.close()
    assert profile.layers == () and profile.run_ms > 0 and "no per-operator profiler" in profile.note
    assert profile.to_dict()["sum_ms"] is None
    assert [m.what for m in profile.memory][0].startswith("host: model loaded and run")


def test_the_loopback_phone_profile_sums_to_the_end_to_end_time(conv_files, tmp_path) -> None:
    server = pytest.importorskip("latkit.devices.loopback.server")
    from latkit.profiler.model_file import ModelFile

    model = ModelFile(conv_files["tflite"])
    with server.LoopbackDevice(tmp_path / "phone", auth="accept") as phone:
        dev = open_device(f"adb+tcp://127.0.0.1:{phone.port}", threads=1, backoff_s=0.05)
        try:
            assert dev.model_format is ModelFormat.TFLITE
            profile = profile_layers(dev, model, runs=20)
            argv = dev.last_run["argv"]
            with dev.open(model) as session:  # end to end, without op profiling: one benchmark_model run
                end_to_end_ms = session.time(20) * 1e3
        finally:
            dev.close()
    assert "--enable_op_profiling=true" in argv and "--report_peak_memory_footprint=true" in argv
    assert profile.runtime == "benchmark_model" and profile.layers
    assert abs(profile.sum_ms / end_to_end_ms - 1) < 0.15, (profile.sum_ms, end_to_end_ms)
    peak = [m for m in profile.memory if m.what.startswith("peak memory footprint")]
    assert len(peak) == 1 and peak[0].bytes > 0


def test_a_device_without_a_profiler_says_so() -> None:
    from latkit.devices.base import Session

    class Plain(Session):
        def time(self, iterations: int) -> float:
            return 0.001

    with pytest.raises(UsageError, match="no per-layer profiler"):
        Plain().profile_layers(5)
