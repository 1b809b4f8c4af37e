"""Registry-driven conformance: every predictor follows the estimator contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latkit.core.errors import StoreError, UnknownNameError, UsageError
from latkit.predictors import base
from latkit.predictors.base import get_predictor, list_predictors, load, save

pytestmark = pytest.mark.slow

# how to build and fit each predictor of this package on small real data; others
# (registered by other modules or plugins) get the data-free part of the contract
RECIPES: dict[str, dict[str, Any]] = {
    "ridge": {"params": {"alpha": 0.5}, "features": "encoding"},
    "mlp": {"params": {"epochs": 4, "hidden": [16]}, "features": "encoding"},
    "xgboost": {"params": {"n_estimators": 15, "max_depth": 3}, "features": "encoding"},
    "gcn": {"params": {"space": "fbnet", "epochs": 3, "hidden": 16, "head": 16}, "features": "encoding"},
    "gcn-accuracy": {"params": {"space": "fbnet", "epochs": 3, "hidden": 16, "head": 16}, "features": "encoding"},
    "ensemble": {
        "params": {"base": "ridge", "n_members": 3, "params": {"alpha": 2.0}},
        "features": "encoding",
    },
    "fewshot": {"params": {}, "features": "known"},
}


def _data(name: str, fbnet_small: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y, table = fbnet_small
    if RECIPES[name]["features"] == "known":
        return table.columns(["gold_6240", "1080ti_1", "samsung_a50"]), y
    return X, y


def test_builtin_predictors_are_registered() -> None:
    assert set(RECIPES) <= set(list_predictors())
    assert list_predictors("x*") == ["xgboost"]


@pytest.mark.parametrize("name", list_predictors())
def test_init_only_stores_parameters(name: str) -> None:
    p = get_predictor(name)
    params = p.get_params()
    assert set(params) == set(type(p)._param_names())
    assert not p.is_fitted
    clone = p.clone()
    assert clone.get_params() == params and clone is not p
    assert repr(p).startswith(type(p).__name__ + "(")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_fit_predict_save_load(name: str, fbnet_small: Any, tmp_path: Path) -> None:
    X, y = _data(name, fbnet_small)
    p = get_predictor(name, **RECIPES[name]["params"])
    before = dict(vars(p))
    params = p.get_params()
    assert p.fit(X[:200], y[:200]) is p
    learned = set(vars(p)) - set(before)
    assert learned and all(k.endswith("_") for k in learned), learned
    assert p.get_params() == params  # fit must not touch parameters
    pred = p.predict(X[200:])
    assert pred.shape == (100,) and np.all(np.isfinite(pred)) and np.all(pred > 0)
    # predictions are latencies of the right scale, not noise
    assert 0.3 < np.median(pred) / np.median(y) < 3.0
    save(p, tmp_path / "m", space="fbnet", target="pixel3", provenance={"rows": 200})
    files = {f.name for f in (tmp_path / "m").rglob("*") if f.is_file()}
    assert all(f.endswith((".json", ".safetensors")) for f in files), files
    q = load(tmp_path / "m")
    # parameters round-trip through JSON (tuples come back as lists)
    assert type(q) is type(p) and q.get_params() == json.loads(json.dumps(params))
    np.testing.assert_allclose(q.predict(X[200:]), pred, rtol=1e-6)
    meta = json.loads((tmp_path / "m" / "predictor.json").read_text())
    assert meta["schema"] == "latkit.predictor" and meta["predictor"] == name
    assert meta["space"] == "fbnet" and meta["target_device"] == "pixel3"
    assert meta["provenance"] == {"rows": 200}
    assert {"xgboost", "torch", "scikit-learn"} <= set(meta["libraries"])


def test_same_random_state_same_predictions(fbnet_small: Any) -> None:
    X, y, _ = fbnet_small
    a = get_predictor("mlp", epochs=3, hidden=[8], random_state=3).fit(X, y).predict(X[:20])
    b = get_predictor("mlp", epochs=3, hidden=[8], random_state=3).fit(X, y).predict(X[:20])
    c = get_predictor("mlp", epochs=3, hidden=[8], random_state=4).fit(X, y).predict(X[:20])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_ensemble_uncertainty(fbnet_small: Any) -> None:
    X, y, _ = fbnet_small
    ens = get_predictor("ensemble", base="xgboost", n_members=4, params={"n_estimators": 20})
    assert base.supports_uncertainty(ens) and not base.supports_uncertainty(get_predictor("ridge"))
    mean, std = ens.fit(X[:200], y[:200]).predict_with_uncertainty(X[200:])
    member = np.stack([m.predict(X[200:]) for m in ens.members_])
    np.testing.assert_allclose(std, member.std(axis=0))
    assert np.all(std > 0) and np.all(member.min(0) <= mean + 1e-9) and np.all(mean <= member.max(0) + 1e-9)


def _saved(tmp_path: Path, fbnet_small: Any, name: str, **params: Any) -> Path:
    X, y, _ = fbnet_small
    return save(get_predictor(name, **params).fit(X, y), tmp_path / name)


def _edit(directory: Path, change: Any) -> None:
    path = directory / "predictor.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_load_refuses_other_major_library_version(tmp_path: Path, fbnet_small: Any) -> None:
    d = _saved(tmp_path, fbnet_small, "xgboost", n_estimators=5)
    _edit(d, lambda m: m["weights"].update(library_version="1.7.6"))
    with pytest.raises(StoreError, match=r"saved with xgboost 1\.x, this is \d+\.x; refit"):
        load(d)
    d = _saved(tmp_path, fbnet_small, "mlp", epochs=1, hidden=[4])
    _edit(d, lambda m: m["weights"].update(library_version="1.13.0"))
    with pytest.raises(StoreError, match=r"saved with torch 1\.x"):
        load(d)


def test_load_refuses_other_schema(tmp_path: Path, fbnet_small: Any) -> None:
    d = _saved(tmp_path, fbnet_small, "ridge")
    _edit(d, lambda m: m.update(schema_version=99))
    with pytest.raises(StoreError, match="schema version 99"):
        load(d)
    _edit(d, lambda m: m.update(schema="something.else", schema_version=1))
    with pytest.raises(StoreError, match="not a latkit predictor"):
        load(d)
    with pytest.raises(StoreError, match="not found"):
        load(tmp_path / "nowhere")
    d = _saved(tmp_path, fbnet_small, "ridge", alpha=3.0)
    (d / "weights.json").unlink()
    with pytest.raises(StoreError, match="missing"):
        load(d)


def test_registry_and_input_errors(fbnet_small: Any, tmp_path: Path) -> None:
    X, y, _ = fbnet_small
    with pytest.raises(UnknownNameError, match="unknown predictor 'nope'"):
        get_predictor("nope")
    with pytest.raises(UsageError, match="no parameter"):
        get_predictor("ridge", depth=3)
    with pytest.raises(UsageError, match="not fitted"):
        get_predictor("ridge").predict(X)
    with pytest.raises(StoreError, match="not fitted"):
        save(get_predictor("ridge"), tmp_path / "x")
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(UsageError, match="NaN"):
        get_predictor("ridge").fit(bad, y)
    with pytest.raises(UsageError, match="rows but y has"):
        get_predictor("ridge").fit(X, y[:-1])
    p = get_predictor("ridge").fit(X, y)
    with pytest.raises(UsageError, match="features but the predictor was fitted on"):
        p.predict(X[:, :-1])
    with pytest.raises(UsageError, match="encoding has"):
        get_predictor("gcn", space="nasbench201", epochs=1).fit(X, y)
