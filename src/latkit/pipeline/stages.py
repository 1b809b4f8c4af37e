"""What each stage of :func:`latkit.pipeline.runner.run_pipeline` hands on: frozen, typed results.

A stage returns one of these; the runner saves its :meth:`to_dict` in
``pipeline.json`` and, on a rerun, rebuilds it with ``from_dict`` instead of
running the stage again. The dictionaries keep the keys the state file has
always had, so run folders of earlier versions resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, TypeVar, TypedDict

from latkit.core.errors import UsageError
from latkit.devices.precision import Precision, parse_precision
from latkit.lut.calibration import Calibration

if TYPE_CHECKING:
    from latkit.deploy.exported_file import ExportedFile
    from latkit.deploy.sidecar import ExportedFileDict, ExportReportDict

S = TypeVar("S", bound="_Saved")


class _Saved:
    """A stage result saved as its fields: ``to_dict`` and back."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], doc: Mapping[str, object]) -> S:
        """From a saved dict: keys it does not know are dropped, missing ones take their defaults,
        a precision's text becomes its :class:`Precision`."""
        values = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}  # type: ignore[arg-type]
        for f in fields(cls):  # type: ignore[arg-type]
            if f.type == "Precision" and f.name in values:
                values[f.name] = parse_precision(values[f.name])  # type: ignore[arg-type]
        return cls(**values)


class EpochPoint(TypedDict):
    """One epoch of the gradient search (the report's trajectory plot)."""

    epoch: int
    expected_latency_ms: float | None
    derived_latency_ms: float
    loss: float | None


class ScoredArch(TypedDict):
    """An architecture the search scored: predicted latency and proxy accuracy."""

    latency_ms: float
    accuracy: float


@dataclass(frozen=True)
class ProfileResult(_Saved):
    """The LUT the run profiled into and how many operators were measured, reused and predicted."""

    lut: str
    precision: Precision
    measured: int
    reused: int
    predicted: int | None = None  # a sampled profile: operators filled by the op-level predictor
    predictor: str | None = None

    def to_dict(self) -> dict[str, object]:
        doc = asdict(self)
        if self.predicted is None:  # a full profile saves no predictor keys
            del doc["predicted"], doc["predictor"]
        return doc


@dataclass(frozen=True)
class CalibrationResult:
    """The fit and the networks it was fitted on (LUT sums, operator counts, measured latencies, and the
    networks' native architectures, in the same order: the measure stage times one of them again)."""

    calibration: Calibration
    lut_sums_ms: list[float]
    n_ops: list[int]
    e2e_ms: list[float]
    archs: list[object] = field(default_factory=list)  # empty in run folders from before they were kept

    def to_dict(self) -> dict[str, object]:
        return {"calibration": self.calibration.to_dict(), "lut_sums_ms": self.lut_sums_ms, "n_ops": self.n_ops,
                "e2e_ms": self.e2e_ms, "archs": self.archs}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> CalibrationResult:
        return cls(Calibration.from_dict(doc["calibration"]), list(doc["lut_sums_ms"]), list(doc["n_ops"]),  # type: ignore[arg-type, call-overload]
                   list(doc["e2e_ms"]), list(doc.get("archs") or []))  # type: ignore[call-overload]  # fmt: skip


@dataclass(frozen=True)
class SearchStageResult(_Saved):
    """The chosen architecture (``arch``, the space's native form) and how the search got there."""

    folder: str
    arch_path: str
    arch: object
    searched_arch: object  # before the budget fill
    search_target_ms: float
    predicted_ms: float
    accuracy: float | None  # the supernet's proxy accuracy of the searched network
    history: list[EpochPoint] = field(default_factory=list)
    samples: list[ScoredArch] = field(default_factory=list)
    latency_model: Mapping[str, object] = field(default_factory=dict)
    range_ms: list[float] | None = None  # fastest and slowest predicted network of the space


@dataclass(frozen=True)
class TrainStageResult(_Saved):
    """The trained network's weights file and held-out accuracy."""

    weights: str
    accuracy_pct: float
    epochs: int
    init: str  # "scratch" or the supernet tensors it started from
    final_loss: float | None


@dataclass(frozen=True)
class ExportResult:
    """What the export wrote: ``export.json``'s document, as the state file keeps it."""

    report: ExportReportDict

    @property
    def files(self) -> list[ExportedFileDict]:
        return self.report["files"]

    def file(self, format: str, precision: Precision = Precision.FP32) -> ExportedFile:
        """The file of ``format`` at ``precision``.

        Raises:
            UsageError: no such file was exported.
        """
        return exported_file(self.report, format, precision)

    def to_dict(self) -> ExportReportDict:
        return self.report

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> ExportResult:
        return cls(doc)  # type: ignore[arg-type]


def exported_file(export: ExportReportDict | Mapping[str, object], format: str,
                  precision: Precision = Precision.FP32) -> ExportedFile:  # fmt: skip
    """The file of ``format`` at ``precision`` in an export stage's outputs (``export.json``'s form).

    Raises:
        UsageError: no such file was exported.
    """
    from latkit.deploy.exported_file import ExportedFile

    for f in export["files"]:  # type: ignore[attr-defined]
        if f["format"] == format and parse_precision(f["variant"]) == precision:
            return ExportedFile.from_dict(f)
    raise UsageError(f"no {precision} {format} file was exported; add {format} to the formats")


