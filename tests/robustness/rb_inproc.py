"""Run a latkit command inside the test process, with the state a fresh ``python -m latkit`` has.

Most of the corpus fails (or succeeds) in argument and input checks that take
milliseconds, while a new interpreter costs 0.4-5 s (importing torch alone takes
seconds). :class:`InProcess` calls latkit's own ``main(argv)`` through
``cli_checks.run`` with pytest's ``capfd`` (which also sees what native code writes
to file descriptors 1 and 2) and, for the run only, gives the process what
:func:`rb_cli.run_cli` gives a subprocess, restoring everything afterwards:

* the case's environment (own HOME, the shared LATKIT_CACHE), its folder as the
  working directory, and stdin on /dev/null (a prompt reads end-of-file);
* stdout and stderr that encode text with the error handlers of a fresh
  interpreter's pipes (a path that is not UTF-8 raises, is escaped or is written
  raw just as it would be there; pytest's capture would replace it silently);
* a root logger without handlers, so the CLI's ``logging.basicConfig`` writes its
  WARNING lines to stderr as in a fresh process (pytest's logging plugin holds root
  handlers that would swallow them and make ``basicConfig`` a no-op);
* the interpreter's default warning filters, each shown warning appended to stderr
  as the interpreter prints it (pytest records warnings instead of printing them);
* the same room to recurse: the recursion limit is raised by the depth of the
  test's own frames, so a deeply nested input fails (or not) at about the depth it would;
* torch's thread count and global random state (``search`` and ``run`` set both).

An exception escaping ``main`` becomes the interpreter's traceback text and exit 1;
SIGALRM ends a run past its timeout, reported like a killed subprocess (rc None).
What cannot be made identical in-process (a server, a hang inside native code, a
native crash, state that cannot be put back) is why a corpus case sets
``needs_process``: those run in a subprocess.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rb_cli import Result

# CPython's warning filters when started without -W or PYTHONWARNINGS, highest priority first
DEFAULT_WARNING_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


class Timeout(BaseException):
    """Raised by SIGALRM in a run past its time (a BaseException: ``except Exception`` keeps out)."""


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`Timeout` in the main thread after ``seconds``; the previous handler comes back."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("an in-process run needs the main thread (SIGALRM is its timeout)")

    def ring(signum: int, frame: Any) -> None:
        raise Timeout

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@functools.cache
def pipe_encodings() -> tuple[tuple[str, str], tuple[str, str]]:
    """(encoding, errors) of a fresh interpreter's stdout and stderr when both are pipes."""
    probe = "import sys; print(sys.stdout.encoding, sys.stdout.errors, sys.stderr.encoding, sys.stderr.errors)"
    words = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.split()
    return (words[0], words[1]), (words[2], words[3])


class PipeText:
    """A text stream that encodes like a fresh interpreter's pipe, then writes to the captured one."""

    def __init__(self, stream: Any, encoding: str, errors: str) -> None:
        self._stream, self.encoding, self.errors = stream, encoding, errors

    def write(self, text: str) -> int:
        data = text.encode(self.encoding, self.errors)  # raises where the real pipe would
        self._stream.write(data.decode(self.encoding, "replace"))  # what run_cli decodes
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def fresh_process_state(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """Environment, cwd, stdin, root logger and torch state of a fresh process; restored on exit."""
    import torch  # imported first: a run that imports torch and sets its threads is then undone too

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _depth())
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    (out_enc, out_err), (err_enc, err_err) = pipe_encodings()
    try:
        with open(os.devnull, encoding="utf-8") as devnull:
            sys.stdin = devnull
            sys.stdout = PipeText(saved_streams[1], out_enc, out_err)
            sys.stderr = PipeText(saved_streams[2], err_enc, err_err)
            yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        sys.setrecursionlimit(limit)


def _depth() -> int:
    """How many frames the caller runs under (pytest's; a fresh ``python -m`` has a few)."""
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


@contextmanager
def fresh_warnings() -> Iterator[list[str]]:
    """The interpreter's default warning filters; yields a list that receives each shown warning's text."""
    shown: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        for action, category, module in reversed(DEFAULT_WARNING_FILTERS):
            warnings.filterwarnings(action, category=category, module=module)
        try:
            yield shown
        finally:
            shown += [warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                      for w in caught]


@dataclass(frozen=True)
class InProcess:
    """A runner for :func:`rb_corpus.run_case`: ``latkit ARGV`` through ``cli_checks.run``.

    Attributes:
        capture: pytest's ``capfd`` (anything with ``readouterr()`` giving ``.out``, ``.err``).
    """

    capture: Any

    def __call__(self, argv: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> Result:
        from cli_checks import run

        self.capture.readouterr()  # drop what building the case printed
        start = time.monotonic()
        with fresh_process_state(cwd, env), fresh_warnings() as shown:
            try:
                with alarm(timeout):
                    rc, out, err = run(self.capture, *argv)
            except Timeout:
                rc, (out, err) = None, self._drain()
            except Exception:  # the interpreter would print its traceback and exit 1
                rc, (out, err) = 1, self._drain()
                err += traceback.format_exc()
        return Result(list(argv), rc, out, err + "".join(shown), time.monotonic() - start)

    def _drain(self) -> tuple[str, str]:
        captured = self.capture.readouterr()
        return captured.out, captured.err
