"""The closed-form pieces of the hardware-conditioned predictor (:mod:`latkit.predictors.meta`).

A device is described by its latencies on a few reference archs (the K it had
measured). The *head* maps that description to a predictor of every arch:

    t(a) = b + sum_j w_j s_j z_j(a) + sqrt(lambda) * sum_i v_i x_i(a)

where ``z_j`` are the known devices' standardised latencies of arch ``a`` (in the
log or the linear domain), ``s_j`` their relevance to the new device on the K
rows, ``x`` the arch's one-hot encoding (per-op costs no known device shows),
and ``(w, v)`` the ridge solution on the K rows. The solve is done in its dual
form (a K x K system), which also gives each arch's leverage and the
leave-one-out residuals of the K rows: the interval of an arch is
``prediction ± q * scale * sqrt(1 + leverage)``, ``scale`` the device's
leave-one-out residual RMS and ``q`` a conformal quantile calibrated on the
known devices (:mod:`latkit.predictors.meta`).

The inner leave-one-device-out loop that chooses the head's configuration and
calibrates ``q`` (:func:`inner_loop`) is here too: every known device in turn
plays the new one, with its column hidden except on the K rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from latkit.core.errors import UsageError
from latkit.predictors.transfer import relevance


class Domain(str, Enum):
    """The units the head is linear in."""

    LOG = "log"  # log latency: multiplicative differences between devices
    LINEAR = "linear"  # latency itself: additive per-op costs combine linearly


@dataclass(frozen=True)
class HeadConfig:
    """One candidate head: domain, ridge strength, relevance exponent, weight of the arch features."""

    domain: Domain
    alpha: float
    gamma: float
    arch_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.domain, Domain):
            raise UsageError(f"head domain must be one of {[d.value for d in Domain]}, got {self.domain!r}")
        if not (self.alpha > 0 and self.gamma >= 0 and self.arch_weight >= 0):
            raise UsageError(
                f"head needs alpha > 0, gamma >= 0, arch_weight >= 0; got {self.alpha}, {self.gamma}, "
                f"{self.arch_weight}"
            )


@dataclass(frozen=True)
class Head:
    """A fitted head (dual form): enough to predict, and to size intervals, for any arch."""

    relevance: np.ndarray  # [d] scale of each known device's feature
    arch_weight: float
    centre: np.ndarray  # [m] mean feature vector of the K rows
    rows_c: np.ndarray  # [K, m] centred features of the K rows
    dual_inv: np.ndarray  # [K, K] inverse of (rows_c rows_c^T + alpha I)
    coef: np.ndarray  # [m]
    intercept: float
    alpha: float
    scale: float  # RMS of the leave-one-out residuals on the K rows (target units)

    def features(self, z: np.ndarray, x: np.ndarray | None) -> np.ndarray:
        """The head's feature rows of archs with known-device features ``z`` and one-hots ``x``."""
        return head_features(z, x, self.relevance, self.arch_weight)

    def predict(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, sigma)`` in target units; ``sigma = scale * sqrt(1 + leverage)``."""
        mean = feats @ self.coef + self.intercept
        fc = feats - self.centre
        proj = fc @ self.rows_c.T  # [n, K]
        lev = (np.sum(fc**2, axis=1) - np.sum((proj @ self.dual_inv) * proj, axis=1)) / self.alpha
        lev = np.maximum(lev, 0.0) + 1.0 / len(self.rows_c)
        return mean, self.scale * np.sqrt(1.0 + lev)


def head_features(z: np.ndarray, x: np.ndarray | None, scale: np.ndarray, arch_weight: float) -> np.ndarray:
    """``[z * scale, sqrt(arch_weight) * x]`` (the one-hot block only when weighted and given)."""
    if arch_weight > 0 and x is not None:
        return np.hstack([z * scale, np.sqrt(arch_weight) * x])
    return z * scale


def fit_head(z_rows: np.ndarray, x_rows: np.ndarray | None, t: np.ndarray, config: HeadConfig) -> Head:
    """The ridge head on K rows, solved in dual form (cheap for any feature count).

    Args:
        z_rows: standardised known-device features of the K rows [K, d].
        x_rows: their one-hot encodings [K, p] (None: no arch features).
        t: the new device's target values of the K rows (domain units).
        config: the head's configuration.
    """
    k = len(t)
    if k < 2:
        raise UsageError("the hardware-conditioned head needs at least 2 measured archs")
    scale = relevance(z_rows, t, config.gamma)
    feats = head_features(z_rows, x_rows, scale, config.arch_weight)
    centre, tm = feats.mean(axis=0), float(t.mean())
    fc, tc = feats - centre, t - tm
    dual_inv = np.linalg.inv(fc @ fc.T + config.alpha * np.eye(k))
    beta = dual_inv @ tc
    coef = fc.T @ beta
    # leave-one-out residuals of a ridge with intercept: e_i / (1 - h_ii)
    hat = np.diag(fc @ fc.T @ dual_inv) + 1.0 / k
    loo = (tc - fc @ coef) / np.maximum(1.0 - hat, 1e-3)
    rms = float(np.sqrt(np.mean(loo**2)))
    return Head(scale, config.arch_weight, centre, fc, dual_inv, coef, tm - float(centre @ coef),
                config.alpha, max(rms, 1e-3 * max(float(np.std(t)), 1e-12)))


def _ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


@dataclass(frozen=True)
class InnerResult:
    """What the inner loop chose: the configuration, its mean inner Spearman, the conformal quantile."""

    config: HeadConfig
    spearman: float
    quantile: float
    n_tasks: int


def _tasks(d: int, groups: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
    """(inner target, its feature columns): every other column, minus its hardware when grouped."""
    out = []
    for j in range(d):
        keep = np.arange(d) != j
        if groups is not None:
            keep &= groups != groups[j]
        if keep.any():
            out.append((j, np.flatnonzero(keep)))
    return out


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    r = _ranks(v)
    r -= r.mean()
    return r / max(float(np.sqrt(r @ r)), 1e-12)


def _score_configs(z_by_domain: dict[Domain, np.ndarray], x: np.ndarray | None, task_rows: list[np.ndarray],
                   scored: np.ndarray, configs: list[HeadConfig], tasks: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Spearman ``[config, task]`` of every candidate head on every inner task.

    The features of a (domain, gamma, arch weight) are built once per task and every
    ridge strength reuses one eigendecomposition of the K x K Gram matrix.
    """
    out = np.full((len(configs), len(tasks)), -1.0)
    index = {c: i for i, c in enumerate(configs)}
    for ti, (j, cols) in enumerate(tasks):
        rows = task_rows[ti]
        held = np.setdiff1d(scored, rows)
        xr, xh = (None, None) if x is None else (x[rows], x[held])
        for (domain, gamma, weight), alphas in _grouped(configs).items():
            z = z_by_domain[domain]
            zr, t = z[rows][:, cols], z[rows, j]
            scale = relevance(zr, t, gamma)
            fr = head_features(zr, xr, scale, weight)
            centre = fr.mean(axis=0)
            frc = fr - centre
            evals, u = np.linalg.eigh(frc @ frc.T)
            pu = ((head_features(z[held][:, cols], xh, scale, weight) - centre) @ frc.T) @ u
            ut = u.T @ (t - t.mean())
            truth = _centred_ranks(z[held, j])
            for alpha in alphas:
                pred = pu @ (ut / (np.maximum(evals, 0.0) + alpha))
                out[index[HeadConfig(domain, alpha, gamma, weight)], ti] = float(_centred_ranks(pred) @ truth)
    return out


