"""profile_ops(passes=N): the op list measured N times over in fresh sessions, each op's lowest figure stored."""

from __future__ import annotations

import pytest

from latkit.core.errors import UsageError
from latkit.lut.store import LUT
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.runner import profile_ops

SPECS = [OpSpec(OpType.MBCONV, (8, 8, 16), (8, 8, 16), kernel=3, expand_ratio=3, mid_channels=48,
                act=Act.RELU6, idskip=True),
         OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 8), kernel=3, stride=2, act=Act.RELU6)]  # fmt: skip
CONFIG = ProtocolConfig.quick(min_samples=6, max_samples=6)


@pytest.fixture
def device(ort_device):
    return ort_device  # the session's real ONNX Runtime device (tests/conftest.py)


def test_each_op_keeps_its_lowest_figure_over_the_passes(device, tmp_path):
    progress: list[tuple[int, int, str]] = []
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        report = profile_ops(device, SPECS, lut, CONFIG, on_progress=lambda d, t, k, m: progress.append((d, t, k)),
                             cache_dir=tmp_path / "models", passes=3)  # fmt: skip
        assert report.ok and report.measured == [s.key for s in SPECS]
        stored = {s.key: lut.measurement(s.key, device.uri) for s in SPECS}
    for m in stored.values():
        figures = m.provenance["passes_ms"]
        assert len(figures) == 3 and all(v > 0 for v in figures)
        assert m.latency_ms == min(figures)
        assert m.samples_ms and m.n_samples == len(m.samples_ms)  # the lowest pass's own samples
    # progress counts every pass: 3 passes x 2 ops, numbered on, out of 6
    assert [(d, t) for d, t, _ in progress] == [(i, 6) for i in range(1, 7)]
    assert sorted(k for _, _, k in progress) == sorted(s.key for s in SPECS for _ in range(3))


def test_one_pass_stores_as_before_and_bad_passes_are_refused(device, tmp_path):
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        report = profile_ops(device, SPECS[:1], lut, CONFIG, cache_dir=tmp_path / "models")
        assert report.measured == [SPECS[0].key]
        assert "passes_ms" not in lut.measurement(SPECS[0].key, device.uri).provenance
        for bad in (0, -1, 1.5, True):
            with pytest.raises(UsageError, match="passes must be an integer >= 1"):
                profile_ops(device, SPECS, lut, CONFIG, passes=bad)


def test_a_run_stopped_between_passes_keeps_what_the_passes_so_far_measured(device, tmp_path):
    seen: list[int] = []

    def stop_in_the_second_pass(done: int, total: int, key: str, m) -> None:
        seen.append(done)
        if done == len(SPECS) + 1:  # the first op of pass 2 has finished
            raise KeyboardInterrupt

    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        with pytest.raises(KeyboardInterrupt):
            profile_ops(device, SPECS, lut, CONFIG, on_progress=stop_in_the_second_pass,
                        cache_dir=tmp_path / "models", passes=3)  # fmt: skip
        stored = {s.key: lut.measurement(s.key, device.uri) for s in SPECS}
    assert seen == [1, 2, 3]
    assert all(m is not None and m.latency_ms > 0 for m in stored.values())  # pass 1's figures were kept
