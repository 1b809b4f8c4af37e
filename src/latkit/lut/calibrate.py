"""Calibrate a device: measure a few networks end to end, fit, save.

:func:`calibrate_device` estimates each network from the LUT
(:func:`latkit.lut.estimate.estimate`), measures it whole on the device and fits a
:class:`~latkit.lut.calibration.Calibration` to the pairs
(:func:`~latkit.lut.calibration.fit_calibration`); :func:`pick_calibration_archs`
chooses the networks.

The networks are measured in passes, all of a pass's networks together and
interleaved, each network's lowest figure kept: other load only ever slows a run
down, and a burst of it then falls on every network of one pass alike, not on one
network. At least two passes run; while any network's two lowest figures still
disagree, every network takes another pass (up to ``MAX_PASSES``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from latkit.core.errors import UsageError
from latkit.devices.precision import Precision, check_precision
from latkit.lut.calibration import Calibration, fit_calibration, save_calibration
from latkit.lut.estimate import estimate
from latkit.lut.store import LUT

if TYPE_CHECKING:
    from latkit.devices.base import Device, ModelSource
    from latkit.lut.tables import TableLatencyModel
    from latkit.profiler.measurement import Measurement
    from latkit.profiler.protocol import ProtocolConfig
    from latkit.profiler.spaces.base import Arch, Network

PASSES = 2  # passes over every network, in alternating orders; each network's lowest figure is kept
MAX_PASSES = 6  # while any network's two lowest figures still disagree, every network takes another pass, up to this many
UNSTEADY = 0.10  # two figures of one network further apart than this: the device was not steady

log = logging.getLogger(__name__)


def pick_calibration_archs(
    model: TableLatencyModel, n: int, rng: np.random.Generator, pool_size: int = 200
) -> list[Arch]:
    """The architectures a calibration measures end to end: ``n`` spread, plus one corner.

    ``n`` networks spread evenly over the space's latency range, extremes
    included, so the fit interpolates wherever a search lands; and the
    fastest network with every layer present
    (:meth:`~latkit.lut.tables.TableLatencyModel.fastest_full`), the other
    corner in (LUT sum, op count): without it the fit extrapolates to networks
    of many small operators, and one noisy measurement of the largest network
    can tilt the per-op term enough to predict those networks far too fast.
    `latkit lut calibrate` and `latkit run` both pick this way.

    Args:
        model: the space's uncalibrated tables (every operator's entry positive).
        n: spread networks (at least 2: the fastest and the slowest).
        rng: draws the random architectures the spread ones are picked from.
        pool_size: how many random architectures to pick from.

    Raises:
        UsageError: ``n`` < 2.
    """
    if n < 2:
        raise UsageError(f"a calibration needs at least 2 spread networks, got {n}")
    space = model.space
    pool = [model.min_latency(space)[1], model.max_latency()[1]]
    pool += [space.sample(rng) for _ in range(pool_size)]
    pool.sort(key=model.latency_ms)
    picks = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return list(dict.fromkeys([pool[i] for i in picks.tolist()] + [model.fastest_full()]))


def steady(figures: Sequence[float]) -> bool:
    """Whether a network's two lowest figures agree within :data:`UNSTEADY`."""
    low = sorted(figures)[:2]
    return len(low) == 2 and low[1] <= (1 + UNSTEADY) * low[0]


def measure_passes(
    device: Device,
    models: Sequence[ModelSource],
    config: ProtocolConfig,
    on_progress: Callable[[int, int, str], None] | None = None,
    labels: Sequence[str] | None = None,
) -> list[list[float]]:
    """Each model's end-to-end latencies (ms), one per pass, until its two lowest agree.

    :data:`PASSES` passes go over every model in alternating orders; then, as
    long as some model's two lowest figures differ by more than
    :data:`UNSTEADY`, every model is measured again, pass by pass, up to
    :data:`MAX_PASSES` figures (so all models have as many). On a shared
    host other load inflates even a thread-CPU-time figure (cache and memory
    contention, which the thread clock does not remove), and a burst of it can
    last for seconds; since load only slows a run down, a burst has to hit a
    network in every pass to survive the minimum. Within a pass the models are
    measured together, interleaved in one pool
    (:func:`~latkit.profiler.protocol.measure_many`), so a change in the load
    during the pass falls on all of them alike instead of on the few measured
    while it lasted. ``benchmarks/precision.py`` measures its test networks
    this way and keeps every pass's figure (``passes_ms`` in its ``--out``
    JSON). ``on_progress`` gets ``(done, total, label)`` after each figure and,
    ``done`` unchanged, ``(done, total, note)`` before each pass: the total it
    counts to, and why a pass beyond :data:`PASSES` runs.
    """
    from latkit.profiler.protocol import measure_many

    labels = list(labels) if labels is not None else [getattr(m, "key", str(i)) for i, m in enumerate(models)]
    runs: list[list[float]] = [[] for _ in models]
    done = 0
    for k in range(MAX_PASSES):
        # while any model is unsteady, every model takes the next pass: the lowest figures of
        # all then come from the same passes (a model that gave two agreeing figures in two
        # loaded passes would otherwise keep them while the others got a quieter one)
        todo = list(range(len(models))) if k < PASSES or not all(steady(r) for r in runs) else []
        if not todo:
            break
        later = (PASSES - 1 - k) * len(models) if k < PASSES else 0
        total = done + len(todo) + later
        if on_progress is not None:  # each pass announced before its first figure, the total it grows to included
            on_progress(done, total, _pass_note(k, runs))
        by_key: dict[str, list[int]] = {}  # a model listed twice is measured once a pass
        for i in todo if k % 2 == 0 else todo[::-1]:
            by_key.setdefault(models[i].key, []).append(i)

        def record(_d: int, _t: int, key: str, m: Measurement | None,
                   by_key: dict[str, list[int]] = by_key, total: int = total) -> None:
            nonlocal done
            if m is None:  # a failed model: measure_many raises for it (no on_error)
                return
            for i in by_key[key]:
                runs[i].append(m.latency_ms)
                done += 1
                if on_progress is not None:
                    on_progress(done, total, labels[i])

        pool = replace(config, pool_size=max(config.pool_size, len(by_key)))  # all of the pass's models at once
        measure_many(device, [models[ix[0]] for ix in by_key.values()], pool, on_progress=record)
    return runs


