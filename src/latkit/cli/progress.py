"""The one progress display of the CLI, for every long command.

On a terminal it is a rich bar that moves per item (operator, network, training
step) with elapsed time and ETA. Names are cut from the right with an ellipsis, so
an operator key keeps its start (its type and shape), and the columns are sized so
the whole line fits an 80-column terminal. When stderr is not a terminal (CI logs,
pipes) it prints plain lines instead: one when the work starts, one after the first
item, then at most one every ``LATKIT_PROGRESS_SECONDS`` (default 5), one whenever the
total changes, and one when it ends; a step that takes longer than that (a conversion, a
network measured on a phone) gets a "still working" line every few seconds, so a log is
never silent for long. Either way the ETA is left out until a few items are done and a
few seconds have passed: the first item carries the start-up and would mislead.

The library never imports this module: profiler, lut and search take plain
callbacks (``on_progress``), and the CLI turns them into ``advance`` calls here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from latkit.cli import common

ETA_MIN_ITEMS = 3  # an ETA needs this many items done ...
ETA_MIN_SECONDS = 10.0  # ... and this much time gone (the first item carries the start-up)
HEARTBEAT_MIN_S = 5.0  # off a terminal, a "still working" line after this long without one
LABEL_WIDTH = 22  # label + bar + counts + times + a 20-char note fit in 80 columns
BAR_WIDTH = 12

Advance = Callable[..., None]


def _console(console: Console | None) -> Console:
    return console if console is not None else common.err


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("LATKIT_PROGRESS_SECONDS", "5")))
    except ValueError:
        return 5.0


def clip(text: str, width: int) -> str:
    """``text`` cut from the right to ``width`` characters, with an ellipsis (the start is kept)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def track(label: str, total: int, *, enabled: bool = True, console: Console | None = None,
          note: str = "") -> Iterator[Advance]:
    """Show progress of ``total`` items; yields ``advance(note="", steps=1, total=None)``.

    ``total`` given to ``advance`` replaces the count (a calibration that measures its
    networks once more when the device was not steady grows it).

    Args:
        label: What is being done (``"profiling"``); shown cut from the right.
        total: Number of items; 0 or less shows a counter without a bar.
        enabled: False shows nothing (e.g. under ``--json`` on a shared stream).
        console: Where to draw; the CLI's stderr console by default.
        note: What the start line adds (``"2 passes, up to 6 while unsteady"``).
    """
    if not enabled:
        yield lambda note="", steps=1, total=None: None
        return
    con = _console(console)
    if con.is_terminal:
        with _rich_bar(con, label, total, note) as advance:
            yield advance
    else:
        with _plain_lines(con, label, total, note) as advance:
            yield advance


@contextmanager
def _rich_bar(con: Console, label: str, total: int, note: str) -> Iterator[Advance]:
    fit = {"no_wrap": True, "overflow": "ellipsis"}
    columns = (
        TextColumn("{task.description}", style="bold", markup=False,
                   table_column=Column(width=LABEL_WIDTH, **fit)),  # type: ignore[arg-type]
        BarColumn(bar_width=BAR_WIDTH),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        _EtaColumn(),
        TextColumn("{task.fields[note]}", style="dim", markup=False,
                   table_column=Column(ratio=1, min_width=8, **fit)),  # type: ignore[arg-type]
    )
    with Progress(*columns, console=con, transient=False, expand=True) as bar:
        task = bar.add_task(clip(label, LABEL_WIDTH), total=total if total > 0 else None,
                           note=" ".join(str(note).split()))

        def advance(note: str = "", steps: int = 1, total: int | None = None) -> None:
            grown = {"total": total} if total is not None and total > 0 else {}
            bar.update(task, advance=steps, note=" ".join(str(note).split()), **grown)

        yield advance


class _EtaColumn(TimeRemainingColumn):
    """rich's time remaining, blank until it means something (see :func:`eta_seconds`)."""

    def render(self, task: Task) -> Text:
        if task.total is not None and (task.completed < ETA_MIN_ITEMS or (task.elapsed or 0.0) < ETA_MIN_SECONDS):
            return Text("-:--:--", style="progress.remaining")
        return super().render(task)


@contextmanager
def _plain_lines(con: Console, label: str, total: int, note: str) -> Iterator[Advance]:
    lines = PlainLines(con, label, total, note=note)
    beat = _Heartbeat(lines)
    stopped = False
    try:
        yield lines.advance
    except BaseException:
        stopped = True
        raise
    finally:
        beat.stop()
        lines.finish(stopped)


