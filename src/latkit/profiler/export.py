"""Operators and networks as model files, exported once and cached on disk.

:class:`BuiltModel` is the :class:`~latkit.devices.base.ModelSource` the
profiler hands to devices: it builds the torch module of one
:class:`~latkit.profiler.ops.OpSpec` (or a whole network) and exports it to
ONNX or TFLite on first use. Files live in ``$LATKIT_CACHE`` (default
``~/.cache/latkit/models``) under a name hashed from the key, the format, the
seed and the exporter version, so a torch or converter upgrade never reuses a
stale file. Each model file has a JSON sidecar (schema, versions, opset, size);
a model whose sidecar is missing or disagrees with it is exported again, and
both are written to a temporary file first and moved into place, so a killed
export never leaves half a file behind.

At ``precision`` fp16 or int8 the float32 file is exported first, then
quantized by :mod:`latkit.profiler.quantize` (int8 calibrated on seeded random
inputs of the model's input shape) into a file whose name carries the
precision and the quantizer's version; the sidecar records the precision, the
scheme and the quantizer, and an int8 file is checked to hold int8 kernels
before it is cached. fp32 file names are as before, so no fp32 cache is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from latkit.core.files import atomic_path, read_json, write_json
from latkit._version import __version__
from latkit.devices.base import ModelFormat, captured_output
from latkit.devices.precision import Precision
from latkit.core.errors import MissingExtraError, StoreError, UsageError
from latkit.profiler.build import DEFAULT_SEED, build_network, build_op, input_tensor
from latkit.profiler.ops import OpSpec, measurable_by_key
from latkit.profiler.quiet import quiet_converter

if TYPE_CHECKING:
    from latkit.profiler.spaces.base import Network

log = logging.getLogger(__name__)

SCHEMA = "latkit.export"
SCHEMA_VERSION = 1
EXPORT_REVISION = 1  # bump when build.py or the export settings change a file's content
QUANTIZE_REVISION = 1  # bump when the quantization settings change a quantized file's content
ONNX_OPSET = 17
_SUFFIX = {ModelFormat.ONNX: ".onnx", ModelFormat.TFLITE: ".tflite"}


def default_cache_dir() -> Path:
    """Where exported models are cached: ``$LATKIT_CACHE`` or ``~/.cache/latkit/models``."""
    from latkit.core.cache import models_dir

    return models_dir()


def exporter_version(fmt: ModelFormat | str) -> str:
    """The exporter identity baked into a cached file's name and sidecar.

    Raises:
        MissingExtraError: TFLite export was asked for but litert-torch is missing.
    """
    fmt = _format(fmt)
    base = f"latkit-export-{EXPORT_REVISION}/torch-{torch.__version__}"
    if fmt is ModelFormat.ONNX:
        return f"{base}/onnx-opset-{ONNX_OPSET}"
    try:
        return f"{base}/litert-torch-{metadata.version('litert-torch')}"
    except metadata.PackageNotFoundError as exc:
        raise MissingExtraError("TFLite export", "tflite", exc) from None


def _format(fmt: ModelFormat | str) -> ModelFormat:
    try:
        fmt = ModelFormat(fmt)
    except ValueError:
        raise UsageError(f"unknown model format {fmt!r}; use onnx or tflite") from None
    if fmt not in _SUFFIX:
        raise UsageError(f"format {fmt.value} is not a file format; use onnx or tflite")
    return fmt


def network_key(network: Network) -> str:
    """A stable key for a whole network: its name plus a hash of its operators."""
    payload = json.dumps(
        {"input": list(network.input_shape), "ops": [s.to_dict() for s in network.specs]},
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return f"network-{network.name}-{digest}"


class BuiltModel:
    """One operator or network as a torch module and as cached model files.

    Implements :class:`latkit.devices.base.ModelSource`.

    Args:
        target: An :class:`OpSpec` or a :class:`~latkit.profiler.spaces.base.Network`.
        cache_dir: Where files go (default :func:`default_cache_dir`).
        seed: Seed of the weights and of :meth:`example_input`.
        precision: the precision of the files :meth:`file` hands out (the torch module stays float32).
    """

    def __init__(
        self, target: OpSpec | Network, *, cache_dir: Path | str | None = None, seed: int = DEFAULT_SEED,
        precision: Precision = Precision.FP32,
    ) -> None:
        self.target = target
        self.seed = seed
        self.precision = precision
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        if isinstance(target, OpSpec):
            self.key = target.key
        elif hasattr(target, "layers") and hasattr(target, "specs"):
            self.key = network_key(target)
        else:
            raise UsageError(f"can only build an OpSpec or a Network, not {type(target).__name__}")
        h, w, c = target.input_shape
        self.input_shape: tuple[int, ...] = (1, c, h, w)
        self._module: torch.nn.Module | None = None

    def __repr__(self) -> str:
        tail = "" if self.precision == Precision.FP32 else f", precision={self.precision.value!r}"
        return f"BuiltModel({self.key!r}{tail})"

    def torch_module(self) -> torch.nn.Module:
        """The model as a torch module in eval mode (built once, then reused)."""
        if self._module is None:
            if isinstance(self.target, OpSpec):
                self._module = build_op(self.target, self.seed)
            else:
                self._module = build_network(self.target, self.seed)
        return self._module

    def example_input(self) -> torch.Tensor:
        """The seeded NCHW input used for export (and handy for parity checks)."""
        _, c, h, w = self.input_shape
        return input_tensor((h, w, c), self.seed)

    def path(self, fmt: ModelFormat | str, precision: Precision | None = None) -> Path:
        """Where the ``fmt`` file of this model lives in the cache (it may not exist).

        ``precision`` defaults to the model's; fp32 names are those of earlier
        latkit versions, other precisions add the precision and the quantizer.
        """
        fmt = _format(fmt)
        p = self.precision if precision is None else precision
        ident = f"{self.key}|{fmt.value}|seed={self.seed}|{exporter_version(fmt)}"
        tag = ""
        if p != Precision.FP32:
            _check_offered(fmt, p)
            from latkit.profiler.quantize import quantizer_version

            ident += f"|{p.value}|{quantizer_version(fmt.value)}|q{QUANTIZE_REVISION}"
            tag = f"-{p.value}"
        digest = hashlib.sha256(ident.encode()).hexdigest()[:20]
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.key)[:80].strip("._")
        return self.cache_dir / f"{readable}{tag}-{digest}{_SUFFIX[fmt]}"

    def is_cached(self, fmt: ModelFormat | str) -> bool:
        """Whether a complete ``fmt`` file is in the cache."""
        return self.export_meta(fmt) is not None

    def export_meta(self, fmt: ModelFormat | str) -> dict[str, Any] | None:
        """The sidecar of the cached ``fmt`` file, or None if it is absent or broken."""
        path = self.path(fmt)
        try:
            meta = read_json(_sidecar(path), "model sidecar")
            size = path.stat().st_size
        except (OSError, StoreError):
            return None
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or size == 0 or meta.get("size_bytes") != size:
            return None
        if meta.get("precision", Precision.FP32.value) != self.precision.value:
            return None
        return meta

    def file(self, fmt: ModelFormat | str) -> Path:
        """The model as a ``fmt`` file at :attr:`precision`, exported on first use and reused after.

        Raises:
            MissingExtraError: TFLite is asked for but litert-torch is missing.
            UsageError: a precision the format is not offered at (ONNX fp16).
            StoreError: the cache folder cannot be written, or an int8 file
                came out without int8 kernels.
        """
        fmt = _format(fmt)
        path = self.path(fmt)
        if self.is_cached(fmt):
            return path
        if path.exists():
            log.info("re-exporting %s: cached file %s is incomplete", self.key, path.name)
        from latkit.core.cache import prepare

        prepare(path.parent)  # marks a cache area latkit creates, so `cache clear` may clear it
        t0 = time.perf_counter()
        if self.precision is Precision.FP32:
            with _cache_errors(), atomic_path(path, "model cache file", keep_suffix=True) as tmp:
                details = _export_onnx(self, tmp) if fmt is ModelFormat.ONNX else _export_tflite(self, tmp)
                if tmp.stat().st_size == 0:
                    raise StoreError(f"the {fmt.value} exporter wrote nothing for {self.key}")
        else:
            details = self._quantize(fmt, path)
        self._write_sidecar(fmt, path, time.perf_counter() - t0, details)
        return path

    def _quantize(self, fmt: ModelFormat, path: Path) -> dict[str, Any]:
        """Quantize the float32 file into ``path``; check an int8 file's kernels once."""
        from latkit.profiler.quantize import (
            check_kernels,
            quantize_onnx,
            quantize_tflite,
            representative_inputs,
        )

        src = BuiltModel(self.target, cache_dir=self.cache_dir, seed=self.seed)
        src._module = self._module  # share the built module, if any
        float_file = src.file(fmt)
        self._module = src._module
        quantize = quantize_onnx if fmt is ModelFormat.ONNX else quantize_tflite
        representative = representative_inputs(self.input_shape, seed=self.seed)
        with _cache_errors():
            details = quantize(float_file, path, self.precision, representative)
        kernels = check_kernels(path, self.precision)
        details["kernels"] = {"total": kernels.kernels, "int8": kernels.int8_kernels,
                              "fp16_weights": kernels.fp16_weights,
                              "int8_activations": kernels.int8_activations}
        details["float_file"] = float_file.name
        details["representative"] = f"{len(representative)} seeded standard-normal inputs (seed {self.seed})"
        return details

    def _write_sidecar(self, fmt: ModelFormat, path: Path, export_s: float, details: dict[str, Any]) -> None:
        meta = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "latkit_version": __version__,
            "key": self.key,
            "format": fmt.value,
            "precision": self.precision.value,
            "exporter": exporter_version(fmt),
            "seed": self.seed,
            "input_shape": list(self.input_shape),
            "size_bytes": path.stat().st_size,
            "export_s": round(export_s, 4),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **details,
        }
        if isinstance(self.target, OpSpec):
            meta["spec"] = self.target.to_dict()
        else:
            meta["network"] = self.target.name
        with _cache_errors():
            write_json(_sidecar(path), meta, "model sidecar", indent=1)
        log.debug("exported %s (%s) to %s in %.2f s", self.key, self.precision.value, path.name, export_s)


