"""A user's own model file (.onnx or .tflite) as a :class:`~latkit.devices.base.ModelSource`.

``latkit measure FILE`` times a file latkit did not build, with the same
protocol as its own operators and networks. Everything a device needs is read
from the file itself, never from its name: the format (a TFLite flatbuffer
carries the identifier ``TFL3`` at bytes 4-8; anything else must parse and
check as an ONNX model), the shape of the first input, and the numeric
precision its tensors are stored in. A file that is empty, truncated, damaged
or not a model at all is refused in one line before any device is opened, as
is a file whose input shape is not fixed (a dynamic batch dimension is run at
batch 1, the way ``benchmark_model`` runs it) and a file offered to a device
that runs the other format.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import struct
from pathlib import Path
from typing import Any

from latkit.devices.base import ModelFormat
from latkit.devices.precision import Precision
from latkit.core.errors import StoreError, UsageError

log = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"
MAX_INPUT_BYTES = 1 << 30  # one input tensor; larger shapes (or int32-overflowing dims) are refused
FORMAT_NAMES = {ModelFormat.ONNX: "ONNX", ModelFormat.TFLITE: "TFLite"}
_ARTICLE = {ModelFormat.ONNX: "an", ModelFormat.TFLITE: "a"}
# how a user writes a device of each registered scheme
_URI_FORMS = {"adb": "adb:SERIAL", "adb+tcp": "adb+tcp://HOST:PORT"}
# what a damaged flatbuffer raises when its offsets point outside the file
_FLATBUFFER_ERRORS = (struct.error, IndexError, ValueError, TypeError, AttributeError, OverflowError)


def sniff_format(data: bytes) -> ModelFormat | None:
    """``TFLITE`` when ``data`` carries the TFLite flatbuffer identifier, else None."""
    return ModelFormat.TFLITE if data[4:8] == TFLITE_IDENTIFIER else None


def devices_for(fmt: ModelFormat) -> str:
    """The registered devices that run ``fmt`` files, as a user writes them."""
    from latkit.devices.base import device_classes

    names = [_URI_FORMS.get(s, s) for s, cls in device_classes().items() if cls.model_format is fmt]
    return ", ".join(names) or "no registered device"


def looks_like_model_file(text: str) -> ModelFormat | None:
    """The format of the model file ``text`` names, if it names one (for ``--arch`` checks)."""
    path = Path(text)
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as fh:
            head = fh.read(8)
    except (OSError, ValueError):
        return None
    if sniff_format(head) is ModelFormat.TFLITE:
        return ModelFormat.TFLITE
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ONNX starts with ir_version (field 1)
        return ModelFormat.ONNX
    return None


class ModelFile:
    """A model file the user gives: one format, one fixed input, one precision.

    Implements :class:`latkit.devices.base.ModelSource`.

    Attributes:
        path: the file.
        format: :class:`ModelFormat` read from the content.
        sha256: hex digest of the file's bytes.
        key: ``file-STEM-DIGEST``, the measurement key.
        input_name: the first input's name.
        input_shape: that input's shape as the file declares it (a dynamic
            batch dimension is 1).
        dynamic_batch: whether the file left its batch dimension open.
        precision: the :class:`Precision` its tensors hold, or None when this
            latkit cannot tell (no precision detector installed).

    Raises:
        StoreError: the file is missing, unreadable, empty, truncated or not a model.
        UsageError: the file's input shape is not fixed, or it has no input latkit can feed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        data = _read(self.path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.format = sniff_format(data) or ModelFormat.ONNX
        if self.format is ModelFormat.TFLITE:
            name, shape, dynamic = _tflite_input(self.path, data)
        else:
            name, shape, dynamic = _onnx_input(self.path, data)
        self.input_name, self.dynamic_batch = name, dynamic
        self.input_shape: tuple[int, ...] = shape
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.path.stem)[:60].strip("._") or "model"
        self.key = f"file-{stem}-{self.sha256[:12]}"
        self.precision: Precision | None = detect_precision(self.path)

    @property
    def load_advice(self) -> str:
        """What a device says when its runtime cannot load this file (see devices.base.load_advice)."""
        return (f"check that {self.path.name} runs with this runtime's version "
                "(re-export it from your framework with an older opset or converter if not)")  # fmt: skip

    def __repr__(self) -> str:
        return f"ModelFile({str(self.path)!r}, {self.format.value})"

    @property
    def _a(self) -> str:
        return f"{_ARTICLE[self.format]} {self.format_name}"

    @property
    def format_name(self) -> str:
        """``ONNX`` or ``TFLite``."""
        return FORMAT_NAMES[self.format]

    def file(self, fmt: ModelFormat | str) -> Path:
        """The file itself, when ``fmt`` is its format.

        Raises:
            UsageError: ``fmt`` is another format (latkit never converts a user's file).
        """
        try:
            fmt = ModelFormat(fmt)
        except ValueError:
            raise UsageError(f"unknown model format {fmt!r}; use onnx or tflite") from None
        if fmt is not self.format:
            raise UsageError(
                f"{self.path.name} is {self._a} file and runs on {devices_for(self.format)}; "
                f"latkit does not convert a user's file to {fmt.value}"
            )
        return self.path

    def torch_module(self) -> Any:
        """A model file has no torch module.

        Raises:
            UsageError: always; the torch devices run latkit's own networks.
        """
        raise UsageError(
            f"{self.path.name} is {self._a} file; the torch devices run latkit's own networks "
            f"(--arch), a file runs on {devices_for(self.format)}"
        )

    def check_device(self, device: Any) -> None:
        """Refuse, in one line, a device that cannot run this file's format.

        Raises:
            UsageError: the device runs another format (or torch modules).
        """
        fmt = getattr(device, "model_format", None)
        if fmt is self.format:
            return
        runs = FORMAT_NAMES.get(fmt, "torch modules of latkit's own networks")
        uri = getattr(device, "uri", "this device")
        raise UsageError(
            f"{self.path.name} is {self._a} file but {uri} runs {runs}; "
            f"measure it on {devices_for(self.format)}"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the file (for ``--json`` and provenance)."""
        return {
            "file": str(self.path.resolve()),
            "sha256": self.sha256,
            "size_bytes": self.path.stat().st_size,
            "format": self.format.value,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "dynamic_batch": self.dynamic_batch,
            "precision": self.precision.value if self.precision else None,
        }


def _read(path: Path) -> bytes:
    """The file's bytes; one line when it cannot be a model."""
    from latkit.core.files import check_input_file

    check_input_file(path, "model file")  # a FIFO or /dev/zero would block or never end
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"model file {path} does not exist") from None
    except OSError as exc:
        raise StoreError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if not data:
        raise StoreError(f"model file {path} is empty; give a .onnx or .tflite model")
    return data


