"""Smoothing noisy accuracy estimates with a GCN fitted over the search space.

After "Fitting the search space of weight-sharing NAS with graph convolutional
networks" (Chen et al., 2020): the accuracies a weight-sharing supernet gives its
sub-networks carry a large per-architecture random error. A GCN regressor fitted
to a sample of (architecture, estimate) pairs averages that error out along the
architecture graph, and, once fitted, answers for every architecture of the
space: it becomes the search's accuracy lookup table.

:class:`SmoothedAccuracy` is that accuracy model (``accuracy(arch) -> percent``,
the same interface as the supernet evaluator and the table lookup);
:func:`rank_report` measures what the smoothing buys: out-of-fold rank
correlation of the GCN with the raw estimates and, where true accuracies are
known, of the raw estimates and of the GCN with the truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from latkit.core.errors import UsageError
from latkit.predictors.base import get_predictor, load, load_metadata, save
from latkit.predictors.gcn import GCNAccuracyPredictor
from latkit.predictors.metrics import kendall, spearman
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Arch


class GcnParams(TypedDict, total=False):
    """Parameters of the ``gcn-accuracy`` predictor that smooths the estimates."""

    hidden: int
    layers: int
    head: int
    epochs: int
    lr: float


# A small GCN smooths heavy per-architecture noise best (NB201, 1000 cells, sigma 6
# points: out-of-fold tau vs truth 0.609, above the estimates' 0.573); a wider, longer
# trained one (hidden/head 128, 400 epochs) fits clean estimates better (0.750 vs 0.669
# at sigma 0) but follows the noise at sigma 6 (0.555).
DEFAULT_PARAMS: GcnParams = {"hidden": 64, "layers": 3, "head": 64, "epochs": 200, "lr": 3e-3}


def _encode(space_name: str, archs: Sequence[Arch]) -> np.ndarray:
    space = get_space(space_name)
    return np.stack([space.encode(a) for a in archs]).astype(np.float32)


def distinct_samples(space: Any, n: int, rng: np.random.Generator) -> list[Arch]:
    """Up to ``n`` distinct random architectures of ``space``, in the order drawn
    (bounded: a small space may hold fewer than ``n``)."""
    archs: dict[Arch, None] = {}
    for _ in range(20 * n):
        archs[space.sample(rng)] = None
        if len(archs) == n:
            break
    return list(archs)


class SmoothedAccuracy:
    """An accuracy model answered by a GCN fitted to accuracy estimates.

    Args:
        predictor: a fitted ``gcn-accuracy`` predictor.
        provenance: where its training estimates came from.
    """

    def __init__(self, predictor: Any, provenance: Mapping[str, object] | None = None) -> None:
        if not getattr(predictor, "is_fitted", False):
            raise UsageError("SmoothedAccuracy needs a fitted gcn-accuracy predictor")
        self.predictor, self.space = predictor, predictor.space
        self.provenance = {"kind": "gcn-smoothed", **(provenance or {})}
        self._cache: dict[Arch, float] = {}

    @classmethod
    def fit(
        cls,
        space: str,
        archs: Sequence[Arch],
        estimates: Sequence[float],
        provenance: Mapping[str, object] | None = None,
        random_state: int = 0,
        **params: Any,
    ) -> SmoothedAccuracy:
        """Fit the GCN on ``(archs, estimates)``; ``params`` override :data:`DEFAULT_PARAMS`."""
        y = np.asarray(estimates, dtype=np.float64)
        if len(archs) != len(y) or len(y) < 4:
            raise UsageError(f"need at least 4 (architecture, estimate) pairs, got {len(archs)} and {len(y)}")
        if len(set(archs)) != len(archs):
            raise UsageError("the architectures to fit on repeat; give each one once")
        model = get_predictor(
            "gcn-accuracy", space=space, random_state=random_state, **{**DEFAULT_PARAMS, **params}
        )
        model.fit(_encode(space, archs), y)
        return cls(model, {"n_fit": len(y), **(provenance or {})})

    @classmethod
    def from_evaluator(
        cls, space: Any, evaluator: Any, n: int, rng: np.random.Generator, **params: Any
    ) -> tuple[SmoothedAccuracy, list[Arch], np.ndarray]:
        """Score ``n`` distinct random architectures with ``evaluator`` (e.g. the
        supernet) and fit on them; returns the model, the archs and their scores."""
        if n < 4:
            raise UsageError(f"smoothing needs at least 4 scored architectures, got {n}")
        picked = distinct_samples(space, n, rng)
        scores = np.array([evaluator.accuracy(a) for a in picked], dtype=np.float64)
        provenance = {"estimates": getattr(evaluator, "provenance", {}), "n_scored": len(picked)}
        return cls.fit(space.name, picked, scores, provenance=provenance, **params), picked, scores

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Smoothed accuracy of each architecture."""
        if not archs:
            return np.zeros(0)
        return np.asarray(self.predictor.predict(_encode(self.space, archs)), dtype=np.float64)

    def accuracy(self, arch: Arch) -> float:
        """Smoothed accuracy (percent) of ``arch``."""
        value = self._cache.get(arch)
        if value is None:
            value = self._cache[arch] = float(self.predict([arch])[0])
        return value

    def accuracies(self, archs: Sequence[Arch]) -> dict[Arch, float]:
        """The smoothed accuracy of each of ``archs`` (e.g. every architecture of the space)."""
        values = self.predict(archs)
        self._cache.update(zip(archs, values.tolist()))
        return dict(zip(archs, values.tolist()))

    def save(self, directory: str | Path) -> Path:
        """Save as a latkit predictor folder (JSON + safetensors)."""
        return save(self.predictor, directory, space=self.space, target="accuracy_pct",
                    provenance=self.provenance)

    @classmethod
    def load(cls, directory: str | Path) -> SmoothedAccuracy:
        """Load what :meth:`save` wrote."""
        model = load(directory)
        if not isinstance(model, GCNAccuracyPredictor):
            raise UsageError(f"{directory} holds a {type(model).__name__}, not a gcn-accuracy predictor")
        saved = dict(load_metadata(directory).get("provenance") or {})
        saved.pop("kind", None)
        return cls(model, saved)


