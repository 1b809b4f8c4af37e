"""The hardware-conditioned few-shot predictor (hwmeta): synthetic devices, persistence, no peeking."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from cli_checks import run
from latkit.core.errors import StoreError, UsageError
from latkit.predictors.base import load, save
from latkit.predictors.data import LatencyDataset, encode_archs
from latkit.predictors.evaluate import FewShotModel, few_shot, fit_from_csv, predict_archs
from latkit.predictors.meta import HardwareMetaPredictor
from latkit.predictors.meta_head import Domain, HeadConfig, _tasks
from latkit.predictors.transfer import Design, active_design, design_rows

SMALL = {"alphas": (0.3, 3.0), "gammas": (0.0, 1.0), "arch_weights": (0.0,)}  # a small grid keeps tests cheap


def _space(n: int, rng: np.random.Generator, choices: int = 8, options: int = 4) -> np.ndarray:
    """One-hot encodings of ``n`` random archs of a chain space."""
    picks = rng.integers(0, options, size=(n, choices))
    x = np.zeros((n, choices * options))
    x[np.arange(n)[:, None], np.arange(choices) * options + picks] = 1.0
    return x


def _device(x: np.ndarray, factors: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Latency (ms) of a device whose per-op log costs mix three latent hardware factors, plus noise."""
    mix = rng.dirichlet(np.ones(len(factors)))
    return np.exp(0.5 + x @ (mix @ factors) + noise * rng.standard_normal(len(x)))


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(one-hot X [400, 32], 8 known devices' latencies, a new device's latencies) of one device family."""
    rng = np.random.default_rng(7)
    x = _space(400, rng)
    factors = rng.normal(0.0, 0.15, size=(3, x.shape[1]))
    known = np.stack([_device(x, factors, rng, 0.03) for _ in range(8)], axis=1)
    return x, known, _device(x, factors, rng, 0.03)


def test_interval_coverage_on_a_synthetic_device(synthetic) -> None:
    x, known, y = synthetic
    covers = []
    for seed in range(3):
        rows = design_rows(known, 20, Design.ACTIVE, random_state=seed)
        m = HardwareMetaPredictor(**SMALL, random_state=seed).fit(x[rows], y[rows], reference_X=x,
                                                                  reference_ms=known)
        rest = np.setdiff1d(np.arange(len(y)), rows)
        lo, hi = m.predict_interval(x[rest])
        pred = m.predict(x[rest])
        assert np.all(lo <= pred) and np.all(pred <= hi)
        covers.append(np.mean((y[rest] >= lo) & (y[rest] <= hi)))
    # a 90% interval, calibrated on the known devices only, holds ~90% of the new device's truth
    assert 0.8 <= np.mean(covers) <= 0.98, covers


def test_meta_learned_beats_a_model_of_the_k_rows_alone(synthetic) -> None:
    x, known, y = synthetic
    rows = design_rows(known, 10, Design.ACTIVE, random_state=0)
    rest = np.setdiff1d(np.arange(len(y)), rows)
    pred = HardwareMetaPredictor(**SMALL).fit(x[rows], y[rows], reference_X=x, reference_ms=known).predict(x[rest])
    # trivial baselines: the median for every arch, and ridge on the one-hot encoding of the K rows
    xc = x[rows] - x[rows].mean(axis=0)
    t = np.log(y[rows])
    coef = np.linalg.solve(xc.T @ xc + np.eye(x.shape[1]), xc.T @ (t - t.mean()))
    onehot = np.exp((x[rest] - x[rows].mean(axis=0)) @ coef + t.mean())
    mape = lambda p: float(np.mean(np.abs(p / y[rest] - 1)))  # noqa: E731
    assert spearmanr(pred, y[rest])[0] > max(0.9, spearmanr(onehot, y[rest])[0] + 0.1)
    assert mape(pred) < 0.5 * min(mape(np.full(len(rest), np.median(y[rows]))), mape(onehot))


def test_save_load_pickle_free_and_version_refused(synthetic, tmp_path: Path) -> None:
    x, known, y = synthetic
    rows = design_rows(known, 10, Design.ACTIVE, random_state=0)
    m = HardwareMetaPredictor(**SMALL).fit(x[rows], y[rows], reference_X=x, reference_ms=known)
    unseen = _space(30, np.random.default_rng(99))  # archs the table does not hold go through the encoder
    save(m, tmp_path / "m", space=None, target="synthetic")
    assert {f.suffix for f in (tmp_path / "m").iterdir()} == {".json"}
    q = load(tmp_path / "m")
    for archs in (x[:50], unseen):
        np.testing.assert_allclose(q.predict(archs), m.predict(archs), rtol=1e-6)
        np.testing.assert_allclose(q.predict_interval(archs), m.predict_interval(archs), rtol=1e-6)
    assert q.config_ == m.config_ and q.n_features_in_ == x.shape[1]
    meta_path = tmp_path / "m" / "predictor.json"
    meta = json.loads(meta_path.read_text())
    assert meta["weights"]["extra"]["format_version"] == 1
    meta["weights"]["extra"]["format_version"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="hwmeta weights format 2.*refit"):
        load(tmp_path / "m")


def test_fit_needs_the_reference_and_checks_it(synthetic) -> None:
    x, known, y = synthetic
    with pytest.raises(UsageError, match="reference table"):
        HardwareMetaPredictor().fit(x[:10], y[:10])
    with pytest.raises(UsageError, match="known devices"):
        HardwareMetaPredictor().fit(x[:10], y[:10], reference_X=x, reference_ms=known[:, :1])
    with pytest.raises(UsageError, match="domains"):
        HardwareMetaPredictor(domains=("cubic",)).fit(x[:10], y[:10], reference_X=x, reference_ms=known)
    with pytest.raises(UsageError, match="alpha > 0"):
        HeadConfig(Domain.LOG, 0.0, 1.0)


def test_strict_inner_tasks_hide_their_own_hardware() -> None:
    groups = np.array([0, 0, 1, 2, 2])
    tasks = dict(_tasks(5, groups))
    assert tasks[0].tolist() == [2, 3, 4] and tasks[3].tolist() == [0, 1, 2]
    assert dict(_tasks(5, None))[0].tolist() == [1, 2, 3, 4]
    assert _tasks(2, np.array([0, 0])) == []


def test_active_design(synthetic) -> None:
    _, known, _ = synthetic
    a = active_design(known, 12, random_state=None)
    assert len(set(a.tolist())) == 12
    np.testing.assert_array_equal(a, active_design(known, 12, random_state=None))
    assert set(active_design(known, 12, random_state=3).tolist()) != set(a.tolist())
    with pytest.raises(UsageError, match="K must be"):
        active_design(known[:5], 10)


def _poisoned(table: LatencyDataset, target: str, rows: np.ndarray, value: float) -> LatencyDataset:
    lat = table.latency_ms.copy()
    j = table.devices.index(target)
    keep = lat[rows, j].copy()
    lat[:, j] = value
    lat[rows, j] = keep
    return LatencyDataset(table.archs, table.devices, lat, table.source)


def test_fitting_reads_the_target_only_at_its_k_rows(fbnet_table: LatencyDataset) -> None:
    table = fbnet_table.rows(np.arange(300))
    x = encode_archs("fbnet", table.archs)
    known = ["1080ti_1", "2080ti_32", "pixel3", "samsung_a50", "silver_4114", "titanx_64"]
    rows = design_rows(table.columns(known), 10, Design.ACTIVE, random_state=0)
    runs = [few_shot(t, "gold_6240", 10, known=known, seeds=[0], baseline=False, model=FewShotModel.HWMETA,
                     design=Design.ACTIVE, encodings=x)[1] for t in (table, _poisoned(table, "gold_6240", rows, 1e9))]
    np.testing.assert_array_equal(runs[0], runs[1])
    # --strict with the default known columns: every column but the target's hardware (titanx_*)
    some = ["1080ti_1", "1080ti_32", "gold_6240", "pixel3", "samsung_a50", "titanx_1", "titanx_32"]
    table = LatencyDataset(table.archs, tuple(some), table.columns(some), table.source)
    cols = some[:5]
    strict_rows = design_rows(table.columns(cols), 10, Design.ACTIVE, random_state=0)
    runs = [few_shot(t, "titanx_32", 10, strict=True, seeds=[0], baseline=False, model=FewShotModel.HWMETA,
                     design=Design.ACTIVE, encodings=x)
            for t in (table, _poisoned(table, "titanx_32", strict_rows, 1e9))]
    assert runs[0][0].known == cols
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][0].method[0].spearman > 0.8


def _write(path: Path, table: LatencyDataset, columns: list[str], rows: np.ndarray) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", *columns])
        lat = table.columns(columns)
        for i in rows:
            w.writerow([table.archs[i], *[repr(float(v)) for v in lat[i]]])
    return path


def test_fit_from_own_measurements_feeds_the_search(fbnet_table: LatencyDataset, tmp_path: Path) -> None:
    from latkit.profiler.spaces import get_space
    from latkit.search.framework.latency import PredictorLatencyModel

    table = fbnet_table.rows(np.arange(300))
    others = [c for c in table.devices if c != "pixel3"]
    known_csv = _write(tmp_path / "known.csv", table, others, np.arange(300))
    mine = _write(tmp_path / "mine.csv", table, ["pixel3"], np.arange(0, 300, 10))  # 30 measured archs
    fit_from_csv(known_csv, "fbnet", "pixel3", tmp_path / "hw", predictor="hwmeta", k=10, target_csv=mine,
                 params=dict(SMALL))
    meta = json.loads((tmp_path / "hw" / "predictor.json").read_text())
    assert meta["provenance"]["features"] == "encoding" and meta["provenance"]["rows"] == 10
    pred = predict_archs(tmp_path / "hw", list(table.archs[:100]))
    assert spearmanr(pred, table.column("pixel3")[:100])[0] > 0.85
    space = get_space("fbnet")
    model = PredictorLatencyModel.from_saved(space, tmp_path / "hw")
    archs = [space.sample(np.random.default_rng(s)) for s in range(5)]  # not in the table: encoder path
    lat = model.latency_ms_batch(archs)
    assert all(np.isfinite(v) and 0.1 * np.median(pred) < v < 10 * np.median(pred) for v in lat)


def test_cli_eval_prints_every_metric_and_the_coverage(fbnet_table: LatencyDataset, tmp_path: Path,
                                                        capsys) -> None:
    table = fbnet_table.rows(np.arange(300))
    cols = ["1080ti_1", "1080ti_32", "gold_6240", "pixel3", "samsung_a50", "silver_4114"]
    small = _write(tmp_path / "small.csv", table, cols, np.arange(300))
    code, out, err = run(capsys, "predictor", "eval", "--csv", str(small), "--space", "fbnet", "--target",
                         "1080ti_32", "--k", "8", "--seeds", "1", "--strict")
    assert code == 0, err
    for word in ("hwmeta", "Spearman", "Kendall", "±5%", "±10%", "coverage", "strict", "4 known"):
        assert word in out, (word, out)


def test_fit_from_a_target_csv_reads_only_its_k_rows(fbnet_table: LatencyDataset, tmp_path: Path) -> None:
    table = fbnet_table.rows(np.arange(300))
    others = [c for c in table.devices if c != "pixel3"]
    known_csv = _write(tmp_path / "known.csv", table, others, np.arange(300))
    measured = np.arange(0, 300, 10)  # 30 measured archs, of which the design keeps 10
    chosen = measured[design_rows(table.columns(others)[measured], 10, Design.ACTIVE, random_state=0)]
    poisoned = _poisoned(table, "pixel3", chosen, 1e9)
    preds = []
    for name, t in (("clean", table), ("poisoned", poisoned)):
        mine = _write(tmp_path / f"{name}.csv", t, ["pixel3"], measured)
        fit_from_csv(known_csv, "fbnet", "pixel3", tmp_path / name, predictor="hwmeta", k=10, target_csv=mine,
                     params=dict(SMALL))
        preds.append(predict_archs(tmp_path / name, list(table.archs[:50])))
    np.testing.assert_array_equal(preds[0], preds[1])
    assert np.all(preds[0] < 1e6)  # the poison (1e9 ms) would lift any fit that read it