def _not_a_model(path: Path, why: str) -> StoreError:
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        what = "a valid TFLite model (truncated or damaged?)"
    elif suffix == ".onnx":
        what = "a valid ONNX model (truncated or damaged?)"
    else:
        what = "an ONNX or TFLite model"
    return StoreError(f"{path} is not {what}: {why}")


def _fixed_shape(path: Path, name: str, dims: list[int | str]) -> tuple[tuple[int, ...], bool]:
    """``dims`` with a dynamic batch dimension set to 1; any other dynamic one refused."""
    shown = "[" + ", ".join(str(d) for d in dims) + "]"
    dynamic = [i for i, d in enumerate(dims) if not (isinstance(d, int) and d > 0)]
    if any(i > 0 for i in dynamic):
        raise UsageError(
            f"{path.name}: input {name!r} has shape {shown} with dynamic dimensions; export the model with "
            "a fixed input shape (latkit times batch 1 at one input size)"
        )
    shape = tuple(1 if i in dynamic else int(d) for i, d in enumerate(dims))
    if math.prod(shape) * 4 > MAX_INPUT_BYTES:
        raise UsageError(
            f"{path.name}: input {name!r} has shape {shown}, {math.prod(shape) * 4 / 2**30:.3g} GiB of float32; "
            f"latkit feeds inputs up to {MAX_INPUT_BYTES // 2**30} GiB, so export the model at a smaller input size"
        )
    return shape, bool(dynamic)


def _tflite_input(path: Path, data: bytes) -> tuple[str, tuple[int, ...], bool]:
    """Name, fixed shape and dynamic-batch flag of a TFLite file's first input."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from latkit.core.errors import MissingExtraError

        raise MissingExtraError("reading a TFLite file", "tflite") from None
    try:
        model = schema.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise _not_a_model(path, "it has no subgraph")
        _check_buffers(model, len(data))
        graph = model.Subgraphs(0)
        if graph.InputsLength() < 1:
            raise _not_a_model(path, "its main subgraph has no input")
        tensor = graph.Tensors(int(graph.Inputs(0)))
        name = (tensor.Name() or b"input").decode(errors="replace")
        shape = [int(v) for v in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        signature = [int(v) for v in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else shape
    except _FLATBUFFER_ERRORS:
        raise _not_a_model(path, "its flatbuffer points past the end of the file") from None
    if not shape:
        raise _not_a_model(path, f"input {name!r} has no shape")
    return (name, *_fixed_shape(path, name, [d if d >= 0 else "?" for d in signature]))


def _check_buffers(model: Any, size: int) -> None:
    """Every weight buffer lies inside the file (a truncated file's do not)."""
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        offset, length = int(buf.Offset()), int(buf.Size())
        if offset > 1 and offset + length > size:  # weights stored after the flatbuffer
            raise struct.error(f"buffer {i} ends at byte {offset + length} of {size}")
        n = buf.DataLength()
        if n:
            start = buf._tab.Vector(buf._tab.Offset(4))
            if start + n > size:
                raise struct.error(f"buffer {i} ends at byte {start + n} of {size}")


def _onnx_input(path: Path, data: bytes) -> tuple[str, tuple[int, ...], bool]:
    """Name, fixed shape and dynamic-batch flag of an ONNX file's one graph input."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _not_a_model(path, _first_line(exc) or "it does not parse") from None
    if not model.graph.node or model.ir_version < 1:
        raise _not_a_model(path, "it holds no graph")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise _not_a_model(path, _first_line(exc)) from None
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise UsageError(f"{path.name} has {len(inputs)} inputs ({names}); latkit times models with one input")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        dtype = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise UsageError(f"{path.name}: input {inputs[0].name!r} is {dtype}; latkit feeds ONNX models a float32 input")
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in tensor.shape.dim]  # fmt: skip
    if not dims:
        raise UsageError(f"{path.name}: input {inputs[0].name!r} declares no shape; export it with a fixed shape")
    return (inputs[0].name, *_fixed_shape(path, inputs[0].name, dims))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split())[:200] if text else type(exc).__name__


def detect_precision(path: Path) -> Precision | None:
    """What the file holds, from :func:`latkit.profiler.quantize.model_precision`.

    None when that detector is not installed. A file it cannot read was
    already refused by :class:`ModelFile`, so its own errors pass through.
    """
    try:
        from latkit.profiler.quantize import model_precision
    except ImportError:
        log.info("no precision detector (latkit.profiler.quantize); %s's precision is not checked", path.name)
        return None
    return model_precision(path)


__all__ = ["ModelFile", "detect_precision", "devices_for", "looks_like_model_file", "sniff_format"]
