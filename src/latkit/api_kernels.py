"""The Python API, continued: a device's kernel predictors (``latkit kernels ...``).

Like :mod:`latkit.api`, each function is a thin, typed wrapper over the library
function the matching CLI command calls (``latkit kernels build``, ``kernels
detect-fusion``, ``kernels calibrate``, ``kernels transfer``), with the CLI's
defaults and its arguments checked at the door. The kernel measurements go to a
LUT (default ``kernels.db`` in latkit's LUT cache) and the predictors to a folder
beside it, where :func:`latkit.predict_model` and ``latkit predict`` find them.

Example::

    import latkit

    preds = latkit.build_kernel_predictors("cpu:onnxruntime", lut="k.db", budget="5m")
    latkit.calibrate_kernels("cpu:onnxruntime", lut="k.db", networks=5)
    print(latkit.predict_model("model.onnx", preds).latency_ms)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latkit.api import (StageProgress, _check_device, _opened, _precision, _protocol, _protocol_config,
                        open_device)
from latkit.core import checks

if TYPE_CHECKING:  # typing only: these imports are heavy
    from latkit.devices.base import Device
    from latkit.devices.precision import Precision
    from latkit.predictors.kernel_calibration import KernelCalibration
    from latkit.predictors.kernels import KernelPredictors
    from latkit.profiler.kernels import FusionRules
    from latkit.profiler.protocol import ProtocolConfig

__all__ = ["build_kernel_predictors", "detect_fusion", "calibrate_kernels", "transfer_kernels"]


def _budget_s(budget: Any) -> float:
    """``budget`` as seconds: a duration as ``--budget`` takes it (``"30m"``), or a number of seconds."""
    from latkit.predictors.kernel_build import MAX_BUDGET_S, parse_budget

    if isinstance(budget, str):
        return parse_budget(budget, "budget")
    checks.number("budget", budget)
    if budget > MAX_BUDGET_S:
        raise checks.UsageError(f"budget {budget!r}: at most a week ({MAX_BUDGET_S:g} s)")
    return float(budget)


def _kernel_lut(lut: Any) -> Path:
    """The kernel LUT's path: ``lut``, or ``kernels.db`` in latkit's LUT cache."""
    from latkit.predictors.kernels import default_kernel_lut

    checks.path("lut", lut, none_ok=True)
    return Path(lut) if lut is not None else default_kernel_lut()


@contextmanager
def _predictor_dir(out: str | Path | None) -> Iterator[None]:
    """A block that measures, then saves predictors to ``out``: the folder is made ready first
    (a file in the way fails before the measuring, not after it) and removed again, when
    this made it, if the block fails."""
    if out is None:
        yield
        return
    from latkit.core.files import check_output_dir, removed_on_failure

    with removed_on_failure(out):
        check_output_dir(out, "kernel predictor folder")
        yield


def _check_measuring(quick: Any, config: Any, on_progress: Any) -> None:
    """The arguments every kernel verb takes: how to measure, and whom to tell."""
    checks.flag("quick", quick)
    _protocol_config("config", config)
    checks.function("on_progress", on_progress)


def _progress(on_progress: StageProgress | None, stage: str) -> Any:
    """The library's ``(phase, done, total, key)`` events as ``(stage, done, total, "phase key")``."""
    if on_progress is None:
        return None
    return lambda phase, done, total, key: on_progress(stage, done, total, f"{phase} {key}")


