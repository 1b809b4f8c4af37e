"""Short ``repr`` for result objects: what a notebook shows when a call returns one.

A dataclass's own ``repr`` prints every field in full: an estimate's per-layer rows,
a measurement's hundreds of samples, an export's file sidecars, thousands of
characters for one cell. :func:`short_repr` shows the headline fields only, each
value cut short (a list or dict by its size), under :data:`LIMIT` characters; the
full content stays in the attributes and in ``to_dict()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from typing import Any

LIMIT = 200  # characters of a whole repr
TEXT = 48  # characters of one text value


def _value(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return f"{{{len(value)} {'entry' if len(value) == 1 else 'entries'}}}"
    if isinstance(value, (list, tuple, set, frozenset)):
        if len(value) <= 6 and all(isinstance(v, (int, float)) for v in value):  # a shape: shown whole
            return repr(value)
        return f"[{len(value)} {'item' if len(value) == 1 else 'items'}]"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = repr(value)
    return text if len(text) <= TEXT else text[: TEXT - 4] + "...'"


def short_repr(obj: Any, *fields: str) -> str:
    """``Name(field=value, ...)`` of the named ``fields`` of ``obj``, at most :data:`LIMIT` characters."""
    parts = ", ".join(f"{name}={_value(getattr(obj, name, None))}" for name in fields)
    text = f"{type(obj).__name__}({parts})"
    return text if len(text) <= LIMIT else text[: LIMIT - 4] + "...)"
