"""A hardware-conditioned, meta-learned few-shot latency predictor (``hwmeta``).

The idea of HELP (Lee et al., NeurIPS 2021), done with closed forms instead of
MAML: a predictor of an architecture's latency, *conditioned* on a device through
that device's latencies on a few reference architectures, *meta-trained* across
the known devices so that a new device needs only K measurements.

* **Architecture encoding.** An arch is described by the known devices'
  standardised latencies of it (measured, for archs of the reference table; for
  any other arch, predicted from its one-hot encoding by a multi-output ridge
  encoder fitted on the table), plus its one-hot encoding itself. This is the
  ridge combination of known devices (:class:`~latkit.predictors.transfer.FewShotTransfer`)
  kept as a feature, with per-op terms beside it.
* **Device conditioning.** The device's latencies on the K reference archs (its
  embedding) fix a closed-form ridge head over those features
  (:mod:`latkit.predictors.meta_head`): no gradient steps, one K x K solve.
* **Meta-training.** Which head (log or linear domain, ridge strength, relevance
  exponent, weight of the per-op terms) is chosen by an inner
  leave-one-known-device-out loop on the same K rows, never by the device being
  predicted; the same loop calibrates a conformal quantile, so each arch gets an
  interval that holds ``coverage`` of the truth on the known devices.

``predict(X)`` takes the space's one-hot encoding like every network-level
predictor, so a fitted ``hwmeta`` is a latency model ``latkit search --predictor``
can use. Saved as JSON arrays with a format version that :meth:`_load_weights`
checks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import StoreError, UsageError
from latkit.predictors.base import (
    Predictor,
    WeightsInfo,
    check_X,
    check_Xy,
    read_json_arrays,
    register_predictor,
    write_json_arrays,
)
from latkit.predictors.meta_head import (
    Domain,
    Head,
    HeadConfig,
    InnerResult,
    default_configs,
    fit_head,
    inner_loop,
)
from latkit.predictors.network import FLOOR_FRACTION, latency_floor
from latkit.predictors.transfer import Design, active_design, design_rows, floored_log, log_floors

log = logging.getLogger(__name__)

#: version of the saved weights' layout; a file of another version is refused
FORMAT_VERSION = 1
ENCODER_RIDGE = 1.0  # ridge strength of the one-hot -> known-device encoder
INNER_ROWS = 2000  # rows the inner loop scores on (a fixed random subsample)
_ROUND = 6  # decimals of the saved standardised table (far below any latency noise)


def standardised(known_latency_ms: np.ndarray, domain: Domain) -> np.ndarray:
    """Known devices' latencies in ``domain``, standardised per column over the rows."""
    v = floored_log(known_latency_ms, log_floors(known_latency_ms)) if domain is Domain.LOG else known_latency_ms
    return (v - v.mean(axis=0)) / np.maximum(v.std(axis=0), 1e-12)


def arch_keys(x: np.ndarray) -> list[bytes]:
    """A hashable key per one-hot row."""
    return [row.tobytes() for row in np.packbits(x > 0.5, axis=1)]


