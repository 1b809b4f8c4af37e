"""Deployable export: a searched architecture as ONNX / TFLite files with trained weights.

:func:`export_arch` reads an ``arch.json`` (or any ``--arch`` form that names its
space), builds the architecture as a plain ``torch.nn.Sequential`` (no supernet
machinery: :func:`latkit.profiler.build.build_network`), loads its trained
weights, writes one file per format and precision into the user's folder, runs
each file in its runtime against torch, and writes a JSON sidecar next to it.

Weights file (safetensors)
--------------------------
The tensors are the ``state_dict()`` of ``build_network(network)``: the module
names are ``{index}_{layer name with dots as underscores}`` followed by the
builder's own sub-module path, e.g. ``0_first_conv.0.weight`` (stem conv),
``0_first_conv.1.running_var`` (its batch norm), ``3_blocks_2.expand.0.weight``,
``3_blocks_2.depthwise.1.bias``, ``3_blocks_2.project.0.weight``,
``24_classifier.linear.weight``. Zero and skip layers have no tensors.
``num_batches_tracked`` buffers may be left out; every other tensor must be
present with the module's shape. A classifier with another class count than
the space's (a network trained on a 10-class set) is read from the shape of
the ``*.linear.weight`` of the last layer. :func:`save_weights` writes such a
file with metadata (schema ``latkit.weights``, network key, class count).

Sidecar (``<file>.json``, schema ``latkit.export``, ``kind: deployable``)
-------------------------------------------------------------------------
file name, format, precision (key ``variant``), size and sha256; input / output
names, shapes and layout; exporter versions (ONNX opset); the architecture (space, native arch,
resolution, network key, classes, parameters); the weights (file and sha256, or
``random`` when the caller asked for untrained weights); the latency target and the predicted
latency with its source (both from arch.json when it has them); the parity of
the file against torch; the measured latency on a device with its provenance
(``null`` until measured); the latkit version.

Parity tolerances (largest |runtime - torch| over the largest |torch| output):
float32 ``1e-3`` and fp16 weights ``2e-2`` (a file outside raises
:class:`ExportError`); full-integer int8 files are judged as int8 is used: the
predicted class must agree with the float32 network on at least 90% of the
parity batch and the largest error stay within 25% of the largest float32
output (``quantized_parity``; a miss is recorded and logged, not raised, since
quantization error is expected and the held-out accuracy drop is the real test).
The parity batch of a quantized file is the representative batch (up to 64 of
the images it was calibrated on) when one is given, else 3 seeded inputs.

Precision
---------
``precision=Precision.INT8`` ships full-integer static int8 files: ``model_int8.tflite``
and ``model_int8.onnx`` (QDQ), quantized by :mod:`latkit.profiler.quantize` from
the float32 files with activation ranges calibrated on ``representative``
images (a few hundred from the training set; without them, seeded random
inputs, recorded as such). ``fp16`` ships ``model_fp16.tflite`` (ONNX has no
fp16 file for CPUs). The sidecar records the precision, the quantization
scheme, what the file really contains (its tensors) and the representative data.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from latkit.core.reprs import short_repr
from latkit.core.files import atomic_path, check_output_dir, file_sha256, write_json
from latkit._version import __version__
from latkit.devices.base import Device
from latkit.devices.precision import Precision
from latkit.search.target import DEFAULT_TOLERANCE
from latkit.core.errors import ArchError, UsageError
from latkit.profiler.build import count_params
from latkit.profiler.export import network_key
from latkit.profiler.spaces.base import Network, SearchSpace, classes_of, with_classes
from latkit.profiler.spaces.load import load_network, read_arch_text
from latkit.deploy import export_formats as fmt
from latkit.deploy.export_formats import ExportError
from latkit.deploy.exported_file import REL_TOL, ExportedFile, check_parity, write_sidecar
from latkit.deploy.app_metadata import TrainingData, stamp
from latkit.deploy.layout import InputLayout
from latkit.deploy.export_weights import (
    CHECKPOINT_FILE,
    read_weights,
    save_weights,
    standalone_module,
    weights_file,
    weights_source,
)
from latkit.deploy.sidecar import (
    ExportReportDict,
    Parity,
    SidecarBase,
    SidecarEntry,
    WeightsInfo,
)

if TYPE_CHECKING:
    from latkit.profiler.protocol import ProtocolConfig
    from latkit.deploy.export_quantized import Images, QuantBatch

SCHEMA = "latkit.export"
SCHEMA_VERSION = 1
REPORT_NAME = "export.json"
PARITY_INPUTS = 3
PARITY_SEED = 1234
FORMATS = ("onnx", "tflite")

ProgressFn = Callable[[str], None]


# --------------------------------------------------------------------------- arch


@dataclass(frozen=True)
class ArchFile:
    """An architecture to export: its network and what arch.json said about it."""

    network: Network
    space: str | None
    arch: object  # native form, None for a net.config without a matching space arch
    resolution: int
    target_ms: float | None = None
    predicted_ms: float | None = None
    predicted_source: object = None
    source: str = ""  # file path or "inline"
    sha256: str = ""
    classes: int | None = None  # the dataset's class count, when arch.json records it


def _first(raw: Mapping[str, object], *names: str) -> object:
    for name in names:
        if raw.get(name) is not None:
            return raw[name]
    return None


def read_arch(
    arch: str | Path, space: SearchSpace | None = None, resolution: int | None = None
) -> ArchFile:
    """Read an architecture (arch.json, net.config, or native form with ``space``).

    Besides the architecture, an arch.json may carry ``target_ms``, a predicted
    latency (``predicted_latency_ms`` or ``latency_ms``) and its source
    (``latency_source``, ``latency_model`` as :func:`latkit.search.run.run_search`
    writes it, or ``latency_provenance``), copied into every sidecar.

    Raises:
        ArchError: the architecture cannot be read or its space is unknown.
    """
    network, parsed = load_network(space, arch, resolution)
    raw = read_arch_text(arch)
    envelope = raw if isinstance(raw, dict) else {}
    text = Path(arch).read_bytes() if _is_file(arch) else str(arch).encode()
    space_name = network.meta.get("space") or (space.name if space else envelope.get("space"))
    native = network.meta.get("arch")
    if native is None and parsed is not None and space is not None:
        native = space.arch_to_native(parsed)
    source = _first(envelope, "latency_source", "predicted_source", "latency_model", "latency_provenance")
    return ArchFile(
        network=network, space=space_name, arch=native, resolution=int(network.input_shape[0]),
        target_ms=_latency_or_none(envelope, "target_ms", "latency_target_ms"),
        predicted_ms=_latency_or_none(envelope, "predicted_latency_ms", "latency_ms", "best_latency_ms"),
        predicted_source=source,
        source=str(arch) if _is_file(arch) else "inline", sha256=hashlib.sha256(text).hexdigest(),
        classes=_classes_or_none(envelope.get("classes")),
    )  # fmt: skip


def _classes_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _is_file(value: str | Path) -> bool:
    try:
        return Path(value).expanduser().is_file()
    except (OSError, ValueError):
        return False


def _latency_or_none(raw: Mapping[str, object], *names: str) -> float | None:
    """The first of ``names`` that ``raw`` holds, as a latency (ms): a positive finite number."""
    for name in names:
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArchError(f"arch.json {name!r} must be a number of milliseconds, got {value!r}; "
                            "fix it or drop the field")
        if not (math.isfinite(value) and value > 0):
            raise ArchError(f"arch.json {name!r} is {value!r}, not a positive finite latency (ms); "
                            "fix it or drop the field")
        return float(value)
    return None


# --------------------------------------------------------------------------- report


@dataclass
class ExportReport:
    """What :func:`export_arch` wrote."""

    out_dir: Path
    network: str
    space: str | None
    resolution: int
    classes: int
    weights: str | None
    files: list[ExportedFile] = field(default_factory=list)
    precision: Precision = Precision.FP32  # the precision the model ships at
    checks: list[str] = field(default_factory=list)  # what the measured files showed (deploy.checks)

    def __repr__(self) -> str:
        return short_repr(self, 'network', 'precision', 'resolution', 'classes', 'files', 'out_dir')

    def shipped(self, format: str) -> ExportedFile:
        """The file of ``format`` at the shipped precision."""
        return self.file(format, self.precision)

    def file(self, format: str, precision: Precision = Precision.FP32) -> ExportedFile:
        """The exported file of ``format`` at ``precision``.

        Raises:
            UsageError: no such file was exported.
        """
        for f in self.files:
            if f.format == format and f.precision == precision:
                return f
        have = ", ".join(f"{f.format}/{f.precision}" for f in self.files) or "none"
        raise UsageError(f"no {format}/{precision} file was exported (have: {have})")

    def to_dict(self) -> ExportReportDict:
        """JSON-ready form (saved as ``export.json``)."""
        return {
            "schema": f"{SCHEMA}-report", "schema_version": SCHEMA_VERSION, "latkit_version": __version__,
            "out_dir": str(self.out_dir), "network": self.network, "space": self.space,
            "resolution": self.resolution, "classes": self.classes, "weights": self.weights,
            "precision": self.precision.value, "files": [f.to_dict() for f in self.files], "checks": list(self.checks),
        }  # fmt: skip


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes, checked: formats, the TFLite files' precisions besides float32
    (the shipped precision's included), the shipped precision and the TFLite input layout."""

    formats: tuple[str, ...]
    tflite_precisions: tuple[Precision, ...]
    precision: Precision
    layout: InputLayout  # of the TFLite files' input

    @property
    def quantizes(self) -> bool:
        """Whether any file is quantized (so a representative batch is needed)."""
        return bool(self.tflite_precisions) or self.precision != Precision.FP32

    def files(self) -> list[tuple[str, Precision]]:
        """``(format, precision)`` of every file :func:`export_arch` writes, in its order (one step each)."""
        out: list[tuple[str, Precision]] = []
        if "onnx" in self.formats:
            out.append(("onnx", Precision.FP32))
            if self.precision == Precision.INT8:
                out.append(("onnx", Precision.INT8))
        if "tflite" in self.formats:
            out += [("tflite", Precision.FP32)] + [("tflite", p) for p in self.tflite_precisions]
        return out


