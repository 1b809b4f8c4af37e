"""A model's per-layer profile on a device: open it, run it under the runtime's profiler, close it.

See :mod:`latkit.devices.layers` for what each backend's profiler measures.
"""

from __future__ import annotations

from latkit.devices.base import Device, ModelSource
from latkit.devices.layers import PROFILE_RUNS, LayerProfile, check_runs


def profile_layers(device: Device, model: ModelSource, runs: int = PROFILE_RUNS, quantile: float = 0.5) -> LayerProfile:
    """``model``'s per-layer profile on ``device`` over ``runs`` runs, in a session of its own; each layer's
    figure is the ``quantile`` of its runs where the runtime gives every run (benchmark_model gives means).

    Raises:
        UsageError: the device has no per-layer profiler, or ``runs`` is out of range.
        DeviceError / MeasurementError: the model cannot be loaded or run.
    """
    check_runs(runs)
    session = device.open(model)
    try:
        return session.profile_layers(runs, quantile)
    finally:
        session.close()


__all__ = ["profile_layers"]