def _grouped(configs: list[HeadConfig]) -> dict[tuple[Domain, float, float], list[float]]:
    groups: dict[tuple[Domain, float, float], list[float]] = {}
    for c in configs:
        groups.setdefault((c.domain, c.gamma, c.arch_weight), []).append(c.alpha)
    return groups


def _normalised_residuals(z: np.ndarray, x: np.ndarray | None, rows: np.ndarray, held: np.ndarray, j: int,
                          cols: np.ndarray, config: HeadConfig) -> np.ndarray:
    """``|t - mean| / sigma`` of inner task ``j`` on the held rows."""
    head = fit_head(z[rows][:, cols], None if x is None else x[rows], z[rows, j], config)
    mean, sigma = head.predict(head.features(z[held][:, cols], None if x is None else x[held]))
    return np.abs(z[held, j] - mean) / sigma


def inner_loop(
    z_by_domain: dict[Domain, np.ndarray],
    x: np.ndarray | None,
    rows: np.ndarray,
    configs: list[HeadConfig],
    *,
    coverage: float = 0.9,
    groups: np.ndarray | None = None,
    scored: np.ndarray | None = None,
    rows_for: Callable[[np.ndarray], np.ndarray] | None = None,
) -> InnerResult:
    """Choose the head configuration and calibrate the interval on the known devices alone.

    Every known device ``j`` in turn plays the new device: its column is read on
    ``rows`` only, the head is fitted from the other known devices (and, with
    ``groups``, none of ``j``'s own hardware, mirroring ``--strict``), and scored
    by Spearman on the ``scored`` rows not among ``rows``. The configuration with
    the best mean wins. The conformal quantile is the ``coverage`` quantile of the
    pooled normalised residuals ``|t - mean| / sigma``, each task's taken under
    the configuration the *other* tasks choose, so that the choice does not make
    the calibration optimistic.

    Args:
        z_by_domain: every domain's standardised known-device features, all archs [n, d].
        x: one-hot encodings of all archs [n, p], or None.
        rows: the K rows the new device will have measured.
        configs: the candidates.
        coverage: the interval's target coverage.
        groups: hardware id of each known column (for the strict mode), or None.
        scored: the rows to score on (default all); a subsample keeps this cheap.
        rows_for: the design, given a task's feature columns: each inner device then
            gets the K rows the design picks *without* it, as the new device did (a
            design chosen with a device's column would flatter that device and make
            the interval too narrow). None: every task uses ``rows``.
    """
    z0 = next(iter(z_by_domain.values()))
    tasks = _tasks(z0.shape[1], groups)
    if not tasks:
        raise UsageError("the inner loop needs at least 2 known devices of different hardware; add known columns "
                         "or use the fewshot model")
    scored = np.arange(len(z0)) if scored is None else scored
    task_rows = [rows if rows_for is None else rows_for(cols) for _, cols in tasks]
    rho = _score_configs(z_by_domain, x, task_rows, scored, configs, tasks)
    total = rho.sum(axis=1)
    resid = []
    for ti, (j, cols) in enumerate(tasks):
        others = total - rho[:, ti] if len(tasks) > 1 else total
        cfg = configs[int(np.argmax(others))]
        held = np.setdiff1d(scored, task_rows[ti])
        resid.append(_normalised_residuals(z_by_domain[cfg.domain], x, task_rows[ti], held, j, cols, cfg))
    pooled = np.concatenate(resid)
    level = min(1.0, np.ceil((len(pooled) + 1) * coverage) / len(pooled))  # split-conformal correction
    best = int(np.argmax(total))
    return InnerResult(configs[best], float(total[best] / len(tasks)), float(np.quantile(pooled, level)), len(tasks))


def default_configs(
    domains: tuple[Domain, ...] | list[Domain],
    alphas: tuple[float, ...] | list[float],
    gammas: tuple[float, ...] | list[float],
    arch_weights: tuple[float, ...] | list[float],
) -> list[HeadConfig]:
    """The grid of candidate heads."""
    return [HeadConfig(Domain(dm), float(a), float(g), float(w))
            for dm in domains for a in alphas for g in gammas for w in arch_weights]
