"""Few-shot transfer of latency to a new device.

Setting: every architecture of a space has measured latencies on several *known*
devices; the *new* device has only K measured architectures. The predictor here
models the new device's log latency as a ridge-regularised linear combination of
the known devices' standardised (and relevance-scaled) log latencies:

    log y_new(a) = b + sum_j w_j * s_j * z_j(a),   z_j = (log y_j - mean_j) / std_j

Two things make this work with K = 10:

* **Which K to measure** (:func:`select_archs`). The archs are spread over the
  known devices' latency space: the standardised log latencies are projected on
  their leading principal components and K archs are picked by farthest-point
  sampling there (never among the 5% most outlying rows). The design then covers the directions along which devices
  disagree, which is what the combination weights must resolve, instead of
  clustering in the dense middle as random picks do.
* **How much to regularise, and whom to trust** (``alpha="auto"``,
  ``gamma="auto"``). Each standardised known device is scaled by
  ``|corr with the new device on the K rows|^gamma`` (a larger scale is a weaker
  ridge penalty), and the ridge strength ``alpha`` and exponent ``gamma`` are
  meta-tuned on the known devices themselves: each known device in turn plays the
  new one (its column hidden except on the K chosen rows), is predicted from the
  others, and the pair with the lowest mean squared log error over all archs wins.

The ``active`` design (:func:`active_design`, the default of ``latkit predictor
eval|design|fit``) picks the K archs greedily by the expected reduction of the
posterior variance over all archs, under a prior that the new device is a random
combination of the known ones: it covers what the known devices disagree on.
:func:`design_rows` dispatches on :class:`Design`. Under ``--strict`` (see
:func:`known_columns`), columns ``<prefix>_<number>`` that share their prefix with
another column are one hardware at several batch sizes (:func:`hardware_of`).

Latencies are floored at a small fraction of their median before the log, so
near-zero NAS-Bench-201 cells do not dominate.
"""

from __future__ import annotations

import logging
import re
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import UnknownNameError, UsageError
from latkit.predictors.base import JsonWeights, Predictor, WeightsInfo, check_X, check_Xy, register_predictor
from latkit.predictors.network import FLOOR_FRACTION, latency_floor

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
DEFAULT_GAMMAS = (0.0, 1.0, 2.0, 4.0)
_BATCH_SUFFIX = re.compile(r"^(.*)_(\d+)$")


class Design(str, Enum):
    """How the K archs to measure on a new device are chosen."""

    ACTIVE = "active"  # greedy: most expected reduction of the device prior's variance
    FARTHEST = "farthest"  # farthest-point sampling in the known devices' principal components
    RANDOM = "random"


# --------------------------------------------------------------------------- columns


def hardware_of(column: str, columns: list[str] | tuple[str, ...]) -> str:
    """The hardware a column measured: ``1080ti_32`` -> ``1080ti`` when ``1080ti_1`` also exists.

    A trailing ``_<number>`` is read as a batch size only when another column shares
    the prefix, so ``silver_4114`` stays its own hardware.
    """
    m = _BATCH_SUFFIX.match(column)
    if not m:
        return column
    prefix = m.group(1)
    siblings = [c for c in columns if (mm := _BATCH_SUFFIX.match(c)) and mm.group(1) == prefix]
    return prefix if len(siblings) > 1 else column


def known_columns(
    columns: list[str] | tuple[str, ...], target: str, *, strict: bool = False
) -> list[str]:
    """Every column but ``target``; with ``strict``, also none of the target's hardware."""
    if target not in columns:
        raise UnknownNameError("device column", target, list(columns))
    hw = hardware_of(target, columns)
    return [
        c
        for c in columns
        if c != target and not (strict and hardware_of(c, columns) == hw)
    ]


def log_floors(latency_ms: np.ndarray) -> np.ndarray:
    """Per column, the latency below which a figure is treated as noise (a fraction of the column's median)."""
    return np.maximum(FLOOR_FRACTION * np.median(latency_ms, axis=0), 1e-6)


def floored_log(latency_ms: np.ndarray, floor_ms: np.ndarray | float) -> np.ndarray:
    """The log of the latencies, each raised to its floor first (:func:`log_floors`)."""
    return np.log(np.maximum(latency_ms, floor_ms))


def standardised_log(lat: np.ndarray) -> np.ndarray:
    """Each column's floored log latencies, centred and scaled to unit spread (a constant column stays 0)."""
    z = floored_log(lat, log_floors(lat))
    return (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-12)


