"""Where latkit keeps what it can make again or measured for you: one place for every cache path.

``$LATKIT_CACHE`` (default ``~/.cache/latkit``) holds the exported model files
(directly in ``$LATKIT_CACHE`` when it is set, in ``~/.cache/latkit/models``
otherwise, as before this module) and the loopback phone's sandboxes and key
(``loopback/``). ``$LATKIT_LUT_DIR`` (default ``~/.cache/latkit/luts``) holds the
per-device LUTs ``latkit run`` builds. Models and loopback sandboxes are made
again on demand; LUTs hold measurements, so clearing them is asked for by name.

Both variables may point at a folder that also holds the user's own files, so
clearing deletes only what latkit can prove it made: the files named the way
latkit names them, in an area that carries latkit's marker file
(:data:`MARKER`, written when latkit creates the area, or finds it empty) or
that sits at its default place under ``~/.cache/latkit``. Anywhere else
:func:`clear` refuses and deletes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from latkit.core.errors import UsageError

log = logging.getLogger(__name__)

MARKER = ".latkit-cache-area"
# What latkit names its files, per area (anything else in the folder is the user's).
_OWN_NAMES = {
    # <readable key>[-precision]-<20 hex digest>.onnx|.tflite, its .json sidecar, and
    # the dot-prefixed .part files an interrupted export leaves.
    "models": re.compile(r"(?:[A-Za-z0-9_.-]*-[0-9a-f]{20}\.(?:onnx|tflite)(?:\.json)?"
                         r"|\.[A-Za-z0-9_.-]+\.part(?:\.onnx|\.tflite)?)"),
    # <device>-<space>-<resolution>.db and kernels.db, with SQLite's sidecars.
    "luts": re.compile(r"[A-Za-z0-9_.-]+\.db(?:-wal|-shm|-journal)?"),
    # the device's key pair (and its temporary file), one sandbox folder per port, and the
    # registrations of the running devices (latkit.devices.loopback.running).
    "loopback": re.compile(r"adbkey(?:\.pub)?|\.adbkey-[A-Za-z0-9_]+|port-[0-9]+|running"),
}


def cache_root() -> Path:
    """``$LATKIT_CACHE`` or ``~/.cache/latkit``."""
    env = os.environ.get("LATKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latkit"


def models_dir() -> Path:
    """Exported model files: ``$LATKIT_CACHE`` or ``~/.cache/latkit/models``."""
    env = os.environ.get("LATKIT_CACHE")
    return Path(env).expanduser() if env else cache_root() / "models"


def loopback_dir() -> Path:
    """The loopback phone's sandboxes and key: ``<cache root>/loopback``."""
    return cache_root() / "loopback"