@dataclass(frozen=True)
class TorchReference:
    """The float32 torch network and its outputs on the parity inputs: what every file is compared with."""

    module: nn.Module
    network: Network
    inputs: list[torch.Tensor]
    outputs: list[np.ndarray]

    @property
    def shape_nchw(self) -> tuple[int, ...]:
        """The network's input shape ``(1, C, H, W)``."""
        h, w, c = self.network.input_shape
        return (1, c, h, w)


def _parse_formats(formats: Sequence[str] | str) -> list[str]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for item in (s.strip().lower() for s in items):
        if item not in FORMATS:
            raise UsageError(f"unknown export format {item!r}; use onnx, tflite or onnx,tflite")
        if item not in out:
            out.append(item)
    if not out:
        raise UsageError("no export format given; use onnx, tflite or onnx,tflite")
    return out


def parse_variants(words: Sequence[str] | str) -> tuple[Precision, ...]:
    """``--variants fp16,int8`` (a list or comma-separated) as the TFLite files' precisions besides float32.

    Raises:
        UsageError: a word that is not fp16 or int8.
    """
    items = words.split(",") if isinstance(words, str) else list(words)
    out = []
    for word in (str(w).strip().lower() for w in items if str(w).strip()):
        found = [p for p in fmt.TFLITE_PRECISIONS if p.value == word]
        if not found:
            raise UsageError(f"unknown variant {word!r}; TFLite variants are fp16 and int8 (full-integer static)")
        out.append(found[0])
    return tuple(dict.fromkeys(out))


