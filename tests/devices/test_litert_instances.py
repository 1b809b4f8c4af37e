"""cpu:litert opens a model as several interpreters and times the mean over them (real LiteRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latkit.devices import open_device
from latkit.devices.litert_cpu import INSTANCES
from latkit.profiler.export import BuiltModel
from latkit.profiler.ops import Act, OpSpec, OpType

pytest.importorskip("ai_edge_litert", reason="needs latkit[tflite]")
pytest.importorskip("litert_torch", reason="TFLite export needs latkit[tflite]")
pytestmark = pytest.mark.slow  # the op is converted to TFLite

K7 = OpSpec(
    OpType.MBCONV, (8, 8, 16), (8, 8, 16), kernel=7, expand_ratio=3, mid_channels=48,
    act=Act.RELU6, idskip=True,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One export cache for the module, so the op is converted once."""
    return tmp_path_factory.mktemp("models")


class StepClock:
    """A nanosecond clock that advances 1000 ns at every reading, and counts them."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return 1000 * self.reads


def test_a_model_is_opened_as_several_interpreters_with_their_own_buffers(cache):
    assert INSTANCES >= 2
    with open_device("cpu:litert").open(BuiltModel(K7, cache_dir=cache)) as session:
        interps = session._all
        assert len(interps) == INSTANCES and session._interpreter is interps[0]
        index = interps[0].get_input_details()[0]["index"]
        addresses = {it.tensor(index)().ctypes.data for it in interps}
        assert len(addresses) == INSTANCES  # each interpreter has its own tensor arena
        x = np.random.default_rng(3).standard_normal((1, 16, 8, 8)).astype(np.float32)
        first = session.run(x)[0]
        for it in interps[1:]:
            it.set_tensor(index, x)
            it.invoke()
            np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), first)


@pytest.mark.parametrize(("iterations", "runs"), [(1, INSTANCES), (2 * INSTANCES + 1, 2 * INSTANCES + 1)])
def test_time_is_the_mean_over_every_interpreter(cache, iterations, runs):
    device = open_device("cpu:litert")
    with device.open(BuiltModel(K7, cache_dir=cache)) as session:
        clock = StepClock()
        session._now = clock
        seconds = session.time(iterations)
    # one start and one stop reading per interpreter: each one ran, and the
    # 1000 ns each took is divided by every call made, at least one per interpreter
    assert clock.reads == 2 * INSTANCES
    assert seconds == pytest.approx(INSTANCES * 1000 / runs / 1e9)


@pytest.mark.serial  # compares timings: another worker's load would shift one against the other
def test_real_timing_averages_the_interpreters(cache):
    device = open_device("cpu:litert")
    with device.open(BuiltModel(K7, cache_dir=cache)) as session:
        session.time(INSTANCES * 5)
        mean = min(session.time(INSTANCES * 20) for _ in range(5))
        interps = session._all
        singles = []
        for it in interps:
            session._all = [it]
            singles.append(min(session.time(20) for _ in range(5)))
    assert min(singles) * 0.8 <= mean <= max(singles) * 1.25
