"""Per-layer profiles (``measure --per-layer``): ONNX Runtime's profiler, benchmark_model's op table on the
loopback phone, and LiteRT's lack of one, on real runtimes; the parsers on known output."""

from __future__ import annotations

from pathlib import Path

import pytest

from latkit.core.errors import UsageError
from latkit.devices.base import ModelFormat, open_device
from latkit.devices.benchmark_parser import parse_benchmark_output
from latkit.devices.layers import benchmark_layer_profile, ort_layer_profile, sum_text
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
                   _node("conv", "Conv", start + 10, conv, arena=4096 * (i + 1)),
                   _node("relu", "Relu", start + 20 + conv, relu)]
    profile = ort_layer_profile(events, runs=3)
    assert [(x.name, x.op_type) for x in profile.layers] == [("conv", "Conv"), ("relu", "Relu")]
    assert [x.latency_ms for x in profile.layers] == pytest.approx([0.110, 0.020])  # medians of runs 1-3
    assert profile.run_ms == pytest.approx(0.190) and profile.runs == 3 and profile.statistic == "median"
    assert profile.sum_ms == pytest.approx(0.130) and profile.share(profile.layers[0]) == pytest.approx(110 / 130)
    assert [(m.what, m.bytes) for m in profile.memory] == [("ONNX Runtime arena held (profiler)", 16384)]
    low = ort_layer_profile(events, runs=3, quantile=0.0)
    assert [x.latency_ms for x in low.layers] == pytest.approx([0.100, 0.010]) and low.statistic == "p0"
    doc = profile.to_dict(end_to_end_ms=0.2)
    assert doc["sum_over_end_to_end"] == pytest.approx(0.65) and doc["sum_over_run"] == pytest.approx(130 / 190)
    assert sum_text(doc) == ("sum 0.130 ms = 68% of the profiled runs' own 0.190 ms; "
                             "65% of the measured end-to-end 0.200 ms")
    plain = ort_layer_profile(events, runs=3, unprofiled_ms=[0.2, 0.1, 0.15]).to_dict()
    assert sum_text(plain) == ("sum 0.130 ms = 87% of the model's 0.150 ms per run without the profiler "
                               "(runs taken in turn with the profiled ones)")
    with pytest.raises(UsageError, match="no model_run"):
        ort_layer_profile(events[:1] + events[2:4], runs=3)  # no model_run among them
    assert plain.get("note") == ""  # 87%: no word on the profiler's cost


def test_layers_summing_past_the_unprofiled_run_say_what_the_profiler_costs() -> None:
    """Tiny layers: the profiler's per-node cost makes them add up to more than the run without it."""
    events = []
    for i in range(3):
        start = 1000 * (i + 1)
        events += [{"cat": "Session", "name": "model_run", "ts": start, "dur": 200}]
        events += [_node(f"n{j}", "Add", start + 10 + 40 * j, 30) for j in range(4)]  # 4 nodes of 30 us
    quiet = ort_layer_profile(events, runs=3, unprofiled_ms=[0.110] * 3)  # 120 us of layers: 109%
    assert quiet.note == ""
    noisy = ort_layer_profile(events, runs=3, unprofiled_ms=[0.080] * 3)  # 150%: 10 us per node is the profiler's
    assert noisy.sum_ms == pytest.approx(0.120)
    assert noisy.note == ("the layers add up to 150% of the run without the profiler: about 10.0 us per node is the "
                          "profiler's own, large beside layers this short; read their shares rather than their times")
    assert noisy.to_dict()["note"] == noisy.note


