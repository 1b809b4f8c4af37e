"""The Python API: latkit's verbs as functions a script or notebook can call.

Each function is a thin, typed wrapper over the library function the matching
CLI command calls, so ``latkit profile`` and :func:`profile` measure the same
way. Like the CLI, this module is a front door: a precision, a layout or a
latency target given as text (``"int8"``, ``"nhwc"``, ``"60%"``) is parsed here
once, and the library below receives the typed value. Heavy libraries (torch, onnxruntime, xgboost) load only when a verb that
needs them runs; ``import latkit`` itself stays cheap.

Example::

    import latkit

    dev = latkit.open_device("cpu:onnxruntime")
    latkit.profile(dev, "proxyless_mobile_w05", "ops.db", resolution=64, quick=True)
    est = latkit.estimate("ops.db", "arch.json")
    print(est.total_ms)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latkit.core import checks
from latkit.core.errors import UnknownNameError
from latkit.core.files import removed_on_failure

if TYPE_CHECKING:  # typing only: these imports are heavy
    from latkit.deploy.layout import InputLayout
    from latkit.deploy.train import TrainResult
    from latkit.devices.base import Device
    from latkit.devices.precision import Precision
    from latkit.lut.estimate import Estimate
    from latkit.lut.store import LUT
    from latkit.predictors.base import Predictor
    from latkit.predictors.collect import SampleReport
    from latkit.profiler.measurement import Measurement
    from latkit.profiler.protocol import ProtocolConfig, Statistic
    from latkit.profiler.runner import ProfileReport
    from latkit.deploy.export import ExportReport
    from latkit.deploy.inspect import ModelMetadata
    from latkit.devices.layers import LayerProfile
    from latkit.pipeline.runner import PipelineResult
    from latkit.search.run import SearchOutcome
    from latkit.search.target import Target

__all__ = [
    "open_device", "profile", "open_lut", "estimate", "latency_model", "sample_latencies", "fit_predictor",
    "load_predictor",
    "predict", "predict_model", "search_arch", "train", "export", "measure", "measure_layers", "inspect", "run",
]

# what an on_progress callback receives, here as in `run`: (stage, done, total, message); the CLI's
# progress display (latkit.cli.progress.Stages) is such a callback
StageProgress = Callable[[str, int, int, str], None]


def open_device(uri: str, threads: int = 1, **options: Any) -> Device:
    """Open a device to measure on.

    Args:
        uri: ``cpu:onnxruntime``, ``cpu:litert``, ``cuda:0``, ``adb:SERIAL``,
            ``adb+tcp://127.0.0.1:6555`` ... (see ``latkit devices``).
        threads: inference threads.
        **options: backend options (e.g. ``clock="thread"`` on the CPU backends).

    Returns:
        The device; close it with ``close()`` when done.

    Raises:
        UnknownNameError: no backend handles ``uri``. DeviceError: it cannot run here.
    """
    checks.text("uri", uri)
    checks.integer("threads", threads, 1, checks.MAX_THREADS)
    from latkit.devices import open_device as _open

    return _open(uri, threads=threads, **options)


def _resolution(name: str, value: Any) -> None:
    checks.integer(name, value, 1, checks.MAX_RESOLUTION, none_ok=True)


def _epochs(name: str, value: Any) -> None:
    checks.integer(name, value, 1, 10_000)


def _threads(name: str, value: Any) -> None:
    checks.integer(name, value, 1, checks.MAX_THREADS, none_ok=True)


def _seed(name: str, value: Any) -> None:
    checks.integer(name, value, 0)


def _steps(name: str, value: Any) -> None:
    checks.integer(name, value, 1, none_ok=True)


MAX_CLASSES = 100_000  # classifier outputs; more than any dataset latkit trains on has classes

# keyword options several verbs pass on (search, train, run), checked by name at the door
_RUN_OPTIONS = {"epochs": _epochs, "train_epochs": _epochs, "max_steps": _steps, "seed": _seed,
                "threads": _threads, "resolution": _resolution, "limit": _steps}


def _precision(name: str, value: Any) -> None:
    """A precision as text or :class:`Precision` (its text is parsed where it is used)."""
    from latkit.devices.precision import Precision as _Precision

    checks.instance(name, value, (str, _Precision), "fp32, fp16 or int8")


def _layout(name: str, value: Any) -> None:
    from latkit.deploy.layout import InputLayout as _Layout

    checks.instance(name, value, (str, _Layout), "nchw or nhwc")


def _protocol_config(name: str, value: Any) -> None:
    from latkit.profiler.protocol import ProtocolConfig as _Config

    checks.instance(name, value, _Config, "a latkit.profiler.protocol.ProtocolConfig")


def _texts_or_text(name: str, value: Any) -> None:
    checks.text(name, value) if isinstance(value, str) else checks.texts(name, value)


def _optional_text(name: str, value: Any) -> None:
    checks.text(name, value, none_ok=True)


def _count(name: str, value: Any) -> None:
    checks.integer(name, value, 1, none_ok=True)


def _nonnegative(name: str, value: Any) -> None:
    checks.integer(name, value, 0)


def _any_number(name: str, value: Any) -> None:
    checks.number(name, value, none_ok=True)


# the search's own options (SearchConfig's fields) with a type to check at the door
_SEARCH_OPTIONS = {"algorithm": checks.text, "queries": _count, "eval_samples": _count, "resume": checks.flag,
                   "plots": checks.flag, "max_images": _count, "smooth_samples": _count, "train_steps": _count,
                   "inherit": checks.flag, "data": checks.text,
                   "algorithm_options": checks.mapping}  # fmt: skip
# PipelineConfig's settings that latkit.run takes as keywords, each with its check
_PIPELINE_OPTIONS = {"resolution": _resolution, "threads": _threads, "search_epochs": _epochs,
                     "warmup_epochs": _nonnegative, "train_epochs": _epochs, "max_steps_per_epoch": _count,
                     "calibration_networks": _count, "eval_samples": _count, "formats": _texts_or_text,
                     "profile_quick": checks.flag, "profile_sample": _count, "max_retries": _nonnegative,
                     "seed": _seed, "tolerance": _any_number}  # fmt: skip


_PROFILE_OPTIONS = {"resolution": _resolution, "limit": _count, "quick": checks.flag, "precision": _precision,
                    "config": _protocol_config,
                    "passes": lambda n, v: checks.integer(n, v, 1, checks.MAX_PASSES)}  # fmt: skip


def _check_device(device: Any) -> None:
    """A device URI or an open device (something that can load a model)."""
    if isinstance(device, str):
        checks.text("device", device)
    else:
        checks.has_methods("device", device, ("open", "info"), "a device URI or an open device (latkit.open_device)")
        if getattr(device, "closed", False) is True:
            raise checks.UsageError(f"device {getattr(device, 'uri', device)} is closed; open it again with latkit.open_device")


def _choice(name: str, value: Any, kind: type[Enum]) -> Any:
    """``value`` as a member of the str Enum ``kind`` (a name the CLI takes as text), or one
    UnknownNameError naming ``name`` and the members."""
    checks.text(name, value)
    try:
        return kind(value)
    except ValueError:
        raise UnknownNameError(name, value, [m.value for m in kind]) from None


def _arch(name: str, arch: Any) -> str | Path:
    """An architecture as ``--arch`` takes it: a file, the space's native text, or the native form as
    a Python value (a list of operator names, a dict), which is turned into that text here."""
    if isinstance(arch, (list, tuple, Mapping)):
        try:
            return json.dumps(dict(arch) if isinstance(arch, Mapping) else list(arch), allow_nan=False)
        except (TypeError, ValueError):
            raise checks.ArgumentTypeError(f"{name} must be a file, the space's native text or its operators "
                                           f"as a list of names, not {str(arch)[:60]!r}") from None
    checks.path(name, arch)
    return arch


def _opened(device: Device | str | None, precision: Precision | None = None) -> Device | None:
    """``device`` opened when given as a URI (the caller closes what this opened), checked to run
    ``precision``; an open device is used as it is."""
    if device is None or not isinstance(device, str):
        return device
    from latkit.devices.precision import check_precision

    dev = open_device(device)
    try:
        if precision is not None:
            check_precision(dev, precision)
    except BaseException:
        dev.close()
        raise
    return dev


class _FiniteLatency:
    """A latency model whose every answer is checked: NaN or a negative latency stops the search
    with one line instead of steering it to nonsense."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def latency_ms(self, arch: Any) -> float:
        return checks.finite_result("latency_model.latency_ms", self._model.latency_ms(arch))

    def min_latency(self, space: Any) -> tuple[float, Any]:
        ms, arch = self._model.min_latency(space)
        return checks.finite_result("latency_model.min_latency", ms), arch


