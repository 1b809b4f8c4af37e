"""Kernel latency predictors: one learned model per kernel type, and whole-network predictions.

Each :class:`~latkit.profiler.kernels.KernelType` gets its own regressor over
its configuration's features (:data:`~latkit.profiler.kernels.FEATURE_NAMES`):
a log-linear base (ridge least squares of the log latency on the log sizes:
latency grows as a power of the work, which extrapolates sensibly), plus
XGBoost trees on the base's residual (kernel size, stride and cache effects
the power law misses). The targets are net kernel times: every measured
figure less the device's per-invocation overhead (the smallest model's time),
which a network pays once, not once per kernel.

A network's prediction is the sum of its kernels' predictions plus one
overhead, then, when networks were measured for it, the device's calibration
(a scale and an offset fitted on a few measured networks). A kernel of an
operator type no predictor covers is predicted as an element-wise kernel of
its output size and flagged as a fallback.

:class:`KernelPredictors` saves as a folder without pickle: ``predictors.json``
(schema ``latkit.kernel_predictors``, its version, the latkit version, the
device's identity, the fusion rules, overhead, calibration, and per type the
log-linear coefficients) and one XGBoost JSON model per type. The trees are
evaluated in numpy (:class:`~latkit.predictors.tree_json.TreeEnsemble`), so
predicting needs no XGBoost; fitting does. A folder of another schema version
is refused with what to do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.reprs import short_repr
from latkit.devices.precision import Precision, parse_precision
from latkit._version import __version__
from latkit.core.errors import MissingExtraError, StoreError, UsageError
from latkit.core.files import check_output_dir, read_json, write_json
from latkit.predictors.tree_json import TreeEnsemble
from latkit.profiler.kernels import (
    FEATURE_NAMES,
    FusionRules,
    KernelConfig,
    KernelGraph,
    KernelType,
    features,
)

log = logging.getLogger(__name__)

SCHEMA = "latkit.kernel_predictors"
SCHEMA_VERSION = 1
_BASE_COLS = [FEATURE_NAMES.index(n) for n in ("log_macs", "log_in", "log_out", "log_weights")]
_MIN_MS = 1e-4
_MAX_EXTRAPOLATION = math.log(10.0)


def _xgb() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise MissingExtraError("kernel predictors", "predictors") from exc
    return xgboost


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([x[:, _BASE_COLS], np.ones(len(x))])


@dataclass
class TypeModel:
    """The regressor of one kernel type: log-linear base plus boosted residual trees."""

    coef: np.ndarray
    log_range: tuple[float, float]
    n_train: int
    trees: TreeEnsemble | None = None  # the residual trees; None with fewer than 4 samples

    @classmethod
    def fit(cls, x: np.ndarray, y_ms: np.ndarray, n_estimators: int = 150, seed: int = 0) -> TypeModel:
        """Fit on features ``x`` and net latencies ``y_ms``."""
        log_y = np.log(np.maximum(y_ms, _MIN_MS))
        a = _design(x)
        # the intercept is not shrunk: were it, the ridge would borrow a constant from
        # sizes that move together in the samples (a resize's output is always 4x its
        # input), with large opposite weights that explode where they part
        penalty = np.diag([1e-2] * (a.shape[1] - 1) + [0.0])
        coef = np.linalg.solve(a.T @ a + penalty, a.T @ log_y)
        trees = None
        if len(y_ms) >= 4:
            xgb = _xgb()
            model = xgb.XGBRegressor(n_estimators=n_estimators, max_depth=4, learning_rate=0.08, subsample=0.9,
                                     n_jobs=1, random_state=seed, base_score=0.0)  # fmt: skip
            model.fit(x, log_y - a @ coef)
            trees = TreeEnsemble.from_booster(model.get_booster())
        return cls(coef, (float(log_y.min()), float(log_y.max())), int(len(y_ms)), trees)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Net latency (ms) of every row of ``x``."""
        log_pred = _design(x) @ self.coef
        if self.trees is not None and len(x):
            log_pred = log_pred + self.trees.predict(x)
        lo, hi = self.log_range
        return np.exp(np.clip(log_pred, lo - _MAX_EXTRAPOLATION, hi + _MAX_EXTRAPOLATION))


@dataclass(frozen=True)
class KernelPrediction:
    """One kernel's predicted time within a network."""

    kernel: str  # type
    key: str | None
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    latency_ms: float
    fallback: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kernel": self.kernel, "key": self.key, "nodes": list(self.nodes), "op_types": list(self.op_types),
                "latency_ms": self.latency_ms, "fallback": self.fallback or None}  # fmt: skip


