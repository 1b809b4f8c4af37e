"""The Python API, continued: calibration, LUT files, predictor data and the loopback phone.

Like :mod:`latkit.api`, each function is a thin, typed wrapper over the library
function the matching CLI command calls (``latkit lut calibrate``, ``lut show``,
``lut export``, ``lut import``, ``lut merge``, ``predictor eval``, ``predictor design``,
``loopback-device``), with its arguments checked at the door. They are loaded on
first use, as ``latkit.calibrate`` ... (see :mod:`latkit`).

Example::

    import latkit

    with latkit.loopback_phone() as phone:          # a stand-in phone on 127.0.0.1
        latkit.profile(phone.uri, "proxyless_mobile_w05", "phone.db", resolution=32, quick=True)
    print(latkit.show_lut("phone.db")["summary"]["total"])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latkit.api import StageProgress, _check_device, _choice, _opened, _protocol, _resolution
from latkit.core import checks

if TYPE_CHECKING:  # typing only: these imports are heavy
    from latkit.devices.base import Device
    from latkit.devices.loopback.server import LoopbackDevice
    from latkit.devices.precision import Precision
    from latkit.lut.calibration import Calibration
    from latkit.lut.io import MergeReport
    from latkit.profiler.protocol import ProtocolConfig

__all__ = ["calibrate", "show_lut", "export_lut", "import_lut", "merge_luts", "evaluate_predictor",
           "design_predictor", "loopback_phone"]

MIN_NETWORKS = 3  # as `latkit lut calibrate --networks`: the full fit has three coefficients


def calibrate(
    device: Device | str,
    space: str,
    lut: str | Path,
    *,
    networks: int = 6,
    resolution: int | None = None,
    precision: str | Precision | None = None,
    classes: int | None = 10,
    seed: int = 0,
    config: ProtocolConfig | None = None,
    quick: bool = False,
    on_progress: StageProgress | None = None,
) -> Calibration:
    """Fit and store the device's LUT-to-end-to-end calibration (``latkit lut calibrate``).

    Args:
        device: an open device or its URI (opened and closed here); the LUT must hold its operators.
        space: the search space whose networks are measured.
        lut: the LUT file; the calibration is stored in it, for the device at ``precision``.
        networks: networks measured end to end (at least 3), spread over the LUT's latency range.
        resolution: input resolution (default the space's).
        precision: ``fp32`` (None, the default), ``fp16`` or ``int8``.
        classes: the networks end in a classifier of this many outputs, as deployed ones
            (default 10, the classifier ``latkit profile`` adds; None: the space's own).
        seed: which networks are picked.
        config, quick: the measurement protocol, as for :func:`latkit.profile`.
        on_progress: called as ``("calibrate", done, total, network)`` after each measurement.

    Returns the :class:`~latkit.lut.calibration.Calibration`: its coefficients and out-of-sample error.
    """
    _check_device(device)
    checks.text("space", space)
    checks.path("lut", lut)
    checks.integer("networks", networks, MIN_NETWORKS, 100)
    _resolution("resolution", resolution)
    checks.integer("classes", classes, 1, none_ok=True)
    checks.integer("seed", seed, 0)
    checks.flag("quick", quick)
    checks.function("on_progress", on_progress)
    import numpy as np

    from latkit.devices.precision import check_precision, parse_precision
    from latkit.lut.calibrate import calibrate_device, calibration_networks
    from latkit.lut.store import LUT
    from latkit.profiler.spaces import get_space

    sp, dev = get_space(space), _opened(device)
    try:
        prec = check_precision(dev, parse_precision(precision))
        progress = (lambda done, total, name: on_progress("calibrate", done, total, name)) if on_progress else None
        with LUT.open(lut) as store:
            nets = calibration_networks(store, sp, dev.uri, networks, np.random.default_rng(seed),
                                        resolution=resolution, precision=prec, classes=classes)
            return calibrate_device(store, dev, nets, _protocol(config, quick), on_progress=progress,
                                    precision=prec)  # fmt: skip
    finally:
        if dev is not device:
            dev.close()


def show_lut(lut: str | Path, *, rows: bool = False) -> dict[str, Any]:
    """What a LUT holds (``latkit lut show --json``): its summary, one group per device, precision,
    space and resolution, and (``rows``) every measurement.

    Raises:
        StoreError: missing, damaged, of an unknown schema, or holding invalid latencies.
    """
    checks.path("lut", lut)
    checks.flag("rows", rows)
    from latkit.lut.store import LUT
    from latkit.lut.summary import describe

    with LUT.open(lut, readonly=True) as store:
        summary, listing, _ = describe(store)
        store.refuse_invalid()
    return {"summary": summary, **({"rows": listing} if rows else {})}


def export_lut(lut: str | Path, out: str | Path) -> int:
    """Write a LUT as versioned JSON to ``out`` (``latkit lut export``), atomically; what
    :func:`import_lut` reads back. Returns the number of measurements written.

    Raises:
        UsageError: ``out`` is an SQLite file (an export never replaces a LUT).
        StoreError: the LUT is missing or damaged, or ``out`` cannot be written.
    """
    checks.path("lut", lut)
    checks.path("out", out)
    from latkit.lut.io import check_export_target, export_json
    from latkit.lut.store import LUT

    check_export_target(out)  # before reading anything
    with LUT.open(lut, readonly=True) as store:
        return export_json(store, out)


def import_lut(
    lut: str | Path, sources: Sequence[str | Path], *, device_uri: str | None = None, family: str | None = None
) -> list[MergeReport]:
    """Import latkit JSON exports or public OFA / ProxylessNAS yaml tables into ``lut`` (``latkit lut import``).

    All or nothing: one bad source leaves the LUT as it was (a new one is not created).

    Args:
        lut: the LUT file, created if missing.
        sources: JSON exports (``latkit lut export``) and ``.yaml`` tables.
        device_uri: the device a yaml table's rows are stored for.
        family: a yaml table's family, ``ofa`` or ``proxylessnas`` (default: detected).

    Returns:
        One report per source: rows added, already present, conflicts.
    """
    checks.path("lut", lut)
    _paths("sources", sources)
    checks.text("device_uri", device_uri, none_ok=True)
    checks.text("family", family, none_ok=True)
    from latkit.lut.io import import_json, import_public_yaml, writing

    reports = []
    with writing(lut) as store:
        for src in map(Path, sources):
            if src.suffix.lower() in (".yaml", ".yml"):
                reports.append(import_public_yaml(store, src, device_uri=device_uri, family=family))
            else:
                reports.append(import_json(store, src))
    return reports


def merge_luts(dst: str | Path, sources: Sequence[str | Path]) -> MergeReport:
    """Merge LUT files into ``dst`` (``latkit lut merge``): rows it holds are kept, conflicts reported;
    every source is checked first and merged in one transaction."""
    checks.path("dst", dst)
    _paths("sources", sources)
    from latkit.lut.io import merge, writing

    with writing(dst) as store:
        return merge(store, list(sources))


def evaluate_predictor(
    csv: str | Path,
    space: str,
    target: str,
    *,
    k: int = 10,
    known: Sequence[str] | None = None,
    strict: bool = False,
    target_csv: str | Path | None = None,
    seeds: int = 3,
    plot: str | Path | None = None,
    model: str = "hwmeta",
    design: str = "active",
) -> dict[str, Any]:
    """Few-shot transfer to a new device, scored (``latkit predictor eval``): RMSE, MAPE, ±5/±10%
    accuracy, Spearman and Kendall τ of the method and of the reference baseline.

    Args:
        csv: latency CSV (``arch_index, arch, <device>...``).
        space: the space of its ``arch`` column.
        target: the new device's column (in ``csv`` or ``target_csv``).
        k: architectures measured on the new device (at least 2).
        known: known-device columns (default every other; ``strict``: leave out the target's hardware).
        target_csv: a CSV holding the target column.
        seeds: repeats over seeds.
        plot: write a predicted-vs-measured scatter PNG here.
        model: the few-shot model, ``hwmeta`` (the default) or ``fewshot`` (the ridge
            combination, always scored beside it).
        design: how the ``k`` architectures are chosen: ``active`` (the default), ``farthest`` or ``random``.
    """
    checks.path("csv", csv)
    checks.text("space", space)
    checks.text("target", target)
    checks.integer("k", k, 2)
    checks.texts("known", known, none_ok=True)
    checks.flag("strict", strict)
    checks.path("target_csv", target_csv, none_ok=True)
    checks.integer("seeds", seeds, 1, 100)
    checks.path("plot", plot, none_ok=True)
    from latkit.predictors.evaluate import FewShotModel, evaluate
    from latkit.predictors.transfer import Design

    return evaluate(csv, space, target, k, known=list(known) if known is not None else None, strict=strict,
                    target_csv=target_csv, seeds=seeds, plot=plot, model=_choice("model", model, FewShotModel),
                    design=_choice("design", design, Design))  # fmt: skip


def design_predictor(
    csv: str | Path, k: int = 10, *, known: Sequence[str] | None = None, space: str | None = None, seed: int = 0,
    design: str = "active",
) -> list[str]:
    """The ``k`` architectures to measure on a new device for few-shot transfer (``latkit predictor design``),
    as native text, chosen by ``design`` (``active``, the default, ``farthest`` or ``random``); measure
    them and fit with ``fit_predictor(..., predictor="hwmeta", target_csv=...)``."""
    checks.path("csv", csv)
    checks.integer("k", k, 2)
    checks.texts("known", known, none_ok=True)
    checks.text("space", space, none_ok=True)
    checks.integer("seed", seed, 0)
    from latkit.predictors.evaluate import design_from_csv
    from latkit.predictors.transfer import Design

    return design_from_csv(csv, k, known=list(known) if known is not None else None, random_state=seed,
                           space=space, design=_choice("design", design, Design))  # fmt: skip


@contextmanager
def loopback_phone(
    root: str | Path | None = None,
    *,
    port: int = 0,
    auth: str = "key",
    scenario: str = "cool",
    serial: str = "loopback",
    model: str = "Loopback Pixel",
    simulate_latency_ms: float | None = None,
) -> Iterator[LoopbackDevice]:
    """A loopback phone on 127.0.0.1 for the ``with`` block (``latkit loopback-device``), stopped after it.

    It answers ADB like a phone and times models with a LiteRT stand-in for
    ``benchmark_model``; open it by ``phone.uri`` (``adb+tcp://127.0.0.1:PORT``). While it
    runs, :func:`latkit.list_devices` lists it.

    Args:
        root: the folder standing in for the phone (default one per port in latkit's cache).
        port: TCP port (0, the default: any free one).
        auth: ``key`` (only the device's own key, which latkit uses), ``accept``, ``refuse`` or ``off``.
        scenario: ``cool``, ``heat`` or ``throttle`` (its thermal behaviour).
        serial, model: the identity it reports.
        simulate_latency_ms: every benchmark run sleeps this long instead of running the model.
    """
    checks.path("root", root, none_ok=True)
    checks.integer("port", port, 0, 65535)
    for name, value in (("auth", auth), ("scenario", scenario), ("serial", serial), ("model", model)):
        checks.text(name, value)
    checks.number("simulate_latency_ms", simulate_latency_ms, none_ok=True)
    from latkit.devices.loopback.server import LoopbackDevice as _Loopback

    with _Loopback(Path(root) if root is not None else None, port=port, auth=auth, scenario=scenario,
                   serial=serial, model=model) as phone:  # fmt: skip
        if simulate_latency_ms is not None:
            from latkit.devices.loopback.benchmark_model import install_simulator

            install_simulator(phone.root, simulate_latency_ms)
        yield phone


def _paths(name: str, value: Any) -> None:
    """``value`` is a non-empty list of paths (not one path, whose letters would be taken one by one)."""
    if isinstance(value, (str, bytes, Path)) or not isinstance(value, (list, tuple)) or not value:
        raise checks.ArgumentTypeError(f"{name} must be a non-empty list of file paths, not {value!r}")
    for i, item in enumerate(value):
        checks.path(f"{name}[{i}]", item)