def _protocol(config: ProtocolConfig | None, quick: bool, statistic: str | Statistic | None = None) -> ProtocolConfig:
    """The measurement protocol a verb measures with: ``config``, else the quick or the standard one,
    reporting ``statistic`` when one is given (as ``--quick`` and ``--statistic``)."""
    from latkit.profiler.protocol import Preset, ProtocolConfig, parse_statistic

    if config is None:
        config = ProtocolConfig.preset(Preset.QUICK) if quick else ProtocolConfig()
    return parse_statistic(statistic).apply(config) if statistic is not None else config


def profile(
    device: Device | str,
    space: str,
    lut: str | Path,
    *,
    arch: str | Path | None = None,
    resolution: int | None = None,
    limit: int | None = None,
    precision: str | Precision | None = None,
    config: ProtocolConfig | None = None,
    quick: bool = False,
    statistic: str | Statistic | None = None,
    passes: int = 1,
    on_progress: StageProgress | None = None,
) -> ProfileReport:
    """Measure a search space's operators on ``device`` into the LUT file ``lut`` (resumable).

    Args:
        device: an open device or its URI (opened and closed here).
        space: search space name (see ``latkit spaces``).
        lut: SQLite LUT file, created if missing; operators it holds are skipped.
        arch: only this network's operators (as for :func:`estimate`; a list of names too), not all the space's.
        resolution: input resolution (default the space's).
        limit: measure at most this many operators.
        precision: ``fp32`` (None, the default), ``fp16`` or ``int8``; the device must run it.
        config: measurement protocol; default the standard one.
        quick: few samples per operator (smoke runs, not real LUTs); ignored with ``config``.
        statistic: the figure stored, ``p5`` (None, the default), ``p10``, ``p25`` or ``median`` (one per LUT).
        passes: measure the operators this many times over, in fresh sessions, keeping each one's lowest figure.
        on_progress: called after each operator as ``("profile", done, total, key)``, the
            events of :func:`run` (``latkit.cli.progress.Stages()`` draws them as the CLI does).

    Returns the report: measured, skipped and failed operators.
    """
    _check_device(device)
    checks.text("space", space)
    checks.path("lut", lut)
    arch = _arch("arch", arch) if arch is not None else None
    checks.options({"resolution": resolution, "limit": limit, "quick": quick, "passes": passes,
                    "precision": precision, "config": config}, _PROFILE_OPTIONS)  # fmt: skip
    checks.function("on_progress", on_progress)
    from latkit.devices.precision import check_precision, parse_precision
    from latkit.lut.store import LUT as _LUT, check_statistic
    from latkit.profiler.runner import profile_ops

    specs, wanted = _specs(space, arch, resolution), parse_precision(precision)
    protocol = _protocol(config, quick, statistic)
    dev = open_device(device) if isinstance(device, str) else device
    try:
        prec = check_precision(dev, wanted)
        with _LUT.open(lut, create=True) as store:
            check_statistic(store, dev.info().uri, protocol.quantile, precision=prec)  # one statistic per LUT
            progress = (lambda d, t, key, m: on_progress("profile", d, t, key)) if on_progress else None
            return profile_ops(dev, specs, store, protocol, limit, on_progress=progress, precision=prec,
                               passes=passes)
    finally:
        if dev is not device:
            dev.close()


