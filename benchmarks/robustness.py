"""Robustness: feed every CLI command, API function and file reader bad inputs; kill -9 a profile and resume.

Runs the corpus of tests/robustness/ (named cases, the newer commands and outputs
that cannot be written, hypothesis-generated families, the Python API's every
argument, library readers, fault injection over the loopback phone, the issue-28
surface tests) and prints, per class, how many inputs ended as a clean error, a
traceback, a hang, silently accepted, data loss, ... and then every failing case
with its one-line reason. Then the kill -9 experiment:
``latkit profile`` on cpu:onnxruntime SIGKILLed at five moments and resumed each time,
compared with an uninterrupted reference profile: rows lost and duplicated.

Goal (issues 17 and 28): 0 tracebacks, hangs, silent accepts, data losses and security
findings; 0 rows lost / 0 duplicated.

Every CLI case runs here in its own ``python -m latkit`` subprocess (``run_case`` without
a runner), ``--jobs`` at a time; the test suite runs most of them in-process instead.

    python benchmarks/robustness.py                 # everything (about 15-20 min on 2 busy cores)
    python benchmarks/robustness.py --jobs 3 --only "lut "   # the cases whose id contains "lut "
    python benchmarks/robustness.py --no-faults --no-kill    # the corpus only
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "robustness"))

from rb_api import api_cases, run_api_case  # noqa: E402
from rb_cli import BAD, CLASSES  # noqa: E402
from rb_commands import command_cases  # noqa: E402
from rb_corpus import FAMILIES, cli_cases, draw, reader_cases, release_sockets, run_case, run_reader  # noqa: E402
from rb_faults import fault_cases, run_fault_case, run_unreachable  # noqa: E402
from rb_kill import N_OPS, run_kill_experiment  # noqa: E402
from rb_surfaces import run_surfaces  # noqa: E402
from rb_workspace import build_workspace  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="CLI cases run in parallel")
    ap.add_argument("--only", default="", help="run only cases whose id contains this text")
    ap.add_argument("--no-faults", action="store_true", help="skip the loopback fault injection")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill -9 experiment")
    ap.add_argument("--no-surfaces", action="store_true", help="skip the issue-28 surface tests")
    ap.add_argument("--no-api", action="store_true", help="skip the Python API cases")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="latkit-robustness-"))
    t0 = time.monotonic()
    try:
        ws = build_workspace(base / "ws")
        print(f"workspace ready in {time.monotonic() - t0:.0f} s ({base})", flush=True)
        results = _run_corpus(args, base, ws, t0)
        if not args.no_api:
            results += _run_api(args, base, ws, t0)
        if not args.no_faults:
            results += _run_faults(args, base, ws, t0)
        if not args.no_surfaces:
            results += [r for r in run_surfaces(base / "surfaces.xml") if args.only in r[0]]
        _print_summary(results)
        if not args.no_kill:
            _run_kill(base, ws)
        print(f"\ntotal time {time.monotonic() - t0:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _run_corpus(args: argparse.Namespace, base: Path, ws, t0: float) -> list[tuple[str, str, str]]:
    """The CLI cases (hand-written and generated, ``--jobs`` at a time), then the reader cases."""
    cases = cli_cases() + command_cases()
    for fam in FAMILIES:
        cases += [fam.to_case(v) for v in draw(fam, fam.bench_examples)]
    cases = [c for c in cases if args.only in c.id]
    readers = [c for c in reader_cases() if args.only in c.id]

    def one(item):
        i, case = item
        verdict = run_case(case, base / "cases" / f"{i:04d}", ws)
        return case.id, verdict.kind, verdict.detail

    results: list[tuple[str, str, str]] = []  # (id, kind, detail)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for rid, kind, detail in pool.map(one, enumerate(cases)):
            results.append((rid, kind, detail))
            if len(results) % 25 == 0:
                print(f"  {len(results)}/{len(cases)} CLI cases ({time.monotonic() - t0:.0f} s)", flush=True)
    release_sockets()
    for i, case in enumerate(readers):
        v = run_reader(case, base / "readers" / f"{i:04d}", ws)
        results.append((case.id, v.kind, v.detail))
    print(f"corpus done: {len(cases)} CLI + {len(readers)} reader cases "
          f"({time.monotonic() - t0:.0f} s)", flush=True)
    return results


def _run_api(args: argparse.Namespace, base: Path, ws, t0: float) -> list[tuple[str, str, str]]:
    """The Python API's verbs with one bad argument each, called in this process."""
    results = []
    for i, case in enumerate(c for c in api_cases() if args.only in c.id):
        v = run_api_case(case, base / "api" / f"{i:04d}", ws)
        results.append((case.id, v.kind, v.detail))
    print(f"API done: {len(results)} cases ({time.monotonic() - t0:.0f} s)", flush=True)
    return results


def _run_faults(args: argparse.Namespace, base: Path, ws, t0: float) -> list[tuple[str, str, str]]:
    """Loopback fault injection, then a profile against an unreachable phone."""
    results: list[tuple[str, str, str]] = []
    for i, fc in enumerate(f for f in fault_cases() if args.only in f.id):
        v = run_fault_case(fc, base / "faults" / f"{i:02d}", ws)
        results.append((fc.id, v.kind, v.detail))
        print(f"  fault {fc.name}: {v.kind} ({time.monotonic() - t0:.0f} s)", flush=True)
    if args.only in "profile over loopback: unreachable":
        for rid, v in run_unreachable(base / "unreachable", ws):
            results.append((rid, v.kind, v.detail))
    return results


def _run_kill(base: Path, ws) -> None:
    print(f"\nkill -9 experiment: profile {N_OPS} operators of proxyless_mobile at 32x32 on "
          "cpu:onnxruntime, SIGKILL at 5 moments, resume after each", flush=True)
    rep = run_kill_experiment(base / "kill", ws.cache)
    for m, n in zip(rep.moments, rep.killed_at_rows):
        print(f"  killed {m}: {n} rows committed")
    print(f"  reference rows {rep.reference}, final rows {rep.final}")
    print(f"  rows lost: {rep.lost}   rows duplicated: {rep.duplicated}   "
          f"unexpected extra: {rep.extra}   missing at the end: {rep.missing}")
    for note in rep.notes:
        print(f"  note: {note}")


def _print_summary(results: list[tuple[str, str, str]]) -> None:
    counts = Counter(kind for _, kind, _ in results)
    expected_ok = counts.get("ok", 0) + counts.get("wrongly failed", 0)
    print(f"\nbad inputs tried: {len(results) - expected_ok} "
          f"(+ {expected_ok} valid inputs in odd clothing that must succeed)")
    for kind in CLASSES:
        print(f"  {kind:26s} {counts.get(kind, 0)}")
    for kind in sorted(set(counts) - set(CLASSES)):  # the surface tests' own classes (data loss, ...)
        print(f"  {kind:26s} {counts[kind]}")
    failing = [r for r in results if r[1] in BAD or r[1] not in CLASSES]
    print(f"\nfailing cases ({len(failing)}):")
    for rid, kind, detail in sorted(failing):
        print(f"  [{kind}] {rid} -- {detail}")


if __name__ == "__main__":
    raise SystemExit(main())
