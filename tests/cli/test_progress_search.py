"""Search reports every training step (``--train-steps``) and every scored sub-network
(``--smooth-accuracy``), so its progress display moves during those stages."""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from latkit.cli.progress import Stages
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.search.supernet.data import SearchData, load_digits
from latkit.search.supernet.train import TrainedAccuracy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    full = load_digits(32, seed=0)
    data = SearchData(full.x_train[:64], full.y_train[:64], full.x_valid[:32], full.y_valid[:32],
                      full.n_classes, full.provenance)  # fmt: skip
    return ProxylessMobileSpace(width_mult=0.25), data


def test_trained_accuracy_reports_each_step(tiny) -> None:
    space, data = tiny
    seen: list[tuple[int, str]] = []
    evaluator = TrainedAccuracy(space, data, resolution=32, steps=3, batch_size=16, inherit=False,
                                on_step=lambda done, msg: seen.append((done, msg)))  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(2):
        evaluator.accuracy(space.sample(rng))
    assert [done for done, _ in seen] == [1, 2, 3, 4, 5, 6]  # steps over both architectures, one call each
    assert seen[0][1].startswith("architecture 1 step 1/3 loss ")
    assert seen[-1][1].startswith("architecture 2 step 3/3 loss ")


@pytest.mark.slow
def test_run_search_reports_train_steps_and_smoothing(tiny, tmp_path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
    from g2_helpers import make_lut
    from latkit.lut.tables import TableLatencyModel
    from latkit.search.run import SearchConfig, run_search

    space, data = tiny
    model = TableLatencyModel.from_lut(space, make_lut(tmp_path / "p.db", space, 32), resolution=32)
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    calls: list[tuple[str, int, int]] = []
    cfg = SearchConfig(lo + 0.5 * (hi - lo), "random", epochs=1, seed=0, queries=2, plots=False)
    run_search(space, model, replace(cfg, train_steps=2), data, tmp_path / "t",
               on_stage=lambda s, d, t, m: calls.append((s, d, t)))  # fmt: skip
    train = [c for c in calls if c[0] == "train"]
    assert [d for _, d, _ in train][:4] == [1, 2, 3, 4] and {t for _, _, t in train} == {4}

    calls.clear()
    run_search(space, model, replace(cfg, smooth_samples=5), data, tmp_path / "s",
               on_stage=lambda s, d, t, m: calls.append((s, d, t)))  # fmt: skip
    assert [c for c in calls if c[0] == "smooth"] == [("smooth", i, 5) for i in range(1, 6)]


def test_stages_leave_one_line_per_stage_off_a_terminal(monkeypatch) -> None:
    monkeypatch.setenv("LATKIT_PROGRESS_SECONDS", "3600")
    buf = io.StringIO()
    with Stages(console=Console(file=buf, force_terminal=False, width=200)) as on_progress:
        for stage, total in (("profile", 70), ("calibrate", 12), ("search", 10)):
            for done in range(1, total + 1):
                on_progress(stage, done, total, f"item {done}")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 9  # start, first item and finish per stage, not one line per item (92 before)
    assert lines[2].startswith("profile: finished 70/70") and lines[8].startswith("search: finished 10/10")
