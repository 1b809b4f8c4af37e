"""Network-level predictors over an architecture encoding: ridge, MLP, XGBoost.

``X`` is any fixed-length feature matrix, usually the one-hot encoding
``space.encode(arch)`` of a search space (see :func:`latkit.predictors.data.encode_archs`).
All three fit the log of the latency (floored), so that relative errors weigh the
same for fast and slow architectures, and predict milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import atomic_path, one_line
from latkit.core.errors import MissingExtraError
from latkit.predictors.base import JsonWeights, Predictor, WeightsInfo, check_X, check_Xy, register_predictor

log = logging.getLogger(__name__)

# latencies below this fraction of the median are floored before the log: degenerate
# NAS-Bench-201 cells measure ~0 ms and would otherwise dominate a log-space fit
FLOOR_FRACTION = 0.05


def log_latency(y_ms: np.ndarray, floor_ms: float) -> np.ndarray:
    """``log(max(y, floor))``."""
    return np.log(np.maximum(np.asarray(y_ms, dtype=np.float64), floor_ms))


def latency_floor(y_ms: np.ndarray) -> float:
    """The floor used before taking logs: a small fraction of the median latency."""
    med = float(np.median(y_ms))
    return max(FLOOR_FRACTION * med, 1e-6)


# --------------------------------------------------------------------------- ridge


@register_predictor("ridge")
class RidgePredictor(JsonWeights, Predictor):
    """Ridge regression on the features, in log-latency space (closed form, JSON weights)."""

    json_weights = ("coef", "x_mean", "y_mean", "floor_ms")

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, X: Any, y: Any) -> RidgePredictor:  # noqa: N803
        X, y = check_Xy(X, y)
        self.floor_ms_ = latency_floor(y)
        t = log_latency(y, self.floor_ms_)
        self.x_mean_ = X.mean(axis=0)
        self.y_mean_ = float(t.mean())
        xc = X - self.x_mean_
        gram = xc.T @ xc + float(self.alpha) * np.eye(X.shape[1])
        self.coef_ = np.linalg.solve(gram, xc.T @ (t - self.y_mean_))
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        return np.exp((X - self.x_mean_) @ self.coef_ + self.y_mean_)

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        super()._load_weights(directory, info)
        self.n_features_in_ = int(self.coef_.shape[0])


# --------------------------------------------------------------------------- torch helpers


def import_torch() -> Any:
    """``torch``, or a MissingExtraError naming the extra."""
    try:
        import torch
    except ImportError as exc:  # torch is a core dependency, but keep the message clear
        raise MissingExtraError("torch predictors", "predictors", exc) from exc
    return torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch ops with ``n`` intra-op threads, restoring the setting afterwards.

    Small models train several times faster single-threaded on a busy machine:
    intra-op threads spin-wait for each other on every tiny kernel.
    """
    torch = import_torch()
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def save_torch_state(module: Any, path: Path) -> None:
    """Write a module's state dict as safetensors."""
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise MissingExtraError("saving torch predictors", "predictors", exc) from exc
    with atomic_path(path, "predictor weights") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp))


def load_torch_state(module: Any, path: Path) -> None:
    """Read a safetensors state dict into ``module`` (shapes must match)."""
    from latkit.core.errors import StoreError

    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:
        raise MissingExtraError("loading torch predictors", "predictors", exc) from exc
    torch = import_torch()
    try:
        state = load_file(str(path))
        module.load_state_dict(state)
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise StoreError(f"cannot load weights {path}: {one_line(exc)}; refit the predictor") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise StoreError(f"weights {path} hold NaN or infinite values (tensor {bad[0]!r}); the file is "
                         "damaged, refit the predictor")


