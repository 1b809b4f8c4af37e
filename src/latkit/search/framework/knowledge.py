"""What PPO search (after FNAS) learns besides its policy.

* :class:`EnsembleCritic` - an accuracy estimator trained on the (arch, accuracy)
  pairs queried so far: a bootstrap ensemble of ridge regressions on one-hot and
  pairwise features, each member on a random subset of the features. Its spread
  decides, through :func:`should_query`, whether an estimate is trusted (no query
  spent) or the architecture is evaluated for real.
* :class:`ReplayBuffer` - past rollouts with their behaviour log-probabilities,
  reused with the truncated importance ratio :func:`off_policy_weight`.
* :class:`ArchPool` - an architecture knowledge pool with a block similarity
  (:func:`block_similarity`). In tabular mode it only warm-starts estimates; a
  supernet trainer can use :meth:`ArchPool.donor` / :func:`shared_blocks` to
  inherit the weights of identical blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch

# --------------------------------------------------------------------------- critic


def pair_features(
    indices: Sequence[int], n_options: Sequence[int], pair_weight: float = 1.0
) -> np.ndarray:
    """One-hot of every choice plus ``pair_weight`` x one-hot of every pair (float64).

    A small ``pair_weight`` makes a ridge fit prefer per-choice effects and use
    interactions only for what they explain, which extrapolates better from few
    samples.
    """
    return pair_feature_matrix(np.asarray([indices]), n_options, pair_weight)[0]


def pair_feature_matrix(
    indices: np.ndarray, n_options: Sequence[int], pair_weight: float = 1.0
) -> np.ndarray:
    """:func:`pair_features` of every row of ``indices`` ([B, choices]) at once."""
    idx = np.asarray(indices, dtype=np.int64).reshape(len(indices), len(n_options))
    sizes = np.asarray(n_options, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    cols, vals = [offsets[:-1] + idx], [np.ones_like(idx, dtype=np.float64)]
    base = int(offsets[-1])
    for a in range(len(sizes)):
        for b in range(a + 1, len(sizes)):
            cols.append((base + idx[:, a] * sizes[b] + idx[:, b])[:, None])
            vals.append(np.full((len(idx), 1), pair_weight))
            base += int(sizes[a] * sizes[b])
    out = np.zeros((len(idx), base))
    c, v = np.concatenate(cols, axis=1), np.concatenate(vals, axis=1)
    np.put_along_axis(out, c, v, axis=1)
    return out


class EnsembleCritic:
    """Bootstrap ensemble of ridge regressors predicting accuracy from an arch.

    Args:
        n_options: option counts of the space's choices.
        members: ensemble size.
        alpha: ridge penalty.
        feature_fraction: share of features each member sees.
        pair_weight: scale of the pairwise features (see :func:`pair_features`).
        floor_quantile: targets below this quantile of the training values are
            raised to it, so that collapsed architectures (NAS-Bench-201's 10 %
            cells) do not dominate the squared loss and the fit ranks the good
            ones; estimates of poor architectures land near the floor, still far
            below the incumbent.
        rng: the generator for bootstraps and feature subsets.
    """

    def __init__(
        self,
        n_options: Sequence[int],
        rng: np.random.Generator,
        members: int = 5,
        alpha: float = 1.0,
        feature_fraction: float = 0.7,
        pair_weight: float = 0.3,
        floor_quantile: float = 0.25,
    ) -> None:
        if members < 2:
            raise UsageError("an ensemble critic needs at least 2 members")
        self.n_options, self.rng = list(n_options), rng
        self.members, self.alpha, self.feature_fraction = members, alpha, feature_fraction
        self.pair_weight, self.floor_quantile = pair_weight, floor_quantile
        self.n_train = 0
        self._models: list[tuple[np.ndarray, np.ndarray, float]] = []

    def features(self, archs: Sequence[Arch]) -> np.ndarray:
        """The feature matrix of ``archs``."""
        if not archs:
            return np.zeros((0, self.n_features))
        return pair_feature_matrix(np.array([a.indices for a in archs]), self.n_options, self.pair_weight)

    @property
    def n_features(self) -> int:
        """Columns of :meth:`features`."""
        n = self.n_options
        return int(sum(n) + sum(n[a] * n[b] for a in range(len(n)) for b in range(a + 1, len(n))))

    def fit(self, archs: Sequence[Arch], values: Sequence[float]) -> EnsembleCritic:
        """Refit every member on a bootstrap resample; return ``self``."""
        X, y = self.features(archs), np.asarray(values, dtype=np.float64)  # noqa: N806
        if self.floor_quantile > 0:
            y = np.maximum(y, np.quantile(y, self.floor_quantile))
        with _one_blas_thread():
            self._fit_members(X, y)
        self.n_train = X.shape[0]
        return self

    def _fit_members(self, X: np.ndarray, y: np.ndarray) -> None:  # noqa: N803
        n, d = X.shape
        self._models = []
        for _ in range(self.members):
            rows = self.rng.integers(n, size=n)
            cols = np.flatnonzero(self.rng.random(d) < self.feature_fraction)
            Xb, yb = X[np.ix_(rows, cols)], y[rows]  # noqa: N806
            y_mean = float(yb.mean())
            # dual ridge: an n x n solve, cheap while n (queries) < d (features)
            K = Xb @ Xb.T + self.alpha * np.eye(n)  # noqa: N806
            coef = Xb.T @ np.linalg.solve(K, yb - y_mean)
            self._models.append((cols, coef, y_mean))

    def predict(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and standard deviation per architecture.

        Raises:
            UsageError: not fitted.
        """
        if not self._models:
            raise UsageError("the critic is not fitted")
        chunks = []
        for start in range(0, len(archs), 1024):  # bounded memory in spaces with many pairs
            X = self.features(archs[start : start + 1024])  # noqa: N806
            chunks.append(np.stack([X[:, cols] @ coef + y0 for cols, coef, y0 in self._models]))
        preds = np.concatenate(chunks, axis=1) if chunks else np.zeros((len(self._models), 0))
        return preds.mean(0), preds.std(0)


