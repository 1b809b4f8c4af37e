"""latkit: hardware-aware latency profiling, lookup tables, predictors and NAS.

The subsystems live in ``latkit.devices``, ``latkit.profiler``, ``latkit.lut``,
``latkit.predictors`` and ``latkit.search``. Importing ``latkit`` itself stays
cheap: the public names below are loaded on first use (``latkit.estimate``
imports the LUT code then, ``latkit.search_arch`` torch). The verbs are documented in
:mod:`latkit.api`::

    import latkit
    dev = latkit.open_device("cpu:onnxruntime")
    latkit.profile(dev, "proxyless_mobile_w05", "ops.db", resolution=64)
    print(latkit.estimate("ops.db", "arch.json").total_ms)

``latkit.list_devices()`` lists the backends and the loopback phones running now.
"""

from __future__ import annotations

import importlib
from typing import Any

from latkit._version import __version__
from latkit.core.errors import LatkitError

_LAZY = {
    "get_space": "latkit.profiler.spaces",
    "list_spaces": "latkit.profiler.spaces",
    "OpSpec": "latkit.profiler.ops",
    "list_devices": "latkit.devices",
    "LUT": "latkit.lut.store",
    "sample_latencies": "latkit.api",  # a device's latency CSV for the predictors (latkit predictor sample)
    # the verbs (see latkit/api.py): thin typed wrappers, loaded on first use
    **{verb: "latkit.api" for verb in (
        "open_device", "profile", "open_lut", "estimate", "latency_model", "fit_predictor", "load_predictor",
        "predict", "predict_model", "search_arch", "train", "export", "measure", "measure_layers", "inspect", "run",
    )},
    **{verb: "latkit.api_tools" for verb in (
        "calibrate", "show_lut", "export_lut", "import_lut", "merge_luts", "evaluate_predictor", "design_predictor",
        "loopback_phone",
    )},
    **{verb: "latkit.api_kernels" for verb in (
        "build_kernel_predictors", "detect_fusion", "calibrate_kernels", "transfer_kernels",
    )},
    **{verb: "latkit.api_farm" for verb in ("farm_devices", "farm_profile")},
}

__all__ = ["__version__", "LatkitError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latkit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
