"""What int8 and fp16 buy on this CPU, and whether a calibrated LUT still predicts them.

Two figures per backend (``cpu:litert`` at fp32/fp16/int8, ``cpu:onnxruntime`` at
fp32/int8), both on one search space's operators:

(a) per-operator latency ratios ``int8/fp32`` and ``fp16/fp32`` (median, p10,
    p90 over the operators): each operator is profiled at every precision the
    backend runs, into one LUT whose rows carry their precision;
(b) for ``--networks`` test networks per precision, the calibrated LUT estimate
    against the network measured end to end at that precision. The calibration
    (``latkit.lut.calibrate.calibrate_device(..., precision=...)``) is fitted on
    ``--calibration-networks`` other networks. Both sets are picked from a pool of
    random networks at evenly spaced ranks of their fp32 LUT sum: the calibration
    takes the two extremes and ranks spread between, the tests the ranks between
    those, so the test networks are interpolated, as a search's candidates are.
    The goal is every test network within +-10% at int8, as at fp32; the script
    prints PASS or FAIL per backend and precision.

``--max-ops N`` bounds the operators profiled per precision: the pool is then
drawn from a subset of the space's options small enough that all its operators
fit in ``N`` (the rest of the budget goes to other operators of the space, for
the ratios). Model files are cached in ``$LATKIT_CACHE``, so a second
run skips the exports and quantizations.

    LATKIT_CACHE=/tmp/lkc python benchmarks/precision.py --space proxyless_mobile_w05 \
        --resolution 64 --max-ops 40 --quick [--out precision.json]

On a shared host, ``--joint`` keeps load drift between the calibration and the
test passes out of the error: without it the test networks are measured minutes
after the calibration's, and a change of the host's load in between reads as a
prediction error. ``benchmarks/NOTES.md`` keeps the figures of earlier runs
(with and without ``--joint``; one and four LiteRT interpreters per model).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import write_json
from latkit.devices import open_device
from latkit.devices.base import Device
from latkit.devices.precision import Precision, parse_precision
from latkit.core.errors import LatkitError, UsageError
from latkit.lut.calibrate import calibrate_device, measure_passes, steady
from latkit.lut.calibration import Calibration, fit_calibration, save_calibration
from latkit.lut.estimate import estimate
from latkit.lut.store import LUT
from latkit.profiler.export import BuiltModel
from latkit.profiler.ops import OpSpec
from latkit.profiler.protocol import Preset, ProtocolConfig
from latkit.profiler.runner import profile_ops
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Network, SearchSpace

BACKENDS = ("cpu:litert", "cpu:onnxruntime")
PRECISION_ORDER = tuple(Precision)
GOAL = 0.10  # every test network's calibrated estimate within +-10% of its measured latency
POOL = 300  # distinct networks drawn; the calibration and test networks are picked from them by size
MAX_DRAWS = 5000  # bound on the architecture draws that look for them


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="proxyless_mobile_w05")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--devices", default=",".join(BACKENDS), help="comma-separated device URIs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-ops", type=int, default=None, help="operators profiled per precision (default all)")
    ap.add_argument("--networks", type=int, default=10, help="test networks per precision")
    ap.add_argument("--calibration-networks", type=int, default=5)
    ap.add_argument("--e2e-precisions", default="fp32,int8", help="precisions of part (b)")
    ap.add_argument("--quick", action="store_true", help="the quick protocol (fewer samples per model)")
    ap.add_argument("--op-passes", type=int, default=3,
                    help="times the op list is measured over, each op keeping its lowest figure (profile_ops passes)")
    ap.add_argument("--joint", action="store_true",
                    help="measure the calibration and test networks in the same passes (a shared host's load "
                         "drift between calibrating and testing then does not count as estimate error)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lut", type=Path, default=None, help="reuse/extend this LUT (default: a new temp file)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.op_passes < 1:
        ap.error("--op-passes must be >= 1")
    if args.max_ops is not None and args.max_ops < 1:
        ap.error("--max-ops must be >= 1")
    if args.networks < 1 or args.calibration_networks < 2:
        ap.error("--networks must be >= 1 and --calibration-networks >= 2")
    return args


def protocol(quick: bool) -> ProtocolConfig:
    """The measurement protocol of both parts (one protocol, so LUT sums and end-to-end figures compare)."""
    return ProtocolConfig.preset(Preset.QUICK if quick else Preset.PIPELINE)


def _draw(space: SearchSpace, allowed: list[Any], rng: np.random.Generator) -> tuple[Any, ...]:
    """One architecture's options, each slot restricted to ``allowed`` (to its first option if none is)."""
    picks = []
    for choice in space.choices():
        ok = [o for o in choice.options if o in allowed] or [choice.options[0]]
        picks.append(ok[int(rng.integers(len(ok)))])
    return tuple(picks)