def _specs(space: str, arch: str | Path | None, resolution: int | None) -> list[Any]:
    """The operators :func:`profile` measures: one network's, or every one of the space."""
    from latkit.profiler.spaces import get_space
    from latkit.profiler.spaces.load import load_network

    if arch is not None:
        return load_network(get_space(space), arch, resolution)[0].measurable_specs()
    return list(get_space(space).operators(resolution))


def open_lut(path: str | Path, *, create: bool = False, readonly: bool = False) -> LUT:
    """Open a latency lookup table (an SQLite file); use it in a ``with`` block.

    Raises:
        StoreError: missing (without ``create``), damaged or of an unknown schema.
    """
    checks.path("path", path)
    checks.flag("create", create)
    checks.flag("readonly", readonly)
    from latkit.lut.store import LUT as _LUT

    return _LUT.open(path, create=create, readonly=readonly)


def estimate(
    lut: str | Path | LUT,
    arch: str | Path | Sequence[str],
    *,
    space: str | None = None,
    resolution: int | None = None,
    device: str | None = None,
    precision: str | Precision | None = None,
    calibration: bool = True,
    classes: int | None = None,
) -> Estimate:
    """Estimate a network's latency as the sum of its operators' LUT rows, calibrated when the device has a calibration.

    Args:
        lut: a LUT file or an open :class:`~latkit.lut.store.LUT`.
        arch: an arch.json, a net.config, or an architecture of ``space``: its native text, or
            its operator names as a list (what ``latkit lut estimate --arch`` takes as text).
        space: the search space of a textual ``arch``.
        resolution: input resolution (default the arch's own or the space's).
        device: device URI in the LUT (default its only one).
        precision: rows summed (default the only precision the LUT holds).
        calibration: apply the device's stored calibration if it has one
            (``Estimate.calibrated`` says whether it had).
        classes: price the classifier with this many outputs (the trained
            network's classes; default the classifier ``arch`` has).

    Returns:
        The estimate: ``total_ms``, ``lut_sum_ms`` and one entry per layer.

    Raises:
        MissingOpsError: the LUT lacks some of the network's operators.
    """
    if isinstance(lut, (str, Path)) or not hasattr(lut, "done_keys"):
        checks.path("lut", lut)
    arch = _arch("arch", arch)
    checks.text("space", space, none_ok=True)
    checks.integer("resolution", resolution, 1, checks.MAX_RESOLUTION, none_ok=True)
    checks.text("device", device, none_ok=True)
    checks.flag("calibration", calibration)
    _precision("precision", precision)
    checks.integer("classes", classes, 1, MAX_CLASSES, none_ok=True)
    from latkit.devices.precision import parse_precision
    from latkit.lut.estimate import estimate as _estimate
    from latkit.profiler.spaces import get_space
    from latkit.profiler.spaces.load import load_network

    prec = parse_precision(precision) if precision is not None else None
    network, _ = load_network(get_space(space) if space else None, arch, resolution)
    if classes is not None:
        from latkit.profiler.spaces.base import with_classes

        network = with_classes(network, classes)
    if not isinstance(lut, (str, Path)):
        return _estimate(lut, network, device, calibration, precision=prec)
    with open_lut(lut, readonly=True) as store:
        return _estimate(store, network, device, calibration, precision=prec)