@dataclass(frozen=True)
class EvaluateResult(_Saved):
    """Held-out accuracy of the shipped files in their runtimes, beside the float32 network's."""

    precision: Precision
    fp32_accuracy_pct: float
    files_accuracy_pct: dict[str, float]
    deployed_format: str
    deployed_accuracy_pct: float | None
    accuracy_drop_pct: float | None  # fp32 minus deployed, in points
    n_images: int


@dataclass(frozen=True)
class MeasureResult(_Saved):
    """The shipped file measured on the device, the device's drift around it, and the host check.

    ``host`` is :meth:`latkit.deploy.verify.HostCheck.to_dict`: the file timed again
    beside a calibration network, its network-level drift ``ratio`` and the
    ``corrected_ms`` figure a verdict rests on (None in run folders from before it).
    """

    file: str
    precision: Precision
    latency_ms: float
    rel_ci: float
    device: object
    drift: Mapping[str, object] | None  # ratio (now / LUT) and whether the device is steady
    host: Mapping[str, object] | None = None

    @property
    def corrected_ms(self) -> float | None:
        """The figure corrected for the host's state, when the host check could judge it."""
        value = (self.host or {}).get("corrected_ms")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def lowest_ms(self) -> float:
        """The lowest figure the file read, uncorrected (its measurement or a session of the host check)."""
        lowest = (self.host or {}).get("lowest_ms")
        return min(self.latency_ms, float(lowest)) if isinstance(lowest, (int, float)) else self.latency_ms

    @property
    def judged_ms(self) -> float:
        """The figure a verdict rests on: the lower of the corrected figure and :attr:`lowest_ms`.

        Load only ever slows a run down: a host reading faster than at calibration
        (ratio below 1) was loaded then, and the file's own figure now is the less
        disturbed one; a host reading slower is loaded now, and the corrected figure is.
        """
        corrected = self.corrected_ms
        return self.lowest_ms if corrected is None else min(corrected, self.lowest_ms)

    @property
    def contended(self) -> bool:
        """Whether the file read over its budget, every time, on a host too contended to judge whether it is."""
        host = self.host or {}
        return bool(host.get("over_budget")) and not host.get("judged", True)


class AttemptSummary(TypedDict):
    """One attempt in :class:`~latkit.pipeline.runner.PipelineResult`."""

    name: str
    search_target_ms: float
    predicted_ms: float
    measured_ms: float
    judged_ms: float  # what the verdict rests on (MeasureResult.judged_ms): corrected for the host's state, or lower


@dataclass(frozen=True)
class Attempt:
    """Search -> train -> export -> evaluate -> measure, once (``first``) or in a retry."""

    name: str
    search_target_ms: float
    search: SearchStageResult
    train: TrainStageResult
    export: ExportResult
    evaluate: EvaluateResult | None
    measure: MeasureResult

    @property
    def measured_ms(self) -> float:
        return self.measure.latency_ms

    @property
    def judged_ms(self) -> float:
        """The figure the verdict rests on (:attr:`MeasureResult.judged_ms`)."""
        return self.measure.judged_ms

    @property
    def host(self) -> Mapping[str, object] | None:
        return self.measure.host

    @property
    def contended(self) -> bool:
        return self.measure.contended

    @property
    def corrected(self) -> bool:
        """Whether :attr:`judged_ms` is the figure corrected for the host's state (below every measured one)."""
        corrected = self.measure.corrected_ms
        return corrected is not None and self.judged_ms < self.measure.lowest_ms

    @property
    def predicted_ms(self) -> float:
        return self.search.predicted_ms

    @property
    def drift(self) -> Mapping[str, object] | None:
        return self.measure.drift

    @property
    def range_ms(self) -> tuple[float, float] | None:
        """The (fastest, slowest) predicted latency of the space (None in run folders from before it was kept)."""
        found = self.search.range_ms
        return (found[0], found[1]) if found else None

    def brief(self) -> AttemptSummary:
        return {"name": self.name, "search_target_ms": self.search_target_ms, "predicted_ms": self.predicted_ms,
                "measured_ms": self.measured_ms, "judged_ms": self.judged_ms}  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        """The attempt as the run summary lists it."""
        return {"name": self.name, "search_target_ms": self.search_target_ms, "search": self.search.to_dict(),
                "train": self.train.to_dict(), "export": self.export.to_dict(),
                "evaluate": None if self.evaluate is None else self.evaluate.to_dict(),
                "measured_ms": self.measured_ms, "judged_ms": self.judged_ms, "predicted_ms": self.predicted_ms,
                "measure": self.measure.to_dict()}  # fmt: skip


__all__ = ["Attempt", "AttemptSummary", "CalibrationResult", "EpochPoint", "EvaluateResult", "ExportResult",
           "MeasureResult", "ProfileResult", "ScoredArch", "SearchStageResult", "TrainStageResult", "exported_file"]