def parity_inputs(shape_nchw: tuple[int, ...], n: int = PARITY_INPUTS) -> list[torch.Tensor]:
    """Seeded standard-normal NCHW inputs for parity checks (the same on every call)."""
    gen = torch.Generator().manual_seed(PARITY_SEED)
    return [torch.randn(*shape_nchw, generator=gen) for _ in range(n)]


def _plan(formats: Sequence[str] | str, tflite_precisions: Sequence[Precision], precision: Precision,
          layout: InputLayout) -> ExportPlan:  # fmt: skip
    """Formats, the TFLite files' precisions (the shipped precision's included), precision and layout, checked."""
    formats_ = _parse_formats(formats)
    extra = list(dict.fromkeys(tflite_precisions))
    for p in extra:
        if p not in fmt.TFLITE_PRECISIONS:
            raise UsageError(f"TFLite files besides float32 are fp16 and int8 (full-integer static), not {p}")
    if extra and "tflite" not in formats_:
        raise UsageError("fp16 / int8 variants are TFLite files; add tflite to --format")
    if precision == Precision.FP16 and "tflite" not in formats_:
        raise UsageError("fp16 files are TFLite files (ONNX Runtime on CPU runs no fp16 model); add tflite to --format")
    if precision != Precision.FP32 and "tflite" in formats_ and precision not in extra:
        extra.append(precision)
    return ExportPlan(tuple(formats_), tuple(extra), precision, layout)