def latency_model(
    space: str,
    lut: str | Path,
    *,
    device: str | None = None,
    resolution: int | None = None,
    precision: str | None = None,
    classes: int | None = 10,
    calibrated: bool | None = None,
) -> Any:
    """The latency model ``latkit search`` and ``latkit run`` search with: the space's LUT tables.

    Calibrated when the device has a calibration at ``precision`` (its
    ``provenance["kind"]`` is then ``lut-calibrated``, else ``lut``), with the
    classifier at ``classes`` outputs (default 10, the default dataset's; None:
    the space's own). Pass it to :func:`search_arch`; a relative target is
    resolved on it by :func:`latkit.search.target.resolve_on_model`.

    Raises:
        MissingOpsError: the LUT lacks operators (the classifier at ``classes`` included).
        StoreError: ``calibrated=True`` and the device has no calibration.
    """
    checks.text("space", space)
    checks.path("lut", lut)
    checks.text("device", device, none_ok=True)
    checks.integer("resolution", resolution, 1, checks.MAX_RESOLUTION, none_ok=True)
    _precision("precision", precision)
    checks.integer("classes", classes, 1, MAX_CLASSES, none_ok=True)
    if calibrated is not None:
        checks.flag("calibrated", calibrated)
    from latkit.devices.precision import parse_precision
    from latkit.lut.tables import TableLatencyModel
    from latkit.profiler.spaces import get_space

    precision = parse_precision(precision) if precision is not None else None
    with open_lut(lut, readonly=True) as table:
        return TableLatencyModel.from_lut(get_space(space), table, device, resolution, calibrated=calibrated,
                                          classes=classes, precision=precision)  # fmt: skip


def fit_predictor(
    csv: str | Path,
    space: str,
    target: str,
    out_dir: str | Path,
    *,
    predictor: str = "xgboost",
    k: int | None = None,
    known: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    target_csv: str | Path | None = None,
    design: str = "active",
    random_state: int = 0,
) -> Predictor:
    """Fit a latency predictor of the ``target`` column of a latency CSV and save it to ``out_dir``.

    Args:
        csv: latency CSV (``arch_index, arch, <device>...``).
        space: the space of the ``arch`` column.
        target: the device column to predict.
        out_dir: folder the predictor is saved to (JSON, no pickle).
        predictor: registered predictor name (``latkit predictor list``).
        k: fit on only ``k`` architectures (few-shot).
        known: known-device columns used as features (``fewshot``).
        params: the predictor's parameters.
        target_csv: a CSV holding the ``target`` column (e.g. ``sample_latencies``' on your device).
        design: ``hwmeta``: how the ``k`` architectures are chosen among those measured
            (``active``, the default, ``farthest`` or ``random``).
        random_state: seed.
    """
    checks.path("csv", csv)
    checks.text("space", space)
    checks.text("target", target)
    checks.path("out_dir", out_dir)
    checks.text("predictor", predictor)
    checks.integer("k", k, 1, none_ok=True)
    checks.texts("known", known, none_ok=True)
    checks.mapping("params", params)
    checks.path("target_csv", target_csv, none_ok=True)
    checks.integer("random_state", random_state, 0)
    from latkit.predictors.evaluate import fit_from_csv
    from latkit.predictors.transfer import Design

    chosen = _choice("design", design, Design)
    with removed_on_failure(out_dir):
        return fit_from_csv(csv, space, target, out_dir, predictor=predictor, params=params, k=k,
                            known=list(known) if known is not None else None, target_csv=target_csv,
                            random_state=random_state, design=chosen)  # fmt: skip