def draw_pool(space: SearchSpace, resolution: int, allowed: list[Any], seed: int,
              max_ops: int | None) -> list[Network] | None:
    """Up to ``POOL`` distinct networks whose every slot takes an ``allowed`` option.

    None as soon as their operators number more than ``max_ops``.
    """
    rng = np.random.default_rng(seed)
    seen: dict[tuple[Any, ...], None] = {}
    nets: dict[str, Network] = {}
    ops: set[str] = set()
    for _ in range(MAX_DRAWS):
        opts = _draw(space, allowed, rng)
        if opts in seen:
            continue
        seen[opts] = None
        net = space.network(space.from_options(list(opts)), resolution)
        ops.update(s.key for s in net.measurable_specs())
        if max_ops is not None and len(ops) > max_ops:
            return None
        nets.setdefault(BuiltModel(net).key, net)
        if len(nets) == POOL:
            break
    return list(nets.values())


def _op_keys(networks: list[Network]) -> dict[str, OpSpec]:
    return {s.key: s for net in networks for s in net.measurable_specs()}


def pick_pool(space: SearchSpace, resolution: int, needed: int, max_ops: int | None, seed: int) -> list[Network]:
    """At least ``needed`` distinct networks whose operators number at most ``max_ops`` in all.

    The space's option values are put in a seeded order; the pool is drawn with
    the longest prefix of that order whose networks fit the budget.

    Raises:
        UsageError: no option subset gives ``needed`` distinct networks within the budget.
    """
    values = list(dict.fromkeys(o for ch in space.choices() for o in ch.options))
    order = [values[i] for i in np.random.default_rng(seed).permutation(len(values))]
    for k in range(len(order), 0, -1):
        pool = draw_pool(space, resolution, order[:k], seed, max_ops)
        if pool is not None and len(pool) >= needed:
            return pool
    raise UsageError(f"cannot draw {needed} distinct {space.name} networks with at most {max_ops} operators; "
                     "raise --max-ops or lower --networks")


def op_list(space: SearchSpace, resolution: int, pool: list[Network], max_ops: int | None) -> list[OpSpec]:
    """The pool's operators, then other operators of the space, up to ``max_ops`` in all."""
    specs = _op_keys(pool)
    for spec in space.operators(resolution):
        if spec.measurable:
            specs.setdefault(spec.key, spec)
    ops = list(specs.values())
    return ops if max_ops is None else ops[: max(max_ops, len(_op_keys(pool)))]


def ratio_stats(lut: LUT, uri: str, keys: list[str], precision: Precision) -> dict[str, Any]:
    """Median, p10 and p90 of ``precision``/fp32 latency over the operators measured at both."""
    base = lut.lookup(keys, uri, strict=False, precision=Precision.FP32)
    other = lut.lookup(keys, uri, strict=False, precision=precision)
    both = [k for k in keys if k in base and k in other]
    if not both:
        return {"ops": 0}
    r = np.array([other[k] / base[k] for k in both])
    p10, med, p90 = np.percentile(r, [10, 50, 90])
    return {"ops": len(both), "median": float(med), "p10": float(p10), "p90": float(p90),
            "min": float(r.min()), "max": float(r.max()), "faster_pct": float(100 * np.mean(r < 1))}


