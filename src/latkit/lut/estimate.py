"""Network latency from a LUT: the sum of its operators, optionally calibrated.

An estimate is at one precision: every operator's row and the calibration are
that precision's. A network whose operators the LUT holds only partly at the
precision asked for is refused, naming the precision that has the rest; rows of
two precisions are never summed into one figure.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from latkit.core.reprs import short_repr
from latkit.devices.precision import Precision
from latkit.core.errors import MissingOpsError, UsageError
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


class PrecisionMismatchError(MissingOpsError):
    """Operators the LUT lacks at the precision asked for but holds at another."""

    def __init__(self, missing: list[str], where: str, precision: Precision, elsewhere: dict[Precision, int]) -> None:
        """``elsewhere``: for each other precision, how many of ``missing`` the LUT holds at it."""
        super().__init__(missing, lut=where)
        self.precision, self.elsewhere = precision, dict(elsewhere)
        n = len(self.missing)
        shown = "; ".join(self.missing[:4]) + (f" (+{n - 4} more)" if n > 4 else "")
        held = " and ".join(p if k == n else f"{p} ({k} of them)" for p, k in elsewhere.items())
        self.args = (
            f"{n} operator(s) missing at {precision} in {where}: {shown}; the LUT holds them at {held} "
            f"only, and an estimate never mixes precisions: estimate with --precision {next(iter(elsewhere))}, "
            f"or profile them with `latkit profile --precision {precision}`",
        )


def resolve_precision(lut: LUT, uri: str, precision: Precision | None) -> Precision:
    """The precision to read ``uri``'s rows at: ``precision``, or the only one the LUT holds.

    Raises:
        UsageError: ``precision`` is None while the LUT holds rows of several
            precisions for the device.
    """
    if precision is not None:
        return precision
    held = lut.precisions(uri)
    if len(held) > 1:
        names = ", ".join(held[:-1]) + f" and {held[-1]}"
        raise UsageError(f"LUT {lut.path} has {names} rows for {uri}; give --precision")
    return held[0] if held else Precision.FP32


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
    precision: Precision = Precision.FP32  # of every row summed and of the calibration applied

    def __repr__(self) -> str:
        return short_repr(self, 'network', 'device', 'precision', 'total_ms', 'lut_sum_ms', 'calibrated', 'layers')

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return d


_STEM_INPUT = re.compile(r"input:(\d+)x\1x3(?!\d)")  # a key's square 3-channel input: an image


def input_resolutions(lut: LUT, uri: str, precision: Precision) -> set[int]:
    """The input resolutions of the square 3-channel images (networks' stems) among the LUT's rows
    for ``uri`` at ``precision``, read off their keys (``...-input:32x32x3-...``)."""
    found = (_STEM_INPUT.search(key) for key in lut.done_keys(uri, precision=precision))
    return {int(m.group(1)) for m in found if m}


def _missing(exc: MissingOpsError, lut: LUT, uri: str, prec: Precision, network: Network) -> MissingOpsError:
    """The error for a network the LUT lacks operators of, saying why where it can tell: the rows are
    there at another precision, or the LUT holds another resolution."""
    elsewhere = {p: len(lut.lookup(exc.missing, uri, strict=False, precision=p))
                 for p in lut.precisions(uri) if p != prec}  # fmt: skip
    elsewhere = {p: k for p, k in elsewhere.items() if k}
    if elsewhere:
        return PrecisionMismatchError(exc.missing, f"{lut.path} ({uri}) for {network.name}", prec, elsewhere)
    err = MissingOpsError(exc.missing, lut=f"{lut.path} ({uri}, {prec}) for {network.name}")
    asked, held = network.input_shape[0], input_resolutions(lut, uri, prec)
    if held and asked not in held:  # e.g. a list of operator names, read at the space's default resolution
        shown = ", ".join(map(str, sorted(held)))
        err.args = (f"LUT {lut.path} ({uri}) holds resolution {shown}, not {asked} ({len(exc.missing)} "
                    f"operator(s) of {network.name} missing at {asked}); estimate at its resolution with "
                    f"`--resolution {min(held)}` (resolution={min(held)} in Python), or profile {asked} "
                    "with `latkit profile`",)  # fmt: skip
    return err


def estimate(
    lut: LUT,
    network: Network,
    device: str | None = None,
    calibration: bool = True,
    *,
    precision: Precision | None = None,
) -> Estimate:
    """Estimate ``network``'s latency from ``lut``, at one precision.

    Args:
        lut: the LUT.
        network: the ordered layers, stem to logits.
        device: device URI in the LUT; default the LUT's only device.
        calibration: apply the device's stored calibration at this precision if it has one.
        precision: the precision whose rows are summed; default the only one
            the LUT holds for the device.

    Raises:
        MissingOpsError: any measurable layer's key is not in the LUT at this
            precision (all missing keys are listed; there is never a silent
            default); a :class:`PrecisionMismatchError` when another precision has them.
        UsageError: no ``precision`` given and the LUT holds several for the device.
    """
    uri = lut.resolve_device(device)
    prec = resolve_precision(lut, uri, precision)
    measurable = [layer for layer in network.layers if layer.spec.measurable]
    keys = [layer.spec.key for layer in measurable]
    try:
        ms_by_key = lut.lookup(keys, uri, precision=prec)
    except MissingOpsError as exc:
        raise _missing(exc, lut, uri, prec, network) from None
    lat = [ms_by_key[layer.spec.key] if layer.spec.measurable else 0.0 for layer in network.layers]
    sources = lut.sources(keys, uri, precision=prec)
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
    cal = load_calibration(lut, uri, precision=prec) if calibration else None
    total = cal.apply(lut_sum, len(measurable)) if cal else lut_sum
    return Estimate(
        network=network.name, device=uri, total_ms=total, lut_sum_ms=lut_sum,
        n_measurable=len(measurable), layers=layers, calibrated=cal is not None,
        calibration=cal.to_dict() if cal else None, precision=prec,
    )  # fmt: skip