def sample_latencies(
    device: Device | str,
    space: str,
    n: int,
    out: str | Path,
    *,
    resolution: int | None = None,
    seed: int = 0,
    precision: str | Precision | None = None,
    column: str | None = None,
    classes: int | None = 10,
    from_csv: str | Path | None = None,
    config: ProtocolConfig | None = None,
    quick: bool = False,
    on_progress: StageProgress | None = None,
) -> SampleReport:
    """Measure ``n`` sampled architectures of ``space`` end to end into the latency CSV ``out`` (resumable).

    The file is what :func:`fit_predictor` and ``latkit predictor eval`` read (an ``arch`` column, one
    latency column: ``column``, default the device URI); as ``latkit predictor sample``.

    Args:
        device: an open device or its URI (opened and closed here).
        space: search space name (one with networks).
        n: architectures to sample (seeded by ``seed``); a rerun measures only those ``out`` lacks.
        out: the CSV, created or extended (its other rows and columns are kept).
        resolution: input resolution (default the space's).
        precision: ``fp32`` (None, the default), ``fp16`` or ``int8``; the device must run it.
        column: the latency column's name.
        classes: the networks' classifier outputs (None or 0: the space's own).
        from_csv: draw the architectures from this latency CSV's ``arch`` column (so the new
            column shares rows with its device columns), as ``--from-csv``.
        config: measurement protocol; default the standard one.
        quick: few samples per measurement (smoke runs); ignored with ``config``.
        on_progress: called as ``("sampling", done, total, message)``, the events of :func:`run`.
    """
    _check_device(device)
    checks.text("space", space)
    checks.integer("n", n, 1, checks.MAX_SAMPLED_ARCHS)
    checks.path("out", out)
    checks.options({"resolution": resolution, "seed": seed, "precision": precision, "config": config, "quick": quick},
                   {"resolution": _resolution, "seed": _seed, "precision": _precision, "config": _protocol_config,
                    "quick": checks.flag})  # fmt: skip
    checks.text("column", column, none_ok=True)
    checks.integer("classes", classes, 0, none_ok=True)
    checks.path("from_csv", from_csv, none_ok=True)
    checks.function("on_progress", on_progress)
    from latkit.devices.precision import check_precision, parse_precision
    from latkit.predictors.collect import sample_latencies as _sample

    sp, pool = _sampled_space(space, resolution, from_csv)
    progress = (lambda done, total, msg: on_progress("sampling", done, total, msg)) if on_progress else None
    dev = open_device(device) if isinstance(device, str) else device
    try:
        prec = check_precision(dev, parse_precision(precision))
        return _sample(dev, sp, n, out, resolution=resolution, seed=seed, config=_protocol(config, quick),
                       precision=prec, column=column, classes=classes or None, pool=pool, on_progress=progress)
    finally:
        if dev is not device:
            dev.close()


def _sampled_space(space: str, resolution: int | None, from_csv: str | Path | None) -> tuple[Any, list[Any] | None]:
    """The space :func:`sample_latencies` samples (``resolution`` checked against it, before a device
    opens) and the architectures it draws from: ``from_csv``'s, or None (the space's own)."""
    from latkit.predictors.data import parse_archs, read_latency_csv
    from latkit.profiler.spaces import get_space

    sp = get_space(space)
    sp.check_resolution(resolution)
    return sp, parse_archs(space, read_latency_csv(from_csv).archs) if from_csv is not None else None


def load_predictor(directory: str | Path) -> Predictor:
    """Load a saved predictor (its ``predict(X)`` takes feature rows).

    Raises:
        StoreError: unreadable, or saved by an incompatible library version.
    """
    checks.path("directory", directory)
    from latkit.predictors.base import load

    return load(directory)


def predict(
    predictor_dir: str | Path, archs: Sequence[str], *, reference_csv: str | Path | None = None
) -> list[float]:
    """Latency (ms) of each architecture (the space's native text) from a saved predictor.

    Args:
        predictor_dir: folder written by :func:`fit_predictor`.
        archs: architectures of the predictor's space.
        reference_csv: known-device latencies for a few-shot predictor (default its own CSV).
    """
    checks.path("predictor_dir", predictor_dir)
    checks.texts("archs", archs)
    checks.path("reference_csv", reference_csv, none_ok=True)
    from latkit.predictors.evaluate import predict_archs

    return [float(v) for v in predict_archs(predictor_dir, list(archs), reference_csv=reference_csv)]


def predict_model(
    model: Any,
    predictors: str | Path | Any,
    *,
    input_shape: tuple[int, ...] | None = None,
) -> Any:
    """Predict any model's latency from its kernels (``latkit predict FILE``).

    Args:
        model: an ONNX or TFLite file, or a torch ``nn.Module`` (then ``input_shape`` is needed).
        predictors: a folder written by ``latkit kernels build``, or loaded
            :class:`~latkit.predictors.kernels.KernelPredictors`.
        input_shape: fixes the input shape (a module's, or a file's dynamic dimensions).

    Returns:
        The :class:`~latkit.predictors.kernels.NetworkPrediction`: ``latency_ms``, one entry per kernel,
        and the operators no predictor covers with the fallback used.
    """
    import os

    if isinstance(model, (str, os.PathLike)):
        checks.path("model", model)
    else:
        checks.has_methods("model", model, ("forward",), "an ONNX or TFLite file, or a torch nn.Module")
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list)):
            raise checks.ArgumentTypeError(f"input_shape must be a tuple of whole numbers, not {input_shape!r}")
        for i, dim in enumerate(input_shape):
            checks.integer(f"input_shape[{i}]", dim, 1, checks.MAX_DIMENSION)
    from latkit.predictors.kernel_network import predict_model as _predict
    from latkit.predictors.kernels import KernelPredictors

    if isinstance(predictors, (str, os.PathLike)):
        checks.path("predictors", predictors)
        predictors = KernelPredictors.load(predictors)
    checks.instance("predictors", predictors, KernelPredictors,
                    "a folder written by `latkit kernels build`, or loaded KernelPredictors", none_ok=False)
    return _predict(model, predictors, input_shape)


