"""measure_passes: each pass measures its networks together, interleaved, on a real ONNX Runtime device."""

from __future__ import annotations

import pytest

from latkit.lut.calibrate import MAX_PASSES, PASSES, measure_passes, steady
from latkit.profiler.export import BuiltModel
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.spaces.base import Layer, Network
from timing_log import LoggingDevice

STEM = OpSpec(OpType.STEM, (16, 16, 3), (8, 8, 8), kernel=3, stride=2, act=Act.RELU6)


def _net(name: str, blocks: int) -> Network:
    block = OpSpec(OpType.MBCONV, (8, 8, 8), (8, 8, 8), kernel=3, expand_ratio=3,
                   mid_channels=24, act=Act.RELU6, idskip=True)  # fmt: skip
    return Network(name, (16, 16, 3), (Layer("stem", STEM), *(Layer(f"b{j}", block) for j in range(blocks))))


@pytest.fixture
def device(ort_device):
    return ort_device  # the session's real ONNX Runtime device (tests/conftest.py)


def test_a_pass_measures_its_networks_interleaved(device, tmp_path):
    models = [BuiltModel(_net(f"n{i}", i + 1), cache_dir=tmp_path) for i in range(3)]
    logged = LoggingDevice(device)
    # a pool of 1 would measure the models one after the other: a pass pools all of them anyway
    config = ProtocolConfig.quick(min_samples=6, max_samples=6, pool_size=1)
    progress: list[tuple[int, int, str]] = []
    runs = measure_passes(logged, models, config, lambda d, t, label: progress.append((d, t, label)),
                          labels=["a", "b", "c"])  # fmt: skip
    assert len(runs) == 3 and all(PASSES <= len(r) <= MAX_PASSES for r in runs)
    assert all(steady(r) for r in runs) or all(len(r) == MAX_PASSES for r in runs)
    assert len({len(r) for r in runs}) == 1  # every model takes every pass
    assert all(v > 0 for r in runs for v in r)
    # the timed calls of one model are not all back to back: the models took turns
    keys = [m.key for m in models]
    switches = sum(1 for x, y in zip(logged.log, logged.log[1:]) if x != y)
    assert set(logged.log) == set(keys) and switches > 2 * len(keys) * PASSES
    # progress: one call per figure, numbered in order, each pass naming every model once
    assert [d for d, _, _ in progress] == list(range(1, sum(len(r) for r in runs) + 1))
    assert sorted(label for _, _, label in progress[:3]) == sorted(label for _, _, label in progress[3:6]) \
        == ["a", "b", "c"]
    # a bigger network (more blocks) measures slower in every pass
    assert min(runs[2]) > min(runs[0])


def test_a_model_listed_twice_is_measured_once_a_pass_and_gets_each_figure(device, tmp_path):
    net = BuiltModel(_net("n", 1), cache_dir=tmp_path)
    runs = measure_passes(device, [net, net], ProtocolConfig.quick(min_samples=6, max_samples=6))
    assert runs[0] == runs[1] and len(runs[0]) >= PASSES
