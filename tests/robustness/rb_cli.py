"""Run a latkit command in a subprocess and classify what it did with a bad input.

The standard every command is held to: bad input gets ONE clear line on stderr, a
non-zero exit, no traceback and no hang; exit 0 on bad input is *silent acceptance*.
:func:`run_cli` runs the command in a subprocess whose process group is killed on a
hang; the benchmark runs every case so. The test suite runs most cases inside its own
process (:mod:`rb_inproc`, same :class:`Result`, same :func:`classify`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# The outcome classes, in the order the benchmark prints them.
CLEAN = "clean error"
OK = "ok"  # expected success, and it succeeded (checks passed)
TRACEBACK = "traceback"
HANG = "hang"
SILENT = "silently accepted"
MESSY = "messy error"  # exit != 0 and no traceback, but not exactly one stderr line
FAILED = "wrongly failed"  # expected success, got an error or wrong output
DEBRIS = "half-written output left"  # failed, but left a partial/temp output file
MISLEADING = "misleading error"  # a clean line that blames the wrong thing
DATA_LOSS = "data loss"  # deleted or damaged a file latkit did not create
SECURITY = "security"  # wrote outside its folder, or let a device's text steer the terminal
CLASSES = (CLEAN, OK, TRACEBACK, HANG, SILENT, MESSY, FAILED, DEBRIS, MISLEADING, DATA_LOSS, SECURITY)
BAD = (TRACEBACK, HANG, SILENT, MESSY, FAILED, DEBRIS, MISLEADING, DATA_LOSS, SECURITY)

# Lines a long-running command may print on stderr besides its error (header, progress).
PROGRESS_PREFIXES = ("profil", "measur", "calibrat", "search", "train", "scoring", "smooth", "export",
                     "evaluat", "report", "target", "retry", "==>", "warning:", "INFO", "WARNING")


@dataclass
class Result:
    """What one run of the command did."""

    argv: list[str]
    rc: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


@dataclass
class Verdict:
    """The class of a run and a one-line reason (first traceback/stderr line)."""

    kind: str
    detail: str = ""
    result: Result | None = field(default=None, repr=False)

    @property
    def bad(self) -> bool:
        return self.kind in BAD


def isolated_env(base: Path, cache: Path | None = None) -> dict[str, str]:
    """An environment whose HOME and LATKIT_CACHE live under ``base``."""
    env = dict(os.environ)
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), LATKIT_CACHE=str(cache or base / "cache"),
               XDG_CONFIG_HOME=str(home / ".config"), PYTHONUNBUFFERED="1",
               COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env.pop("ANDROID_ADB_SERVER_PORT", None)
    return env


def run_cli(argv: list[str], cwd: Path, timeout: float = 30.0, env: dict[str, str] | None = None,
            stdin: bytes | None = None, stdout: str = "", fsize: int = 0) -> Result:
    """Run ``python -m latkit ARGV`` in ``cwd``; kill its whole process group on timeout.

    ``stdout``: a file the command's standard output goes to (``/dev/full``) instead
    of a pipe; ``fsize``: a file-size limit in bytes (``RLIMIT_FSIZE``) for the command.
    """
    import resource
    import time

    env = env if env is not None else isolated_env(Path(tempfile.mkdtemp(prefix="rb-env-")))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    start = time.monotonic()
    sink = open(stdout, "wb") if stdout else None  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "latkit", *argv], cwd=cwd, env=env,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=sink or subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=limit if fsize else None)  # fmt: skip
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        out = out or b""
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        out, rc = out or b"", None
    finally:
        if sink is not None:
            sink.close()
    return Result(list(argv), rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                  time.monotonic() - start)


def _first_traceback_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # the exception line is the last non-indented line of the traceback
    for ln in reversed(lines):
        if ln and not ln.startswith((" ", "\t", "Traceback")):
            return ln.strip()[:300]
    return lines[-1][:300] if lines else ""


def classify(res: Result, expect: str = "error", allow_progress: bool = False) -> Verdict:
    """Classify a run: clean error, traceback, hang, silently accepted, messy error.

    Args:
        res: the run.
        expect: ``"error"`` (bad input: must fail cleanly) or ``"ok"`` (must succeed;
            the caller checks the output).
        allow_progress: the command may print its header/progress lines before the
            error (profile, calibrate): then the stderr must hold exactly one line
            starting with ``error:`` (or at least one ``failed`` line) besides them.
    """
    lines = res.lines
    if res.rc is None:
        return Verdict(HANG, f"no exit after {res.seconds:.0f} s; last stderr: "
                             f"{(lines or [''])[-1][:200]}", res)
    if "Traceback (most recent call last)" in res.stderr or "Traceback" in res.stdout:
        return Verdict(TRACEBACK, _first_traceback_line(res.stderr or res.stdout), res)
    if expect == "ok":
        if res.rc != 0:
            return Verdict(FAILED, f"exit {res.rc}: {(lines or ['<no stderr>'])[-1][:300]}", res)
        return Verdict(OK, "", res)
    if res.rc == 0:
        return Verdict(SILENT, f"exit 0; stdout: {res.stdout.strip()[:160]!r}", res)
    if allow_progress:
        errors = [ln for ln in lines if ln.startswith("error:")]
        failed = [ln for ln in lines if ln.startswith("failed")]
        others = [ln for ln in lines if not ln.startswith(("error:", "failed", *PROGRESS_PREFIXES))
                  and "operators" not in ln]
        if len(errors) == 1 or (failed and not errors):
            return Verdict(CLEAN, (errors or failed)[0][:300], res)
        return Verdict(MESSY, f"exit {res.rc}, {len(errors)} error lines: "
                              f"{' | '.join((errors or others or lines)[:3])[:300]}", res)
    if len(lines) != 1:
        what = f"{len(lines)} stderr lines" if lines else "empty stderr"
        return Verdict(MESSY, f"exit {res.rc}, {what}: {' | '.join(ln.strip() for ln in lines[:4])[:300]}",
                       res)
    return Verdict(CLEAN, lines[0][:300], res)


def assert_clean_error(argv: list[str], cwd: Path, *needles: str, timeout: float = 30.0,
                       env: dict[str, str] | None = None, allow_progress: bool = False) -> Result:
    """Run a command that must reject its input: one stderr line, exit != 0, no traceback.

    ``needles`` must appear in the error line (e.g. the bad name, the path).
    """
    res = run_cli(argv, cwd, timeout=timeout, env=env)
    verdict = classify(res, "error", allow_progress)
    assert verdict.kind == CLEAN, f"{verdict.kind}: {verdict.detail}\nargv={argv}\nstderr={res.stderr[-2000:]}"
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in the error: {res.stderr[-500:]}"
    return res
