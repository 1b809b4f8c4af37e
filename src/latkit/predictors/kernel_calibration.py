"""Calibrating a device's kernel sum on a few measured networks.

Kernels timed one by one miss what only a whole network shows: the
runtime's memory planning across layers, cache reuse between neighbours,
the threads' hand-offs. On one device these effects are close to a constant
factor of the network's time, with a small fixed part, so a few measured
networks pin them down: ``measured ~ scale * (kernel sum + overhead) + offset_ms``.

The form is chosen by leave-one-out error on the networks given: no
calibration (the raw sum), a ratio (``offset_ms = 0``) or the affine fit.
Both fits minimise the *relative* error (each network weighted by
``1 / measured``), so a large network does not decide the fit alone. An
affine fit needs three networks; with fewer, only the ratio is tried.
The chosen calibration is stored with the predictors
(:attr:`KernelPredictors.calibration`), with the leave-one-out error that
chose it, and every later prediction applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.predictors.kernel_network import predict_graphs
from latkit.predictors.kernels import KernelPredictors
from latkit.profiler.kernels import KernelGraph


class CalibrationForm(str, Enum):
    """How a network's raw prediction maps to its measured time."""

    NONE = "none"
    RATIO = "ratio"
    AFFINE = "affine"


@dataclass(frozen=True)
class KernelCalibration:
    """A fitted calibration and the evidence that chose it.

    Attributes:
        form: the chosen form.
        scale: multiplies the raw prediction.
        offset_ms: added after scaling.
        networks: how many measured networks it was fitted on.
        loo_mape_pct: leave-one-out mean absolute percentage error of the chosen form.
        raw_mape_pct: the same error of the raw (uncalibrated) predictions.
    """

    form: CalibrationForm
    scale: float
    offset_ms: float
    networks: int
    loo_mape_pct: float
    raw_mape_pct: float

    def to_dict(self) -> dict[str, Any]:
        """The form stored in ``predictors.json`` (``scale`` and ``offset_ms`` are what predictions use)."""
        return {"form": self.form.value, "scale": self.scale, "offset_ms": self.offset_ms, "networks": self.networks,
                "loo_mape_pct": self.loo_mape_pct, "raw_mape_pct": self.raw_mape_pct}  # fmt: skip


def _fit(form: CalibrationForm, raw: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """(scale, offset) minimising the squared relative error of ``scale * raw + offset``."""
    if form is CalibrationForm.NONE:
        return 1.0, 0.0
    if form is CalibrationForm.RATIO:
        r = raw / measured
        return float(np.sum(r) / np.sum(r * r)), 0.0
    a = np.column_stack([raw, np.ones_like(raw)]) / measured[:, None]
    coef, *_ = np.linalg.lstsq(a, np.ones_like(raw), rcond=None)
    return float(coef[0]), float(coef[1])


def _loo_mape(form: CalibrationForm, raw: np.ndarray, measured: np.ndarray) -> float:
    errors = []
    for i in range(len(raw)):
        keep = np.arange(len(raw)) != i
        scale, offset = _fit(form, raw[keep], measured[keep])
        errors.append(abs(scale * raw[i] + offset - measured[i]) / measured[i])
    return float(100 * np.mean(errors))


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float]) -> KernelCalibration:
    """Choose and fit the calibration of raw predictions ``raw_ms`` against ``measured_ms``.

    Raises:
        UsageError: fewer than two networks, lengths differ, or a time is not positive.
    """
    raw, measured = np.asarray(raw_ms, dtype=np.float64), np.asarray(measured_ms, dtype=np.float64)
    if raw.shape != measured.shape or len(raw) < 2:
        raise UsageError(f"calibration needs two or more networks with a prediction and a measurement each, "
                         f"got {len(raw)} predictions and {len(measured)} measurements")
    if min(raw.min(), measured.min()) <= 0:
        raise UsageError("calibration needs positive predicted and measured times")
    raw_mape = float(100 * np.mean(np.abs(raw - measured) / measured))
    forms = [CalibrationForm.RATIO] + ([CalibrationForm.AFFINE] if len(raw) >= 3 else [])
    scored = [(raw_mape, CalibrationForm.NONE)] + [(_loo_mape(f, raw, measured), f) for f in forms]
    loo, form = min(scored, key=lambda s: s[0])
    scale, offset = _fit(form, raw, measured)
    return KernelCalibration(form, scale, offset, len(raw), loo, raw_mape)


def calibrate(predictors: KernelPredictors, graphs: Sequence[KernelGraph],
              measured_ms: Sequence[float]) -> KernelCalibration:
    """Fit ``predictors``' calibration on grouped ``graphs`` measured at ``measured_ms``, and set it.

    The raw prediction of a graph is its kernel sum plus one overhead (what
    :meth:`KernelPredictors.calibrated` scales). Save the predictors afterwards
    to keep it.
    """
    previous = predictors.calibration
    predictors.calibration = {}
    try:
        raw = [p.latency_ms for p in predict_graphs(predictors, graphs)]
    finally:
        predictors.calibration = previous
    fit = fit_calibration(raw, measured_ms)
    predictors.calibration = fit.to_dict() if fit.form is not CalibrationForm.NONE else {}
    return fit


def calibrate_on_space(predictors: KernelPredictors, device: Any, space: str, networks: int, resolution: int, *,
                       seed: int = 0, protocol: Any = None,
                       on_progress: Callable[[int, int, str], None] | None = None) -> KernelCalibration:
    """Measure ``networks`` random members of a built-in search space end to end and calibrate on them.

    The members are exported by latkit's own export (cached) in the format the
    device runs (ONNX, or TFLite for LiteRT), read and grouped with the
    predictors' fusion rules, and timed with the measurement protocol
    (``protocol``, default settings when None). ``on_progress`` is called as
    ``(done, total, network key)`` after each network is measured.
    """
    from latkit.devices.base import ModelFormat
    from latkit.profiler.export import BuiltModel
    from latkit.profiler.graph import read_graph
    from latkit.profiler.kernel_patterns import group_kernels
    from latkit.profiler.protocol import measure_one
    from latkit.profiler.spaces import get_space

    found = get_space(space)
    rng = np.random.default_rng(seed)
    models = [BuiltModel(found.network(found.sample(rng), resolution)) for _ in range(networks)]
    fmt = getattr(device, "model_format", ModelFormat.ONNX)  # the file the device runs is the graph predicted
    graphs = [group_kernels(read_graph(m.file(fmt)), predictors.rules) for m in models]
    measured = []
    for m in models:
        measured.append(measure_one(device, m, protocol).latency_ms)
        if on_progress is not None:
            on_progress(len(measured), len(models), m.key)
    return calibrate(predictors, graphs, measured)


__all__ = ["CalibrationForm", "KernelCalibration", "calibrate", "calibrate_on_space", "fit_calibration"]