# --------------------------------------------------------------------------- design


def select_archs(
    known_latency_ms: np.ndarray,
    k: int,
    *,
    n_components: int = 4,
    trim: float = 0.05,
    spread: float = 1.0,
    random_state: int | None = 0,
) -> np.ndarray:
    """Pick ``k`` row indices to measure on the new device.

    Farthest-point sampling in the space of the leading principal components of the
    known devices' standardised log latencies. The first point is drawn at random
    among the 1% of rows nearest the centre (``random_state=None``: the nearest).

    Raises:
        UsageError: ``k`` < 2 or larger than the number of rows, or NaNs.
    """
    lat = check_X(known_latency_ms, what="known-device latencies")
    n = lat.shape[0]
    if not 2 <= k <= n:
        raise UsageError(f"K must be between 2 and the {n} archs of the table, got {k}")
    z = standardised_log(lat)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    q = u[:, : max(1, min(n_components, u.shape[1]))] * s[: max(1, min(n_components, u.shape[1]))]
    centre = np.sum((q / np.maximum(q.std(axis=0), 1e-12)) ** 2, axis=1)
    if random_state is None:
        first = int(np.argmin(centre))
    else:
        near = np.argsort(centre)[: max(1, n // 100)]
        first = int(np.random.default_rng(random_state).choice(near))
    chosen = [first]
    dist = np.sum((q - q[first]) ** 2, axis=1)
    # the most outlying rows are never picked: farthest-point sampling would go for
    # them first, and an outlier (a timing glitch) would then lever the whole fit
    if trim > 0 and n - int(trim * n) >= k:
        dist[np.argsort(centre)[n - int(trim * n) :]] = -np.inf
    n_far = max(1, int(round(spread * k)))
    rng = np.random.default_rng(random_state)
    for i in range(1, k):
        if i < n_far:
            nxt = int(np.argmax(dist))
        else:  # the rest of the design: typical archs, drawn at random
            free = np.flatnonzero(np.isfinite(dist) & (dist > 0))
            nxt = int(rng.choice(free))
        chosen.append(nxt)
        dist = np.minimum(dist, np.sum((q - q[nxt]) ** 2, axis=1))
    return np.asarray(chosen, dtype=np.int64)


def active_design(
    known_latency_ms: np.ndarray,
    k: int,
    *,
    noise: float = 0.1,
    trim: float = 0.05,
    pool_fraction: float = 0.5,
    random_state: int | None = 0,
) -> np.ndarray:
    """Pick ``k`` rows where the known devices disagree most, greedily.

    The new device's standardised log latencies are modelled as a random linear
    combination of the known devices' (weights ~ N(0, I/d), plus a free level):
    the prior covariance between two archs is then how the known devices'
    latencies co-vary across devices, i.e. what they disagree on. Each step picks
    the arch whose measurement most reduces the total posterior variance over all
    archs (``noise`` is the measurement noise relative to that prior), so the
    design covers the directions of disagreement and stops revisiting those
    already pinned down. The 5% most outlying rows are never picked (a timing
    glitch would lever the fit); with ``random_state`` the candidates are a random
    ``pool_fraction`` of the rows, so repeats over seeds measure the design's
    sensitivity (``None``: every row, deterministic).

    Raises:
        UsageError: ``k`` < 2 or larger than the candidate rows, or NaNs.
    """
    lat = check_X(known_latency_ms, what="known-device latencies")
    n, d = lat.shape
    z = standardised_log(lat)
    feats = np.hstack([z / np.sqrt(d), np.full((n, 1), 3.0)])  # a broad prior on the level
    gram = feats.T @ feats / n
    ok = np.ones(n, dtype=bool)
    if trim > 0 and n - int(trim * n) >= k:
        ok[np.argsort(np.sum(z**2, axis=1))[n - int(trim * n) :]] = False
    if random_state is not None:
        pool = ok & (np.random.default_rng(random_state).random(n) < pool_fraction)
        ok = pool if pool.sum() >= k else ok  # a small table keeps every row
    if not 2 <= k <= int(ok.sum()):
        raise UsageError(f"K must be between 2 and the {int(ok.sum())} candidate archs of the table, got {k}")
    cov = np.eye(d + 1)
    chosen: list[int] = []
    for _ in range(k):
        fs = feats @ cov
        gain = np.einsum("ij,jk,ik->i", fs, gram, fs) / (noise + np.einsum("ij,ij->i", fs, feats))
        gain[~ok] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        ok[best] = False
        f = cov @ feats[best]
        cov = cov - np.outer(f, f) / (noise + feats[best] @ f)
    return np.asarray(chosen, dtype=np.int64)


def design_rows(
    known_latency_ms: np.ndarray, k: int, design: Design = Design.ACTIVE, random_state: int | None = 0
) -> np.ndarray:
    """The ``k`` rows to measure, by ``design`` (see :class:`Design`)."""
    if design is Design.ACTIVE:
        return active_design(known_latency_ms, k, random_state=random_state)
    if design is Design.FARTHEST:
        return select_archs(known_latency_ms, k, random_state=random_state)
    n = len(check_X(known_latency_ms, what="known-device latencies"))
    if not 2 <= k <= n:
        raise UsageError(f"K must be between 2 and the {n} archs of the table, got {k}")
    return np.random.default_rng(random_state).choice(n, k, replace=False)


# --------------------------------------------------------------------------- model


def _ridge(z: np.ndarray, t: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Centred ridge: coefficients and intercept of ``t ~ z``."""
    zm, tm = z.mean(axis=0), float(t.mean())
    zc = z - zm
    coef = np.linalg.solve(zc.T @ zc + alpha * np.eye(z.shape[1]), zc.T @ (t - tm))
    return coef, tm - float(zm @ coef)


def relevance(z_rows: np.ndarray, t: np.ndarray, gamma: float) -> np.ndarray:
    """Per-feature scale ``|corr(z_j, t)|^gamma`` on the measured rows (max 1).

    Scaling a standardised feature up lowers its effective ridge penalty, so the
    known devices that track the new one on the K rows carry the combination,
    while ``gamma = 0`` treats every known device alike.
    """
    if gamma == 0:
        return np.ones(z_rows.shape[1])
    zc = z_rows - z_rows.mean(axis=0)
    tc = t - t.mean()
    denom = np.sqrt(np.sum(zc**2, axis=0) * np.sum(tc**2))
    corr = np.abs(zc.T @ tc) / np.maximum(denom, 1e-12)
    scale = corr**gamma
    return scale / max(float(scale.max()), 1e-12)


def meta_tune(
    reference_z: np.ndarray,
    rows: np.ndarray,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    gammas: tuple[float, ...] = DEFAULT_GAMMAS,
) -> tuple[float, float]:
    """The ridge strength and relevance exponent that best predict each known device from the others.

    Every known device in turn plays the new one: fitted on ``rows`` from the other
    known devices and scored (mean squared log error) on all archs.

    Args:
        reference_z: standardised log latencies of the known devices, all archs [n, d].
        rows: the K rows whose values the new device will have.
        alphas: candidate ridge strengths.
        gammas: candidate relevance exponents (see :func:`relevance`).

    Returns:
        ``(alpha, gamma)``.
    """
    d = reference_z.shape[1]
    if d < 2:
        return float(alphas[len(alphas) // 2]), 0.0
    err = np.zeros((len(alphas), len(gammas)))
    for j in range(d):
        others = np.delete(reference_z, j, axis=1)
        target = reference_z[:, j]
        for g, gamma in enumerate(gammas):
            scale = relevance(others[rows], target[rows], gamma)
            feats = others * scale
            for a, alpha in enumerate(alphas):
                coef, b = _ridge(feats[rows], target[rows], alpha)
                err[a, g] += np.mean((feats @ coef + b - target) ** 2)
    a, g = np.unravel_index(int(np.argmin(err)), err.shape)
    log.debug("meta-tuned alpha %.3g gamma %.3g", alphas[a], gammas[g])
    return float(alphas[a]), float(gammas[g])


def meta_tune_alpha(
    reference_z: np.ndarray, rows: np.ndarray, alphas: tuple[float, ...] = DEFAULT_ALPHAS
) -> float:
    """:func:`meta_tune` over ``alphas`` alone (every known device weighted alike)."""
    return meta_tune(reference_z, rows, alphas, (0.0,))[0]


@register_predictor("fewshot")
class FewShotTransfer(JsonWeights, Predictor):
    """New-device latency as a ridge combination of known devices' log latencies.

    ``X`` holds the known devices' latencies (ms) of each arch, one column per
    known device; ``y`` the new device's latencies of the K measured archs.

    Args:
        alpha: ridge strength on the standardised features, or ``"auto"`` to
            meta-tune it by leave-one-known-device-out (needs ``reference`` in fit).
        gamma: relevance exponent (see :func:`relevance`), or ``"auto"`` (tuned jointly).
        alphas: the candidates for ``alpha="auto"``.
        gammas: the candidates for ``gamma="auto"``.
    """

    json_weights = ("coef", "intercept", "mean", "std", "floors_ms", "target_floor_ms", "alpha", "gamma", "scale")

    def __init__(
        self,
        alpha: float | str = "auto",
        gamma: float | str = "auto",
        alphas: tuple[float, ...] | list[float] = DEFAULT_ALPHAS,
        gammas: tuple[float, ...] | list[float] = DEFAULT_GAMMAS,
    ):
        self.alpha = alpha
        self.gamma = gamma
        self.alphas = alphas
        self.gammas = gammas

    def fit(self, X: Any, y: Any, reference: Any = None) -> FewShotTransfer:  # noqa: N803
        """Fit on the K measured archs.

        Args:
            X: known devices' latencies (ms) of the K archs, [K, d].
            y: the new device's latencies (ms) of those archs, [K].
            reference: known devices' latencies of all archs [n, d] (the K rows
                among them); gives the standardisation and, with
                ``alpha="auto"``, the meta-tuning. Without it, X alone is used.
        """
        X, y = check_Xy(X, y)
        if len(y) < 2:
            raise UsageError("few-shot transfer needs at least 2 measured archs")
        ref = X if reference is None else check_X(reference, X.shape[1], "reference")
        self.floors_ms_ = log_floors(ref)
        lref = floored_log(ref, self.floors_ms_)
        self.mean_, self.std_ = lref.mean(axis=0), np.maximum(lref.std(axis=0), 1e-12)
        z = (floored_log(X, self.floors_ms_) - self.mean_) / self.std_
        alphas = tuple(float(a) for a in self.alphas) if self.alpha == "auto" else (float(self.alpha),)
        gammas = tuple(float(g) for g in self.gammas) if self.gamma == "auto" else (float(self.gamma),)
        if reference is not None and (len(alphas) > 1 or len(gammas) > 1):
            zref = (lref - self.mean_) / self.std_
            alpha, gamma = meta_tune(zref, _match_rows(zref, z), alphas, gammas)
        else:  # nothing to tune on: middle of the grids
            alpha, gamma = alphas[len(alphas) // 2], gammas[len(gammas) // 2]
        self.alpha_, self.gamma_ = alpha, gamma
        self.target_floor_ms_ = latency_floor(y)
        t = floored_log(y, self.target_floor_ms_)
        self.scale_ = relevance(z, t, gamma)
        self.coef_, self.intercept_ = _ridge(z * self.scale_, t, alpha)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        X = check_X(X, self.n_features_in_, "known-device latencies")
        z = (floored_log(X, self.floors_ms_) - self.mean_) / self.std_
        return np.exp((z * self.scale_) @ self.coef_ + self.intercept_)

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        super()._load_weights(directory, info)
        self.n_features_in_ = int(self.coef_.shape[0])


def _match_rows(zref: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Indices of ``z``'s rows within ``zref`` (nearest row; exact for rows taken from it)."""
    out = np.empty(len(z), dtype=np.int64)
    for i, row in enumerate(z):
        out[i] = int(np.argmin(np.sum((zref - row) ** 2, axis=1)))
    return out


# --------------------------------------------------------------------------- baseline


def reference_ridge_baseline(
    known_latency_ms: np.ndarray, rows: np.ndarray, y_ms: np.ndarray, n_ref: int = 3
) -> np.ndarray:
    """The plain baseline: least squares on ``n_ref`` reference devices' log latencies.

    The references are the known devices whose log latencies correlate best with
    the new device's on the measured rows. Returns predictions (ms) for every row.
    """
    lat = check_X(known_latency_ms, what="known-device latencies")
    floors = log_floors(lat)
    z = floored_log(lat, floors)
    t = floored_log(np.asarray(y_ms, dtype=np.float64), latency_floor(y_ms))
    corr = np.nan_to_num(
        [abs(np.corrcoef(z[rows, j], t)[0, 1]) if np.ptp(z[rows, j]) > 0 else 0.0 for j in range(z.shape[1])]
    )
    refs = np.argsort(-corr)[: min(n_ref, z.shape[1])]
    coef, b = _ridge(z[rows][:, refs], t, 1e-6)
    return np.exp(z[:, refs] @ coef + b)