def test_runs_another_process_interrupted_are_left_out() -> None:
    from latkit.devices.layers import undisturbed

    assert undisturbed([(100, 100), (300, 100), (105, 100), (104, 100), (103, 100), (102, 100), (500, 100)]) == [
        True, False, True, True, True, True, False]
    # every run interrupted: the five least interrupted are kept
    assert undisturbed([(300, 100)] * 3 + [(200, 100)] * 5 + [(900, 100)]) == [False] * 3 + [True] * 5 + [False]
    events = [{"cat": "Session", "name": "model_run", "ts": 1000 * i, "dur": 150} for i in range(1, 4)]
    events += [_node("conv", "Conv", 1000 * i + 10, dur) for i, dur in ((1, 100), (2, 400), (3, 110))]
    profile = ort_layer_profile(events, runs=3, keep=[True, False, True])
    assert profile.runs == 2 and profile.layers[0].latency_ms == pytest.approx(0.105)
    assert profile.note.startswith("1 of the 3 profiled runs were left out")


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
    """A stack of four 3x3 convolutions (about half a millisecond), as ONNX and as TFLite."""
    from model_files import conv_stack_onnx, conv_stack_tflite

    folder = tmp_path_factory.mktemp("conv-files")
    return {"onnx": conv_stack_onnx(folder / "conv.onnx"), "tflite": conv_stack_tflite(folder / "conv.tflite")}


@pytest.mark.serial  # per-layer times against the whole run: another worker's load shifts them apart
def test_onnxruntime_profile_sums_to_the_end_to_end_time(conv_files, ort_device) -> None:
    import latkit

    profile = latkit.measure_layers(ort_device, conv_files["onnx"], runs=30, quantile=0.05)
    assert repr(profile).startswith(f"LayerProfile('onnxruntime profiler', {len(profile.layers)} layer(s) summing")
    assert len(repr(profile)) < 160  # a short repr, never the rows
    assert [x.op_type for x in profile.layers][:4] == ["Conv"] * 4 and profile.statistic == "p5"
    assert sum(profile.share(x) for x in profile.layers) == pytest.approx(1.0)
    # the layers add up to the model's end-to-end time without the profiler, taken run for run beside them
    assert abs(profile.sum_ms / profile.unprofiled_ms - 1) < 0.15, (profile.sum_ms, profile.unprofiled_ms)
    assert profile.run_ms >= profile.sum_ms * 0.99  # the profiled runs hold their layers
    whats = [m.what for m in profile.memory]
    assert whats[0] == "ONNX Runtime arena held (profiler)" and whats[1].startswith("host: model loaded and run")
    assert profile.memory[0].bytes > 0


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


@pytest.mark.slow  # a benchmark_model process on the loopback phone: a Python start and LiteRT
@pytest.mark.serial  # per-layer times against the whole run: another worker's load shifts them apart
def test_the_loopback_phone_profile_sums_to_the_end_to_end_time(conv_files, tmp_path) -> None:
    server = pytest.importorskip("latkit.devices.loopback.server")
    from latkit.profiler.model_file import ModelFile

    with server.LoopbackDevice(tmp_path / "phone", auth="accept") as phone:
        dev = open_device(f"adb+tcp://127.0.0.1:{phone.port}", threads=1, backoff_s=0.05)
        try:
            assert dev.model_format is ModelFormat.TFLITE
            profile = profile_layers(dev, ModelFile(conv_files["tflite"]), runs=30)
            argv = dev.last_run["argv"]
        finally:
            dev.close()
    assert "--enable_op_profiling=true" in argv and "--report_peak_memory_footprint=true" in argv
    # benchmark_model's run-order table, one row per operator, in the graph's order
    assert [(x.op_type, x.name) for x in profile.layers] == [("CONV_2D", f"conv{i}/Relu") for i in range(4)]
    assert profile.runtime == "benchmark_model" and profile.statistic == "mean" and profile.runs >= 30
    # the first conv has 3 input channels, the others 32: it is the cheapest by far
    assert profile.layers[0].latency_ms < min(x.latency_ms for x in profile.layers[1:])
    # the rows add up to the end-to-end figure the same benchmark_model run printed (Inference (avg))
    assert abs(profile.sum_ms / profile.run_ms - 1) < 0.15, (profile.sum_ms, profile.run_ms)
    peak = [m for m in profile.memory if m.what.startswith("peak memory footprint")]
    assert len(peak) == 1 and peak[0].bytes > 0


def test_a_device_without_a_profiler_says_so() -> None:
    from latkit.devices.base import Session

    class Plain(Session):
        def time(self, iterations: int) -> float:
            return 0.001

    with pytest.raises(UsageError, match="no per-layer profiler"):
        Plain().profile_layers(5)
