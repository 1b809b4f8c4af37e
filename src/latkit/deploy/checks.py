"""What a measured export tells the user: whether its precision paid, and whether it is within the target.

An int8 or fp16 file is shipped to be faster than the float32 one; on a device
without fast integer (or half) kernels it can be slower, and then the precision
costs accuracy for nothing. :func:`precision_check` compares each quantized file
with the float32 file of the same format measured on the same device.

A file measured against a latency target gets the same verdict ``latkit run``
gives (:func:`latkit.search.target.judge`): HIT, or OVER with how far.

:func:`check_files` writes both into the measured files' sidecars
(``precision_check`` and ``target_check``) and returns one sentence per finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from latkit.core.files import write_json
from latkit.deploy.exported_file import ExportedFile
from latkit.devices.precision import Precision
from latkit.search.target import DEFAULT_TOLERANCE, judge


class PrecisionCheck(TypedDict):
    """A quantized file's measured latency beside the float32 file's (a sidecar's ``precision_check``)."""

    precision: str
    latency_ms: float
    fp32_latency_ms: float
    speedup: float  # fp32 / this file; below 1: slower than float32
    paid: bool
    text: str


class TargetCheck(TypedDict):
    """A measured file against the latency target (a sidecar's ``target_check``)."""

    kind: str  # HIT, MET or OVER
    target_ms: float
    tolerance: float
    latency_ms: float
    budget_used: float
    text: str


def precision_check(precision: Precision, latency_ms: float, fp32_ms: float) -> PrecisionCheck:
    """How a ``precision`` file measured at ``latency_ms`` compares with its float32 file at ``fp32_ms``.

    It paid when it is faster; at or above the float32 figure it did not, and the
    text says by how much and what to do.
    """
    speedup = fp32_ms / latency_ms
    paid = latency_ms < fp32_ms
    if paid:
        text = f"{precision} runs {speedup:.2f}x faster than fp32 ({latency_ms:.3f} vs {fp32_ms:.3f} ms)"
    else:
        text = (f"{precision} did not pay on this device: {latency_ms:.3f} ms, {latency_ms / fp32_ms:.2f}x the fp32 "
                f"file's {fp32_ms:.3f} ms (no faster kernels for it here); ship fp32, which is also more accurate")
    return {"precision": precision.value, "latency_ms": latency_ms, "fp32_latency_ms": fp32_ms, "speedup": speedup,
            "paid": paid, "text": text}  # fmt: skip


def target_check(latency_ms: float, target_ms: float, tolerance: float = DEFAULT_TOLERANCE) -> TargetCheck:
    """A measured latency against ``target_ms``: the verdict ``latkit run`` gives."""
    verdict = judge(latency_ms, target_ms, tolerance)
    return {"kind": verdict.kind, "target_ms": target_ms, "tolerance": tolerance, "latency_ms": latency_ms,
            "budget_used": verdict.budget_used, "text": verdict.text}  # fmt: skip


def check_files(files: Sequence[ExportedFile], target_ms: float | None,
                tolerance: float = DEFAULT_TOLERANCE) -> list[str]:  # fmt: skip
    """Check every measured file (precision against float32, and ``target_ms`` if given); record it in its sidecar.

    Returns:
        One sentence per measured file with a finding, ``name: text``.
    """
    fp32 = {f.format: f.measured["latency_ms"] for f in files if f.precision == Precision.FP32 and f.measured}
    said: list[str] = []
    for f in files:
        if not f.measured:
            continue
        ms = float(f.measured["latency_ms"])
        found: dict[str, object] = {}
        if f.precision != Precision.FP32 and f.format in fp32:
            found["precision_check"] = precision_check(f.precision, ms, float(fp32[f.format]))
        if target_ms is not None:
            found["target_check"] = target_check(ms, target_ms, tolerance)
        if not found:
            continue
        meta = f.meta()
        meta.update(found)  # type: ignore[typeddict-item]
        write_json(f.sidecar, meta, "model sidecar", indent=1, nan_to_null=True)
        said += [f"{f.path.name}: {check['text']}" for check in found.values()]  # type: ignore[index]
    return said


__all__ = ["PrecisionCheck", "TargetCheck", "check_files", "precision_check", "target_check"]
