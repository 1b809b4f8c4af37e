"""Per-device calibration: from a LUT sum to the end-to-end latency.

A LUT sums operators measured one by one, each in its own model. A whole
network runs them back to back, without per-model call overhead and with
warmer caches, so the sum and the end-to-end latency differ by a device-specific
amount. The calibration is the least-squares fit, over a few networks measured
both ways, of

    e2e_ms ~ a * lut_sum_ms + b * n_measurable_ops + c

``b`` absorbs a per-op overhead (or saving) and ``c`` a per-inference one.
With fewer than 3 networks (or networks that do not separate the terms) the
fit falls back to fewer terms, down to the ratio ``a = sum(e2e) / sum(lut)``;
also when the 3-term fit would give the fastest operator no time at all
(``a * min_op + b <= 0``), which only a noisy measurement produces.

This module holds what a calibration is: the model, the fit and where it is
stored in the LUT. How a device is calibrated (which networks, measured how) is
:mod:`latkit.lut.calibrate`.

A calibration belongs to one device at one precision: an int8 network runs its
operators with other kernels and other per-op costs than the fp32 one, so a fit
made at int8 is only ever applied to int8 estimates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from latkit._version import __version__
from latkit.devices.precision import Precision
from latkit.core.errors import StoreError, UsageError
from latkit.lut.store import LUT, utc_now

KIND = "e2e_linear"


@dataclass(frozen=True)
class Calibration:
    """``e2e_ms = a * lut_sum_ms + b * n_ops + c``, with how well it fitted."""

    a: float
    b: float
    c: float
    method: str  # "lstsq3" (a, b, c), "lstsq2" (a, c) or "ratio" (a only)
    n_points: int
    rmse_ms: float  # residual RMS on the fitted points
    max_rel_err: float  # largest |fit - e2e| / e2e on the fitted points

    def apply(self, lut_sum_ms: float, n_ops: int) -> float:
        """The calibrated end-to-end latency (ms) of a network."""
        return self.a * lut_sum_ms + self.b * n_ops + self.c

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Calibration:
        """Inverse of :meth:`to_dict`.

        Raises:
            StoreError: fields are missing or unknown.
        """
        try:
            return cls(**d)  # type: ignore[arg-type]
        except TypeError as exc:
            raise StoreError(f"calibration parameters {d!r} are malformed ({exc}); recalibrate") from exc


def _design(lut_sums: np.ndarray, n_ops: np.ndarray, terms: int) -> np.ndarray:
    cols = [lut_sums, n_ops, np.ones_like(lut_sums)]
    return np.column_stack(cols if terms == 3 else [cols[0], cols[2]])


def fit_calibration(
    lut_sums: Sequence[float], n_ops: Sequence[int], e2e_ms: Sequence[float], min_op_ms: float | None = None
) -> Calibration:
    """Fit a calibration from networks measured both ways (pure function).

    Uses the 3-term model when there are at least 3 points, the design has
    full rank and (given ``min_op_ms``, the fastest operator's LUT latency) it
    leaves that operator a positive latency; else ``a * sum + c`` when there
    are 2+ distinct sums, else the ratio of totals. A fit whose slope ``a`` is
    not positive is noise (a network with a larger LUT sum measured faster) and
    falls through to the next form.

    Raises:
        UsageError: lengths differ, no points, or non-positive / non-finite values.
    """
    s = np.asarray(lut_sums, dtype=np.float64)
    k = np.asarray(n_ops, dtype=np.float64)
    y = np.asarray(e2e_ms, dtype=np.float64)
    if not (s.shape == k.shape == y.shape) or s.ndim != 1 or s.size == 0:
        raise UsageError("calibration needs equally long, non-empty lut_sums, n_ops and e2e_ms")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y))) or s.min() <= 0 or y.min() <= 0:
        raise UsageError("calibration latencies must be finite and positive")
    coef, method = None, "ratio"
    for terms, name in ((3, "lstsq3"), (2, "lstsq2")):
        if s.size < terms:
            continue
        x = _design(s, k, terms)
        if np.linalg.matrix_rank(x) < terms:
            continue  # e.g. every network has the same op count: b and c are not separable
        sol = np.linalg.lstsq(x, y, rcond=None)[0]
        if sol[0] <= 0:
            continue  # a larger LUT sum measured faster: the networks were timed in different load states
        if terms == 3 and min_op_ms is not None and sol[0] * min_op_ms + sol[1] <= 0:
            continue  # an operator that costs no time: the per-op term is fitting noise
        coef = (sol[0], sol[1], sol[2]) if terms == 3 else (sol[0], 0.0, sol[1])
        method = name
        break
    if coef is None:
        coef = (float(y.sum() / s.sum()), 0.0, 0.0)
    a, b, c = (float(v) for v in coef)
    fit = a * s + b * k + c
    return Calibration(
        a=a, b=b, c=c, method=method, n_points=int(s.size),
        rmse_ms=float(math.sqrt(np.mean((fit - y) ** 2))),
        max_rel_err=float(np.max(np.abs(fit - y) / y)),
    )  # fmt: skip


def save_calibration(
    lut: LUT,
    device_uri: str,
    cal: Calibration,
    provenance: Mapping[str, object] | None = None,
    *,
    precision: Precision = Precision.FP32,
) -> None:
    """Store ``cal`` as the device's newest calibration at ``precision`` (committed)."""
    prov = {"latkit_version": __version__, "fitted_at": utc_now(), "precision": precision.value,
            **(provenance or {})}  # fmt: skip
    lut.save_calibration(device_uri, KIND, cal.to_dict(), prov, precision=precision)


def load_calibration(
    lut: LUT, device_uri: str, *, precision: Precision = Precision.FP32
) -> Calibration | None:
    """The device's newest calibration at ``precision``, or None if it has none (one
    fitted at another precision is never returned)."""
    rows = [r for r in lut.calibrations(device_uri, precision=precision) if r["kind"] == KIND]
    return Calibration.from_dict(rows[-1]["params"]) if rows else None
