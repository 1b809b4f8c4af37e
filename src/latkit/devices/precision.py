"""Numeric precision of a deployed model: one word used by every stage.

``fp32`` is the float model as trained. ``fp16`` stores weights (and, where the
runtime does so, computes) in float16, the way phone GPU delegates run.
``int8`` is full-integer static quantization: per-channel int8 weights and
int8 (or uint8, per backend) activations whose ranges come from calibration on
representative inputs, the way LiteRT/XNNPACK, NNAPI and ONNX Runtime run it.

Each device class says which precisions it can run (``Device.precisions``);
:func:`check_precision` refuses any other in one line naming those it runs.

Text becomes a :class:`Precision` once, where it enters latkit: the CLI, the
Python API (:mod:`latkit.api`) and the readers of saved files (a LUT row, a
sidecar, a run's state) call :func:`parse_precision`; every layer below takes
and passes the :class:`Precision` itself. Saved files hold its ``value``
(``"fp32"``, ``"fp16"``, ``"int8"``).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from latkit.core.errors import UsageError

if TYPE_CHECKING:
    from latkit.devices.base import Device


class Precision(str, Enum):
    """The numeric precision a model file is built and timed at."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value


PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
DEFAULT_PRECISION = Precision.FP32


def parse_precision(text: str | None) -> Precision:
    """``text`` (what a user typed or a file holds) as a :class:`Precision` (``None`` is fp32).

    Raises:
        UsageError: not one of fp32, fp16, int8.
    """
    if text is None:
        return DEFAULT_PRECISION
    if isinstance(text, Precision):
        return text
    try:
        return Precision(str(text).strip().lower())
    except ValueError:
        raise UsageError(f"unknown precision {text!r}; use one of {', '.join(PRECISIONS)}") from None


def precision_of(model: object) -> Precision:
    """The precision a model source is built at (fp32 for one that does not say, or cannot tell)."""
    return getattr(model, "precision", None) or DEFAULT_PRECISION


def check_precision(device: Device | type[Device], precision: Precision) -> Precision:
    """``precision``, if ``device`` can run it.

    Raises:
        UsageError: a precision this device does not run.
    """
    runs = tuple(getattr(device, "precisions", (DEFAULT_PRECISION,)))
    if precision not in runs:
        name = getattr(device, "uri", None) or getattr(device, "scheme", "") or type(device).__name__
        raise UsageError(f"device {name} does not run {precision} models; it runs {', '.join(map(str, runs))}")
    return precision
