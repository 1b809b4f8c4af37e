"""Held-out accuracy of a deployed file, run in its own runtime (ONNX Runtime, LiteRT).

The float32 network's accuracy is measured in torch during training; what a
user ships may be a quantized file whose accuracy differs (the quantization
drop). :func:`file_accuracy_pct` runs the file itself, image by image (the files
take a batch of one), so the figure is the shipped model's, not an estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latkit.core.errors import UsageError
from latkit.deploy import export_formats as fmt
from latkit.deploy.layout import InputLayout


def file_accuracy_pct(path: Path, format: str, layout: InputLayout, x: torch.Tensor | np.ndarray,
                      y: torch.Tensor | np.ndarray) -> float:  # fmt: skip
    """Top-1 accuracy (percent) of an ONNX or TFLite file on images ``x`` (NCHW) with labels ``y``.

    Args:
        path: the model file.
        format: ``onnx`` or ``tflite``.
        layout: the file's input layout.
        x: images ``(N, C, H, W)``, float32.
        y: integer labels ``(N,)``.

    Raises:
        UsageError: no images, or images and labels of different counts.
    """
    xs = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ys = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if len(xs) == 0 or len(xs) != len(ys):
        raise UsageError(f"accuracy needs images and labels of one count, got {len(xs)} and {len(ys)}")
    xs = xs.astype(np.float32)
    if layout == InputLayout.NHWC:
        xs = xs.transpose(0, 2, 3, 1)
    outs = fmt.predict(path, format, [np.ascontiguousarray(xs[i : i + 1]) for i in range(len(xs))])
    predicted = np.array([int(np.argmax(o)) for o in outs])
    return 100.0 * float(np.mean(predicted == ys.astype(np.int64)))


__all__ = ["file_accuracy_pct"]
