"""Where latkit keeps what it can make again or measured for you: one place for every cache path.

``$LATKIT_CACHE`` (default ``~/.cache/latkit``) holds the exported model files
(directly in ``$LATKIT_CACHE`` when it is set, in ``~/.cache/latkit/models``
otherwise, as before this module) and the loopback phone's sandboxes and key
(``loopback/``). ``$LATKIT_LUT_DIR`` (default ``~/.cache/latkit/luts``) holds the
per-device LUTs ``latkit run`` builds. Models and loopback sandboxes are made
again on demand; LUTs hold measurements, so clearing them is asked for by name.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from latkit.core.errors import UsageError

_MODEL_SUFFIXES = (".onnx", ".tflite", ".json", ".tmp", ".data")


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

    def files(self) -> list[Path]:
        """The files of this area (models: only model files and sidecars, not sub-folders)."""
        if not self.path.is_dir():
            return []
        if self.name == "models":
            return sorted(p for p in self.path.iterdir()
                          if p.is_file() and not p.is_symlink() and _is_model_file(p))  # fmt: skip
        return sorted(p for p in self.path.rglob("*") if p.is_file() or p.is_symlink())

    def size(self) -> tuple[int, int]:
        """(files, bytes)."""
        files = self.files()
        return len(files), sum(_size(p) for p in files)


def _is_model_file(path: Path) -> bool:
    return any(path.name.endswith(s) or f"{s}." in path.name for s in _MODEL_SUFFIXES)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def areas() -> list[Area]:
    """Every cache area, in the order ``latkit cache`` lists them."""
    return [
        Area("models", models_dir(), "exported operator and network model files (made again on demand)", False),
        Area("loopback", loopback_dir(), "loopback phone sandboxes and its key (made again on start)", False),
        Area("luts", luts_dir(), "LUTs measured by `latkit run` (measurements: kept unless named)", True),
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


def clear(target: Area) -> tuple[int, int]:
    """Delete the area's files; (files, bytes) removed. Folders outside latkit's own are never removed."""
    removed = bytes_ = 0
    if target.name == "models":
        for p in target.files():
            size = _size(p)
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed, bytes_ = removed + 1, bytes_ + size
        return removed, bytes_
    removed, bytes_ = target.size()
    if target.path.is_dir() and not target.path.is_symlink():
        shutil.rmtree(target.path)
    return removed, bytes_