def profile_all(device: Device, ops: list[OpSpec], lut: LUT, config: ProtocolConfig,
                precisions: list[Precision], passes: int) -> dict[str, Any]:
    """Profile ``ops`` at each precision; returns the seconds and the failures per precision.

    With one pass the precisions take turns over chunks of ``pool_size``
    operators, so a change in the machine's load falls on every precision
    alike. With ``passes > 1`` each precision measures the whole op list that
    many times over and keeps each op's lowest figure, so an episode of other
    load (on a shared host it slows even thread-CPU figures for seconds) has
    to last through every pass to bias an op.
    """
    out = {p: {"seconds": 0.0, "measured": 0, "skipped": 0, "failed": {}} for p in precisions}
    chunk = max(1, len(ops)) if passes > 1 else config.pool_size
    for start in range(0, len(ops), chunk):
        for p in precisions:
            t0 = time.perf_counter()
            report = profile_ops(device, ops[start : start + chunk], lut, config, precision=p, passes=passes)
            out[p]["seconds"] += time.perf_counter() - t0
            out[p]["measured"] += len(report.measured)
            out[p]["skipped"] += len(report.skipped)
            out[p]["failed"].update(report.failed)
    for p, r in out.items():
        r["seconds"] = round(r["seconds"], 1)
        print(f"  {device.uri} {p}: {r['measured']} ops measured, {r['skipped']} reused, "
              f"{len(r['failed'])} failed ({r['seconds']:.0f} s)", flush=True)
        for key, why in r["failed"].items():
            print(f"    failed {key}: {why}", file=sys.stderr)
    return out


def pick_networks(lut: LUT, uri: str, pool: list[Network], n_cal: int,
                  n_test: int) -> tuple[list[Network], list[Network]]:
    """Calibration and test networks spread over the pool's fp32 LUT sums on ``uri``.

    ``n_cal + n_test`` networks at evenly spaced ranks; the calibration takes the
    two extremes and ``n_cal - 2`` spread between, the tests the ranks between them.
    """
    sums = [estimate(lut, net, device=uri, precision=Precision.FP32, calibration=False).lut_sum_ms for net in pool]
    ranked = np.argsort(sums, kind="stable")
    spread = ranked[np.floor(np.linspace(0, len(pool) - 1, n_cal + n_test) + 0.5).astype(int)].tolist()
    cal_at = set(np.floor(np.linspace(0, len(spread) - 1, n_cal) + 0.5).astype(int).tolist())
    return ([pool[j] for i, j in enumerate(spread) if i in cal_at],
            [pool[j] for i, j in enumerate(spread) if i not in cal_at])


def _load() -> float:
    """The 1-minute load average: figures taken on a shared host are only as good as its quiet."""
    return round(os.getloadavg()[0], 2)


def measure_networks(device: Device, networks: list[Network], precision: Precision,
                     config: ProtocolConfig) -> list[list[float]]:
    """End-to-end latency of each network at ``precision``, measured as the calibration does.

    Passes in alternating order until each network's two lowest figures agree
    (``latkit.lut.calibrate.measure_passes``); the lowest is the one compared,
    the spread of the figures shows the host's noise.
    """
    return measure_passes(device, [BuiltModel(net, precision=precision) for net in networks], config)