def search_arch(
    space: str, latency_model: Any, target_ms: float, out_dir: str | Path = "search_out", **options: Any
) -> SearchOutcome:
    """Search ``space`` for the most accurate architecture within ``target_ms``.

    (Not ``latkit.search``: that name is the search subpackage.)

    Args:
        space: search space name.
        latency_model: a LUT file (as ``latkit search --lut``: its tables at ``resolution``,
            calibrated when the device has a calibration, the classifier at ``data``'s classes),
            or any model with ``latency_ms(arch)`` and ``min_latency(space)``, e.g. :func:`latency_model`'s.
        target_ms: the latency budget.
        out_dir: result folder (one this call creates is removed again if it fails before writing to it).
        **options: ``data``, ``on_progress``, ``on_stage`` (see :func:`latkit.search.run.run_search`) and
            the fields of :class:`latkit.search.run.SearchConfig` (algorithm, epochs, seed...).
    """
    checks.text("space", space)
    if isinstance(latency_model, (str, Path)):
        if not Path(latency_model).is_file():
            raise checks.UsageError(f"latency_model must be a LUT file or a latency model, not {str(latency_model)!r}"
                                    " (no such file)")
    else:
        checks.has_methods("latency_model", latency_model, ("latency_ms", "min_latency"),
                           "a LUT path or a latency model such as latkit.latency_model(space, lut)")
    checks.number("target_ms", target_ms)
    checks.path("out_dir", out_dir)
    from dataclasses import fields

    from latkit.search.run import SearchConfig, run_search

    known = {f.name for f in fields(SearchConfig)} - {"target_ms"}
    checks.known_options("search_arch", options, known | {"data", "on_progress", "on_stage", "config"})
    checks.options(options, {"on_progress": checks.function, "on_stage": checks.function, **_RUN_OPTIONS,
                             **_SEARCH_OPTIONS})  # fmt: skip

    data = options.pop("data", "digits")
    if isinstance(latency_model, (str, Path)):
        latency_model = _lut_model(space, latency_model, data, options.get("resolution"))
    latency_model = _FiniteLatency(latency_model)
    if "config" in options:  # the gradient search's settings, by their name before SearchConfig
        options["proxyless"] = options.pop("config")
    hooks = {k: options.pop(k) for k in ("on_progress", "on_stage") if k in options}
    with removed_on_failure(out_dir):
        return run_search(space, latency_model, SearchConfig(target_ms=target_ms, **options), data, out_dir,
                          **hooks)  # fmt: skip


def _lut_model(space: str, lut: str | Path, data: str, resolution: int | None) -> Any:
    """The latency model ``latkit search --lut`` searches with: the LUT's tables, with the classifier the
    trained network will have (``data``'s classes)."""
    checks.path("latency_model", lut)
    from latkit.search.supernet.data import data_classes

    return latency_model(space, lut, resolution=resolution, classes=data_classes(data))


def train(arch: str | Path, data: str = "digits", out_dir: str | Path = "train", **options: Any) -> TrainResult:
    """Train an architecture's weights; writes ``out_dir/weights.safetensors`` and its sidecar.

    Args:
        arch: an arch.json (a search's result).
        data: dataset name (default the embedded ``digits``).
        out_dir: output folder.
        **options: see :func:`latkit.deploy.train.train_arch` (epochs, max_steps, init, seed...).

    Returns:
        The :class:`~latkit.deploy.train.TrainResult` (weights path, accuracy, steps...).
    """
    checks.path("arch", arch)
    checks.text("data", data)
    checks.path("out_dir", out_dir)
    import inspect

    from latkit.deploy.train import train_arch

    known = set(inspect.signature(train_arch).parameters) - {"arch", "data", "out_dir"}
    checks.known_options("train", options, known)
    checks.options(options, {**_RUN_OPTIONS, "on_progress": checks.function, "space": checks.text,
                             "init": checks.path})  # fmt: skip

    with removed_on_failure(out_dir):
        return train_arch(arch, data, out_dir, **options)


