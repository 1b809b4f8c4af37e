"""The GCN accuracy smoother on real NAS-Bench-201 accuracies with known noise added."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latkit.core.errors import UsageError
from latkit.predictors.base import get_predictor, save
from latkit.predictors.metrics import kendall
from latkit.search.supernet.accuracy_gcn import SmoothedAccuracy, rank_report
from latkit.search.framework.tabular import TabularProblem

pytestmark = pytest.mark.slow


def _noisy(nb201: TabularProblem, n: int, sigma: float, seed: int):
    rng = np.random.default_rng(seed)
    cands = nb201.candidates()
    archs = [cands[i] for i in rng.choice(len(cands), n, replace=False)]
    truth = np.array([nb201.accuracy.accuracy(a) for a in archs])
    # a supernet's estimate: the true accuracy plus a per-architecture random error
    return archs, truth, np.maximum(0.0, truth + rng.normal(0.0, sigma, n))


def test_smoothing_ranks_closer_to_the_truth_than_the_noisy_estimates(nb201: TabularProblem):
    archs, truth, est = _noisy(nb201, 400, sigma=6.0, seed=0)
    # a small GCN: in-sample, its fit cannot follow the per-arch noise
    model = SmoothedAccuracy.fit("nasbench201", archs, est, hidden=64, head=64, epochs=200)
    raw_tau = kendall(truth, est)
    smooth_tau = kendall(truth, model.predict(archs))
    assert 0.4 < raw_tau < 0.65 and smooth_tau > raw_tau + 0.04
    # as a lookup table it answers for architectures it never saw, in accuracy units
    cands = nb201.candidates()
    smoothed = model.accuracies(cands)
    assert len(smoothed) == len(cands)
    all_truth = np.array([nb201.accuracy.accuracy(a) for a in cands])
    assert kendall(all_truth, np.array([smoothed[a] for a in cands])) > 0.5
    assert abs(np.median(list(smoothed.values())) - np.median(all_truth)) < 5.0
    unseen = next(a for a in cands if a not in set(archs))
    assert model.accuracy(unseen) == pytest.approx(smoothed[unseen])


def test_save_and_load_round_trip(nb201: TabularProblem, tmp_path: Path):
    archs, _, est = _noisy(nb201, 60, sigma=2.0, seed=1)
    model = SmoothedAccuracy.fit("nasbench201", archs, est, epochs=10, provenance={"source": "test"})
    model.save(tmp_path / "acc")
    again = SmoothedAccuracy.load(tmp_path / "acc")
    np.testing.assert_allclose(again.predict(archs), model.predict(archs), rtol=1e-6)
    assert again.provenance["source"] == "test" and again.provenance["n_fit"] == 60
    X = np.stack([nb201.space.encode(a) for a in archs])
    save(get_predictor("ridge").fit(X, est), tmp_path / "ridge")
    with pytest.raises(UsageError, match="not a gcn-accuracy predictor"):
        SmoothedAccuracy.load(tmp_path / "ridge")


def test_rank_report_fields_and_bad_input(nb201: TabularProblem):
    archs, truth, est = _noisy(nb201, 60, sigma=2.0, seed=2)
    table = {a: float(t) for a, t in zip(archs[:40], truth[:40])}
    model, report = rank_report("nasbench201", archs, est, table, folds=3, epochs=10)
    assert report.n_fit == 60 and report.folds == 3 and report.n_space == 40
    for corr in (report.gcn_vs_estimate, report.estimate_vs_truth, report.gcn_vs_truth, report.space_vs_truth):
        assert set(corr) == {"kendall", "spearman"} and all(-1.0 <= v <= 1.0 for v in corr.values())
    # small noise: the raw estimates rank the 40 known archs almost exactly
    assert report.estimate_vs_truth["kendall"] > 0.8
    assert model.predict(archs).shape == (60,)
    no_truth = rank_report("nasbench201", archs[:20], est[:20], None, folds=2, epochs=2)[1]
    assert no_truth.estimate_vs_truth is None and no_truth.space_vs_truth is None
    with pytest.raises(UsageError, match="folds"):
        rank_report("nasbench201", archs, est, folds=1)
    with pytest.raises(UsageError, match="repeat"):
        SmoothedAccuracy.fit("nasbench201", archs[:5] + archs[:1], est[:6])
    with pytest.raises(UsageError, match="at least 4"):
        SmoothedAccuracy.fit("nasbench201", archs[:3], est[:3])