def export_steps(formats: Sequence[str] | str = FORMATS, *, precision: Precision = Precision.FP32,
                 tflite_precisions: Sequence[Precision] = (), device: Device | None = None) -> int:
    """How many messages :func:`export_arch` sends ``on_progress``: one per file written, one per file measured.

    A progress display shows this total from the start (each message comes
    before its step, so the ``k``-th message, from 0, means ``k`` steps done).

    Raises:
        UsageError: formats or TFLite precisions :func:`export_arch` refuses.
    """
    files = _plan(formats, tflite_precisions, precision, InputLayout.NCHW).files()
    if device is None:
        return len(files)
    runs = tuple(getattr(device, "precisions", (Precision.FP32,)))
    return len(files) + sum(f == device.model_format.value and p in runs for f, p in files)


def _space_of(space: SearchSpace | str | None) -> SearchSpace | None:
    from latkit.profiler.spaces.base import get_space

    return get_space(space) if isinstance(space, str) else space


def _check_door(name: Any, weights: Any, random_weights: bool, on_progress: Any) -> None:
    """Refuse, before any work, a file stem that leaves the folder and contradictory weights options."""
    from latkit.core.files import plain_file_name

    plain_file_name(name, "export name")
    if weights is not None and random_weights:
        raise UsageError("give either weights or random_weights (--weights or --random-weights), not both")
    if on_progress is not None and not callable(on_progress):
        raise UsageError(f"on_progress must be a function taking a message, not {type(on_progress).__name__}")


def export_arch(
    arch_path: str | Path, weights: str | Path | None = None, formats: Sequence[str] | str = FORMATS,
    out_dir: str | Path = "export", *, precision: Precision = Precision.FP32, layout: InputLayout = InputLayout.NCHW,
    tflite_precisions: Sequence[Precision] = (), representative: Images | None = None, name: str = "model",
    space: SearchSpace | str | None = None, resolution: int | None = None, random_weights: bool = False,
    device: Device | None = None, protocol: ProtocolConfig | None = None, on_progress: ProgressFn | None = None,
    target_ms: float | None = None, tolerance: float = DEFAULT_TOLERANCE, training_data: TrainingData | None = None,
) -> ExportReport:  # fmt: skip
    """Export an architecture with its weights to deployable files with sidecars.

    Args:
        arch_path: an arch.json (or any architecture form; see :func:`read_arch`).
        weights: a safetensors file in the standalone naming (module doc, what ``latkit train``
            writes), a search checkpoint (the supernet weights of the architecture's path), or a
            folder holding either.
        formats, out_dir: ``onnx`` and/or ``tflite`` (a list or comma-separated); the folder to write.
        tflite_precisions: TFLite files at fp16 and/or int8 (full-integer static) too (``--variants``).
        precision: the shipped precision: int8 adds ``model_int8.tflite`` and ``model_int8.onnx``
            (QDQ), fp16 adds ``model_fp16.tflite``; the float32 files are always written.
        layout: the TFLite files' input layout (ONNX stays NCHW).
        representative: images ``(N, C, H, W)`` the int8 ranges are calibrated on (None: seeded random).
        space, resolution, name: the search space (or its name) when ``arch_path`` does not name
            it; the input resolution (default: the arch's own, else the space's); the file stem.
        device, protocol: when given, every file of the device's format (at a precision it runs)
            is measured on it (:func:`latkit.deploy.verify.measure_exported`).
        target_ms, tolerance: measured files are judged against it (default arch.json's) and
            quantized ones against fp32 (:func:`latkit.deploy.checks.check_files`).
        on_progress: called with a short message before each step.
        random_weights: with ``weights`` None, export seeded random weights (marked ``random``).
        training_data: the weights' training data (normalisation, class names), written into every file
            (:mod:`latkit.deploy.app_metadata`); default: what ``weights.json`` beside ``weights`` records.

    Returns:
        The report, also saved as ``out_dir/export.json``.

    Raises:
        UsageError / ArchError: bad formats, TFLite precisions or architecture.
        StoreError: weights that do not fit, or an unwritable folder.
        MissingExtraError: TFLite export without litert-torch / ai-edge-quantizer.
        ExportError: an exporter failed or a file misses its parity tolerance.
    """
    from latkit.deploy.export_quantized import QuantBatch

    _check_door(name, weights, random_weights, on_progress)
    plan = _plan(formats, tflite_precisions, precision, layout)
    space = _space_of(space)
    out = check_output_dir(out_dir, "export folder")  # before any slow work
    info = read_arch(arch_path, space, resolution)
    if weights is None and not random_weights:
        raise UsageError(_no_weights_message(arch_path))
    ref = _reference(info, weights)
    batch = QuantBatch(representative, ref.shape_nchw, ref.inputs) if plan.quantizes else None
    report = ExportReport(out, ref.network.name, info.space, info.resolution, classes_of(ref.network),
                          str(weights) if weights else "random", precision=plan.precision)  # fmt: skip
    say = on_progress or (lambda msg: None)
    base = _base_meta(info, ref.network, ref.module, weights)
    report.files += _write_files(plan, ref, batch, base, out, name, say, training_data or TrainingData.beside(weights))
    _measure_files(report, device, protocol, say, info.target_ms if target_ms is None else target_ms, tolerance)
    write_json(out / REPORT_NAME, report.to_dict(), "export report", indent=1)
    return report


