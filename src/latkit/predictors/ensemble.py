"""Uncertainty by ensembling: several members with different seeds and bootstrap samples.

The ensemble's prediction is the geometric mean of its members' (latencies are
fitted in log space, so averaging logs is the natural mean); its uncertainty is
the members' standard deviation in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import StoreError, UsageError
from latkit.predictors.base import (
    Predictor,
    WeightsInfo,
    check_X,
    check_Xy,
    get_predictor,
    predictor_class,
    register_predictor,
)


@register_predictor("ensemble")
class EnsemblePredictor(Predictor):
    """``n_members`` copies of predictor ``base``, each seeded differently.

    Args:
        base: registered name of the member predictor (not ``ensemble``).
        n_members: how many members.
        bootstrap: fit each member on a bootstrap resample of the rows.
        params: parameters passed to every member (``random_state`` is set per member).
        random_state: seed of the resampling and of the members' seeds.
    """

    def __init__(
        self,
        base: str = "xgboost",
        n_members: int = 5,
        bootstrap: bool = True,
        params: dict[str, Any] | None = None,
        random_state: int = 0,
    ):
        self.base = base
        self.n_members = n_members
        self.bootstrap = bootstrap
        self.params = params
        self.random_state = random_state

    def _member(self, seed: int) -> Predictor:
        if self.base == "ensemble":
            raise UsageError("an ensemble cannot have ensemble members; pick another base")
        params = dict(self.params or {})
        if "random_state" in predictor_class(self.base)._param_names():
            params["random_state"] = seed
        return get_predictor(self.base, **params)

    def fit(self, X: Any, y: Any) -> EnsemblePredictor:  # noqa: N803
        X, y = check_Xy(X, y)
        if int(self.n_members) < 2:
            raise UsageError(f"an ensemble needs n_members >= 2, got {self.n_members}")
        rng = np.random.default_rng(self.random_state)
        seeds = rng.integers(0, 2**31 - 1, size=int(self.n_members))
        members = []
        for seed in seeds:
            rows = rng.integers(0, len(y), len(y)) if self.bootstrap else np.arange(len(y))
            members.append(self._member(int(seed)).fit(X[rows], y[rows]))
        self.members_ = members
        self.n_features_in_ = X.shape[1]
        return self

    def _member_predictions(self, X: Any) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        return np.stack([m.predict(X) for m in self.members_])

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        return self.predict_with_uncertainty(X)[0]

    def predict_with_uncertainty(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """``(mean_ms, std_ms)``: members' geometric mean and standard deviation."""
        preds = self._member_predictions(X)
        mean_ms = np.exp(np.log(np.maximum(preds, 1e-12)).mean(axis=0))
        return mean_ms, preds.std(axis=0)

    def _save_weights(self, directory: Path) -> WeightsInfo:
        infos, files = [], []
        for i, m in enumerate(self.members_):
            sub = directory / f"member_{i}"
            sub.mkdir(exist_ok=True)
            info = m._save_weights(sub)
            infos.append({"format": info.format, "files": info.files, "extra": info.extra})
            files += [f"member_{i}/{f}" for f in info.files]
        fmt = infos[0]["format"]
        return WeightsInfo(fmt, files, {"members": infos, "n_features_in": self.n_features_in_})

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        members_info = info.extra.get("members")
        if not isinstance(members_info, list) or not members_info:
            raise StoreError(f"{directory}: ensemble metadata lists no members; refit it")
        members = []
        for i, mi in enumerate(members_info):
            member = self._member(0)
            member._load_weights(
                directory / f"member_{i}", WeightsInfo(mi["format"], mi["files"], mi["extra"])
            )
            members.append(member)
        self.members_ = members
        self.n_features_in_ = int(info.extra["n_features_in"])
