"""Network latency from a LUT: the sum of its operators, optionally calibrated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from latkit.errors import MissingOpsError
from latkit.lut.calibration import load_calibration
from latkit.lut.store import LUT

if TYPE_CHECKING:
    from latkit.profiler.spaces.base import Network


@dataclass(frozen=True)
class LayerEstimate:
    """One layer's share of an estimate (free layers cost 0 ms)."""

    name: str
    key: str
    op_type: str
    latency_ms: float
    share_pct: float  # of the LUT sum
    source: str = ""  # the row's origin: measured, imported:..., predicted:... ("" for free layers)


@dataclass(frozen=True)
class Estimate:
    """A network's estimated latency on one device.

    ``total_ms`` is the calibrated figure when ``calibrated`` is true, else
    ``lut_sum_ms``. ``n_measurable`` counts the layers that cost time (a
    repeated op counts each time it runs).
    """

    network: str
    device: str
    total_ms: float
    lut_sum_ms: float
    n_measurable: int
    layers: tuple[LayerEstimate, ...]
    calibrated: bool
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def estimate(
    lut: LUT, network: Network, device: str | None = None, calibration: bool = True
) -> Estimate:
    """Estimate ``network``'s latency from ``lut``.

    Args:
        lut: the LUT.
        network: the ordered layers, stem to logits.
        device: device URI in the LUT; default the LUT's only device.
        calibration: apply the device's stored calibration if it has one.

    Raises:
        MissingOpsError: any measurable layer's key is not in the LUT (all
            missing keys are listed; there is never a silent default).
    """
    uri = lut.resolve_device(device)
    measurable = [layer for layer in network.layers if layer.spec.measurable]
    keys = [layer.spec.key for layer in measurable]
    try:
        table = lut.lookup(keys, uri)
    except MissingOpsError as exc:
        raise MissingOpsError(exc.missing, lut=f"{lut.path} ({uri}) for {network.name}") from None
    lat = [table[layer.spec.key] if layer.spec.measurable else 0.0 for layer in network.layers]
    sources = lut.sources(keys, uri)
    lut_sum = float(sum(lat))
    layers = tuple(
        LayerEstimate(
            name=layer.name,
            key=layer.spec.key,
            op_type=layer.spec.op_type.value,
            latency_ms=ms,
            share_pct=100.0 * ms / lut_sum if lut_sum > 0 else 0.0,
            source=sources.get(layer.spec.key, "") if layer.spec.measurable else "",
        )
        for layer, ms in zip(network.layers, lat)
    )
    cal = load_calibration(lut, uri) if calibration else None
    total = cal.apply(lut_sum, len(measurable)) if cal else lut_sum
    return Estimate(
        network=network.name, device=uri, total_ms=total, lut_sum_ms=lut_sum,
        n_measurable=len(measurable), layers=layers, calibrated=cal is not None,
        calibration=cal.to_dict() if cal else None,
    )  # fmt: skip
