"""latkit: hardware-aware latency profiling, lookup tables, predictors and NAS.

The subsystems live in ``latkit.devices``, ``latkit.profiler``, ``latkit.lut``,
``latkit.predictors`` and ``latkit.search``. Importing ``latkit`` itself stays
cheap: the public names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from latkit._version import __version__
from latkit.errors import LatkitError

_LAZY = {
    "get_space": "latkit.profiler.spaces",
    "list_spaces": "latkit.profiler.spaces",
    "OpSpec": "latkit.profiler.ops",
    "open_device": "latkit.devices",
    "list_devices": "latkit.devices",
    "LUT": "latkit.lut.store",
}

__all__ = ["__version__", "LatkitError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latkit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