def export(
    arch: str | Path,
    weights: str | Path | None = None,
    formats: Sequence[str] | str = ("onnx", "tflite"),
    out_dir: str | Path = "export",
    *,
    precision: str | Precision | None = None,
    variants: Sequence[str] | str = (),
    layout: str | InputLayout | None = None,
    nhwc: bool = False,
    device: Device | str | None = None,
    **options: Any,
) -> ExportReport:
    """Export an architecture with its weights to deployable files (ONNX, TFLite) with sidecars.

    The same files as ``latkit export``, by default too. If the export fails, the files it wrote
    are removed again (and the folder, when this call created it): no half-finished set is left.

    Args:
        arch, weights, formats, out_dir: as :func:`latkit.deploy.export.export_arch`.
        precision: the shipped precision, ``fp32`` (None, the default), ``fp16`` or ``int8``.
        variants: TFLite files at other precisions too: ``fp16`` and/or ``int8``.
        layout: the TFLite files' input layout, ``nhwc`` (None, the default: what phone apps
            feed, as the CLI) or ``nchw``. ONNX is always NCHW.
        nhwc: the older spelling of ``layout="nhwc"``.
        device: also measure the files here: a device URI (opened and closed here) or an open device.
        **options: the other options of :func:`latkit.deploy.export.export_arch`
            (representative, space, resolution, target_ms...).
    """
    checks.path("arch", arch)
    checks.path("weights", weights, none_ok=True)
    checks.path("out_dir", out_dir)
    checks.options({"formats": formats, "precision": precision, "layout": layout, "nhwc": nhwc},
                   {"formats": _texts_or_text, "precision": _precision, "layout": _layout, "nhwc": checks.flag})
    if variants:
        _texts_or_text("variants", variants)
    if device is not None:
        _check_device(device)
    _check_export_options(options)
    from latkit.deploy.export import export_arch, parse_variants
    from latkit.deploy.layout import InputLayout as _Layout, parse_layout
    from latkit.devices.precision import parse_precision

    tflite_layout = parse_layout(layout) if layout is not None else _Layout.NHWC
    if nhwc and tflite_layout is not _Layout.NHWC:
        raise checks.UsageError(f"nhwc=True and layout={layout!r} disagree; give layout only")
    prec = parse_precision(precision)
    dev = _opened(device, prec)  # a wrong URI fails here, before any file is written
    try:
        with removed_on_failure(out_dir, new_files=True):
            return export_arch(arch, weights, formats, out_dir, precision=prec, device=dev,
                               tflite_precisions=parse_variants(variants), layout=tflite_layout, **options)
    finally:
        if dev is not None and dev is not device:
            dev.close()


def _check_export_options(options: dict[str, Any]) -> None:
    """:func:`export`'s keyword options: ones :func:`~latkit.deploy.export.export_arch` takes, of their types."""
    import inspect

    from latkit.deploy.export import export_arch

    explicit = {"arch_path", "weights", "formats", "out_dir", "precision", "tflite_precisions", "layout"}
    checks.known_options("export", options, set(inspect.signature(export_arch).parameters) - explicit)
    checks.options(options, {"random_weights": checks.flag, "resolution": _resolution,
                             "on_progress": checks.function, "space": _optional_text, "target_ms": _any_number,
                             "tolerance": _any_number, "protocol": _protocol_config})  # fmt: skip


def measure(
    device: Device | str,
    model: str | Path,
    *,
    config: ProtocolConfig | None = None,
    quick: bool = False,
    statistic: str | Statistic | None = None,
) -> Measurement:
    """Measure a model file (``.onnx``, ``.tflite``) end to end on ``device``.

    Args:
        device: an open device or its URI (opened and closed here).
        model: the model file; one fixed input shape.
        config: measurement protocol; default the standard one.
        quick: few samples (smoke runs); ignored with ``config``.
        statistic: the figure reported, ``p5`` (None, the default), ``p10``, ``p25`` or ``median``.

    Returns:
        The measurement (``latency_ms``, ``std_ms``, CI, provenance...).
    """
    _check_device(device)
    checks.path("model", model)
    checks.flag("quick", quick)
    _protocol_config("config", config)
    from latkit.profiler.model_file import ModelFile
    from latkit.profiler.protocol import measure_one

    protocol = _protocol(config, quick, statistic)
    source = ModelFile(Path(model))
    dev = open_device(device) if isinstance(device, str) else device
    try:
        source.check_device(dev)
        return measure_one(dev, source, protocol)
    finally:
        if dev is not device:
            dev.close()


def _check_run(device: Any, space: Any, target_ms: Any, out_dir: Any, data: Any, on_progress: Any) -> None:
    """:func:`run`'s positional arguments checked at the door (UsageError naming the first bad one)."""
    from latkit.search.target import Target as _Target

    checks.text("device", device)
    checks.text("space", space)
    if isinstance(target_ms, str):
        checks.text("target_ms", target_ms)
    elif not isinstance(target_ms, _Target):
        checks.number("target_ms", target_ms)
    checks.path("out_dir", out_dir)
    checks.text("data", data, none_ok=True)
    checks.function("on_progress", on_progress)


def measure_layers(
    device: Device | str,
    model: str | Path,
    *,
    runs: int | None = None,
    quantile: float = 0.5,
) -> LayerProfile:
    """Where a model file's time goes, layer by layer, as the device's runtime profiles it
    (``latkit measure FILE --per-layer``).

    Args:
        device: an open device or its URI (opened and closed here).
        model: the model file; one fixed input shape.
        runs: profiled runs (default :data:`latkit.devices.layers.PROFILE_RUNS`).
        quantile: each layer's figure is this quantile of its runs (0.5: the median), where the
            runtime gives every run (benchmark_model gives means).

    Returns:
        The profile: each layer's time, their sum, the runs' own figure and the memory the
        runtime reports (``.to_dict(end_to_end_ms=...)`` for JSON). ``cpu:litert`` has no
        per-operator timer: its profile has no layers and says so.

    Raises:
        UsageError: the device has no per-layer profiler.
    """
    from latkit.devices.layers import MAX_PROFILE_RUNS, PROFILE_RUNS

    _check_device(device)
    checks.path("model", model)
    checks.integer("runs", runs, 1, MAX_PROFILE_RUNS, none_ok=True)
    checks.number("quantile", quantile, positive=False)
    if not 0.0 <= quantile <= 1.0:
        raise checks.UsageError(f"quantile must be in 0..1, got {quantile!r}")
    from latkit.profiler.layers import profile_layers
    from latkit.profiler.model_file import ModelFile

    source = ModelFile(Path(model))
    dev = open_device(device) if isinstance(device, str) else device
    try:
        source.check_device(dev)
        return profile_layers(dev, source, runs or PROFILE_RUNS, quantile)
    finally:
        if dev is not device:
            dev.close()


