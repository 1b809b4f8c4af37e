"""What a run report compares the chosen network with: the Pareto front and a baseline.

The search scores many architectures on the way (``samples``: the predicted
latency from the calibrated tables and the accuracy of the supernet's shared
weights on held-out images). That accuracy is a proxy, not the accuracy of a
trained network, and the report says so. The baseline is the space's reference
network, the one with the largest choice in every layer (the slowest; for
``proxyless_mobile`` the MobileNetV2-like net); calibration already measured it
end to end on the same device, so its measured latency costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def pareto_front(points: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both axes, fastest first.

    Args:
        points: dicts with ``latency_ms`` (lower is better) and ``accuracy``
            (higher is better); points with a missing value are ignored.

    Returns:
        The non-dominated points, sorted by latency (accuracy rises along the list).
    """
    valid = [p for p in points if p.get("latency_ms") is not None and p.get("accuracy") is not None]
    valid.sort(key=lambda p: (p["latency_ms"], -p["accuracy"]))
    front: list[dict[str, Any]] = []
    for p in valid:
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front


def network_size(network: Any) -> dict[str, int]:
    """Parameters and multiply-accumulates of a :class:`~latkit.profiler.network.Network` (analytic)."""
    from latkit.predictors.features import op_counts

    counts = [op_counts(layer.spec) for layer in network.layers]
    return {"params": sum(c.params for c in counts), "macs": sum(c.macs for c in counts)}


def baseline_entry(space: str, native_arch: Any, network: Any, calib: dict[str, Any],
                   predicted_ms: float) -> dict[str, Any]:  # fmt: skip
    """The baseline row of a run summary: the slowest calibration network, measured in calibration.

    Args:
        space: the search space's name.
        native_arch: the baseline architecture (all-largest choices).
        network: its network (for parameters and MACs).
        calib: the pipeline's calibration stage output (``lut_sums_ms``, ``e2e_ms``).
        predicted_ms: the baseline's calibrated prediction.
    """
    sums: Sequence[float] = calib.get("lut_sums_ms") or []
    measured = calib["e2e_ms"][max(range(len(sums)), key=sums.__getitem__)] if sums else None
    return {"name": f"{space} all-largest", "arch": native_arch, "predicted_ms": predicted_ms,
            "measured_ms": measured, "measured_in": "calibration (same device, same protocol)",
            **network_size(network)}  # fmt: skip


__all__ = ["baseline_entry", "network_size", "pareto_front"]
