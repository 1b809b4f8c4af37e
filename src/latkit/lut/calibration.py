"""Per-device calibration: from a LUT sum to the end-to-end latency.

A LUT sums operators measured one by one, each in its own model. A whole
network runs them back to back, without per-model call overhead and with
warmer caches, so the sum and the end-to-end latency differ by a device-specific
amount. The calibration is the least-squares fit, over a few networks measured
both ways, of

    e2e_ms ~ a * lut_sum_ms + b * n_measurable_ops + c

``b`` absorbs a per-op overhead (or saving) and ``c`` a per-inference one.
Every operator timed alone pays one call into the runtime, which the network
pays once: ``a * lut_sum + b * n_ops`` with ``b < 0`` (the ``overhead`` form)
takes that call back off each operator. A negative ``b`` is kept only there:
beside an offset ``c`` the two trade against each other and fit noise.
With fewer than 3 networks (or networks that do not separate the terms) the
fit falls back to fewer terms, down to the ratio ``a = sum(e2e) / sum(lut)``;
also when a fit would give the fastest operator no time at all
(``a * min_op + b <= 0``: a saved call larger than the smallest operator).

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

from latkit.core.reprs import short_repr
from latkit._version import __version__
from latkit.devices.precision import Precision
from latkit.core.errors import StoreError, UsageError
from latkit.lut.store import LUT, utc_now

KIND = "e2e_linear"
LOO_LIMIT = 0.25  # a fit whose leave-one-out error passes this is flagged poor: its figures are not to be trusted
MARGIN = 0.8  # a fuller form replaces a simpler one only when its leave-one-out error is below this share of it
FORMS = ("ratio", "overhead", "lstsq2", "lstsq3")  # simplest first
FORM_NAMES = {"ratio": "scale only", "overhead": "scale + per-operator call", "lstsq2": "scale + offset",
              "lstsq3": "scale + per-operator + offset"}  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """``e2e_ms = a * lut_sum_ms + b * n_ops + c``, with how well it fitted in and out of sample."""

    a: float
    b: float
    c: float
    method: str  # "lstsq3" (a, b, c), "lstsq2" (a, c), "overhead" (a, b) or "ratio" (a only)
    n_points: int
    rmse_ms: float  # residual RMS on the fitted points
    max_rel_err: float  # largest |fit - e2e| / e2e on the fitted points
    loo_max_rel_err: float | None = None  # largest error predicting a network fitted without it (None: < 2 points)
    refused: str = ""  # the other forms tried and why each was not used
    lut_sum_lo_ms: float | None = None  # the calibrated range of LUT sums
    lut_sum_hi_ms: float | None = None

    def __repr__(self) -> str:
        return short_repr(self, 'a', 'b', 'c', 'method', 'n_points', 'max_rel_err', 'loo_max_rel_err')

    def apply(self, lut_sum_ms: float, n_ops: int) -> float:
        """The calibrated end-to-end latency (ms) of a network."""
        return self.a * lut_sum_ms + self.b * n_ops + self.c

    @property
    def quality(self) -> str:
        """``good``, ``poor`` (leave-one-out error above :data:`LOO_LIMIT`) or ``unchecked`` (too few networks)."""
        return fit_quality(self.to_dict())

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Calibration:
        """Inverse of :meth:`to_dict` (a calibration saved before the out-of-sample check loads as unchecked).

        Raises:
            StoreError: fields are missing or unknown.
        """
        try:
            return cls(**d)  # type: ignore[arg-type]
        except TypeError as exc:
            raise StoreError(f"calibration parameters {d!r} are malformed ({exc}); recalibrate") from exc


def fit_quality(cal: Mapping[str, object]) -> str:
    """A saved calibration's quality: ``good``, ``poor`` or ``unchecked`` (see :attr:`Calibration.quality`)."""
    loo = cal.get("loo_max_rel_err")
    if not isinstance(loo, (int, float)):
        return "unchecked"
    return "good" if loo <= LOO_LIMIT else "poor"


def describe_fit(cal: Mapping[str, object]) -> str:
    """One line on a saved calibration: its form, coefficients and how well it held out of sample."""
    a, b, c = (float(cal.get(k, 0.0)) for k in "abc")  # type: ignore[arg-type]
    form = f"e2e = {a:.3f} * lut_sum" + (f" {b:+.4f} * n_ops" if b else "") + (f" {c:+.3f} ms" if c else "")
    method = str(cal.get("method", ""))
    loo, n = cal.get("loo_max_rel_err"), cal.get("n_points")
    if isinstance(loo, (int, float)):
        held = f"leave-one-out error up to {loo:.1%} over {n} networks"
        if loo > LOO_LIMIT:
            held = f"POOR fit: {held}, above {LOO_LIMIT:.0%}; its figures are not to be trusted, recalibrate"
    else:
        held = f"not checked out of sample ({n} network(s))"
    return f"{FORM_NAMES.get(method, method)} fit, {form}; {held}"