def _pass_note(k: int, runs: Sequence[Sequence[float]]) -> str:
    """What pass ``k`` (from 0) is for, for a progress display."""
    if k == 0:
        return (f"pass 1 of {PASSES} over {len(runs)} model(s); up to {MAX_PASSES} passes while a model's "
                f"two lowest figures differ by over {UNSTEADY:.0%}")  # fmt: skip
    if k < PASSES:
        return f"pass {k + 1} of {PASSES}"
    unsteady = sum(not steady(r) for r in runs)
    return (f"pass {k + 1} of up to {MAX_PASSES}: {unsteady} of {len(runs)} model(s) not steady yet, "
            "every model measured again")  # fmt: skip


def _measure_networks(
    device: Device, networks: Sequence[Network], config: ProtocolConfig,
    on_progress: Callable[[int, int, str], None] | None, cache_dir: Path | str | None, prec: Precision,
) -> list[list[float]]:  # fmt: skip
    """Every network's end-to-end figures (see :func:`measure_passes`), warning about unsteady ones."""
    from latkit.profiler.export import BuiltModel

    models = [BuiltModel(net, cache_dir=cache_dir, precision=prec) for net in networks]
    runs = measure_passes(device, models, config, on_progress, [net.name for net in networks])
    unsteady = [net.name for net, figures in zip(networks, runs) if not steady(figures)]
    if unsteady:
        log.warning("calibration: %d of %d networks gave no two figures within %.0f%% in %d passes on %s (other "
                    "load?); their lowest figures are kept", len(unsteady), len(runs), 100 * UNSTEADY, MAX_PASSES,
                    device.uri)  # fmt: skip
    return runs


def calibrate_device(
    lut: LUT,
    device: Device,
    networks: Sequence[Network],
    config: ProtocolConfig | None = None,
    save: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
    *,
    cache_dir: Path | str | None = None,
    precision: Precision = Precision.FP32,
) -> Calibration:
    """Measure ``networks`` end to end on ``device``, fit, and (by default) save.

    Every measurable op of every network must already be in the LUT for
    ``device.uri``; this is checked for all networks before anything runs.

    Args:
        lut: the LUT holding the device's operators; the calibration goes here.
        device: the device to measure on (its ``uri`` names it in the LUT).
        networks: a few networks (3 or more for the full model), ideally of
            different sizes.
        config: protocol settings for the end-to-end measurements.
        save: store the calibration in ``lut``.
        on_progress: called as ``(done, total, network_name)`` after each
            measurement, and with ``done`` unchanged and a note before each
            pass (``total`` is ``PASSES`` times the networks, more when a
            network is measured again, see :func:`measure_passes`).
        cache_dir: where the networks' model files are cached (default the
            export cache).
        precision: the networks are built, and their operators read from the
            LUT, at this precision; the calibration is stored for it.

    Raises:
        MissingOpsError: an op of a network is not in the LUT at ``precision``.
        UsageError: the device does not run ``precision``.
    """
    from latkit.profiler.protocol import ProtocolConfig

    config = config or ProtocolConfig()
    prec = check_precision(device, precision)
    estimates = [estimate(lut, net, device=device.uri, calibration=False, precision=prec) for net in networks]
    config = replace(config, pool_size=max(config.pool_size, len(networks)))  # a pass pools all its networks
    runs = _measure_networks(device, networks, config, on_progress, cache_dir, prec)
    e2e = [min(figures) for figures in runs]
    sums = [est.lut_sum_ms for est in estimates]
    counts = [est.n_measurable for est in estimates]
    min_op = min((layer.latency_ms for est in estimates for layer in est.layers if layer.latency_ms > 0), default=None)
    cal = fit_calibration(sums, counts, e2e, min_op)
    if save:
        save_calibration(
            lut, device.uri, cal,
            {"precision": prec.value, "networks": [n.name for n in networks], "lut_sums_ms": sums, "n_ops": counts,
             "e2e_ms": e2e, "e2e_runs_ms": runs, "min_op_ms": min_op,
             "device": device.info().to_dict(), "protocol": config.to_dict()},
            precision=prec,
        )  # fmt: skip
    return cal