def _encoder(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-output ridge from one-hot rows to standardised known-device features."""
    xm, zm = x.mean(axis=0), z.mean(axis=0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + ENCODER_RIDGE * np.eye(x.shape[1]), xc.T @ (z - zm))
    return w, zm - xm @ w


@register_predictor("hwmeta")
class HardwareMetaPredictor(Predictor):
    """Few-shot latency of a new device, conditioned on K measurements, meta-trained on known devices.

    ``X`` is the space's one-hot encoding. :meth:`fit` also needs the reference
    table: the one-hot encodings of its archs and the known devices' latencies.

    Args:
        domains: candidate domains of the head (``"log"``, ``"linear"``).
        alphas: candidate ridge strengths.
        gammas: candidate relevance exponents (0: every known device alike).
        arch_weights: candidate weights of the per-op (one-hot) terms (0: none).
        coverage: the intervals' target coverage (e.g. 0.9).
        design: how the new device's K archs were chosen (``active``, ``farthest``,
            ``random``): each inner device gets K archs by the same design, chosen
            without its column; ``given`` reuses the new device's K rows.
        random_state: seed of the inner loop's row subsample and designs.
    """

    def __init__(
        self,
        domains: tuple[str, ...] | list[str] = ("log", "linear"),
        alphas: tuple[float, ...] | list[float] = (0.3, 1.0, 3.0, 10.0),
        gammas: tuple[float, ...] | list[float] = (0.0, 1.0, 2.0),
        arch_weights: tuple[float, ...] | list[float] = (0.0, 0.03),
        coverage: float = 0.9,
        design: str = "active",
        random_state: int = 0,
    ):
        self.domains = domains
        self.alphas = alphas
        self.gammas = gammas
        self.arch_weights = arch_weights
        self.coverage = coverage
        self.design = design
        self.random_state = random_state

    def _configs(self) -> list[HeadConfig]:
        try:
            domains = [Domain(d) for d in self.domains]
        except ValueError:
            raise UsageError(f"domains must be among {[d.value for d in Domain]}, got {self.domains!r}") from None
        if not 0 < float(self.coverage) < 1:
            raise UsageError(f"coverage must be between 0 and 1, got {self.coverage}")
        configs = default_configs(domains, self.alphas, self.gammas, self.arch_weights)
        if not configs:
            raise UsageError("hwmeta needs at least one domain, alpha, gamma and arch weight")
        return configs

    def fit(  # noqa: N803
        self,
        X: Any,
        y: Any,
        *,
        reference_X: Any = None,
        reference_ms: Any = None,
        groups: Any = None,
    ) -> HardwareMetaPredictor:
        """Meta-train on the reference table, then adapt to the K measured archs.

        Args:
            X: one-hot encodings of the K measured archs [K, p].
            y: the new device's latencies of them (ms) [K].
            reference_X: one-hot encodings of the reference table's archs [n, p].
            reference_ms: the known devices' latencies of those archs (ms) [n, d].
            groups: hardware id of each known column: in the inner loop a known
                device never sees another column of its own hardware (``--strict``).

        Raises:
            UsageError: no reference, mismatched shapes, fewer than 2 archs or known devices.
        """
        X, y = check_Xy(X, y)
        if reference_X is None or reference_ms is None:
            raise UsageError("hwmeta needs the reference table: fit(X, y, reference_X=..., reference_ms=...)")
        ref_x = check_X(reference_X, X.shape[1], "reference encodings")
        ref_ms = check_X(reference_ms, what="known-device latencies")
        if len(ref_x) != len(ref_ms) or ref_ms.shape[1] < 2 or len(y) < 2:
            raise UsageError(f"hwmeta needs >= 2 measured archs and >= 2 known devices over equal rows; got "
                             f"{len(y)} archs, {ref_ms.shape[1]} devices, {len(ref_x)} vs {len(ref_ms)} rows")
        configs = self._configs()
        z_by = {d: standardised(ref_ms, d) for d in {c.domain for c in configs}}
        self.table_keys_ = np.packbits(ref_x > 0.5, axis=1)
        rows = self._rows_of(X)
        if len(rows) < 2:  # the measured archs are not in the table: tune on a design of the same size
            rows = active_design(ref_ms, len(y), random_state=None)
        inner = self._meta_train(z_by, ref_x, ref_ms, rows, len(y), configs, groups)
        self.domain_, self.quantile_, self.inner_spearman_ = inner.config.domain, inner.quantile, inner.spearman
        self.table_z_ = np.round(z_by[self.domain_], _ROUND)
        self.enc_w_, self.enc_b_ = _encoder(ref_x, self.table_z_)
        self._adapt(X, y, inner.config)
        self.n_features_in_ = X.shape[1]
        log.info("hwmeta: %s head, alpha %g gamma %g arch weight %g, inner Spearman %.3f over %d devices",
                 inner.config.domain.value, inner.config.alpha, inner.config.gamma, inner.config.arch_weight,
                 inner.spearman, inner.n_tasks)
        return self

    def _meta_train(self, z_by: dict[Domain, np.ndarray], ref_x: np.ndarray, ref_ms: np.ndarray, rows: np.ndarray,
                    k: int, configs: list[HeadConfig], groups: Any) -> InnerResult:
        n = len(ref_x)
        rng = np.random.default_rng(self.random_state)
        scored = np.sort(rng.choice(n, INNER_ROWS, replace=False)) if n > INNER_ROWS else np.arange(n)
        grp = None if groups is None else np.asarray(groups)
        if grp is not None and grp.shape != (ref_ms.shape[1],):
            raise UsageError(f"groups must give one hardware id per known device, got shape {grp.shape}")
        rows_for = None
        if self.design != "given":
            try:
                design = Design(self.design)
            except ValueError:
                raise UsageError(f"design must be given or one of {[d.value for d in Design]}, "
                                 f"got {self.design!r}") from None
            k = min(k, len(scored) - 1)

            def rows_for(cols: np.ndarray) -> np.ndarray:
                return scored[design_rows(ref_ms[scored][:, cols], k, design, random_state=self.random_state)]

        return inner_loop(z_by, ref_x, rows, configs, coverage=float(self.coverage), groups=grp, scored=scored,
                          rows_for=rows_for)

    def _table_rows(self, x: np.ndarray) -> np.ndarray:
        """The table row of each arch of ``x``, -1 where the table does not hold it."""
        lookup = {k.tobytes(): i for i, k in enumerate(self.table_keys_)}
        return np.asarray([lookup.get(k, -1) for k in arch_keys(x)], dtype=np.int64)

    def _rows_of(self, x: np.ndarray) -> np.ndarray:
        """Table rows of the archs of ``x`` that the table holds (in order)."""
        idx = self._table_rows(x)
        return idx[idx >= 0]

    def _known_features(self, x: np.ndarray) -> np.ndarray:
        """Standardised known-device features: the table's where it holds the arch, else encoded."""
        idx = self._table_rows(x)
        z = x @ self.enc_w_ + self.enc_b_
        hit = idx >= 0
        z[hit] = self.table_z_[idx[hit]]
        return z

    def _target(self, y: np.ndarray) -> np.ndarray:
        if self.domain_ is Domain.LOG:
            return floored_log(y, self.target_floor_ms_)
        return y / self.target_scale_ms_

    def _adapt(self, x: np.ndarray, y: np.ndarray, config: HeadConfig) -> None:
        self.target_floor_ms_ = latency_floor(y)
        self.target_scale_ms_ = max(float(np.median(y)), 1e-6)
        self.config_ = config
        self.head_ = fit_head(self._known_features(x), x, self._target(y), config)

    def _from_target(self, t: np.ndarray) -> np.ndarray:
        if self.domain_ is Domain.LOG:
            return np.exp(t)
        return np.maximum(t * self.target_scale_ms_, FLOOR_FRACTION * self.target_scale_ms_)

    def _mean_sigma(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        self._check_fitted()
        x = check_X(X, self.n_features_in_, "architecture encodings")
        return self.head_.predict(self.head_.features(self._known_features(x), x))

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Predicted latency (ms) of each one-hot row."""
        return self._from_target(self._mean_sigma(X)[0])

    def predict_interval(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """``(low_ms, high_ms)``: each arch's interval at the fitted ``coverage``."""
        mean, sigma = self._mean_sigma(X)
        half = self.quantile_ * sigma
        return self._from_target(mean - half), self._from_target(mean + half)

    def predict_with_uncertainty(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """``(mean_ms, std_ms)``: the prediction and half its interval's width over the quantile."""
        lo, hi = self.predict_interval(X)
        return self.predict(X), (hi - lo) / (2.0 * max(self.quantile_, 1e-12))

    # ---- persistence ----

    def _save_weights(self, directory: Path) -> WeightsInfo:
        h = self.head_
        write_json_arrays(directory / "weights.json", {
            "table_keys": self.table_keys_, "table_z": self.table_z_, "enc_w": self.enc_w_,
            "enc_b": self.enc_b_, "relevance": h.relevance, "centre": h.centre, "rows_c": h.rows_c,
            "dual_inv": h.dual_inv, "coef": h.coef,
        })
        cfg = self.config_
        extra = {
            "format_version": FORMAT_VERSION, "domain": cfg.domain.value, "alpha": cfg.alpha,
            "gamma": cfg.gamma, "arch_weight": cfg.arch_weight, "intercept": h.intercept, "scale": h.scale,
            "quantile": self.quantile_, "inner_spearman": self.inner_spearman_,
            "target_floor_ms": self.target_floor_ms_, "target_scale_ms": self.target_scale_ms_,
        }
        return WeightsInfo("json", ["weights.json"], extra)

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        e = info.extra
        if e.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{directory}: hwmeta weights format {e.get('format_version')!r}, this latkit reads "
                             f"format {FORMAT_VERSION}; refit with `latkit predictor fit --predictor hwmeta`")
        w = read_json_arrays(directory / "weights.json")
        self.config_ = HeadConfig(Domain(e["domain"]), float(e["alpha"]), float(e["gamma"]), float(e["arch_weight"]))
        self.head_ = Head(w["relevance"].astype(np.float64), self.config_.arch_weight, w["centre"].astype(np.float64),
                          w["rows_c"].astype(np.float64), w["dual_inv"].astype(np.float64),
                          w["coef"].astype(np.float64), float(e["intercept"]), self.config_.alpha, float(e["scale"]))
        self.domain_ = self.config_.domain
        self.table_keys_ = w["table_keys"].astype(np.uint8)
        self.table_z_, self.enc_w_, self.enc_b_ = (w[k].astype(np.float64) for k in ("table_z", "enc_w", "enc_b"))
        self.quantile_, self.inner_spearman_ = float(e["quantile"]), float(e["inner_spearman"])
        self.target_floor_ms_, self.target_scale_ms_ = float(e["target_floor_ms"]), float(e["target_scale_ms"])
        self.n_features_in_ = int(self.enc_w_.shape[0])
