"""Read an ``--arch`` argument: the one reader every CLI command uses.

An architecture can be given as

* a net.config file (ProxylessNAS / OFA), anywhere an architecture is taken;
* a JSON file or JSON text holding the space's native form (OFA's dict, a list
  of op names, ...);
* the space's native text (a NAS-Bench-201 cell string, FBNet's space-separated
  op names, ...);
* an ``arch.json`` envelope ``{"space": NAME, "arch": NATIVE[, "resolution": R]}``,
  which also names the space.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from latkit.core.files import parse_json
from latkit.core.errors import ArchError, UsageError
from latkit.profiler.spaces.base import Arch, Network, SearchSpace, get_space
from latkit.profiler.spaces.netconfig import is_netconfig, network_from_netconfig

log = logging.getLogger(__name__)

_PATH_SUFFIXES = (".json", ".config", ".txt", ".arch")
MAX_ARCH_BYTES = 16 << 20  # the largest net.config is a few kB
FORMS = (
    "a net.config file, a JSON file or JSON text with the space's native form, "
    'the native text itself, or an arch.json {"space": ..., "arch": ...}'
)


def read_arch_text(arch_text: str | Path) -> Any:
    """The parsed content of an ``--arch`` value: JSON value, or the native text.

    Raises:
        ArchError: an empty value, a missing or unreadable file, or broken JSON.
    """
    text = str(arch_text).strip()
    if not text:
        raise ArchError(f"empty architecture; give {FORMS}")
    if text[0] in "{[":
        return parse_json(text, "architecture JSON", ArchError)
    path = Path(text).expanduser()
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a long native string is not a valid file name
        is_file = False
    if is_file:
        content = _read_text_file(path)
        if content[:1] in ("{", "["):
            return parse_json(content, f"architecture file {path}", ArchError)
        return content
    if path.suffix in _PATH_SUFFIXES or "/" in text:
        raise ArchError(f"architecture file {text} does not exist")
    return text


def _read_text_file(path: Path) -> str:
    """A text architecture file's content; binary, huge or unreadable files are ArchError."""
    try:
        if path.stat().st_size > MAX_ARCH_BYTES:
            raise ArchError(f"architecture file {path} is larger than {MAX_ARCH_BYTES >> 20} MiB; "
                            f"give {FORMS}")
        raw = path.read_bytes()
    except OSError as exc:
        raise ArchError(f"cannot read architecture file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise ArchError(f"architecture file {path} is not a text file (a model file?); give {FORMS}")
    return text.strip()


def _unwrap(space: SearchSpace | None, raw: Any) -> tuple[SearchSpace | None, Any, int | None]:
    """Open an arch.json envelope: (space, native arch, resolution it names)."""
    if not (isinstance(raw, dict) and "arch" in raw and not is_netconfig(raw)):
        return space, raw, None
    name = raw.get("space")
    if name is not None:
        if space is not None and space.name != name:
            raise ArchError(
                f"the architecture is of space {name!r}, but space {space.name!r} was asked for"
            )
        space = space or get_space(str(name))
    resolution = raw.get("resolution")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)):
        raise ArchError(f"arch.json 'resolution' must be an integer, got {resolution!r}")
    return space, raw["arch"], resolution


def _no_space() -> ArchError:
    return ArchError(
        "cannot tell which search space the architecture belongs to; name the space "
        '(--space), or give an arch.json {"space": ..., "arch": ...} or a net.config'
    )


def _native_arch(space: SearchSpace, raw: Any) -> Arch:
    try:
        return space.arch_from_native(raw)
    except ArchError as exc:
        known = not space.arch_help or "expected" in str(exc)
        hint = "" if known else f"; expected {space.arch_help}"
        raise ArchError(f"{exc}{hint}") from exc


def load_arch(space: SearchSpace | None, arch_text: str | Path) -> tuple[SearchSpace, Arch]:
    """Read an architecture of ``space`` (or of the space an arch.json names).

    Returns:
        The space the architecture belongs to, and the architecture.

    Raises:
        ArchError: malformed input, a net.config (it has no space architecture
            unless read with :func:`load_network`), or no way to tell the space.
    """
    space, raw, _ = _unwrap(space, read_arch_text(arch_text))
    if is_netconfig(raw):
        if space is not None and hasattr(space, "arch_from_netconfig"):
            return space, space.arch_from_netconfig(raw)
        raise ArchError("a net.config describes a network, not an architecture of a search space")
    if space is None:
        raise _no_space()
    return space, _native_arch(space, raw)


def load_network(
    space: SearchSpace | None, arch_text: str | Path, resolution: int | None
) -> tuple[Network, Arch | None]:
    """Read ``--arch`` into the network to estimate, measure or build.

    Args:
        space: the search space the architecture is in; ``None`` when only a
            net.config or an arch.json (which names its space) is accepted.
        arch_text: a file path, JSON text or native text (see the module doc).
        resolution: input resolution; ``None`` takes the architecture's own
            (OFA's ``r``, an arch.json's ``resolution``) or the space default.

    Returns:
        The network, and the architecture when the input is one of a space (for a
        net.config: the architecture of ``space`` that builds exactly the same
        network, if there is one, else ``None``).

    Raises:
        ArchError: malformed input, with what is wrong and the expected form.
    """
    space, raw, named_resolution = _unwrap(space, read_arch_text(arch_text))
    resolution = resolution if resolution is not None else named_resolution
    if is_netconfig(raw):
        network = network_from_netconfig(raw, resolution)
        return network, _matching_arch(space, raw, network)
    if space is None:
        raise _no_space()
    arch = _native_arch(space, raw)
    return space.network(arch, resolution), arch


def _matching_arch(space: SearchSpace | None, cfg: dict[str, Any], network: Network) -> Arch | None:
    """The arch of ``space`` whose network equals the net.config's, if any."""
    if space is None or not space.has_lut or not hasattr(space, "arch_from_netconfig"):
        return None
    try:
        arch = space.arch_from_netconfig(cfg)
        rebuilt = space.network(arch, network.input_shape[0])
    except UsageError as exc:  # includes ArchError; e.g. a resolution the space lacks
        log.info("net.config is not an architecture of %s: %s", space.name, exc)
        return None
    if rebuilt.specs != network.specs:
        log.info("net.config has the op choices of a %s architecture but other widths", space.name)
        return None
    return arch