def _one_blas_thread() -> Any:
    """Limit BLAS to one thread: these solves are small, and threads fighting
    over busy cores make them orders of magnitude slower. A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def should_query(
    mean: float,
    std: float,
    incumbent: float | None,
    max_std: float,
    margin: float = 2.0,
) -> bool:
    """The critic's gate: evaluate for real, or trust the estimate?

    Query when the ensemble disagrees (``std > max_std``), or when the estimate
    could beat the best accuracy found so far (``mean + margin * std >=
    incumbent``): a trusted estimate never becomes the search's answer, so a
    promising architecture must be measured.
    """
    if std > max_std or incumbent is None:
        return True
    return mean + margin * std >= incumbent


# --------------------------------------------------------------------------- replay


def off_policy_weight(logp_new: float, logp_behaviour: float, clip: float) -> float:
    """The truncated importance ratio ``min(pi_new / pi_behaviour, clip)``.

    Raises:
        UsageError: a non-positive clip.
    """
    if clip <= 0:
        raise UsageError("the importance-ratio clip must be positive")
    return float(min(np.exp(logp_new - logp_behaviour), clip))


@dataclass
class Rollout:
    """One sampled architecture with what the policy and the critic said of it."""

    arch: Arch
    logp_behaviour: float
    reward: float
    queried: bool


@dataclass
class ReplayBuffer:
    """A bounded FIFO of past rollouts."""

    capacity: int = 500
    items: list[Rollout] = field(default_factory=list)

    def extend(self, rollouts: Sequence[Rollout]) -> None:
        """Add rollouts, dropping the oldest beyond capacity."""
        self.items.extend(rollouts)
        del self.items[: max(0, len(self.items) - self.capacity)]

    def sample(self, k: int, rng: np.random.Generator) -> list[Rollout]:
        """Up to ``k`` rollouts drawn without replacement."""
        if not self.items:
            return []
        idx = rng.choice(len(self.items), size=min(k, len(self.items)), replace=False)
        return [self.items[int(i)] for i in idx]


# --------------------------------------------------------------------------- pool


def block_similarity(
    a: Arch, b: Arch, blocks: Sequence[Sequence[int]] | None = None
) -> float:
    """The share of blocks that two architectures build identically, in [0, 1].

    A block is a group of choice indices (default: every choice its own block);
    it counts as shared only when every choice in it agrees.

    Raises:
        UsageError: architectures of different spaces or lengths.
    """
    if a.space != b.space or len(a.indices) != len(b.indices):
        raise UsageError("block similarity needs two architectures of the same space")
    groups = blocks if blocks is not None else [(c,) for c in range(len(a.indices))]
    if not groups:
        raise UsageError("block similarity needs at least one block")
    return len(shared_blocks(a, b, groups)) / len(groups)


def shared_blocks(a: Arch, b: Arch, blocks: Sequence[Sequence[int]]) -> list[int]:
    """Indices of the blocks that ``a`` and ``b`` build identically."""
    return [
        k for k, blk in enumerate(blocks) if all(a.indices[c] == b.indices[c] for c in blk)
    ]


@dataclass
class PoolEntry:
    """One architecture in the pool: its score and an optional payload (weights key)."""

    arch: Arch
    accuracy: float
    payload: Any = None


class ArchPool:
    """An architecture knowledge pool searched by block similarity.

    Args:
        blocks: choice groups treated as blocks (default: one per choice).
        capacity: entries kept (the lowest-scoring is dropped beyond it).
    """

    def __init__(self, blocks: Sequence[Sequence[int]] | None = None, capacity: int = 1000) -> None:
        self.blocks, self.capacity = blocks, capacity
        self.entries: dict[Arch, PoolEntry] = {}
        self._matrix: np.ndarray | None = None  # [N, C] option indices, rebuilt lazily
        self._order: list[PoolEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, arch: Arch, accuracy: float, payload: Any = None) -> None:
        """Add or update an entry."""
        self.entries[arch] = PoolEntry(arch, float(accuracy), payload)
        if len(self.entries) > self.capacity:
            worst = min(self.entries.values(), key=lambda e: e.accuracy)
            del self.entries[worst.arch]
        self._matrix = None

    def similarities(self, arch: Arch) -> tuple[list[PoolEntry], np.ndarray]:
        """Every entry and its block similarity to ``arch`` (vectorised)."""
        if self._matrix is None:
            self._order = list(self.entries.values())
            self._matrix = np.array([e.arch.indices for e in self._order], dtype=np.int64)
        if not self._order:
            return [], np.zeros(0)
        same = self._matrix == np.asarray(arch.indices)[None, :]
        if self.blocks is None:
            return self._order, same.mean(1)
        per_block = np.stack([same[:, list(blk)].all(1) for blk in self.blocks], axis=1)
        return self._order, per_block.mean(1)

    def nearest(self, arch: Arch, k: int = 5, exclude_self: bool = True) -> list[tuple[PoolEntry, float]]:
        """The ``k`` most similar entries with their similarity, most similar first."""
        order, sims = self.similarities(arch)
        scored = [
            (e, float(s)) for e, s in zip(order, sims) if not (exclude_self and e.arch == arch)
        ]
        scored.sort(key=lambda t: (-t[1], -t[0].accuracy))
        return scored[:k]

    def estimate(self, arch: Arch, k: int = 5, min_similarity: float = 0.5) -> float | None:
        """A similarity-weighted accuracy of the nearest entries (None: none close enough)."""
        order, sims = self.similarities(arch)
        keep = [i for i in np.flatnonzero(sims >= min_similarity) if order[i].arch != arch]
        if not keep:
            return None
        keep = sorted(keep, key=lambda i: (-sims[i], -order[i].accuracy))[:k]
        w = sims[keep]
        return float(np.dot(w, [order[i].accuracy for i in keep]) / w.sum())

    def donor(self, arch: Arch) -> tuple[PoolEntry, list[int]] | None:
        """The most similar entry and the blocks it shares with ``arch`` (weight sharing)."""
        near = self.nearest(arch, 1)
        if not near:
            return None
        entry, _ = near[0]
        groups = self.blocks if self.blocks is not None else [(c,) for c in range(len(arch.indices))]
        return entry, shared_blocks(arch, entry.arch, groups)
