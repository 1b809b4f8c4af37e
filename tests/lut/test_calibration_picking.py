"""Which networks a calibration measures: `lut calibrate` and `latkit run` pick them the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from artefacts import copy_lut
from latkit.cli import main
from latkit.core.errors import UsageError
from latkit.lut.calibrate import pick_calibration_archs
from latkit.lut.calibration import FORMS, load_calibration
from latkit.lut.store import LUT
from latkit.lut.tables import TableLatencyModel
from latkit.profiler.spaces import get_space

SPACE = "proxyless_mobile_w05"
RESOLUTION = 32


@pytest.fixture
def cpu_lut(profiled_lut: Path, tmp_path: Path) -> Path:
    """The space at 32x32, profiled on cpu:onnxruntime with the quick protocol (a copy of the shared one)."""
    return copy_lut(profiled_lut, tmp_path / "cpu.db")


def _model(lut_path: Path) -> TableLatencyModel:
    with LUT.open(lut_path, readonly=True) as lut:
        return TableLatencyModel.from_lut(get_space(SPACE), lut, "cpu:onnxruntime", RESOLUTION)


@pytest.mark.slow
def test_picks_are_spread_and_hold_both_corners(cpu_lut: Path) -> None:
    model = _model(cpu_lut)
    picks = pick_calibration_archs(model, 5, np.random.default_rng(3))
    assert len(picks) == len(set(picks)) and 5 <= len(picks) <= 6
    spread = [model.latency_ms(a) for a in picks[:-1]]
    assert spread == sorted(spread)
    assert spread[0] == pytest.approx(model.min_latency()[0], rel=1e-12)
    assert spread[-1] == pytest.approx(model.max_latency()[0], rel=1e-12)
    full = model.fastest_full()
    assert full in picks and (picks.index(full) == len(picks) - 1 or len(picks) == 5)  # last, unless a spread pick
    n_layers = max(sum(1 for s in model.layout.specs(a) if s.measurable) for a in picks)
    assert sum(1 for s in model.layout.specs(full) if s.measurable) == n_layers
    with pytest.raises(UsageError, match="at least 2 spread networks"):
        pick_calibration_archs(model, 1, np.random.default_rng(0))


@pytest.mark.slow
def test_lut_calibrate_measures_the_picked_networks(capsys, cpu_lut: Path) -> None:
    code = main(["lut", "calibrate", "--lut", str(cpu_lut), "--space", SPACE, "--resolution", str(RESOLUTION),
                 "--networks", "4", "--seed", "5", "--quick", "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    space = get_space(SPACE)
    want = [space.network(a, RESOLUTION).name
            for a in pick_calibration_archs(_model(cpu_lut), 3, np.random.default_rng(5))]  # fmt: skip
    assert [n["name"] for n in doc["networks"]] == want
    cal = doc["calibration"]
    assert doc["device"] == "cpu:onnxruntime" and doc["precision"] == "fp32"
    assert cal["n_points"] == len(want) and cal["method"] in FORMS and cal["rmse_ms"] >= 0
    for net in doc["networks"]:  # each network's figures, and its calibrated latency by the stored fit
        assert net["lut_sum_ms"] > 0 and net["n_ops"] > 0
        expected = cal["a"] * net["lut_sum_ms"] + cal["b"] * net["n_ops"] + cal["c"]
        assert net["calibrated_ms"] == pytest.approx(expected, rel=1e-9)
    with LUT.open(cpu_lut, readonly=True) as lut:
        stored = load_calibration(lut, "cpu:onnxruntime")
        prov = lut.calibrations("cpu:onnxruntime")[-1]["provenance"]
    assert stored is not None and stored.a == pytest.approx(doc["calibration"]["a"], rel=1e-12)
    assert prov["networks"] == want
    lut_sums = [n["lut_sum_ms"] for n in doc["networks"]]
    assert lut_sums[0] == pytest.approx(min(lut_sums))  # the fastest network first, as picked


def test_lut_calibrate_needs_three_networks(capsys, tmp_path: Path) -> None:
    code = main(["lut", "calibrate", "--lut", str(tmp_path / "none.db"), "--space", SPACE, "--networks", "2"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and "--networks" in lines[0], err
    assert not (tmp_path / "none.db").exists()
