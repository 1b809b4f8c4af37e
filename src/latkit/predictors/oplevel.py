"""Op-level latency regressors, and filling a LUT's unmeasured ops with them.

Like nn-Meter's kernel predictors, these learn one operator's latency on one
device from the operator's analytic features (:mod:`latkit.predictors.features`)
and a few hundred measured operators, then predict the operators nobody
measured. Two models, both on the log of the latency:

* a log-linear base (ridge least squares on log MACs, log bytes and the
  op-type one-hot), which extrapolates sensibly in size (latency grows as a
  power of the work), plus
* gradient-boosted trees on the base's residual, which learn what the power law
  misses (kernel size, stride, cache effects).

``oplevel_xgb`` fits the trees with XGBoost and saves them in XGBoost's JSON
model format; ``oplevel_gbr`` fits them with scikit-learn's
``GradientBoostingRegressor`` and keeps only the trees' arrays (split feature,
threshold, children, leaf values), which it evaluates itself. It is saved as
plain JSON arrays, so loading and predicting need neither pickle nor
scikit-learn, and a scikit-learn upgrade cannot break a saved model.

Both accept, wherever the contract takes ``X``, either a feature matrix
(:func:`~latkit.predictors.features.feature_matrix`) or a list of
:class:`~latkit.profiler.ops.OpSpec`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import atomic_path, one_line
from latkit._version import __version__
from latkit.core.errors import MeasurementError, MissingExtraError, StoreError, UsageError
from latkit.devices.precision import Precision
from latkit.predictors.base import (
    Predictor,
    WeightsInfo,
    check_X,
    check_Xy,
    read_json_arrays,
    register_predictor,
    write_json_arrays,
)
from latkit.lut.store import SOURCE_PREDICTED_PREFIX
from latkit.predictors.features import FEATURE_NAMES, feature_matrix
from latkit.predictors.metrics import within
from latkit.profiler.ops import OpSpec

log = logging.getLogger(__name__)

PREDICTED_PREFIX = SOURCE_PREDICTED_PREFIX
_N_FEATURES = len(FEATURE_NAMES)
# columns of the log-linear base: sizes (logged) and the op-type one-hot
_SIZE_COLS = [FEATURE_NAMES.index(n) for n in
              ("macs", "macs_expand", "macs_depthwise", "macs_project", "mem_bytes",
               "in_bytes", "out_bytes")]  # fmt: skip
_TYPE_COLS = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("type_")]
_MAX_EXTRAPOLATION = np.log(10.0)  # in log latency, beyond the training range
_MIN_LATENCY_MS = 1e-6  # log of a 0 ms latency is undefined; nothing real is that fast


def op_inputs(X: Any) -> np.ndarray:  # noqa: N803
    """Feature matrix of ``X``: a list of op specs, or an already-built matrix.

    Raises:
        UsageError: not specs and not a finite ``[n, len(FEATURE_NAMES)]`` array.
    """
    if isinstance(X, Sequence) and len(X) and all(isinstance(s, OpSpec) for s in X):
        return feature_matrix(X)
    return check_X(X, _N_FEATURES)


def _log_features(feats: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(feats, 0.0))


_SMALL_COLS = [FEATURE_NAMES.index(n) for n in ("macs", "mem_bytes")]
_SMALL_DESIGN = len(_SMALL_COLS) + 1  # coefficients of the small base


def _base_design(feats: np.ndarray, small: bool = False) -> np.ndarray:
    if small:
        return np.column_stack([_log_features(feats[:, _SMALL_COLS]), np.ones(len(feats))])
    logged = _log_features(feats[:, _SIZE_COLS])
    return np.column_stack([logged, feats[:, _TYPE_COLS], np.ones(len(feats))])


def _fit_base(feats: np.ndarray, log_y: np.ndarray, ridge: float) -> np.ndarray:
    # With few ops the full design (16 collinear columns) fits them exactly with
    # wild coefficients that extrapolate to absurd latencies; a power law in MACs
    # and bytes is what a handful of points can support.
    small = len(log_y) < 4 * (len(_SIZE_COLS) + len(_TYPE_COLS) + 1)
    a = _base_design(feats, small)
    # ridge keeps the solve stable when a column is constant in the training set
    return np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ log_y)


def _base_predict(feats: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return _base_design(feats, small=len(coef) == _SMALL_DESIGN) @ coef


class _OpRegressor(Predictor):
    """Shared fit/predict: log-linear base plus trees on the residual."""

    def fit(self, X: Any, y: Any) -> _OpRegressor:  # noqa: N803
        """Learn from ops (specs or features) ``X`` and their latencies ``y`` (ms).

        Raises:
            UsageError: bad shapes, non-finite or negative latencies, < 2 ops.
        """
        feats, lat = check_Xy(op_inputs(X), y)
        if len(lat) < 2:
            raise UsageError("an op-level predictor needs at least 2 measured ops to fit")
        log_y = np.log(np.maximum(lat, _MIN_LATENCY_MS))
        if self.linear_base:
            self.base_coef_ = _fit_base(feats, log_y, ridge=1e-3)
            resid = log_y - _base_predict(feats, self.base_coef_)
        else:
            self.base_coef_ = np.zeros(len(_SIZE_COLS) + len(_TYPE_COLS) + 1)
            resid = log_y
        self._fit_trees(_log_features(feats), resid)
        self.n_train_ = int(len(lat))
        self.log_range_ = np.array([log_y.min(), log_y.max()])
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Predicted latency (ms) of every op of ``X`` (specs or features)."""
        self._check_fitted()
        feats = op_inputs(X)
        log_pred = _base_predict(feats, self.base_coef_) + self._predict_trees(_log_features(feats))
        # never further than a decade outside the latencies it was trained on: the
        # trees cannot extrapolate, and the log-linear base must not run away alone
        lo, hi = self.log_range_
        return np.exp(np.clip(log_pred, lo - _MAX_EXTRAPOLATION, hi + _MAX_EXTRAPOLATION))

    def _fit_trees(self, x: np.ndarray, resid: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_trees(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _xgboost() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise MissingExtraError("XGBoost op-level predictor", "predictors") from exc
    return xgboost


@register_predictor("oplevel_xgb")
class XGBOpPredictor(_OpRegressor):
    """Op latency: log-linear base + XGBoost trees on the log residual.

    Args:
        n_estimators: boosting rounds.
        max_depth: tree depth.
        learning_rate: shrinkage.
        subsample: row fraction per tree.
        colsample_bytree: feature fraction per tree.
        linear_base: fit the log-linear base first (better extrapolation in size).
        n_jobs: XGBoost threads.
        random_state: seed.
    """

    def __init__(
        self,
        n_estimators: int = 300,
        max_depth: int = 4,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        linear_base: bool = True,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.linear_base = linear_base
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_trees(self, x: np.ndarray, resid: np.ndarray) -> None:
        xgb = _xgboost()
        model = xgb.XGBRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, subsample=self.subsample,
            colsample_bytree=self.colsample_bytree, n_jobs=self.n_jobs,
            random_state=self.random_state, base_score=0.0,
        )  # fmt: skip
        model.fit(x, resid)
        self.booster_ = model.get_booster()

    def _predict_trees(self, x: np.ndarray) -> np.ndarray:
        xgb = _xgboost()
        return np.asarray(self.booster_.predict(xgb.DMatrix(x)), dtype=np.float64)

    def _save_weights(self, directory: Path) -> WeightsInfo:
        self._check_fitted()
        with atomic_path(directory / "booster.json", "predictor weights", keep_suffix=True) as tmp:
            self.booster_.save_model(str(tmp))
        write_json_arrays(directory / "base.json", {"base_coef": self.base_coef_,
                                                    "log_range": self.log_range_,
                                                    "n_train": self.n_train_})
        return WeightsInfo("xgboost", ["booster.json", "base.json"],
                           {"features": list(FEATURE_NAMES)})

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        _check_feature_names(info)
        xgb = _xgboost()
        booster = xgb.Booster()
        try:
            booster.load_model(str(directory / "booster.json"))
        except xgb.core.XGBoostError as exc:
            raise StoreError(f"cannot read {directory / 'booster.json'}: {one_line(exc)}; refit") from exc
        arrays = read_json_arrays(directory / "base.json")
        try:
            self.base_coef_ = np.asarray(arrays["base_coef"], dtype=np.float64)
            self.log_range_ = np.asarray(arrays["log_range"], dtype=np.float64)
            self.n_train_ = int(arrays["n_train"])
        except KeyError as exc:
            raise StoreError(f"{directory / 'base.json'} lacks {exc}; refit the predictor") from exc
        self.booster_ = booster


def _check_feature_names(info: WeightsInfo) -> None:
    if list(info.extra.get("features", [])) != list(FEATURE_NAMES):
        raise StoreError(
            "the saved op-level predictor used other features than this latkit computes; refit it"
        )


def _sklearn_gbr() -> Any:
    try:
        from sklearn.ensemble import GradientBoostingRegressor
    except ImportError as exc:
        raise MissingExtraError("scikit-learn op-level predictor", "predictors") from exc
    return GradientBoostingRegressor


def _export_trees(estimators: Sequence[Any]) -> dict[str, np.ndarray]:
    """Concatenate scikit-learn trees into flat arrays with global child indices."""
    feats, thr, left, right, value, roots = [], [], [], [], [], []
    offset = 0
    for est in estimators:
        t = est.tree_
        n = t.node_count
        leaf = t.children_left == -1
        roots.append(offset)
        feats.append(np.where(leaf, 0, t.feature))
        thr.append(np.where(leaf, 0.0, t.threshold))
        # a leaf points at itself, so a fixed number of steps lands every row on a leaf
        own = np.arange(offset, offset + n)
        left.append(np.where(leaf, own, t.children_left + offset))
        right.append(np.where(leaf, own, t.children_right + offset))
        value.append(t.value.reshape(n))
        offset += n
    return {
        "feature": np.concatenate(feats).astype(np.int32),
        "threshold": np.concatenate(thr).astype(np.float64),
        "left": np.concatenate(left).astype(np.int32),
        "right": np.concatenate(right).astype(np.int32),
        "value": np.concatenate(value).astype(np.float64),
        "roots": np.asarray(roots, dtype=np.int32),
    }


def eval_trees(trees: dict[str, np.ndarray], depth: int, x: np.ndarray) -> np.ndarray:
    """Sum of the leaf values every row of ``x`` reaches, over all exported trees."""
    node = np.broadcast_to(trees["roots"], (len(x), len(trees["roots"]))).copy()
    rows = np.arange(len(x))[:, None]
    for _ in range(depth):
        go_left = x[rows, trees["feature"][node]] <= trees["threshold"][node]
        node = np.where(go_left, trees["left"][node], trees["right"][node])
    return trees["value"][node].sum(axis=1)


@register_predictor("oplevel_gbr")
class GBROpPredictor(_OpRegressor):
    """Op latency: log-linear base + scikit-learn gradient boosting on the residual.

    Fitting needs scikit-learn; the fitted trees are kept as arrays and
    evaluated with numpy, so saved models are JSON and load without it.

    Args:
        n_estimators: boosting rounds.
        max_depth: tree depth.
        learning_rate: shrinkage (folded into the stored leaf values).
        subsample: row fraction per tree.
        linear_base: fit the log-linear base first.
        random_state: seed.
    """

    def __init__(
        self,
        n_estimators: int = 300,
        max_depth: int = 4,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        linear_base: bool = True,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.linear_base = linear_base
        self.random_state = random_state

    def _fit_trees(self, x: np.ndarray, resid: np.ndarray) -> None:
        gbr = _sklearn_gbr()(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, subsample=self.subsample,
            random_state=self.random_state, init="zero",
        )  # fmt: skip
        gbr.fit(x, resid)
        trees = _export_trees([row[0] for row in gbr.estimators_])
        trees["value"] = trees["value"] * self.learning_rate
        self.trees_ = trees

    def _predict_trees(self, x: np.ndarray) -> np.ndarray:
        return eval_trees(self.trees_, int(self.max_depth), x)

    def _save_weights(self, directory: Path) -> WeightsInfo:
        self._check_fitted()
        write_json_arrays(directory / "trees.json", {**self.trees_, "base_coef": self.base_coef_,
                                                     "log_range": self.log_range_,
                                                     "n_train": self.n_train_})
        return WeightsInfo("json", ["trees.json"], {"features": list(FEATURE_NAMES)})

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        _check_feature_names(info)
        arrays = read_json_arrays(directory / "trees.json")
        try:
            self.trees_ = {k: arrays[k] for k in
                           ("feature", "threshold", "left", "right", "value", "roots")}  # fmt: skip
            self.base_coef_ = np.asarray(arrays["base_coef"], dtype=np.float64)
            self.log_range_ = np.asarray(arrays["log_range"], dtype=np.float64)
            self.n_train_ = int(arrays["n_train"])
        except KeyError as exc:
            where = directory / "trees.json"
            raise StoreError(f"{where} lacks {exc}; refit the predictor") from exc


# --------------------------------------------------------------------------- LUT helpers


def _device_uri(device: Any) -> str:
    if isinstance(device, str):
        return device
    if isinstance(device, dict) and device.get("uri"):
        return str(device["uri"])
    uri = getattr(device, "uri", None)
    if isinstance(uri, str) and uri:
        return uri
    raise UsageError("device must be a URI, a DeviceInfo dict with 'uri', or a Device")


def is_predicted(source: str) -> bool:
    """Whether a LUT row's ``source`` marks a predicted (not measured) latency."""
    return source.startswith(PREDICTED_PREFIX)


def measured_ops(lut: Any, device: Any, *, precision: Precision = Precision.FP32) -> tuple[list[OpSpec], np.ndarray]:
    """The ops of ``device`` at ``precision`` in ``lut`` that were measured or imported (not predicted).

    Returns:
        Their specs and latencies (ms), in key order.
    """
    uri = _device_uri(device)
    specs = {o["key"]: o["spec"] for o in lut.ops()}
    rows = [r for r in lut.iter_rows(uri, precision=precision) if not is_predicted(r["source"])]
    return [OpSpec.from_dict(specs[r["op_key"]]) for r in rows], np.array(
        [r["latency_ms"] for r in rows], dtype=np.float64
    )


def fit_on_lut(lut: Any, device: Any, predictor: Predictor | None = None, *,
               precision: Precision = Precision.FP32) -> Predictor:
    """Fit an op-level predictor (default ``oplevel_xgb``) on a device's measured ops at ``precision``.

    Raises:
        UsageError: fewer than 2 measured ops on that device.
    """
    specs, lat = measured_ops(lut, device, precision=precision)
    if len(specs) < 2:
        raise UsageError(
            f"LUT {lut.path} has {len(specs)} measured {precision} op(s) on {_device_uri(device)}; "
            "measure some with `latkit profile` before fitting a predictor"
        )
    predictor = predictor if predictor is not None else XGBOpPredictor()
    return predictor.fit(specs, lat)


#: The smallest latency a predicted LUT row gets (a regression may undershoot below 0).
MIN_PREDICTED_MS = 1e-4


def _unmeasured(lut: Any, uri: str, specs: Sequence[OpSpec], precision: Precision) -> list[OpSpec]:
    """The distinct measurable ops of ``specs`` with no measured or imported row (predicted ones count as none)."""
    existing = {r["op_key"]: r["source"] for r in lut.iter_rows(uri, precision=precision)}
    todo: dict[str, OpSpec] = {}
    for s in specs:
        if s.measurable and not (s.key in existing and not is_predicted(existing[s.key])):
            todo.setdefault(s.key, s)
    return list(todo.values())


def _predicted_ms(predictor: Predictor, name: str, ops: list[OpSpec]) -> tuple[np.ndarray, int]:
    """The predictor's latencies (ms) of ``ops``, raised to :data:`MIN_PREDICTED_MS`, and how many were.

    Raises:
        MeasurementError: a non-finite prediction.
    """
    lat_ms = np.asarray(predictor.predict(ops), dtype=float)
    if not np.all(np.isfinite(lat_ms)):
        bad = ops[int(np.flatnonzero(~np.isfinite(lat_ms))[0])].key
        raise MeasurementError(f"predictor {name} gave a non-finite latency for {bad}; refit it on more ops")
    # a regression can undershoot below zero for the tiniest ops; a LUT row must be > 0
    clamped = int(np.count_nonzero(lat_ms < MIN_PREDICTED_MS))
    return np.maximum(lat_ms, MIN_PREDICTED_MS), clamped


def fill_lut(lut: Any, specs: Sequence[OpSpec], device: Any, predictor: Predictor, *,
             precision: Precision = Precision.FP32) -> int:
    """Store predictions for the ops of ``specs`` that ``lut`` has not measured.

    Rows that were measured or imported are never touched; rows an earlier
    prediction wrote are replaced. Each new row has ``source =
    "predicted:<predictor name>"`` and a provenance naming the predictor, its
    parameters and how many measured ops it was trained on. Free ops (skip,
    zero) are left out. All rows go in one transaction.

    Args:
        lut: a :class:`latkit.lut.store.LUT`.
        specs: the operators that should end up in the LUT (e.g. a space's
            :meth:`operators`).
        device: the device URI, its info dict, or the Device.
        predictor: a fitted op-level predictor.
        precision: the precision the rows are stored at (only that precision's rows are looked at).

    Returns:
        How many rows were written.
    """
    predictor._check_fitted()
    uri = _device_uri(device)
    ops = _unmeasured(lut, uri, specs, precision)
    if not ops:
        return 0
    name = predictor.name or type(predictor).__name__
    lat_ms, clamped = _predicted_ms(predictor, name, ops)
    from latkit.predictors.base import _jsonable  # params as JSON, the way save() writes them

    provenance = {
        "predictor": name,
        "params": _jsonable(predictor.get_params()),
        "n_train": int(getattr(predictor, "n_train_", 0)),
        "trained_on": uri,
        "latkit_version": __version__,
        "clamped_to_min_ms": {"min_ms": MIN_PREDICTED_MS, "rows": clamped},
    }
    if clamped:
        log.warning("%d prediction(s) below %g ms were raised to it", clamped, MIN_PREDICTED_MS)
    with lut.transaction():
        info = device if isinstance(device, dict) else None
        if hasattr(device, "info"):  # a Device: record what it is, as profile_ops does
            info = device.info().to_dict()
        lut.ensure_device(uri, info)
        for spec, ms in zip(ops, lat_ms):
            lut.ensure_op(spec)
            lut.put_row(
                {"op_key": spec.key, "device_uri": uri, "latency_ms": float(ms),
                 "provenance": provenance, "source": PREDICTED_PREFIX + name, "precision": precision},
                replace=True,
            )  # fmt: skip
    log.info("predicted %d op(s) of %s into %s with %s", len(ops), uri, lut.path, name)
    return len(ops)


# --------------------------------------------------------------------------- figures


def heldout_accuracy(
    specs: Sequence[OpSpec], latency_ms: Sequence[float], predictor: Predictor,
    test_mask: np.ndarray,
) -> dict[str, float]:  # fmt: skip
    """Fit on ``~test_mask``, report held-out ±10% / ±5% accuracy and MAPE."""
    lat = np.asarray(latency_ms, dtype=np.float64)
    mask = np.asarray(test_mask, dtype=bool)
    train = [s for s, m in zip(specs, mask) if not m]
    test = [s for s, m in zip(specs, mask) if m]
    pred = predictor.clone().fit(train, lat[~mask]).predict(test)
    return {
        "n_train": float(len(train)), "n_test": float(len(test)),
        "within_10pct": within(lat[mask], pred, 0.10), "within_5pct": within(lat[mask], pred, 0.05),
        "mape_pct": float(100 * np.mean(np.abs(pred / lat[mask] - 1.0))),
    }  # fmt: skip


def oplevel_heldout_report(
    lut: Any, device: str | None = None, predictors: Sequence[str] = ("oplevel_xgb", "oplevel_gbr"),
    seeds: Sequence[int] = (0, 1, 2), test_frac: float = 0.2,
) -> list[dict[str, Any]]:  # fmt: skip
    """Held-out accuracy of op-level predictors on a LUT's measured ops.

    Random splits: ``test_frac`` of the ops held out, once per seed. (For a
    split by resolution, build the mask yourself and call
    :func:`heldout_accuracy`.)

    Args:
        lut: an open LUT (e.g. the OFA Note10 tables imported, or one measured here).
        device: its device URI (default the only one).
        predictors: registered op-level predictor names.
        seeds: random splits.
        test_frac: held-out fraction of the random splits.

    Returns:
        One dict per (predictor, split): ``predictor``, ``split`` and the
        figures of :func:`heldout_accuracy`.
    """
    from latkit.predictors.base import get_predictor

    uri = lut.resolve_device(device)
    specs, lat = measured_ops(lut, uri)
    rows: list[dict[str, Any]] = []
    for name in predictors:
        proto = get_predictor(name)
        for seed in seeds:
            mask = np.zeros(len(specs), dtype=bool)
            order = np.random.default_rng(seed).permutation(len(specs))
            mask[order[: int(test_frac * len(specs))]] = True
            rows.append({"predictor": name, "split": f"random{int(100 * test_frac)}%:seed{seed}",
                         **heldout_accuracy(specs, lat, proto, mask)})  # fmt: skip
    return rows


__all__ = [
    "GBROpPredictor",
    "PREDICTED_PREFIX",
    "XGBOpPredictor",
    "eval_trees",
    "heldout_accuracy",
    "oplevel_heldout_report",
    "fill_lut",
    "fit_on_lut",
    "is_predicted",
    "measured_ops",
    "op_inputs",
]