@dataclass(frozen=True)
class NetworkPrediction:
    """A network's predicted latency and where it comes from."""

    name: str
    latency_ms: float
    kernel_sum_ms: float
    overhead_ms: float
    kernels: tuple[KernelPrediction, ...]
    folded: tuple[str, ...]
    rules_source: str
    calibrated: bool
    device: str
    precision: Precision
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return short_repr(self, "name", "latency_ms", "device", "precision", "kernels", "calibrated")

    @property
    def uncovered(self) -> tuple[KernelPrediction, ...]:
        """Kernels predicted by a fallback."""
        return tuple(k for k in self.kernels if k.fallback)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the coverage summary."""
        n_ops = sum(len(k.nodes) for k in self.kernels)
        return {
            "name": self.name, "device": self.device, "precision": self.precision.value,
            "latency_ms": self.latency_ms, "kernel_sum_ms": self.kernel_sum_ms, "overhead_ms": self.overhead_ms,
            "calibrated": self.calibrated, "fusion_rules": self.rules_source,
            "kernels": [k.to_dict() for k in self.kernels],
            "coverage": {"operators": n_ops + len(self.folded), "in_predicted_kernels":
                         sum(len(k.nodes) for k in self.kernels if not k.fallback),
                         "folded": list(self.folded),
                         "not_covered": [{"nodes": list(k.nodes), "op_types": list(k.op_types),
                                          "fallback": k.fallback, "latency_ms": k.latency_ms}
                                         for k in self.uncovered]},
            **self.extra,
        }  # fmt: skip


class KernelPredictors:
    """A device's kernel predictors (one :class:`TypeModel` per kernel type), savable without pickle.

    Attributes:
        device: the device's identity (``DeviceInfo.to_dict()``).
        precision: the precision its kernels were measured at.
        models: kernel type -> its model.
        rules: the fusion rules its networks are grouped with.
        overhead_ms: one invocation's fixed cost on the device.
        calibration: ``{"scale": a, "offset_ms": b}`` fitted on measured networks, or empty.
    """

    def __init__(self, device: dict[str, Any], precision: Precision, models: dict[KernelType, TypeModel],
                 rules: FusionRules, overhead_ms: float, calibration: dict[str, float] | None = None,
                 provenance: dict[str, Any] | None = None) -> None:
        self.device = dict(device)
        self.precision = precision
        self.models = dict(models)
        self.rules = rules
        self.overhead_ms = float(overhead_ms)
        self.calibration = dict(calibration or {})
        self.provenance = dict(provenance or {})

    def __repr__(self) -> str:
        return short_repr(self, "uri", "precision", "models", "overhead_ms", "calibration")

    @property
    def uri(self) -> str:
        """The device URI."""
        return str(self.device.get("uri", "?"))

    def predict_configs(self, configs: Sequence[KernelConfig]) -> np.ndarray:
        """Net latency (ms) of each configuration (a type without a model: the element-wise one's)."""
        out = np.zeros(len(configs))
        by_type: dict[KernelType, list[int]] = {}
        for i, c in enumerate(configs):
            by_type.setdefault(c.type, []).append(i)
        for t, idx in by_type.items():
            model = self.models.get(t)
            if model is None:
                model = self.models.get(KernelType.ELEMENTWISE)
                if model is None:
                    raise UsageError(f"no kernel predictor for {t.value} and no element-wise one to fall back on; "
                                     "build the device's predictors with `latkit kernels build`")
            out[idx] = model.predict(features(configs[i] for i in idx))
        return out

    def calibrated(self, kernel_sum_ms: float) -> float:
        """A network's latency from its kernel sum: plus one overhead, then the calibration if any."""
        total = kernel_sum_ms + self.overhead_ms
        if self.calibration:
            total = self.calibration["scale"] * total + self.calibration["offset_ms"]
        return max(total, 0.0)

    # ------------------------------------------------------------ saving

    def save(self, directory: str | Path) -> Path:
        """Write ``predictors.json`` and one XGBoost JSON model per type into ``directory``."""
        directory = check_output_dir(directory, "kernel predictor folder")
        types: dict[str, Any] = {}
        for t, m in self.models.items():
            entry = {"coef": m.coef.tolist(), "log_range": list(m.log_range), "n_train": m.n_train, "booster": None}
            if m.trees is not None:  # XGBoost's own JSON model format: xgboost.Booster.load_model reads it
                entry["booster"] = f"{t.value}.json"
                write_json(directory / entry["booster"], m.trees.raw, "kernel predictor trees", indent=None)
            types[t.value] = entry
        write_json(directory / "predictors.json", {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "latkit_version": __version__,
            "device": self.device, "precision": self.precision.value, "features": list(FEATURE_NAMES),
            "rules": self.rules.to_dict(), "overhead_ms": self.overhead_ms, "calibration": self.calibration,
            "provenance": self.provenance, "types": types,
        }, "kernel predictors")  # fmt: skip
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> KernelPredictors:
        """Read a folder written by :meth:`save`.

        Raises:
            StoreError: missing, of another schema or version, or computed from other features.
        """
        directory = Path(directory)
        meta = read_json(directory / "predictors.json", "kernel predictors")
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
            raise StoreError(f"{directory} holds no latkit kernel predictors (schema {meta.get('schema')!r})"
                             if isinstance(meta, dict) else f"{directory}/predictors.json is not an object")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{directory}: kernel predictors of schema version {meta.get('schema_version')!r}, "
                             f"this latkit reads version {SCHEMA_VERSION}; rebuild them with `latkit kernels build`")
        if list(meta.get("features", [])) != list(FEATURE_NAMES):
            raise StoreError(f"{directory}: kernel predictors computed from other features; rebuild them")
        models = {KernelType(t): _load_type(directory, e) for t, e in meta["types"].items()}
        r = meta["rules"]
        rules = FusionRules(frozenset(tuple(p) for p in r["pairs"]), r["source"], r.get("evidence", {}))
        return cls(meta["device"], parse_precision(meta["precision"]), models, rules, meta["overhead_ms"], meta.get("calibration"),
                   meta.get("provenance"))  # fmt: skip