def luts_dir() -> Path:
    """LUTs ``latkit run`` builds per device: ``$LATKIT_LUT_DIR`` or ``~/.cache/latkit/luts``."""
    env = os.environ.get("LATKIT_LUT_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latkit" / "luts"


@dataclass(frozen=True)
class Area:
    """One kind of cached thing."""

    name: str
    path: Path
    what: str
    precious: bool  # holds measurements: cleared only when asked for by name with --yes
    env: str = ""  # the variable that moved the area away from its default place, if set

    def entries(self) -> list[Path]:
        """The top-level files and folders of this area that latkit names as its own."""
        own = _OWN_NAMES[self.name]
        try:
            children = list(self.path.iterdir()) if self.path.is_dir() else []
        except OSError:
            return []
        return sorted(p for p in children if own.fullmatch(p.name) and (p.is_dir() or p.is_file())
                      and not p.is_symlink())  # fmt: skip

    def files(self) -> list[Path]:
        """The files latkit made in this area (inside its own folders too)."""
        out: list[Path] = []
        for p in self.entries():
            out += sorted(q for q in p.rglob("*") if q.is_file() or q.is_symlink()) if p.is_dir() else [p]
        return out

    def size(self) -> tuple[int, int]:
        """(files, bytes)."""
        files = self.files()
        return len(files), sum(_size(p) for p in files)

    def marked(self) -> bool:
        """Whether latkit can prove the area is its own: its marker, or its default place."""
        return not self.env or (self.path / MARKER).is_file()


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def areas() -> list[Area]:
    """Every cache area, in the order ``latkit cache`` lists them."""
    cache_env = "LATKIT_CACHE" if os.environ.get("LATKIT_CACHE") else ""
    lut_env = "LATKIT_LUT_DIR" if os.environ.get("LATKIT_LUT_DIR") else ""
    return [
        Area("models", models_dir(), "exported operator and network model files (made again on demand)", False,
             cache_env),
        Area("loopback", loopback_dir(), "loopback phone sandboxes and its key (made again on start)", False,
             cache_env),
        Area("luts", luts_dir(), "LUTs measured by `latkit run` (measurements: kept unless named)", True, lut_env),
    ]


def area(name: str) -> Area:
    """The area called ``name``.

    Raises:
        UsageError: no such area.
    """
    for a in areas():
        if a.name == name:
            return a
    raise UsageError(f"unknown cache area {name!r}; use one of {', '.join(a.name for a in areas())}")


def prepare(folder: Path | str) -> None:
    """Before latkit writes into ``folder``: mark each cache area it lies in as latkit's.

    An area is marked when this call creates it or finds it empty; a folder
    that already holds someone else's files stays unmarked, so that
    :func:`clear` later refuses to delete anything in it. Errors are left to
    the writer that follows, which reports them with its own context.
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    for a in areas():
        root = Path(os.path.abspath(a.path))
        if folder == root or root in folder.parents:
            _mark(root, a.name)


def _mark(root: Path, name: str) -> None:
    marker = root / MARKER
    try:
        if marker.is_file():
            return
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            log.info("%s holds files latkit did not make; `latkit cache clear` will leave it alone", root)
            return
        marker.write_text(f"latkit created this folder as its {name} cache area; "
                          "`latkit cache clear` deletes only latkit's own files here.\n")
    except OSError as exc:
        log.debug("cannot mark %s as latkit's cache area: %s", root, exc)


def check_clearable(target: Area) -> None:
    """Refuse to clear an area latkit cannot prove is its own.

    Raises:
        UsageError: the area is in a folder without latkit's marker, or is a file.
    """
    if target.path.exists() and not target.path.is_dir():  # nothing to clear: say so, not "0 files"
        where = f" ({target.env})" if target.env else ""
        raise UsageError(f"the {target.name} cache {target.path}{where} is a file, not a folder; point "
                         f"{target.env or 'it'} at a folder")
    if target.path.is_dir() and not target.marked():
        raise UsageError(
            f"{target.path} ({target.env}) has no {MARKER} file, so latkit cannot prove it made the "
            f"{target.name} files there and deletes nothing; delete them yourself, or point "
            f"{target.env} at a folder of latkit's own"
        )


def clear(target: Area) -> tuple[int, int]:
    """Delete latkit's own files of the area; (files, bytes) removed.

    Only names latkit gives its files are deleted, never the folder's other
    content; the area folder itself goes when nothing but the marker is left.

    Raises:
        UsageError: the area is not provably latkit's (see :func:`check_clearable`).
    """
    check_clearable(target)
    removed = bytes_ = 0
    for entry in target.entries():
        files = [q for q in entry.rglob("*") if q.is_file() or q.is_symlink()] if entry.is_dir() else [entry]
        size = sum(_size(q) for q in files)
        try:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except FileNotFoundError:
            continue
        removed, bytes_ = removed + len(files), bytes_ + size
    _drop_if_only_marker(target.path)
    return removed, bytes_


def _drop_if_only_marker(root: Path) -> None:
    try:
        if root.is_dir() and not root.is_symlink() and [p.name for p in root.iterdir()] == [MARKER]:
            (root / MARKER).unlink()
            root.rmdir()
    except OSError as exc:
        log.debug("left %s in place: %s", root, exc)