def _check_offered(fmt: ModelFormat, precision: Precision) -> None:
    if fmt is ModelFormat.ONNX and precision is Precision.FP16:
        raise UsageError("ONNX files are offered at fp32 and int8, not fp16 (ONNX Runtime's CPU "
                         "provider has no float16 kernels); use a TFLite device for fp16")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@contextlib.contextmanager
def _cache_errors() -> Iterator[None]:
    """Name LATKIT_CACHE in the message when the model cache cannot be written."""
    try:
        yield
    except StoreError as exc:
        if "cannot write" not in str(exc):
            raise
        raise StoreError(f"{exc}; set LATKIT_CACHE to a writable folder") from exc


def _export_onnx(model: BuiltModel, out: Path) -> dict[str, Any]:
    module, example = model.torch_module(), model.example_input()
    kwargs = dict(opset_version=ONNX_OPSET, input_names=["input"], output_names=["output"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # the TorchScript exporter is much faster than dynamo on small ops, and a
            # space has hundreds of them to export
            torch.onnx.export(module, (example,), str(out), dynamo=False, **kwargs)
            mode = "torchscript"
        except (TypeError, RuntimeError, NotImplementedError, ImportError) as exc:
            log.info("legacy ONNX exporter unavailable (%s); using dynamo", exc)
            torch.onnx.export(module, (example,), str(out), dynamo=True, **kwargs)
            mode = "dynamo"
    return {"opset": ONNX_OPSET, "onnx_exporter": mode}


def _export_tflite(model: BuiltModel, out: Path) -> dict[str, Any]:
    with quiet_converter("litert-torch"):
        try:
            import litert_torch
        except ImportError as exc:
            raise MissingExtraError("TFLite export", "tflite", exc) from None
        module, example = model.torch_module(), model.example_input()
        litert_torch.convert(module, (example,)).export(str(out))
    return {"tflite_converter": "litert-torch", "input_layout": "NCHW"}


def export_ops(
    specs: Iterable[OpSpec],
    fmt: ModelFormat | str,
    progress_cb: Callable[[int, int, str], None] | None = None,
    *,
    cache_dir: Path | str | None = None,
    seed: int = DEFAULT_SEED,
    precision: Precision = Precision.FP32,
) -> dict[str, Path]:
    """Export every measurable op of ``specs`` to ``fmt``, skipping cached ones.

    Args:
        specs: Operators (free ops and repeated keys are skipped).
        fmt: ``onnx`` or ``tflite``.
        progress_cb: Called as ``progress_cb(done, total, key)`` after each op.
        cache_dir: Cache directory (default :func:`default_cache_dir`).
        seed: Seed of the weights.
        precision: the files' precision (fp16: TFLite only).

    Returns:
        The file of every op, by key.
    """
    unique = measurable_by_key(specs)
    paths: dict[str, Path] = {}
    for i, (key, spec) in enumerate(unique.items(), 1):
        paths[key] = BuiltModel(spec, cache_dir=cache_dir, seed=seed, precision=precision).file(fmt)
        if progress_cb is not None:
            progress_cb(i, len(unique), key)
    return paths


__all__ = [
    "BuiltModel",
    "ONNX_OPSET",
    "default_cache_dir",
    "export_ops",
    "exporter_version",
    "network_key",
]
