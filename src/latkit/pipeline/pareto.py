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
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from latkit.profiler.spaces.base import Network


class Scored(TypedDict, total=False):
    """An architecture on the accuracy-latency plane (``chosen`` marks the run's own)."""

    latency_ms: float | None
    accuracy: float | None
    chosen: bool


class Size(TypedDict):
    """A network's parameters and multiply-accumulates."""

    params: int
    macs: int


class Baseline(Size):
    """The report's baseline: the space's all-largest network, measured in calibration."""

    name: str
    arch: object
    predicted_ms: float
    measured_ms: float | None
    measured_in: str


def pareto_front(points: Iterable[Scored]) -> list[Scored]:
    """The points no other point beats on both axes, fastest first.

    Args:
        points: dicts with ``latency_ms`` (lower is better) and ``accuracy``
            (higher is better); points with a missing value are ignored.

    Returns:
        The non-dominated points, sorted by latency (accuracy rises along the list).
    """
    valid = [p for p in points if p.get("latency_ms") is not None and p.get("accuracy") is not None]
    valid.sort(key=lambda p: (p["latency_ms"], -p["accuracy"]))  # type: ignore[operator]
    front: list[Scored] = []
    for p in valid:
        if not front or p["accuracy"] > front[-1]["accuracy"]:  # type: ignore[operator]
            front.append(p)
    return front


def network_size(network: Network) -> Size:
    """Parameters and multiply-accumulates of a :class:`~latkit.profiler.network.Network` (analytic)."""
    from latkit.predictors.features import op_counts

    counts = [op_counts(layer.spec) for layer in network.layers]
    return {"params": sum(c.params for c in counts), "macs": sum(c.macs for c in counts)}


def baseline_entry(space: str, native_arch: object, network: Network, lut_sums_ms: Sequence[float],
                   e2e_ms: Sequence[float], predicted_ms: float) -> Baseline:  # fmt: skip
    """The baseline row of a run summary: the slowest calibration network, measured in calibration.

    Args:
        space: the search space's name.
        native_arch: the baseline architecture (all-largest choices).
        network: its network (for parameters and MACs).
        lut_sums_ms: the calibration networks' LUT sums (the largest is the baseline's).
        e2e_ms: their measured end-to-end latencies.
        predicted_ms: the baseline's calibrated prediction.
    """
    measured = e2e_ms[max(range(len(lut_sums_ms)), key=lut_sums_ms.__getitem__)] if lut_sums_ms else None
    return {"name": f"{space} all-largest", "arch": native_arch, "predicted_ms": predicted_ms,
            "measured_ms": measured, "measured_in": "calibration (same device, same protocol)",
            **network_size(network)}  # fmt: skip


__all__ = ["Baseline", "Scored", "Size", "baseline_entry", "network_size", "pareto_front"]
