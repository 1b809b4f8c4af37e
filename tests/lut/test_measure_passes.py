"""measure_passes: each pass measures its networks together, interleaved, on a real ONNX Runtime device."""

from __future__ import annotations

from types import SimpleNamespace

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
    # progress: each pass announced (done unchanged) before one call per figure, numbered in order
    figures = sum(len(r) for r in runs)
    passes = len(runs[0])
    starts = [i for i, (d, _, _) in enumerate(progress) if i == 0 or d == progress[i - 1][0]]
    assert starts == [4 * k for k in range(passes)]  # a note, then the pass's 3 figures
    assert progress[0][:2] == (0, PASSES * 3) and progress[0][2].startswith(f"pass 1 of {PASSES} over 3 model(s)")
    assert all(progress[i][2].startswith(f"pass {k + 1} of ") for k, i in enumerate(starts))
    counted = [t for i, t in enumerate(progress) if i not in starts]
    assert [d for d, _, _ in counted] == list(range(1, figures + 1))
    assert sorted(label for _, _, label in counted[:3]) == sorted(label for _, _, label in counted[3:6]) \
        == ["a", "b", "c"]
    # the total a pass announces is the total its figures count to: the last one is the real end
    assert all(progress[i][1] == progress[j - 1][1] for i, j in zip(starts, starts[1:] + [len(progress)]))
    assert progress[-1][:2] == (figures, figures)
    # a bigger network (more blocks) measures slower in every pass
    assert min(runs[2]) > min(runs[0])


def test_a_model_listed_twice_is_measured_once_a_pass_and_gets_each_figure(device, tmp_path):
    net = BuiltModel(_net("n", 1), cache_dir=tmp_path)
    runs = measure_passes(device, [net, net], ProtocolConfig.quick(min_samples=6, max_samples=6))
    assert runs[0] == runs[1] and len(runs[0]) >= PASSES


def test_an_extra_pass_is_announced_with_the_total_it_grows_to(monkeypatch):
    # the device is not steady for model "b" in the first two passes: a third pass runs over every
    # model, announced (done unchanged, the new total, why) before its first figure
    figures = {"a": iter([1.0, 1.0, 1.0]), "b": iter([1.0, 2.0, 1.05])}

    class Model:
        def __init__(self, key: str) -> None:
            self.key = key

    def fake_measure_many(device, models, config, sink=None, on_progress=None, **kw):
        for i, m in enumerate(models):
            on_progress(i + 1, len(models), m.key, SimpleNamespace(latency_ms=next(figures[m.key])))
        return []

    monkeypatch.setattr("latkit.profiler.protocol.measure_many", fake_measure_many)
    seen: list[tuple[int, int, str]] = []
    runs = measure_passes(None, [Model("a"), Model("b")], ProtocolConfig.quick(),
                          lambda d, t, label: seen.append((d, t, label)))  # fmt: skip
    assert runs == [[1.0, 1.0, 1.0], [1.0, 2.0, 1.05]]
    notes = [(d, t, label) for d, t, label in seen if label.startswith("pass ")]
    assert [(d, t) for d, t, _ in notes] == [(0, 4), (2, 4), (4, 6)]
    assert notes[2][2] == "pass 3 of up to 6: 1 of 2 model(s) not steady yet, every model measured again"
    assert seen[-1][:2] == (6, 6)  # ends at the total last announced