def _reference(info: ArchFile, weights: str | Path | None) -> TorchReference:
    """The network with its weights (the dataset's class count for random ones) and its parity outputs."""
    network = info.network
    if weights is None and info.classes is not None:
        network = with_classes(network, info.classes)
    module, network = standalone_module(network, weights)
    h, w, c = network.input_shape
    inputs = parity_inputs((1, c, h, w))
    with torch.no_grad():
        outputs = [module(x).numpy() for x in inputs]
    return TorchReference(module, network, inputs, outputs)


def _write_files(plan: ExportPlan, ref: TorchReference, batch: QuantBatch | None, base: SidecarBase, out: Path,
                 name: str, say: ProgressFn, data: TrainingData | None = None) -> list[ExportedFile]:  # fmt: skip
    """Write every file of ``plan`` (float32 first: the quantized files derive from it), checked, with sidecars,
    then write the app metadata (``data``: the weights' training data, if known) into each."""
    from latkit.deploy.export_quantized import export_quantized

    files: list[ExportedFile] = []
    if "onnx" in plan.formats:
        say("exporting ONNX")
        onnx32 = _export_onnx(ref, out / f"{name}.onnx", base)
        files.append(onnx32)
        if plan.precision == Precision.INT8:
            say("quantizing the ONNX file to int8 (QDQ)")
            files.append(export_quantized(onnx32, ref.module, batch, base, plan.precision, out / f"{name}_int8.onnx"))
    if "tflite" in plan.formats:
        say("converting to TFLite" + (" (NHWC input)" if plan.layout == InputLayout.NHWC else ""))
        fp32 = _export_tflite(ref, out / f"{name}.tflite", base, plan.layout)
        files.append(fp32)
        for precision in plan.tflite_precisions:
            say(f"writing the TFLite {precision} file")
            files.append(export_quantized(fp32, ref.module, batch, base, precision,
                                          out / f"{name}_{precision}.tflite"))  # fmt: skip
    for f in files:  # last: the int8 files are quantized from the float32 ones as they were written
        stamp(f, data)
    return files


def _measure_files(report: ExportReport, device: Device | None, protocol: ProtocolConfig | None, say: ProgressFn,
                   target_ms: float | None, tolerance: float) -> None:  # fmt: skip
    """Measure every file the device (if any) runs, then check them (precision against fp32, the target)."""
    from latkit.deploy.checks import check_files
    from latkit.deploy.verify import measure_in_fresh_process

    if device is None:
        return

    runs = tuple(getattr(device, "precisions", (Precision.FP32,)))
    for f in report.files:
        if f.format == device.model_format.value and f.precision in runs:
            say(f"measuring {f.path.name} on {device.uri}")
            measure_in_fresh_process(device, f, protocol)  # this process has just run torch
    report.checks = check_files(report.files, target_ms, tolerance)


def _no_weights_message(arch_path: str | Path) -> str:
    """Why an export without weights stops, and which weights to give."""
    folder = Path(arch_path).expanduser().parent if _is_file(arch_path) else None
    hint = ""
    if folder is not None and (folder / CHECKPOINT_FILE).is_file():
        hint = f" ({folder / CHECKPOINT_FILE} holds this search's supernet weights)"
    return (f"no --weights given: the export would hold untrained random weights; give --weights (the "
            f"weights.safetensors of latkit train, or a search's checkpoint.safetensors{hint}), "
            "or add --random-weights for a latency-only file")