def _load_type(directory: Path, entry: dict[str, Any]) -> TypeModel:
    trees = None
    if entry.get("booster"):
        path = directory / entry["booster"]
        try:
            trees = TreeEnsemble(read_json(path, "kernel predictor trees"))
        except StoreError as exc:
            raise StoreError(f"cannot read {path}: {exc}; rebuild the predictors") from None
    lo, hi = entry["log_range"]
    return TypeModel(np.asarray(entry["coef"], dtype=np.float64), (float(lo), float(hi)), int(entry["n_train"]),
                     trees)  # fmt: skip


def fit_predictors(rows: Sequence[tuple[KernelConfig, float]], device: dict[str, Any], rules: FusionRules, *,
                   precision: Precision = Precision.FP32, overhead_ms: float | None = None, seed: int = 0,
                   provenance: dict[str, Any] | None = None) -> KernelPredictors:
    """Fit one model per kernel type on measured ``(configuration, latency_ms)`` rows.

    ``overhead_ms`` (default: the overhead configuration's row, else half the
    fastest row) is taken off every row before fitting.

    Raises:
        UsageError: no rows.
    """
    from latkit.profiler.kernel_models import OVERHEAD_CONFIG

    if not rows:
        raise UsageError("no kernel measurements to fit predictors on; run `latkit kernels build` first")
    if overhead_ms is None:
        own = [ms for c, ms in rows if c == OVERHEAD_CONFIG]
        overhead_ms = min(own) if own else 0.5 * min(ms for _, ms in rows)
    by_type: dict[KernelType, list[tuple[KernelConfig, float]]] = {}
    for c, ms in rows:
        by_type.setdefault(c.type, []).append((c, ms))
    models = {}
    for t, items in by_type.items():
        x = features(c for c, _ in items)
        y = np.maximum(np.asarray([ms for _, ms in items]) - overhead_ms, _MIN_MS)
        models[t] = TypeModel.fit(x, y, seed=seed)
    return KernelPredictors(device, precision, models, rules, overhead_ms, provenance=provenance)


def default_predictor_dir(lut_path: str | Path, device_uri: str,
                          precision: Precision = Precision.FP32) -> Path:
    """Where a LUT's kernel predictors for a device live: ``<lut>.kernels/<device>-<precision>``."""
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device_uri)
    path = Path(lut_path)
    return path.with_name(path.name + ".kernels") / f"{slug}-{precision.value}"


def default_kernel_lut() -> Path:
    """The LUT holding kernel measurements when none is named: ``kernels.db`` in latkit's LUT cache."""
    from latkit.core.cache import luts_dir

    return luts_dir() / "kernels.db"


def load_device_predictors(folder: str | Path | None, lut: str | Path, device: str,
                           precision: Precision) -> KernelPredictors:
    """The kernel predictors of ``device`` at ``precision``: those in ``folder`` (default the ones a
    build wrote beside ``lut``), refused when they are another device's or precision's.

    Raises:
        StoreError: no predictors there. UsageError: they are of another device or precision
            (else another device's figures would be used silently).
    """
    from latkit.core.errors import StoreError, UsageError

    folder = Path(folder) if folder is not None else default_predictor_dir(lut, device, precision)
    if not (folder / "predictors.json").is_file() and precision is not Precision.FP32:
        raise StoreError(f"no kernel predictors for {device} at {precision.value} in {folder}; `latkit kernels build` "
                         "builds fp32 ones so far: predict with them with --precision fp32")
    if not (folder / "predictors.json").is_file():
        raise StoreError(f"no kernel predictors for {device} at {precision} in {folder}; build them with "
                         f"`latkit kernels build --device {device} --lut {lut} --budget 30m`")
    preds = KernelPredictors.load(folder)
    if (preds.uri, preds.precision) != (device, precision):
        raise UsageError(f"the kernel predictors in {folder} are of {preds.uri} at {preds.precision.value}, not "
                         f"{device} at {precision.value}; give --device {preds.uri} or the predictors of {device}")
    return preds


__all__ = ["SCHEMA", "SCHEMA_VERSION", "KernelPrediction", "KernelPredictors", "NetworkPrediction", "TypeModel",
           "default_kernel_lut", "default_predictor_dir", "fit_predictors", "load_device_predictors"]