def calibrate_joint(lut: LUT, device: Device, calib: list[Network], tests: list[Network], precision: Precision,
                    config: ProtocolConfig) -> tuple[Calibration, list[list[float]]]:
    """The calibration fitted on ``calib``, measured in the same interleaved passes as ``tests``.

    The fit is :func:`~latkit.lut.calibration.fit_calibration` on the
    calibration networks' lowest figures, as ``calibrate_device`` fits it;
    returns it (saved for ``precision``) and the test networks' figures.
    """
    runs = measure_networks(device, calib + tests, precision, config)
    ests = [estimate(lut, net, device=device.uri, precision=precision, calibration=False) for net in calib]
    min_op = min((layer.latency_ms for e in ests for layer in e.layers if layer.latency_ms > 0), default=None)
    e2e = [min(r) for r in runs[: len(calib)]]
    cal = fit_calibration([e.lut_sum_ms for e in ests], [e.n_measurable for e in ests], e2e, min_op)
    save_calibration(lut, device.uri, cal, {"networks": [n.name for n in calib], "e2e_ms": e2e,
                                            "measured_with_tests": True}, precision=precision)  # fmt: skip
    return cal, runs[len(calib) :]


def check_networks(lut: LUT, device: Device, calib: list[Network], tests: list[Network], precision: Precision,
                   config: ProtocolConfig, joint: bool = False) -> dict[str, Any]:
    """Calibrate at ``precision`` on ``calib``, then estimate and measure each of ``tests``.

    ``joint``: the calibration and test networks are measured in the same passes (:func:`calibrate_joint`).
    """
    t0, load0 = time.perf_counter(), _load()
    if joint:
        cal, passes = calibrate_joint(lut, device, calib, tests, precision, config)
    else:
        cal = calibrate_device(lut, device, calib, config, precision=precision)
        passes = measure_networks(device, tests, precision, config)
    rows = []
    for i, (net, figures) in enumerate(zip(tests, passes)):
        est = estimate(lut, net, device=device.uri, precision=precision)
        ms = min(figures)
        err = (est.total_ms - ms) / ms
        rows.append({"network": i, "key": BuiltModel(net).key, "lut_sum_ms": est.lut_sum_ms,
                     "estimate_ms": est.total_ms, "measured_ms": ms, "passes_ms": figures,
                     "pass_spread": max(figures) / ms - 1, "steady": steady(figures), "error": err})
        print(f"    {device.uri} {precision} net {i:2d}: estimate {est.total_ms:8.3f} ms  "
              f"measured {ms:8.3f} ms  error {100 * err:+6.1f}%", flush=True)
    worst = max(abs(r["error"]) for r in rows)
    return {"calibration": cal.to_dict(), "networks": rows, "max_abs_error": worst,
            "max_pass_spread": max(r["pass_spread"] for r in rows),
            "unsteady": sum(not r["steady"] for r in rows),
            "within_goal": sum(abs(r["error"]) <= GOAL for r in rows), "pass": worst <= GOAL,
            "seconds": round(time.perf_counter() - t0, 1), "loadavg": [load0, _load()]}


def run_backend(uri: str, args: argparse.Namespace, lut: LUT, pool: list[Network], ops: list[OpSpec],
                config: ProtocolConfig) -> dict[str, Any]:
    """Parts (a) and (b) on one device.

    Each device picks its calibration and test networks by its own fp32 LUT
    sums, as ``latkit lut calibrate`` does: the same networks spread evenly
    on one runtime can bunch up on another (here the pool's LiteRT sums span
    0.7-2.9 ms, its ONNX Runtime sums of the same networks 1.0-1.25 ms), and a
    calibration fitted on bunched sums extrapolates its noise.
    """
    device = open_device(uri, threads=args.threads)
    precisions = [p for p in PRECISION_ORDER if p in device.precisions]
    print(f"{uri}: runs {', '.join(precisions)}", flush=True)
    profiled = profile_all(device, ops, lut, config, precisions, args.op_passes)
    keys = [s.key for s in ops]
    ratios = {p.value: ratio_stats(lut, uri, keys, p) for p in precisions if p != Precision.FP32}
    result: dict[str, Any] = {"device": device.info().to_dict(), "precisions": precisions,
                              "profiled": profiled, "ratios": ratios, "e2e": {}}
    wanted = [p for p in map(parse_precision, args.e2e_precisions.split(",")) if p in precisions]
    failed = {k for p in {Precision.FP32, *wanted} for k in profiled[p]["failed"]}
    usable = [net for net in pool if not failed & {s.key for s in net.measurable_specs()}]
    if len(usable) < args.networks + args.calibration_networks:
        print(f"  {uri}: part (b) skipped, only {len(usable)} networks have every operator profiled",
              file=sys.stderr)
        return result
    calib, tests = pick_networks(lut, uri, usable, args.calibration_networks, args.networks)
    result["calibration_networks"] = [BuiltModel(net).key for net in calib]
    for p in wanted:
        result["e2e"][p] = check_networks(lut, device, calib, tests, p, config, args.joint)
    return result