def build_kernel_predictors(
    device: Device | str,
    *,
    lut: str | Path | None = None,
    budget: str | float = "30m",
    per_type: int = 30,
    rounds: int = 3,
    out: str | Path | None = None,
    quick: bool = False,
    config: ProtocolConfig | None = None,
    on_progress: StageProgress | None = None,
) -> KernelPredictors:
    """Measure kernel configurations on ``device`` (resumable) and fit its kernel predictors
    (``latkit kernels build``); they are saved to ``out``.

    Args:
        device: an open device or its URI (opened and closed here).
        lut: the LUT the measurements go to (default ``kernels.db`` in latkit's LUT cache);
            a rerun measures only the configurations it lacks.
        budget: measuring time, as ``"30m"``, ``"90s"``, ``"1h"`` or seconds (at most a week).
        per_type: configurations first drawn per kernel type.
        rounds: adaptive rounds, each measuring near the configurations predicted worst.
        out: the predictor folder (default ``<lut>.kernels/<device>-fp32``, where
            :func:`calibrate_kernels` and ``latkit predict`` look).
        quick: short measurement protocol (smoke runs); ignored with ``config``.
        config: the measurement protocol; default the standard one.
        on_progress: called as ``("kernels", done, total, "phase key")`` after each measured
            configuration (the phases: ``overhead``, ``sampled``, ``adaptive 1``...).

    Returns:
        The fitted :class:`~latkit.predictors.kernels.KernelPredictors`.
    """
    _check_device(device)
    path, budget_s = _kernel_lut(lut), _budget_s(budget)
    checks.integer("per_type", per_type, 1, checks.MAX_KERNEL_CONFIGS)
    checks.integer("rounds", rounds, 0)
    checks.path("out", out, none_ok=True)
    _check_measuring(quick, config, on_progress)
    from latkit.lut.store import LUT
    from latkit.predictors.kernel_build import BuildSettings, build_kernel_predictors as _build
    from latkit.predictors.kernels import default_predictor_dir

    settings = BuildSettings(budget_s=budget_s, per_type=per_type, rounds=rounds)
    with _predictor_dir(out):
        dev = _opened(device)
        try:
            with LUT.open(path, create=True) as store:
                preds = _build(dev, store, settings, protocol=_protocol(config, quick),
                               on_progress=_progress(on_progress, "kernels"))
        finally:
            if dev is not device:
                dev.close()
        preds.save(out or default_predictor_dir(path, dev.uri, preds.precision))
    return preds


def detect_fusion(
    device: Device | str,
    *,
    lut: str | Path | None = None,
    quick: bool = False,
    config: ProtocolConfig | None = None,
    on_progress: StageProgress | None = None,
) -> FusionRules:
    """Time ``A``, ``B`` and ``A -> B`` for candidate operator pairs on ``device`` and store the pairs
    its runtime fuses in the LUT (``latkit kernels detect-fusion``), where a build finds them.

    Args:
        device: an open device or its URI (opened and closed here); one that runs ONNX files.
        lut: the kernel LUT (default ``kernels.db`` in latkit's LUT cache), created if missing.
        quick: short measurement protocol (smoke runs); ignored with ``config``.
        config: the measurement protocol; default the standard one.
        on_progress: called as ``("detect-fusion", done, total, model key)`` after each timed model.

    Returns:
        The :class:`~latkit.profiler.kernels.FusionRules`: the fused pairs, and per pair the
        evidence (``a_ms``, ``b_ms``, ``ab_ms``, ``fused``).
    """
    _check_device(device)
    path = _kernel_lut(lut)
    _check_measuring(quick, config, on_progress)
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.profiler.fusion import detect_fusion as _detect

    progress = (lambda done, total, key, m: on_progress("detect-fusion", done, total, key)) if on_progress else None
    with LUT.open(path, create=True) as store:  # a bad LUT fails before the measuring
        dev = _opened(device)
        try:
            rules = _detect(dev, _protocol(config, quick), on_progress=progress)
            runtime = dev.info().runtime
        finally:
            if dev is not device:
                dev.close()
        KernelStore(store).save_rules(dev.uri, runtime, rules)
    return rules