class PlainLines:
    """The plain-line display of one task, off a terminal; thread-safe.

    A line when the work starts (with its total), after the first item, then at
    most one every ``every`` seconds, one whenever the total changes (with the
    reason given), and one at the end. :meth:`beat`, called by a background
    thread, adds a "still working" line whenever nothing was printed for
    ``quiet_s`` seconds, so a long step (a conversion, a network measured on a
    phone) never leaves a log silent. ``clock`` is injectable for tests.
    """

    def __init__(self, con: Console, label: str, total: int, *, note: str = "", every: float | None = None,
                 quiet_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.con, self.label, self.total, self.clock = con, label, total, clock
        self.every = _interval() if every is None else every
        self.quiet_s = max(self.every, HEARTBEAT_MIN_S) if quiet_s is None else quiet_s
        self.start = self.shown = self.counted = clock()  # the last line of any kind; the last count line
        self.first: float | None = None  # when the first item finished: the ETA's rate starts there
        self.done, self.note = 0, " ".join(str(note).split())
        self.start_note = self.note  # on the start line already: a heartbeat does not repeat it
        self._lock = threading.Lock()
        head = f"{label}: started, {total} item(s)" if total > 0 else f"{label}: started"
        self._line(head + (f": {clip(self.note, 100)}" if self.note else ""))

    def _line(self, text: str) -> None:
        self.shown = self.clock()
        self.con.print(escape(text), highlight=False, soft_wrap=True)

    def _of(self) -> str:
        return f"/{self.total}" if self.total > 0 else ""

    def advance(self, note: str = "", steps: int = 1, total: int | None = None) -> None:
        """``steps`` more items done (0: only a new note or total); ``total`` replaces the count."""
        with self._lock:
            now = self.clock()
            note = " ".join(str(note).split())
            grown = total is not None and total > 0 and total != self.total
            if grown:
                was, self.total = self.total, int(total)  # type: ignore[arg-type]
                self._line(f"{self.label}: total now {self.total} (was {was})" + (f": {clip(note, 100)}" if note else ""))
            self.note = note or self.note
            if steps <= 0:
                return
            self.done += steps
            if self.first is None:
                self.first = now
            if self.done == steps or now - self.counted >= self.every:  # the first item, then every few seconds
                self.counted = now  # (a "still working" line in between does not hold the count back)
                eta = _eta(self.start, self.first, now, self.done, self.total)
                self._line(f"{self.label}: {self.done}{self._of()} {eta} {clip(note, 100)}".rstrip())

    def beat(self) -> bool:
        """Print a "still working" line if nothing was printed for ``quiet_s`` seconds; whether it did."""
        with self._lock:
            now = self.clock()
            if now - self.shown < self.quiet_s:
                return False
            last = f" (latest: {clip(self.note, 80)})" if self.note and self.note != self.start_note else ""
            self._line(f"{self.label}: {self.done}{self._of()} done, still working [{_fmt_seconds(now - self.start)}]"
                       f"{last}")  # fmt: skip
            return True

    def finish(self, stopped: bool = False) -> None:
        """The closing line: the count and the time taken (``stopped``: the work ended in an error)."""
        with self._lock:
            took = _fmt_seconds(self.clock() - self.start)
            self._line(f"{self.label}: {'stopped at' if stopped else 'finished'} {self.done}{self._of()} in {took}")


class _Heartbeat:
    """A daemon thread calling ``lines.beat()`` every second until :meth:`stop`."""

    def __init__(self, lines: PlainLines) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lines,), name="latkit-progress", daemon=True)
        self._thread.start()

    def _run(self, lines: PlainLines) -> None:
        while not self._stop.wait(1.0):
            lines.beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _eta(start: float, first: float | None, now: float, done: int, total: int) -> str:
    """``[elapsed, eta ...]``; the ETA only once it means something (see :func:`eta_seconds`)."""
    elapsed = _fmt_seconds(now - start)
    left = eta_seconds(start, first, now, done, total)
    return f"[{elapsed}]" if left is None else f"[{elapsed}, eta {_fmt_seconds(left)}]"


def eta_seconds(start: float, first: float | None, now: float, done: int, total: int) -> float | None:
    """Seconds left, or None while an estimate would mislead.

    The first item carries the start-up (model conversion, pushing files to a
    phone), so the rate is taken from the items after it, and only once
    :data:`ETA_MIN_ITEMS` items are done and :data:`ETA_MIN_SECONDS` have
    passed: one slow first item would otherwise promise half an hour.
    """
    if first is None or total <= 0 or done >= total or done < ETA_MIN_ITEMS or now - start < ETA_MIN_SECONDS:
        return None
    return (now - first) / (done - 1) * (total - done)


def stage(name: str, console: Console | None = None) -> None:
    """Print one line naming a stage of a long command (``run``'s profile, calibrate, search, ...)."""
    _console(console).print(f"[bold]==>[/] {escape(name)}", highlight=False)


class Stages:
    """A ``(stage, done, total, message)`` callback that shows one display per stage.

    Long commands made of stages (``run``: profile, calibrate, search, train, ...)
    report through it: each stage gets its own bar (or plain lines off a terminal)
    that is closed when the next stage starts, so a finished stage leaves one line.
    A call with ``done`` 0 announces a stage before its first item: its display
    opens at once, with the stage's total and the message on its start line.
    Use it as a context manager so the last stage is closed too.
    """

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled, self.console = enabled, console
        self._stage: str | None = None
        self._cm: object | None = None
        self._advance: Advance | None = None
        self._done = 0

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._cm = track(stage, total, console=self.console, note=message if done <= 0 else "")
            self._advance = self._cm.__enter__()  # type: ignore[attr-defined]
            self._stage, self._done = stage, 0
            if done <= 0:
                return
        assert self._advance is not None
        self._advance(message, steps=max(0, done - self._done), total=total)
        self._done = max(self._done, done)

    def close(self, exc: BaseException | None = None) -> None:
        """End the current stage's display (``exc``: the error that stopped it, which it says)."""
        if self._cm is not None:
            cm, self._cm, self._stage = self._cm, None, None
            if exc is None:
                cm.__exit__(None, None, None)  # type: ignore[attr-defined]
                return
            try:
                cm.__exit__(type(exc), exc, exc.__traceback__)  # type: ignore[attr-defined]
            except BaseException as again:  # the display re-raises it: the caller's own raise goes on
                if again is not exc:
                    raise

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close(exc)
