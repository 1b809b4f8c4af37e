"""The input layout of an exported file: one typed value, parsed where text enters.

ONNX files always take NCHW images (what torch computes in). A TFLite file
takes NCHW or NHWC (what phone apps feed, the default of ``latkit export`` and
``latkit run``). Configuration and the CLI write the layout in lower case
(``--layout nhwc``, ``pipeline.json``); sidecars and export reports name it
the way tensor shapes are described, in upper case (``"NHWC"``).
"""

from __future__ import annotations

from enum import Enum

from latkit.core.errors import UsageError


class InputLayout(str, Enum):
    """How a model file's input tensor is laid out."""

    NCHW = "nchw"
    NHWC = "nhwc"

    def __str__(self) -> str:
        return self.value

    @property
    def tag(self) -> str:
        """The layout as sidecars and export reports write it (``NCHW``, ``NHWC``)."""
        return self.value.upper()


def parse_layout(text: str) -> InputLayout:
    """``text`` (a flag, a config or a sidecar field, in either case) as an :class:`InputLayout`.

    Raises:
        UsageError: not nchw or nhwc.
    """
    if isinstance(text, InputLayout):
        return text
    try:
        return InputLayout(str(text).strip().lower())
    except ValueError:
        raise UsageError(f"unknown layout {text!r}; use nchw or nhwc (TFLite input; ONNX is always NCHW)") from None


__all__ = ["InputLayout", "parse_layout"]