def print_figures(result: dict[str, Any]) -> None:
    """The summary: ratio table, then each backend/precision's worst error against the goal."""
    head = result["setup"]
    print(f"\n== {head['space']} @ {head['resolution']} px, {head['threads']} thread(s), {head['ops']} operators, "
          f"{head['networks']} test + {head['calibration_networks']} calibration networks, "
          f"{'quick' if head['quick'] else 'default'} protocol, {result['seconds']:.0f} s, "
          f"load average {head['loadavg']:.1f} at the start, {result['loadavg']:.1f} at the end")
    print("(a) per-op latency ratio to fp32 (below 1 = faster)")
    print(f"  {'device':16s} {'ratio':10s} {'ops':>4s} {'median':>7s} {'p10':>6s} {'p90':>6s} {'faster':>7s}")
    for uri, res in result["backends"].items():
        for p, r in res["ratios"].items():
            if r["ops"]:
                print(f"  {uri:16s} {p + '/fp32':10s} {r['ops']:4d} {r['median']:7.3f} {r['p10']:6.3f} "
                      f"{r['p90']:6.3f} {r['faster_pct']:6.0f}%")
            else:
                print(f"  {uri:16s} {p + '/fp32':10s}    0  (no operator measured at both)")
    print(f"(b) calibrated LUT estimate vs measured end to end (goal: every network within +-{100 * GOAL:.0f}%)")
    for uri, res in result["backends"].items():
        for p, e in res["e2e"].items():
            verdict = "PASS" if e["pass"] else "FAIL"
            print(f"  {uri:16s} {p:5s} max |error| {100 * e['max_abs_error']:5.1f}%  "
                  f"{e['within_goal']}/{len(e['networks'])} within +-{100 * GOAL:.0f}%  {verdict}  "
                  f"(a network's figures differ by up to {100 * e['max_pass_spread']:.0f}%; "
                  f"{e['unsteady']} never gave two within 10%; load {e['loadavg'][0]:.1f} -> {e['loadavg'][1]:.1f})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    space = get_space(args.space)
    resolution = space.check_resolution(args.resolution)
    pool = pick_pool(space, resolution, args.networks + args.calibration_networks, args.max_ops, args.seed)
    ops = op_list(space, resolution, pool, args.max_ops)
    config = protocol(args.quick)
    lut_path = args.lut or Path(tempfile.mkdtemp(prefix="latkit_precision_")) / "precision.db"
    print(f"{len(ops)} operators ({len(_op_keys(pool))} of them in a pool of {len(pool)} networks), "
          f"LUT {lut_path}", flush=True)
    setup = {"loadavg": _load(), "space": args.space, "resolution": resolution, "threads": args.threads, "ops": len(ops),
             "networks": args.networks, "calibration_networks": args.calibration_networks, "quick": args.quick,
             "op_passes": args.op_passes, "joint": args.joint,
             "protocol": config.to_dict(), "lut": str(lut_path)}
    result: dict[str, Any] = {"setup": setup, "backends": {}}
    with LUT.open(lut_path, create=True) as lut:
        for uri in args.devices.split(","):
            result["backends"][uri] = run_backend(uri, args, lut, pool, ops, config)
    result["seconds"], result["loadavg"] = round(time.perf_counter() - t0, 1), _load()
    print_figures(result)
    if args.out:
        write_json(args.out, result, what="benchmark result")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LatkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
