"""Run one call in a newly started Python interpreter and return its result.

Timing a model file on the host CPU right after this process has trained or
converted a network with torch reads slower than in a fresh interpreter (torch's
worker threads and allocator state linger), so the host-CPU measurements of
``export --device`` and of the pipeline's measure stage run here instead.

The child is ``python -c`` importing only latkit, never the caller's main module:
``multiprocessing``'s spawn start method re-runs an unguarded script's top level
in the child, and its pool then restarts the crashing worker for ever. The call and
its result travel over the child's stdin and a private copy of its stdout as
pickles between two processes of the same latkit (in memory, never a file); what
the child prints goes to stderr, where its log lines go too.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from latkit.core.errors import LatkitError

T = TypeVar("T")

_CHILD = "from latkit.core.fresh import _child_main; _child_main()"


def in_fresh_interpreter(fn: Callable[..., T], *args: Any, what: str = "the call") -> T:
    """``fn(*args)`` run in a new interpreter (``fn`` and ``args`` must pickle).

    Raises:
        LatkitError: the error ``fn`` raised (its own latkit error type where it
            has one), or the child ended without an answer (killed, crashed).
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this latkit: the child imports the same one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps((fn, args)), stdout=subprocess.PIPE,
                          env=env, check=False)  # fmt: skip
    try:
        kind, value = pickle.loads(proc.stdout)
    except Exception as exc:  # nothing, or a cut answer: the child died
        raise LatkitError(f"{what} in a fresh interpreter ended without an answer (exit {proc.returncode}); "
                          "see the lines above") from exc
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if isinstance(value, BaseException):
        raise value
    raise LatkitError(str(value))


def _child_main() -> None:
    """The child's side: read the call, run it, answer on the stdout it was given."""
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of the call go to stderr, not into the answer
    sys.stdout = sys.stderr
    fn, args = pickle.loads(sys.stdin.buffer.read())
    try:
        reply: tuple[str, object] = ("ok", fn(*args))
    except LatkitError as exc:
        reply = ("error", exc if _round_trips(exc) else f"{type(exc).__name__}: {exc}")
    answer.write(pickle.dumps(reply))
    answer.close()


def _round_trips(exc: BaseException) -> bool:
    """Whether the exception unpickles as it was (some latkit errors take other arguments than their message)."""
    try:
        return str(pickle.loads(pickle.dumps(exc))) == str(exc)
    except Exception:
        return False
