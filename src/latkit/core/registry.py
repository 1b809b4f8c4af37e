"""One registry for every kind of plug-in: search spaces, devices, predictors, algorithms.

A :class:`Registry` holds objects by name. Built-ins register themselves with the
registry's decorator when their module is imported; the registry imports the
built-in modules it was given, then the third-party entry points of its group
(``latkit.spaces``, ``latkit.devices``, ``latkit.predictors``,
``latkit.algorithms``), once, on the first lookup — so ``import latkit`` stays
cheap and a third-party package needs nothing but an entry point.

This module is the lowest layer: it imports nothing from latkit but the errors,
so ``devices`` and everything above may use it.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Generic, TypeVar

from latkit.core.errors import LatkitError, UnknownNameError

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["PluginError", "Registry", "name_attribute", "subclass_of"]


def subclass_of(base: type) -> Callable[[object], str | None]:
    """A ``check`` for :class:`Registry`: the object must be a subclass of ``base``."""

    def check(obj: object) -> str | None:
        if isinstance(obj, type) and issubclass(obj, base):
            return None
        return f"{obj!r} is not a subclass of {base.__module__}.{base.__qualname__}"

    return check


def name_attribute(attr: str) -> Callable[[str, type], None]:
    """An ``on_register`` for :class:`Registry`: the class learns its registered name as ``attr``."""

    def on_register(name: str, cls: type) -> None:
        setattr(cls, attr, name)

    return on_register


class PluginError(LatkitError):
    """A third-party entry point that could not be imported or is of the wrong kind."""


class Registry(Generic[T]):
    """Named objects of one kind: built-ins by decorator plus an entry-point group.

    Args:
        kind: what the names name, for messages ("search space", "device").
        group: the entry-point group third-party packages register under.
        builtins: modules whose import registers the built-ins; a module missing
            because an optional dependency is absent is skipped.
        on_register: called as ``on_register(name, obj)`` before an object is
            stored (e.g. to set a ``name`` attribute on a class).
        check: returns an error text when an entry point's object is of the wrong
            kind, ``None`` when it fits.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: Iterable[str] = (),
        on_register: Callable[[str, T], None] | None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> None:
        self.kind, self.group = kind, group
        self._builtins = tuple(builtins)
        self._on_register = on_register
        self._check = check
        self._items: dict[str, T] = {}
        self._loaded = False
        self._loading = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: store the decorated object under ``name`` and return it unchanged."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Store ``obj`` under ``name`` (a later registration of the name replaces it)."""
        old = self._items.get(name)
        if old is not None and old is not obj:
            log.debug("%s %r re-registered", self.kind, name)
        if self._on_register is not None:
            self._on_register(name, obj)
        self._items[name] = obj

    def load(self) -> None:
        """Import the built-in modules and the entry points, once.

        Raises:
            PluginError: an entry point failed to import or is of the wrong kind.
        """
        if self._loaded or self._loading:
            return
        self._loading = True  # a built-in module that looks a name up while importing
        try:
            for mod in self._builtins:
                _import_builtin(mod, self.kind)
            for ep in metadata.entry_points(group=self.group):
                self._load_entry_point(ep)
            self._loaded = True
        finally:
            self._loading = False

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(ep.dist, "name", None) or "an installed package"
        where = f"{self.kind} plug-in {ep.name!r} ({ep.value}, from {dist}, group {self.group})"
        try:
            obj = ep.load()
        except Exception as exc:  # any failure inside third-party code: name the plug-in
            raise PluginError(
                f"{where} failed to load: {type(exc).__name__}: {exc}; "
                f"fix or uninstall {dist}"
            ) from exc
        why = self._check(obj) if self._check is not None else None
        if why:
            raise PluginError(f"{where} is not usable: {why}; fix or uninstall {dist}")
        if ep.name in self._items and self._items[ep.name] is not obj:
            log.warning("%s overrides the built-in %s %r", where, self.kind, ep.name)
        self.add(ep.name, obj)

    def get(self, name: str) -> T:
        """The object registered under ``name``.

        Raises:
            UnknownNameError: no such name; the message lists the valid ones.
            PluginError: an entry point failed to load.
        """
        if name not in self._items:
            self.load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob, sorted."""
        self.load()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def items(self, pattern: str = "*") -> dict[str, T]:
        """Registered objects by name, filtered by a glob, in name order."""
        return {n: self._items[n] for n in self.names(pattern)}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._items:
            self.load()
        return name in self._items


def _import_builtin(module: str, kind: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:  # the built-in itself is missing: a packaging bug
            raise
        # an optional dependency of the backend is absent; it is simply not listed
        log.debug("%s module %s not loaded: %s", kind, module, exc)
