"""Inputs of the search commands checked before any work: resolutions, arch.json latencies, predictors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.spaces import get_space, list_spaces
from latkit.profiler.spaces.base import MAX_RESOLUTION
from latkit.deploy.export import read_arch

W05 = ["3x3_MBConv3"] * 21


@pytest.mark.parametrize("name", list_spaces())
def test_every_space_checks_resolutions(name):
    sp = get_space(name)
    assert sp.check_resolution(None) == sp.default_resolution
    assert sp.check_resolution(sp.default_resolution) == sp.default_resolution
    for bad in (-1, 0, 13, MAX_RESOLUTION + 8, 10**30, 64.0, "64", True, float("nan")):
        with pytest.raises(UsageError, match=name) as err:
            sp.check_resolution(bad)
        assert "\n" not in str(err.value)


def test_proxyless_accepts_its_multiples_of_8():
    sp = get_space("proxyless_mobile")
    assert [sp.check_resolution(r) for r in (32, 64, 160)] == [32, 64, 160]
    with pytest.raises(UsageError, match="multiple of 8"):
        sp.check_resolution(36)


def _arch_json(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "proxyless_mobile_w05", "arch": W05, **fields}, allow_nan=True))
    return path


@pytest.mark.parametrize("field", ["latency_ms", "target_ms", "predicted_latency_ms"])
@pytest.mark.parametrize("value", [-1, 0, float("nan"), float("inf"), "fast", True, [1.0]])
def test_read_arch_refuses_bad_latencies(tmp_path, field, value):
    with pytest.raises(ArchError, match=field) as err:
        read_arch(_arch_json(tmp_path, **{field: value}))
    assert "\n" not in str(err.value)


def test_read_arch_keeps_good_latencies(tmp_path):
    info = read_arch(_arch_json(tmp_path, latency_ms=3.25, target_ms=4, best_latency_ms=None))
    assert info.predicted_ms == pytest.approx(3.25) and info.target_ms == pytest.approx(4.0)
    info = read_arch(_arch_json(tmp_path, latency_ms=None))
    assert info.predicted_ms is None and info.target_ms is None


@pytest.fixture(scope="module")
def ridge_on(tmp_path_factory):
    """fit(space) -> a saved ridge predictor of ``space``'s encoding, fitted on random archs."""
    from latkit.predictors.base import get_predictor, save

    def fit(space: str, recorded: str | None = None) -> Path:
        sp = get_space(space)
        rng = np.random.default_rng(0)
        X = np.stack([sp.encode(sp.sample(rng)) for _ in range(30)])
        y = 1.0 + X @ rng.uniform(0.1, 1.0, X.shape[1])
        out = tmp_path_factory.mktemp(space)
        save(get_predictor("ridge").fit(X, y), out, space=recorded)
        return out

    return fit


def test_predictor_latency_model_checks_the_space(ridge_on):
    from latkit.search.framework.latency import PredictorLatencyModel

    fb = get_space("fbnet")
    model = PredictorLatencyModel.from_saved(fb, ridge_on("fbnet", "fbnet"))
    assert model.latency_ms(fb.sample(np.random.default_rng(1))) > 0
    with pytest.raises(UsageError, match="fitted on space 'fbnet'.*'proxyless_mobile'"):
        PredictorLatencyModel.from_saved(get_space("proxyless_mobile"), ridge_on("fbnet", "fbnet"))
    # a predictor that records no space is still checked by its feature count
    with pytest.raises(UsageError, match="features but the encoding of 'proxyless_mobile'"):
        PredictorLatencyModel.from_saved(get_space("proxyless_mobile"), ridge_on("fbnet", None))