def _solve(form: str, s: np.ndarray, k: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """The least-squares coefficients of ``form`` on the points, or None where it is not determined."""
    if form == "ratio":
        return float(y.sum() / s.sum()), 0.0, 0.0
    cols = {"overhead": [s, k], "lstsq2": [s, np.ones_like(s)], "lstsq3": [s, k, np.ones_like(s)]}[form]
    x = np.column_stack(cols)
    if s.size < len(cols) or np.linalg.matrix_rank(x) < len(cols):
        return None  # e.g. every network has the same op count: b and c are not separable
    sol = [float(v) for v in np.linalg.lstsq(x, y, rcond=None)[0]]
    if form == "lstsq3":
        return sol[0], sol[1], sol[2]
    return (sol[0], sol[1], 0.0) if form == "overhead" else (sol[0], 0.0, sol[1])


def _implausible(coef: tuple[float, float, float], s: np.ndarray, k: np.ndarray, min_op_ms: float | None) -> str:
    """Why a fit cannot describe the device ("" if it can).

    A non-positive scale means a larger LUT sum measured faster (networks timed
    in different load states); a negative per-operator term beside an offset
    lets the two trade against each other (a network of many small operators
    then costs less than their sum can explain); a saved call must be smaller
    than the fastest operator; and a fit must predict a positive latency for
    every calibration network and every corner of the calibrated range (LUT
    sum by operator count), where a search lands.
    """
    a, b, c = coef
    if a <= 0:
        return f"non-positive scale a = {a:.3g}"
    if b < 0 and c != 0:
        return f"negative per-operator overhead b = {b:.3g} ms beside an offset"
    if min_op_ms is not None and a * min_op_ms + b <= 0:
        return "the fastest operator would cost no time"
    corners = [(si, ki) for si in (s.min(), s.max()) for ki in (k.min(), k.max())]
    low = min([a * si + b * ki + c for si, ki in zip(s, k)] + [a * si + b * ki + c for si, ki in corners])
    if low <= 0:
        return f"predicts {low:.3g} ms (not positive) inside the calibrated range"
    return ""


def _loo(form: str, s: np.ndarray, k: np.ndarray, y: np.ndarray) -> float | None:
    """The largest relative error predicting each network from a fit on the others (None: < 2 points; inf:
    some fit without a network is not determined)."""
    if s.size < 2:
        return None
    worst = 0.0
    for i in range(s.size):
        keep = np.arange(s.size) != i
        coef = _solve(form, s[keep], k[keep], y[keep])
        if coef is None:
            return math.inf
        a, b, c = coef
        worst = max(worst, abs(a * s[i] + b * k[i] + c - y[i]) / y[i])
    return worst


def _pick(s: np.ndarray, k: np.ndarray, y: np.ndarray, min_op_ms: float | None):
    """The chosen form, its coefficients and leave-one-out error, and the forms refused (with why)."""
    best: tuple[str, tuple[float, float, float], float | None] | None = None
    refused: list[str] = []
    for form in FORMS:
        coef = _solve(form, s, k, y)
        if coef is None:
            continue
        why = _implausible(coef, s, k, min_op_ms) if form != "ratio" else ""
        if why:
            refused.append(f"{form}: {why}")
            continue
        loo = _loo(form, s, k, y)
        if best is None:
            best = (form, coef, loo)
        elif loo is not None and math.isfinite(loo) and (best[2] is None or loo < MARGIN * best[2]):
            best = (form, coef, loo)
        else:
            shown = "not checkable" if loo is None or not math.isfinite(loo) else f"{loo:.1%}"
            refused.append(f"{form}: leave-one-out error {shown}, not clearly below {best[0]}'s")
    assert best is not None  # the ratio is always determined and plausible
    return best, refused


def fit_calibration(
    lut_sums: Sequence[float], n_ops: Sequence[int], e2e_ms: Sequence[float], min_op_ms: float | None = None
) -> Calibration:
    """Fit a calibration from networks measured both ways, judged out of sample (pure function).

    Tries the forms simplest first (the ratio ``a``, ``a * sum + b * n_ops``,
    ``a * sum + c``, then ``a * sum + b * n_ops + c``). A form is refused when it
    is implausible (:func:`_implausible`: non-positive scale, a negative
    per-operator term beside an offset, a zero-cost operator given
    ``min_op_ms``, or a non-positive prediction in the calibrated range); a
    fuller form replaces a simpler one only when its
    leave-one-out error (each network predicted by a fit on the others) is
    below :data:`MARGIN` of the simpler one's: in-sample residuals always
    favour more parameters. The leave-one-out error is kept with the fit, and
    one above :data:`LOO_LIMIT` marks it poor (:attr:`Calibration.quality`).

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
    (method, (a, b, c), loo), refused = _pick(s, k, y, min_op_ms)
    fit = a * s + b * k + c
    return Calibration(
        a=a, b=b, c=c, method=method, n_points=int(s.size),
        rmse_ms=float(math.sqrt(np.mean((fit - y) ** 2))),
        max_rel_err=float(np.max(np.abs(fit - y) / y)),
        loo_max_rel_err=None if loo is None else float(loo), refused="; ".join(refused),
        lut_sum_lo_ms=float(s.min()), lut_sum_hi_ms=float(s.max()),
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
