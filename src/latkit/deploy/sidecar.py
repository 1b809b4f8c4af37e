"""The JSON documents an export writes, as types: the model sidecar, ``export.json``, the measurement.

:mod:`latkit.deploy.export` writes one sidecar ``<file>.json`` per model
file (schema ``latkit.export``, ``kind: deployable``) and an ``export.json``
report per folder; :func:`latkit.deploy.verify.measure_exported` adds the
``measured_latency`` entry to a sidecar. These ``TypedDict`` classes name every
key those files hold, so readers and writers agree on them; at run time they
are plain dicts, and the files keep the keys they always had.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import numpy as np


class Parity(TypedDict, total=False):
    """A file's outputs compared with torch's (:func:`~latkit.deploy.export_formats.parity`)."""

    max_abs_err: float
    max_rel_err: float  # over the largest |reference| output
    rel_tol: float
    top1_agreement: float  # share of inputs with the same arg-max
    n_inputs: int
    passed: bool
    min_top1_agreement: float  # int8 files only
    runtime: str  # the runtime and its version that ran the file
    reference: str  # in a sidecar: what the file was compared with
    inputs: str  # in a quantized file's sidecar: which inputs


class TensorInfo(TypedDict, total=False):
    """A model input or output: name, shape, dtype and (inputs) layout."""

    name: str
    shape: list[int]
    dtype: str
    layout: str  # ``InputLayout.tag``: "NCHW" | "NHWC"


class FileIO(TypedDict):
    """A model file's input and output tensors."""

    input: TensorInfo
    output: TensorInfo


class InterpreterTensor(TypedDict):
    """The LiteRT interpreter's details of a tensor (the keys latkit reads)."""

    name: str
    index: int
    shape: np.ndarray
    dtype: type
    quantization: tuple[float, int]  # scale, zero point (0.0, 0 for a float tensor)


class ExporterInfo(TypedDict, total=False):
    """What wrote a float32 file: the ONNX exporter (opset, checker) or the TFLite converter."""

    opset: int
    opset_imports: dict[str, int]
    exporter: str
    onnx_version: str
    checker: str
    converter: str
    torch_version: str


class WeightsInfo(TypedDict, total=False):
    """Where an export's weights came from (``random`` when untrained)."""

    source: str
    trained: bool
    seed: int  # random weights
    file: str  # trained weights
    sha256: str


class ArchitectureInfo(TypedDict):
    """The exported architecture."""

    space: str | None
    arch: object  # the space's native form (None for a net.config without one)
    resolution: int
    network: str
    network_key: str
    classes: int
    n_layers: int
    params: int
    arch_file: str  # the arch.json path, or "inline"
    arch_sha256: str


class PredictedLatency(TypedDict):
    """The latency arch.json predicted, and what predicted it."""

    latency_ms: float
    source: object


class RepresentativeInfo(TypedDict):
    """The images a quantized file's activation ranges were calibrated on."""

    source: str  # "images" | "seeded-random"
    n_images: int


class ReferenceOp(TypedDict):
    """A LUT operator re-measured around a file's measurement."""

    key: str
    lut_ms: float


class MeasuredLatency(TypedDict):
    """An exported file measured on a device (a sidecar's ``measured_latency``)."""

    latency_ms: float
    statistic: str
    ci_low_ms: float | None
    ci_high_ms: float | None
    rel_ci: float | None
    median_ms: object
    p90_ms: float | None
    n_samples: int
    converged: bool
    device: str
    measured_at: object
    measurements_ms: list[float]  # every figure taken (a confirmed miss takes several)
    drift_ratios: list[float | None]
    device_drift: Mapping[str, object] | None
    references: list[ReferenceOp]
    provenance: Mapping[str, object]


class SidecarBase(TypedDict):
    """The sidecar fields every file of one export shares."""

    schema: str
    schema_version: int
    kind: str
    latkit_version: str
    architecture: ArchitectureInfo
    weights: WeightsInfo
    latency_target_ms: float | None
    predicted_latency: PredictedLatency | None
    measured_latency: MeasuredLatency | None


class SidecarEntry(TypedDict, total=False):
    """The sidecar fields of one file: its format, precision, tensors, exporter and parity."""

    format: str  # "onnx" | "tflite"
    variant: str  # the file's precision (``Precision.value``), under its first name
    precision: str  # quantized files: the same
    file_precision: str  # what the quantized file really holds
    exporter: ExporterInfo | None
    opset: int  # ONNX files
    input: TensorInfo
    output: TensorInfo
    quantization: Mapping[str, object]  # the quantizer's own account
    representative: RepresentativeInfo
    derived_from: str
    parity: Parity


class Sidecar(SidecarBase, SidecarEntry, total=False):
    """A model file's sidecar ``<file>.json``: the shared fields, the file's own, and the file itself."""

    file: str
    size_bytes: int
    sha256: str
    created: str
    layer_profile: Mapping[str, object] | None  # the runtime's per-layer profile (LayerProfile.to_dict)
    app: Mapping[str, object]  # the latkit.app document embedded in the file (latkit.deploy.app_metadata)


class ExportedFileDict(TypedDict):
    """One file in ``export.json``."""

    path: str
    sidecar: str
    format: str
    variant: str
    layout: str
    input_shape: list[int]
    parity: Parity
    measured: MeasuredLatency | None


class ExportReportDict(TypedDict):
    """``export.json``: what one export wrote."""

    schema: str
    schema_version: int
    latkit_version: str
    out_dir: str
    network: str
    space: str | None
    resolution: int
    classes: int
    weights: str | None
    precision: str
    files: list[ExportedFileDict]
    checks: list[str]  # what the measured files showed: precision against fp32, the target verdict


__all__ = [
    "ArchitectureInfo",
    "ExportReportDict",
    "ExportedFileDict",
    "ExporterInfo",
    "FileIO",
    "InterpreterTensor",
    "MeasuredLatency",
    "Parity",
    "PredictedLatency",
    "ReferenceOp",
    "RepresentativeInfo",
    "Sidecar",
    "SidecarBase",
    "SidecarEntry",
    "TensorInfo",
    "WeightsInfo",
]