def _base_meta(info: ArchFile, network: Network, module: nn.Module, weights: str | Path | None) -> SidecarBase:
    if weights is None:
        weights_meta: WeightsInfo = {"source": "random", "trained": False, "seed": 0}
    else:
        path = weights_file(weights)
        weights_meta = {"source": weights_source(path), "trained": True, "file": str(path), "sha256": file_sha256(path)}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": "deployable",
        "latkit_version": __version__,
        "architecture": {
            "space": info.space, "arch": info.arch, "resolution": info.resolution,
            "network": network.name, "network_key": network_key(network),
            "classes": classes_of(network), "n_layers": len(network.layers),
            "params": count_params(module), "arch_file": info.source, "arch_sha256": info.sha256,
        },
        "weights": weights_meta,
        "latency_target_ms": info.target_ms,
        "predicted_latency": (
            {"latency_ms": info.predicted_ms, "source": info.predicted_source}
            if info.predicted_ms is not None else None
        ),
        "measured_latency": None,
    }  # fmt: skip


def _export_onnx(ref: TorchReference, path: Path, base: SidecarBase) -> ExportedFile:
    inputs = ref.inputs
    with atomic_path(path, "exported model", keep_suffix=True) as tmp:
        details = fmt.write_onnx(ref.module, inputs[0], tmp)
        got = fmt.run_onnx(tmp, [x.numpy() for x in inputs])
    par: Parity = {**fmt.parity(ref.outputs, got, REL_TOL[Precision.FP32]),
                   "runtime": f"onnxruntime-{fmt.package_version('onnxruntime')}"}  # fmt: skip
    check_parity(par, path, Precision.FP32, "ONNX Runtime")
    shape = tuple(inputs[0].shape)
    entry: SidecarEntry = {
        "format": "onnx", "variant": Precision.FP32.value, "exporter": details, "opset": details["opset"],
        "input": {"name": fmt.INPUT_NAME, "shape": list(shape), "layout": InputLayout.NCHW.tag, "dtype": "float32"},
        "output": {"name": fmt.OUTPUT_NAME, "shape": list(ref.outputs[0].shape), "dtype": "float32"},
        "parity": {"reference": "torch", **par},
    }  # fmt: skip
    sidecar = write_sidecar(path, base, entry)
    return ExportedFile(path, sidecar, "onnx", Precision.FP32, InputLayout.NCHW, shape, par)


def _layout_inputs(inputs: list[torch.Tensor], layout: InputLayout) -> list[np.ndarray]:
    return [(x.permute(0, 2, 3, 1) if layout == InputLayout.NHWC else x).contiguous().numpy() for x in inputs]


def _export_tflite(ref: TorchReference, path: Path, base: SidecarBase, layout: InputLayout) -> ExportedFile:
    wrapped = fmt.ToNHWC(ref.module).eval() if layout == InputLayout.NHWC else ref.module
    feeds = _layout_inputs(ref.inputs, layout)
    with atomic_path(path, "exported model", keep_suffix=True) as tmp:
        details = fmt.write_tflite(wrapped, torch.from_numpy(feeds[0]), tmp)
        got = fmt.run_tflite(tmp, feeds)
        io = fmt.tflite_io(tmp)
    _, runtime = fmt.tflite_interpreter_module()
    par: Parity = {**fmt.parity(ref.outputs, got, REL_TOL[Precision.FP32]), "runtime": runtime}
    check_parity(par, path, Precision.FP32, "LiteRT")
    io["input"]["layout"] = layout.tag
    entry: SidecarEntry = {"format": "tflite", "variant": Precision.FP32.value, "exporter": details, **io,
                           "parity": {"reference": "torch", **par}}  # fmt: skip
    sidecar = write_sidecar(path, base, entry)
    return ExportedFile(path, sidecar, "tflite", Precision.FP32, layout, tuple(feeds[0].shape), par)


# --------------------------------------------------------------------------- files


__all__ = [
    "ArchFile",
    "ExportError",
    "ExportPlan",
    "ExportReport",
    "TorchReference",
    "export_arch",
    "export_steps",
    "file_sha256",
    "parity_inputs",
    "parse_variants",
    "read_arch",
    "read_weights",
    "save_weights",
    "standalone_module",
]
