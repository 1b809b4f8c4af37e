"""The one progress display of the CLI, for every long command.

On a terminal it is a rich bar that moves per item (operator, network, training
step) with elapsed time and ETA. Names are cut from the right with an ellipsis, so
an operator key keeps its start (its type and shape), and the columns are sized so
the whole line fits an 80-column terminal. When stderr is not a terminal (CI logs,
pipes) it prints plain lines instead: one when the work starts, one after the first
item, then at most one every ``LATKIT_PROGRESS_SECONDS`` (default 5), and one when it ends.

The library never imports this module: profiler, lut and search take plain
callbacks (``on_progress``), and the CLI turns them into ``advance`` calls here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from latkit.cli import common

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
def track(label: str, total: int, *, enabled: bool = True, console: Console | None = None) -> Iterator[Advance]:
    """Show progress of ``total`` items; yields ``advance(note="", steps=1, total=None)``.

    ``total`` given to ``advance`` replaces the count (a calibration that measures its
    networks once more when the device was not steady grows it).

    Args:
        label: What is being done (``"profiling"``); shown cut from the right.
        total: Number of items; 0 or less shows a counter without a bar.
        enabled: False shows nothing (e.g. under ``--json`` on a shared stream).
        console: Where to draw; the CLI's stderr console by default.
    """
    if not enabled:
        yield lambda note="", steps=1, total=None: None
        return
    con = _console(console)
    if con.is_terminal:
        with _rich_bar(con, label, total) as advance:
            yield advance
    else:
        with _plain_lines(con, label, total) as advance:
            yield advance


@contextmanager
def _rich_bar(con: Console, label: str, total: int) -> Iterator[Advance]:
    fit = {"no_wrap": True, "overflow": "ellipsis"}
    columns = (
        TextColumn("{task.description}", style="bold", markup=False,
                   table_column=Column(width=LABEL_WIDTH, **fit)),  # type: ignore[arg-type]
        BarColumn(bar_width=BAR_WIDTH),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", style="dim", markup=False,
                   table_column=Column(ratio=1, min_width=8, **fit)),  # type: ignore[arg-type]
    )
    with Progress(*columns, console=con, transient=False, expand=True) as bar:
        task = bar.add_task(clip(label, LABEL_WIDTH), total=total if total > 0 else None, note="")

        def advance(note: str = "", steps: int = 1, total: int | None = None) -> None:
            grown = {"total": total} if total is not None and total > 0 else {}
            bar.update(task, advance=steps, note=" ".join(str(note).split()), **grown)

        yield advance


@contextmanager
def _plain_lines(con: Console, label: str, total: int) -> Iterator[Advance]:
    every, start = _interval(), time.monotonic()
    state = {"done": 0, "shown": start, "note": "", "total": total}

    def line(text: str) -> None:
        con.print(escape(text), highlight=False, soft_wrap=True)

    line(f"{label}: started, {total} item(s)" if total > 0 else f"{label}: started")

    def of() -> str:
        return f"/{state['total']}" if state["total"] > 0 else ""

    def advance(note: str = "", steps: int = 1, total: int | None = None) -> None:
        if total is not None and total > 0:
            state["total"] = total
        state["done"] += steps
        state["note"] = " ".join(str(note).split())
        now = time.monotonic()
        if state["done"] == steps or now - state["shown"] >= every:  # the first item, then every few seconds
            state["shown"] = now
            eta = _eta(start, now, state["done"], state["total"])
            line(f"{label}: {state['done']}{of()} {eta} {clip(state['note'], 100)}".rstrip())

    try:
        yield advance
    finally:
        took = _fmt_seconds(time.monotonic() - start)
        line(f"{label}: finished {state['done']}{of()} in {took}")


def _eta(start: float, now: float, done: int, total: int) -> str:
    elapsed = _fmt_seconds(now - start)
    if total <= 0 or done <= 0 or done >= total:
        return f"[{elapsed}]"
    left = (now - start) / done * (total - done)
    return f"[{elapsed}, eta {_fmt_seconds(left)}]"


def stage(name: str, console: Console | None = None) -> None:
    """Print one line naming a stage of a long command (``run``'s profile, calibrate, search, ...)."""
    _console(console).print(f"[bold]==>[/] {escape(name)}", highlight=False)


class Stages:
    """A ``(stage, done, total, message)`` callback that shows one display per stage.

    Long commands made of stages (``run``: profile, calibrate, search, train, ...)
    report through it: each stage gets its own bar (or plain lines off a terminal)
    that is closed when the next stage starts, so a finished stage leaves one line.
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
            self._cm = track(stage, total, console=self.console)
            self._advance = self._cm.__enter__()  # type: ignore[attr-defined]
            self._stage, self._done = stage, 0
        assert self._advance is not None
        self._advance(message, steps=max(0, done - self._done), total=total)
        self._done = max(self._done, done)

    def close(self) -> None:
        """End the current stage's display."""
        if self._cm is not None:
            cm, self._cm, self._stage = self._cm, None, None
            cm.__exit__(None, None, None)  # type: ignore[attr-defined]

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
