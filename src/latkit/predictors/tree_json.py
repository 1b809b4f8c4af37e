"""XGBoost's JSON tree ensembles, evaluated in numpy.

A kernel predictor's residual trees are saved in XGBoost's own JSON model
format (no pickle). Predicting with them needs only the trees: every tree's
nodes are padded into one array per field, and a batch of rows walks all the
trees at once, one level per step, so a network's prediction costs a few numpy
operations per kernel type and ``latkit predict`` never imports XGBoost (which
costs most of a cold start). XGBoost itself is needed to fit, and large batches
(a search predicting thousands of graphs) use it when it is installed.

Only what latkit fits is read: a ``gbtree`` regressor with numerical splits,
one target, and no missing values (a row goes left when its feature is below
the split's threshold, compared in float32 as XGBoost does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latkit.core.errors import StoreError

XGBOOST_ROWS = 512  # from this many rows a batch is predicted by XGBoost, when it is installed


def _base_score(param: dict[str, Any]) -> float:
    """``learner_model_param.base_score``: ``"5E-1"`` or, from XGBoost 3, ``"[5E-1]"``."""
    text = str(param.get("base_score", "0")).strip("[]")
    return float(text.split(",")[0] or 0.0)


class TreeEnsemble:
    """A regression tree ensemble read from XGBoost's JSON model (``Booster.save_raw("json")``).

    Attributes:
        raw: the JSON document it was read from (what :meth:`to_json` writes back).
    """

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        try:
            learner = raw["learner"]
            booster = learner["gradient_booster"]
            if booster.get("name") != "gbtree":
                raise StoreError(f"tree ensemble of kind {booster.get('name')!r}; latkit reads gbtree models")
            trees = booster["model"]["trees"]
            self.base = _base_score(learner["learner_model_param"])
            self._pack(trees)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StoreError(f"not an XGBoost JSON tree model ({type(exc).__name__}: {exc})") from None

    def _pack(self, trees: list[dict[str, Any]]) -> None:
        """All trees' nodes in flat arrays; a leaf's children are itself, so a walk stays on it."""
        if any(any(int(s) != 0 for s in t.get("split_type", [])) for t in trees):
            raise StoreError("the tree model has categorical splits; latkit reads numerical ones only")
        sizes = [len(t["left_children"]) for t in trees]
        self.roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if trees else np.zeros(0, np.int64)
        left, right, feature, threshold = [], [], [], []
        for base, t in zip(self.roots, trees):
            own = np.arange(len(t["left_children"]), dtype=np.int64)
            lc, rc = np.asarray(t["left_children"], np.int64), np.asarray(t["right_children"], np.int64)
            leaf = lc < 0
            left.append(base + np.where(leaf, own, lc))
            right.append(base + np.where(leaf, own, rc))
            feature.append(np.where(leaf, 0, np.asarray(t["split_indices"], np.int64)))
            threshold.append(np.asarray(t["split_conditions"], np.float32))  # a leaf's: its value
        self.left = np.concatenate(left or [[]]).astype(np.int64)
        self.right = np.concatenate(right or [[]]).astype(np.int64)
        self.feature = np.concatenate(feature or [[]]).astype(np.int64)
        self.threshold = np.concatenate(threshold or [[]]).astype(np.float32)
        self.depth = max((_depth(t) for t in trees), default=0)

    @classmethod
    def from_booster(cls, booster: Any) -> TreeEnsemble:
        """The ensemble of a fitted ``xgboost.Booster``."""
        import json

        return cls(json.loads(booster.save_raw("json")))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The ensemble's output for every row of ``x`` (base score plus every tree's leaf value).

        Batches of :data:`XGBOOST_ROWS` rows or more go through XGBoost when it
        is installed (its compiled walk is faster there; the two agree to
        float32 rounding); smaller ones, a network's kernels, through numpy.
        """
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x32)
        if not n or not len(self.roots):
            return np.full(n, self.base)
        if n >= XGBOOST_ROWS:
            booster = self._booster()
            if booster is not None:
                return np.asarray(booster.inplace_predict(x32), dtype=np.float64)
        width = x32.shape[1]
        flat = x32.ravel()
        # one walker per (tree, row), all trees at once, one level per step
        node = np.repeat(self.roots, n)
        row_base = np.tile(np.arange(n, dtype=np.int64) * width, len(self.roots))
        for _ in range(self.depth):
            go_left = flat.take(row_base + self.feature.take(node)) < self.threshold.take(node)
            node = np.where(go_left, self.left.take(node), self.right.take(node))
        leaves = self.threshold.take(node).astype(np.float64).reshape(len(self.roots), n)
        return self.base + leaves.sum(axis=0)


    def _booster(self) -> Any:
        """The ensemble as an ``xgboost.Booster`` (made once), or None without XGBoost."""
        if not hasattr(self, "_xgb"):
            try:
                import xgboost
            except ImportError:
                self._xgb = None
            else:
                import json

                self._xgb = xgboost.Booster()
                self._xgb.load_model(bytearray(json.dumps(self.raw).encode()))
                self._xgb.set_param({"nthread": 1})
        return self._xgb


def _depth(tree: dict[str, Any]) -> int:
    """The number of splits on the tree's longest path."""
    left, right = tree["left_children"], tree["right_children"]
    depth, frontier = 0, [0]
    for _ in range(len(left)):  # bounded: a path is never longer than the tree has nodes
        nxt = [c for i in frontier if left[i] >= 0 for c in (left[i], right[i])]
        if not nxt:
            break
        depth, frontier = depth + 1, nxt
    return depth


__all__ = ["TreeEnsemble"]