def train_regressor(
    module: Any,
    inputs: list[Any],
    target: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> None:
    """Fit ``module(*inputs) -> [n]`` to ``target`` with Adam + MSE, mini-batched, on CPU.

    Random init, shuffling and dropout all draw from a generator seeded by ``seed``.
    """
    torch = import_torch()
    gen = torch.Generator().manual_seed(int(seed))
    tgt = torch.as_tensor(target, dtype=torch.float32)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    n = tgt.shape[0]
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(module(*[x[idx] for x in inputs]), tgt[idx])
            loss.backward()
            opt.step()
        sched.step()
    module.eval()


class TorchRegressor(Predictor):
    """What the torch predictors share: the target they regress and how they train.

    The target is the latency's log (floored; ``log_target = False``: the value
    itself), standardised; the module trains with :func:`train_regressor` under the
    predictor's ``epochs``, ``lr``, ``weight_decay``, ``batch_size``,
    ``random_state`` and ``threads`` parameters.
    """

    log_target = True
    threads: int | None
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    random_state: int

    def _standardise(self, y: np.ndarray) -> np.ndarray:
        """Set the target's floor, mean and std from ``y`` (ms); return it standardised."""
        self.floor_ms_ = latency_floor(y) if self.log_target else 0.0
        t = log_latency(y, self.floor_ms_) if self.log_target else y
        self.y_mean_, self.y_std_ = float(t.mean()), float(t.std() or 1.0)
        return (t - self.y_mean_) / self.y_std_

    def _unstandardise(self, z: np.ndarray) -> np.ndarray:
        """Predictions from the module's standardised outputs."""
        t = z.astype(np.float64) * self.y_std_ + self.y_mean_
        return np.exp(t) if self.log_target else t

    def _train(self, module: Any, inputs: list[Any], z: np.ndarray) -> None:
        with torch_threads(self.threads):
            train_regressor(
                module,
                inputs,
                z,
                epochs=int(self.epochs),
                lr=float(self.lr),
                weight_decay=float(self.weight_decay),
                batch_size=int(self.batch_size),
                seed=int(self.random_state),
            )

    def _target_extra(self) -> dict[str, float]:
        """The target's statistics, for :class:`WeightsInfo`'s ``extra``."""
        return {"y_mean": self.y_mean_, "y_std": self.y_std_, "floor_ms": self.floor_ms_}

    def _read_target_extra(self, info: WeightsInfo) -> None:
        e = info.extra
        self.y_mean_, self.y_std_ = float(e["y_mean"]), float(e["y_std"])
        self.floor_ms_ = float(e["floor_ms"])


class _MLP:
    """Factory for the MLP module (kept out of module scope so torch loads lazily)."""

    @staticmethod
    def build(n_in: int, hidden: tuple[int, ...], dropout: float) -> Any:
        torch = import_torch()
        layers: list[Any] = []
        width = n_in
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        seq = torch.nn.Sequential(*layers)

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = seq

            def forward(self, x: Any) -> Any:
                return self.body(x).squeeze(-1)

        return Net()


@register_predictor("mlp")
class MLPPredictor(TorchRegressor):
    """A multi-layer perceptron on the encoding (torch, CPU; safetensors weights)."""

    def __init__(
        self,
        hidden: tuple[int, ...] | list[int] = (128, 128),
        epochs: int = 200,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
        batch_size: int = 64,
        random_state: int = 0,
        threads: int | None = 1,
    ):
        self.threads = threads
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.random_state = random_state

    def _module(self, n_in: int) -> Any:
        torch = import_torch()
        torch.manual_seed(int(self.random_state))  # init weights deterministically
        return _MLP.build(n_in, tuple(int(h) for h in self.hidden), float(self.dropout))

    def fit(self, X: Any, y: Any) -> MLPPredictor:  # noqa: N803
        X, y = check_Xy(X, y)
        z = self._standardise(y)
        self.n_features_in_ = X.shape[1]
        self.module_ = self._module(X.shape[1])
        torch = import_torch()
        self._train(self.module_, [torch.as_tensor(X, dtype=torch.float32)], z)
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        torch = import_torch()
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        with torch_threads(self.threads), torch.inference_mode():
            z = self.module_(torch.as_tensor(X, dtype=torch.float32)).numpy()
        return self._unstandardise(z)

    def _save_weights(self, directory: Path) -> WeightsInfo:
        save_torch_state(self.module_, directory / "weights.safetensors")
        return WeightsInfo(
            "safetensors",
            ["weights.safetensors"],
            {"n_features_in": self.n_features_in_, **self._target_extra()},
        )

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        self.n_features_in_ = int(info.extra["n_features_in"])
        self._read_target_extra(info)
        self.module_ = self._module(self.n_features_in_)
        load_torch_state(self.module_, directory / "weights.safetensors")
        self.module_.eval()


# --------------------------------------------------------------------------- xgboost


def import_xgboost() -> Any:
    """``xgboost``, or a MissingExtraError naming the extra."""
    try:
        import xgboost
    except ImportError as exc:
        raise MissingExtraError("the XGBoost predictor", "predictors", exc) from exc
    return xgboost


@register_predictor("xgboost")
class XGBoostPredictor(Predictor):
    """Gradient-boosted trees on the encoding (XGBoost; its JSON model format)."""

    def __init__(
        self,
        n_estimators: int = 400,
        max_depth: int = 6,
        learning_rate: float = 0.05,
        subsample: float = 0.9,
        colsample_bytree: float = 0.8,
        random_state: int = 0,
        n_jobs: int = 1,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _model(self) -> Any:
        xgb = import_xgboost()
        return xgb.XGBRegressor(
            n_estimators=int(self.n_estimators),
            max_depth=int(self.max_depth),
            learning_rate=float(self.learning_rate),
            subsample=float(self.subsample),
            colsample_bytree=float(self.colsample_bytree),
            random_state=int(self.random_state),
            n_jobs=int(self.n_jobs),
            tree_method="hist",
        )

    def fit(self, X: Any, y: Any) -> XGBoostPredictor:  # noqa: N803
        X, y = check_Xy(X, y)
        self.floor_ms_ = latency_floor(y)
        self.n_features_in_ = X.shape[1]
        self.booster_ = self._model().fit(X, log_latency(y, self.floor_ms_))
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        return np.exp(self.booster_.predict(X).astype(np.float64))

    def _save_weights(self, directory: Path) -> WeightsInfo:
        with atomic_path(directory / "model.json", "predictor weights", keep_suffix=True) as tmp:
            self.booster_.save_model(str(tmp))
        return WeightsInfo(
            "xgboost",
            ["model.json"],
            {"n_features_in": self.n_features_in_, "floor_ms": self.floor_ms_},
        )

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        from latkit.core.errors import StoreError

        model = self._model()
        try:
            model.load_model(str(directory / "model.json"))
        except Exception as exc:  # xgboost raises its own XGBoostError for bad files
            raise StoreError(f"cannot load {directory / 'model.json'}: {one_line(exc)}; refit") from exc
        self.booster_ = model
        self.n_features_in_ = int(info.extra["n_features_in"])
        self.floor_ms_ = float(info.extra["floor_ms"])