def inspect(model: str | Path) -> ModelMetadata:
    """What a model file says an app needs to feed it (``latkit inspect FILE``).

    Args:
        model: an ONNX or TFLite file.

    Returns:
        Its input and output (name, shape, layout, dtype, int8 scale and zero point),
        the training normalisation, class labels, latkit version and the measured
        latency (``.to_dict()`` for JSON); a file latkit did not export gives its
        tensors' facts only.

    Raises:
        StoreError: not a readable ONNX or TFLite model.
    """
    checks.path("model", model)
    from latkit.deploy.inspect import inspect_file

    return inspect_file(Path(model))


def run(
    device: str,
    space: str,
    target_ms: float | str | Target,
    out_dir: str | Path,
    data: str | None = None,
    on_progress: Callable[..., None] | None = None,
    *,
    precision: str | Precision | None = None,
    layout: str | InputLayout | None = None,
    lut: str | Path | None = None,
    protocol: ProtocolConfig | None = None,
    search_options: dict[str, Any] | None = None,
    device_options: dict[str, Any] | None = None,
    statistic: str | Statistic | None = None,
    **settings: Any,
) -> PipelineResult:
    """The whole pipeline: profile, calibrate, search, train, export, measure; writes ``report.md``.

    Args:
        device: device URI.
        space: search space name.
        target_ms: ms, or a share of the slowest network such as ``"60%"`` (or a parsed
            :class:`~latkit.search.target.Target`).
        out_dir: run folder (a rerun with the same settings resumes).
        data: dataset (default ``digits``).
        on_progress: called as ``(stage, done, total, message)``.
        precision: what the model ships at, ``fp32`` (None, the default), ``fp16`` or ``int8``.
        layout: the TFLite files' input layout, ``nhwc`` (None, the default) or ``nchw``.
        statistic: the figure every measurement reports, ``p5`` (None, the default), ``p10``, ``p25`` or
            ``median`` (:class:`~latkit.profiler.protocol.Statistic`).
        lut, protocol, search_options, device_options: see :func:`latkit.pipeline.runner.run_pipeline`.
        **settings: the other fields of :class:`latkit.pipeline.config.PipelineConfig`
            (``tolerance``, ``search_epochs``, ``seed``...).
    """
    from latkit.search.target import Target as _Target

    _check_run(device, space, target_ms, out_dir, data, on_progress)
    _check_run_options(precision, layout, lut, protocol, search_options, device_options, settings)
    from latkit.deploy.layout import InputLayout as _Layout, parse_layout
    from latkit.devices.precision import parse_precision
    from latkit.pipeline.config import PipelineConfig
    from latkit.pipeline.runner import run_pipeline
    from latkit.profiler.protocol import parse_statistic
    from latkit.search.target import parse_target

    target = target_ms if isinstance(target_ms, _Target) else parse_target(target_ms)
    config = PipelineConfig(
        device=device, space=space, target=target, data=data or "digits",
        precision=parse_precision(precision), layout=parse_layout(layout) if layout is not None else _Layout.NHWC,
        statistic=parse_statistic(statistic), **settings,
    )  # fmt: skip
    with removed_on_failure(out_dir):  # a run that failed before writing leaves no empty folder
        return run_pipeline(config, out_dir, lut=lut, on_progress=on_progress, protocol=protocol,
                            search_options=search_options, device_options=device_options)


def _check_run_options(precision: Any, layout: Any, lut: Any, protocol: Any, search_options: Any,
                       device_options: Any, settings: dict[str, Any]) -> None:
    """The door checks of :func:`run`'s keyword arguments and of the settings it passes on."""
    from dataclasses import fields

    from latkit.pipeline.config import PipelineConfig

    _precision("precision", precision)
    _layout("layout", layout)
    checks.path("lut", lut, none_ok=True)
    if lut is not None and not Path(lut).expanduser().parent.is_dir():  # found only stages later otherwise
        raise checks.UsageError(f"lut {lut} is in a folder that does not exist; create it or give another path")
    _protocol_config("protocol", protocol)
    checks.mapping("search_options", search_options)
    checks.mapping("device_options", device_options)
    if search_options:
        from latkit.search.supernet.proxyless_grad import ProxylessConfig

        checks.known_options("run(search_options=...)", search_options, {f.name for f in fields(ProxylessConfig)})
    explicit = {"device", "space", "target", "data", "precision", "layout"}
    checks.known_options("run", settings, {f.name for f in fields(PipelineConfig)} - explicit)
    checks.options(settings, _PIPELINE_OPTIONS)

