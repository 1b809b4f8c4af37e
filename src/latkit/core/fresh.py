"""Run one call in a newly started Python interpreter and return its result.

Timing a model file on the host CPU right after this process has trained or
converted a network with torch reads slower than in a fresh interpreter (torch's
worker threads and allocator state linger), so the host-CPU measurements of
``export --device`` and of the pipeline's measure stage run here instead.

The child is ``python -c CHILD``, where ``CHILD`` is a literal line of the
calling module that imports its own entry and hands it to :func:`serve`; never
the caller's main module (``multiprocessing``'s spawn start method re-runs an
unguarded script's top level in the child, and its pool then restarts the
crashing worker for ever). The request and the answer are JSON: the request
on the child's stdin, the answer on a private copy of its stdout. What the
child prints goes to stderr, where its log lines go too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from latkit.core import errors
from latkit.core.errors import LatkitError


def in_fresh_interpreter(child: str, request: dict[str, Any], *, what: str = "the call") -> Any:
    """Start ``python -c child``, send it ``request`` and return the JSON value it answers with.

    ``child`` is Python source that calls :func:`serve` with the function that
    answers ``request`` (a literal of the caller, never text from outside).

    Raises:
        LatkitError: the error the child's function raised (as its own latkit
            error type where that type takes just a message), or the child
            ended without an answer (killed, crashed).
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this latkit: the child imports the same one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", child], input=json.dumps(request).encode(), stdout=subprocess.PIPE,
                          env=env, check=False)  # fmt: skip
    try:
        answer = json.loads(proc.stdout)
        kind = answer["kind"]
    except (ValueError, TypeError, KeyError) as exc:  # nothing, or a cut answer: the child died
        raise LatkitError(f"{what} in a fresh interpreter ended without an answer (exit {proc.returncode}); "
                          "see the lines above") from exc
    if kind == "ok":
        return answer["value"]
    raise _error(str(answer.get("type", "")), str(answer.get("message", "")))


def serve(answer_request: Callable[[dict[str, Any]], Any]) -> None:
    """The child's side: read the JSON request, answer it, write the JSON answer on the stdout it was given."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints of the call go to stderr, not into the answer
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.buffer.read())
    try:
        reply: dict[str, Any] = {"kind": "ok", "value": answer_request(request)}
    except LatkitError as exc:
        reply = {"kind": "error", "type": type(exc).__name__, "message": str(exc)}
    out.write(json.dumps(reply, allow_nan=True))
    out.close()


def _error(type_name: str, message: str) -> LatkitError:
    """The child's error as the parent raises it: its own type when that type rebuilds from its message alone.

    Other types (one built from a name and a list, one defined outside
    :mod:`latkit.core.errors`) come back as a :class:`LatkitError` with the
    same message, which is what a user reads and what sets the exit code.
    """
    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, LatkitError):
        try:
            exc = cls(message)
        except TypeError:  # a type built from other arguments than its message
            exc = None
        if exc is not None and str(exc) == message:
            return exc
    return LatkitError(message)


__all__ = ["in_fresh_interpreter", "serve"]
