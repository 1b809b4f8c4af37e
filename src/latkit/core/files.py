"""Files latkit writes and reads: atomic replacement, JSON, one-line messages.

Every file latkit writes for a user (a LUT export, a search result, a report, a
checkpoint, a model) goes through :func:`atomic_path`: the content is written to
a uniquely named temporary file in the target's folder and moved onto the target
only when complete, so a crash, a full disk or a bad value never leaves a
half-written output, and two writers never share a temporary name. A target that
exists and is not a regular file (a device node such as ``/dev/full``, a folder,
a FIFO) is refused instead of replaced.

Every JSON file latkit reads goes through :func:`read_json`, which turns every
way a file can be unreadable (missing, not UTF-8, not JSON, nested too deep,
integers too long to convert) into one :class:`~latkit.core.errors.StoreError` line.
"""

from __future__ import annotations

import hashlib

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latkit.core.errors import LatkitError, StoreError

#: Permissions of a finished output (``mkstemp`` creates 0600; outputs are shared files).
OUTPUT_MODE = 0o644


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or its type name), at most ``limit`` chars."""
    for line in str(exc).splitlines():
        if line.strip():
            text = " ".join(line.split())
            return text[:limit] + ("..." if len(text) > limit else "")
    return type(exc).__name__


def check_output_target(path: str | Path, what: str = "output") -> Path:
    """Refuse an output path that exists and is not a regular file.

    Args:
        path: where the output will go.
        what: how the message names the file ("LUT export", "report", ...).

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        StoreError: the path is a folder, a device, a FIFO or a socket.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise StoreError(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise StoreError(f"cannot write the {what} {path}: it is {kind}; give a file path")
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` as a folder if needed and make sure files can be written in it.

    Called before long work (a search, a pipeline run) so a read-only folder or
    a file in the way fails at once, not after an hour.

    Raises:
        StoreError: a file is in the way, or the folder cannot be created or written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"the {what} {path} is a file, not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".latkit-write-test.", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise StoreError(
            f"cannot write in the {what} {path}: {exc.strerror or exc}; choose a writable folder"
        ) from exc
    return path


@contextlib.contextmanager
def removed_on_failure(path: str | Path, *, new_files: bool = False) -> Iterator[Path]:
    """Run a block that writes into the output folder ``path``; if it fails, take back what it left.

    A command that fails (a wrong LUT, an unreachable device) should not leave behind an
    empty folder it created. When the block raises, the folder is removed if it did not
    exist before and is empty now, and so are the parents made for it; with
    ``new_files``, the files the block added are removed first (an export has no resume,
    so its half-written files are only misleading). Files that were there before, and
    what a resumable command keeps (a checkpoint, a LUT), stay: a folder that is not
    empty is never removed.
    """
    path = Path(path).expanduser()
    missing = [p for p in (path, *path.parents) if not p.exists()]  # what the block may create
    before = {p.name for p in path.iterdir()} if path.is_dir() else set()
    try:
        yield path
    except BaseException:
        if new_files and path.is_dir():
            for p in path.iterdir():
                if p.name not in before and (p.is_file() or p.is_symlink()):
                    p.unlink(missing_ok=True)
        for folder in missing:  # deepest first; stops at the first that is not empty
            try:
                folder.rmdir()
            except FileNotFoundError:  # never made
                continue
            except OSError:
                break
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str = "output", keep_suffix: bool = False) -> Iterator[Path]:
    """A fresh temporary path beside ``path``, moved onto it if the block succeeds.

    The block writes the whole content to the yielded path. On success the file
    gets :data:`OUTPUT_MODE` and replaces ``path`` in one ``os.replace``; on any
    exception the temporary file is removed and ``path`` is left as it was.
    Temporary names end in ``.part``; with ``keep_suffix`` they end in
    ``.part`` plus the target's suffix, for writers that choose a format by
    extension (model exporters).

    Raises:
        StoreError: the folder cannot be created or written, or ``path`` exists
            and is not a regular file.
    """
    path = check_output_target(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = f".part{path.suffix}" if keep_suffix else ".part"
        fd, name = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise StoreError(
            f"cannot write the {what} {path}: {exc.strerror or exc}; choose a writable folder"
        ) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, OUTPUT_MODE)
        check_output_target(path, what)  # something may have appeared there meanwhile
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, what: str = "output") -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text(path: str | Path, text: str, what: str = "output") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_bytes(path, text.encode("utf-8"), what)


def json_default(value: Any) -> Any:
    """JSON form of the values latkit's outputs hold besides JSON's own: paths, numpy values."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_figure(path: str | Path, fig: Any, dpi: int = 100, what: str = "plot") -> Path:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix, PNG by default)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        with atomic_path(path, what) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt)
    except ValueError as exc:  # matplotlib: an unknown format
        raise StoreError(f"cannot write the {what} {path}: {one_line(exc)}; use .png, .svg or .pdf") from exc
    return Path(path)


def finite_or_null(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (JSON's null)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_null(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(v) for v in data]
    return data


def write_json(path: str | Path, data: Any, what: str = "output", indent: int | None = 2,
               default: Callable[[Any], Any] | None = json_default, sort_keys: bool = False,
               nan_to_null: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically.

    NaN and inf are refused, or written as null with ``nan_to_null`` (for
    statistics that may be undefined). ``default`` converts values JSON does
    not know (as in :func:`json.dumps`); the default one handles paths and
    numpy values.
    """
    try:
        if nan_to_null:
            data = finite_or_null(json.loads(json.dumps(data, default=default)))
        text = json.dumps(data, indent=indent, allow_nan=False, default=default, sort_keys=sort_keys)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot write the {what} {path}: {one_line(exc)}") from exc
    return write_text(path, text + "\n", what)


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file, turning every way it can be unreadable into one StoreError line.

    Args:
        path: the file.
        what: how the message names it ("LUT export", "architecture", ...).

    Raises:
        StoreError: missing, unreadable, not UTF-8, not JSON, nested too deeply
            or holding numbers Python refuses to convert.
    """
    path = Path(path)
    try:
        raw = path.read_bytes() if _is_regular(path) else None
    except OSError as exc:
        raise StoreError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if raw is None:
        raise StoreError(f"cannot read the {what} {path}: not a regular file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(f"the {what} {path} is not UTF-8 text (byte {exc.start}); give a JSON file") from exc
    return parse_json(text, f"the {what} {path}")


def parse_json(text: str, what: str, error: type[LatkitError] = StoreError) -> Any:
    """``json.loads(text)``, every way it can fail turned into one ``error`` line naming ``what``.

    Raises:
        LatkitError: of class ``error``: not JSON, nested too deeply, or holding
            numbers Python refuses to convert.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply to be a latkit file") from exc
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise error(f"{what} cannot be read: {one_line(exc)}") from exc


def check_input_file(path: str | Path, what: str = "file") -> Path:
    """Refuse, before anything opens it, an input that is not an existing regular file.

    Every door that reads a user's file (a model, weights) calls this first:
    opening a FIFO with no writer blocks forever, and ``/dev/zero`` or
    ``/dev/urandom`` never end, so a stat decides before any ``open``.

    Returns:
        ``path`` (``~`` expanded) as a :class:`Path`.

    Raises:
        StoreError: missing, unreadable, a folder, or a pipe, device or socket.
    """
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise StoreError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or one_line(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is a folder, not a {what}; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{what} {path} is not a regular file (a pipe, device or socket); give a file")
    return path


def plain_file_name(name: Any, what: str = "file name") -> str:
    """``name`` when it is a plain file name: no folder part, no ``..``, no control characters.

    Output names chosen by a caller (an export's file stem) must stay inside
    the output folder, so ``../x``, ``/tmp/x`` and ``a/b`` are refused.

    Raises:
        UsageError: anything else.
    """
    from latkit.core.errors import UsageError

    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):  # fmt: skip
        raise UsageError(f"{what} {name!r} is not a plain file name; give a name without folders, "
                         "'..' or control characters")
    return name


def _is_regular(path: Path) -> bool:
    return stat.S_ISREG(path.stat().st_mode)  # a missing file: OSError, named by the caller


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