def calibrate_kernels(
    device: Device | str,
    *,
    space: str = "proxyless_mobile",
    networks: int = 5,
    resolution: int = 224,
    precision: str | Precision | None = None,
    lut: str | Path | None = None,
    predictors: str | Path | None = None,
    quick: bool = False,
    config: ProtocolConfig | None = None,
    on_progress: StageProgress | None = None,
) -> KernelCalibration:
    """Measure a few networks of ``space`` end to end on ``device`` and store the kernel sum's
    calibration with its kernel predictors (``latkit kernels calibrate``).

    Args:
        device: an open device or its URI (opened and closed here); the predictors must be its own.
        space: the search space whose members are measured.
        networks: members measured end to end (at least 2).
        resolution: their input resolution.
        precision: the predictors' precision, ``fp32`` (None, the default), ``fp16`` or ``int8``.
        lut: the kernel LUT the predictors were built from (default ``kernels.db`` in latkit's LUT cache).
        predictors: the predictor folder (default the one a build wrote beside ``lut``); the
            calibration is saved into it.
        quick: short measurement protocol (smoke runs); ignored with ``config``.
        config: the measurement protocol; default the standard one.
        on_progress: called as ``("calibrate", done, total, network)`` after each measured network.

    Returns:
        The :class:`~latkit.predictors.kernel_calibration.KernelCalibration`: its form, scale,
        offset and leave-one-out error beside the uncalibrated one.
    """
    _check_device(device)
    checks.text("space", space)
    checks.integer("networks", networks, 2, 100)
    checks.integer("resolution", resolution, 8, checks.MAX_RESOLUTION)
    _precision("precision", precision)
    path = _kernel_lut(lut)
    checks.path("predictors", predictors, none_ok=True)
    _check_measuring(quick, config, on_progress)
    from latkit.devices.precision import parse_precision
    from latkit.predictors.kernel_calibration import calibrate_on_space
    from latkit.predictors.kernels import default_predictor_dir, load_device_predictors

    prec, uri = parse_precision(precision), device if isinstance(device, str) else device.uri
    preds = load_device_predictors(predictors, path, uri, prec)
    progress = (lambda done, total, key: on_progress("calibrate", done, total, key)) if on_progress else None
    dev = _opened(device)
    try:
        fit = calibrate_on_space(preds, dev, space, networks, resolution,
                                 protocol=_protocol(config, quick), on_progress=progress)
    finally:
        if dev is not device:
            dev.close()
    preds.save(predictors or default_predictor_dir(path, uri, prec))
    return fit


def transfer_kernels(
    device: Device | str,
    source: str | Path | KernelPredictors,
    *,
    samples: int = 40,
    threads: int = 1,
    lut: str | Path | None = None,
    budget: str | float = "10m",
    out: str | Path | None = None,
    quick: bool = False,
    config: ProtocolConfig | None = None,
    on_progress: StageProgress | None = None,
) -> KernelPredictors:
    """Adapt a known device's kernel predictors to ``device`` from a few kernels measured on it
    (``latkit kernels transfer``); the adapted predictors are saved to ``out``.

    Args:
        device: an open device or its URI (opened here with ``threads``, and closed).
        source: the known device's predictor folder, or loaded
            :class:`~latkit.predictors.kernels.KernelPredictors`.
        samples: kernel configurations measured on the device.
        threads: the threads a device given as URI runs with.
        lut: the LUT the measurements go to (default ``kernels.db`` in latkit's LUT cache).
        budget: measuring time, as ``"10m"``, ``"90s"``, ``"1h"`` or seconds (at most a week).
        out: the predictor folder (default ``<lut>.kernels/<device>-<precision>``).
        quick: short measurement protocol (smoke runs); ignored with ``config``.
        config: the measurement protocol; default the standard one.
        on_progress: called as ``("kernels", done, total, "transfer key")`` after each measured configuration.

    Returns:
        The adapted :class:`~latkit.predictors.kernels.KernelPredictors` (``provenance["transfer"]``
        holds the rows used and the overall speed ratio).
    """
    from latkit.predictors.kernels import KernelPredictors as _Predictors

    _check_device(device)
    if not isinstance(source, _Predictors):
        checks.path("source", source)
    checks.integer("samples", samples, 1, checks.MAX_KERNEL_CONFIGS)
    checks.integer("threads", threads, 1, checks.MAX_THREADS)
    path, budget_s = _kernel_lut(lut), _budget_s(budget)
    checks.path("out", out, none_ok=True)
    _check_measuring(quick, config, on_progress)
    from latkit.lut.store import LUT
    from latkit.predictors.kernel_build import transfer_to_device
    from latkit.predictors.kernels import default_predictor_dir

    known = source if isinstance(source, _Predictors) else _Predictors.load(source)
    with _predictor_dir(out):
        dev = open_device(device, threads=threads) if isinstance(device, str) else device
        try:
            with LUT.open(path, create=True) as store:
                preds = transfer_to_device(dev, store, known, samples, budget_s=budget_s, precision=known.precision,
                                           protocol=_protocol(config, quick),
                                           on_progress=_progress(on_progress, "kernels"))  # fmt: skip
        finally:
            if dev is not device:
                dev.close()
        preds.save(out or default_predictor_dir(path, dev.uri, preds.precision))
    return preds