@dataclass(frozen=True)
class RankReport:
    """Rank correlations (Kendall tau, Spearman rho) of a smoothing fit.

    ``gcn_vs_estimate`` and ``gcn_vs_truth`` use out-of-fold GCN predictions, so
    no architecture is scored by a model that saw its estimate.
    ``space_vs_truth`` scores the GCN fitted on all pairs over every architecture
    with a known true accuracy (the lookup table's quality).
    """

    n_fit: int
    folds: int
    gcn_vs_estimate: dict[str, float]
    estimate_vs_truth: dict[str, float] | None = None
    gcn_vs_truth: dict[str, float] | None = None
    space_vs_truth: dict[str, float] | None = None
    n_space: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: the fields by name."""
        return dict(vars(self))


def _corr(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {"kendall": kendall(a, b), "spearman": spearman(a, b)}


def rank_report(
    space: str,
    archs: Sequence[Arch],
    estimates: Sequence[float],
    truth: Mapping[Arch, float] | None = None,
    folds: int = 5,
    random_state: int = 0,
    **params: Any,
) -> tuple[SmoothedAccuracy, RankReport]:
    """Fit on all pairs and measure the fit by ``folds``-fold cross-validation.

    Args:
        space: the search space's name.
        archs, estimates: the evaluated architectures and their (noisy) accuracies.
        truth: true accuracies where known (any superset or subset of ``archs``).
        folds: cross-validation folds for the out-of-fold predictions.
        random_state: seeds the folds and the GCNs.
        params: GCN parameters (see :data:`DEFAULT_PARAMS`).

    Returns:
        The model fitted on all pairs, and its report.
    """
    archs = list(archs)
    y = np.asarray(estimates, dtype=np.float64)
    if folds < 2 or folds > len(archs):
        raise UsageError(f"folds must be in [2, {len(archs)}], got {folds}")
    order = np.random.default_rng(random_state).permutation(len(archs))
    oof = np.empty(len(archs))
    for k, held in enumerate(np.array_split(order, folds)):
        keep = np.setdiff1d(order, held)
        part = SmoothedAccuracy.fit(space, [archs[i] for i in keep], y[keep],
                                    random_state=random_state + k, **params)
        oof[held] = part.predict([archs[i] for i in held])
    full = SmoothedAccuracy.fit(space, archs, y, random_state=random_state, **params)
    report = RankReport(len(archs), folds, _corr(y, oof))
    if truth:
        known = [i for i, a in enumerate(archs) if a in truth]
        if len(known) >= 3:
            t = np.array([truth[archs[i]] for i in known])
            report = replace(report, estimate_vs_truth=_corr(t, y[known]), gcn_vs_truth=_corr(t, oof[known]))
        everything = list(truth)
        space_vs_truth = _corr(np.array([truth[a] for a in everything]), full.predict(everything))
        report = replace(report, space_vs_truth=space_vs_truth, n_space=len(everything))
    return full, report
