"""The settings of a :func:`latkit.pipeline.runner.run_pipeline` run: :class:`PipelineConfig`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from latkit.devices.precision import Precision, parse_precision
from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import get_space
from latkit.search import target as tgt

REPRESENTATIVE_IMAGES = 300  # training images the int8 activation ranges are calibrated on
CPU_RESOLUTION = 64  # cpu devices: a reduced input keeps the default run within minutes
MAX_RETRIES = 1


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of a run (stored in ``pipeline.json``; a rerun must match them).

    Attributes:
        device: device URI (``cpu:onnxruntime``, ``cpu:litert``, ``adb:...``).
        space: search space name.
        target_ms: latency target on the device (None when ``target_share`` is given).
        target_share: the target as a share of the slowest network's calibrated
            latency on the device (``0.6`` for ``--target-ms 60%``), resolved to ms
            after calibration.
        tolerance: how far over the target a measured network still counts as
            within the budget (a fraction; see :mod:`latkit.search.target`).
        data: dataset (``digits``, ``cifar10:PATH``, ``folder:PATH``).
        resolution: input resolution (None: 64 on cpu devices, else the space's default).
        threads: device threads.
        search_epochs: epochs of the gradient search (warm-up included).
        warmup_epochs: weight-only epochs before architecture steps.
        train_epochs: epochs of the final network's training.
        max_steps_per_epoch: cap on steps per epoch (None: whole split).
        calibration_networks: networks measured end to end for the calibration.
        eval_samples: architectures sampled per search epoch for the accuracy-latency plot.
        formats: export formats (ONNX and TFLite by default).
        profile_quick: a short measurement protocol (for smoke runs and tests).
        profile_sample: measure only this many of the space's operators (the most
            informative, plus the deployed classifier) and fill the rest of the LUT
            with an op-level predictor's figures (rows marked ``predicted:...``);
            None measures every operator. For slow devices such as phones.
        max_retries: re-searches after a miss (0 or 1).
        seed: seed of every random choice.
        precision: what the model ships at (fp32, fp16, int8): the LUT rows profiled,
            calibrated and searched, and the file measured. Training is float32.
        layout: input layout of the TFLite files (``nhwc``, what phone apps feed, or ``nchw``).
    """

    device: str
    space: str
    target_ms: float | None
    data: str = "digits"
    resolution: int | None = None
    threads: int = 1
    search_epochs: int = 6
    warmup_epochs: int = 2
    train_epochs: int = 3
    max_steps_per_epoch: int | None = None
    calibration_networks: int = 5
    eval_samples: int = 2
    formats: tuple[str, ...] = ("onnx", "tflite")
    profile_quick: bool = False
    profile_sample: int | None = None
    max_retries: int = MAX_RETRIES
    seed: int = 0
    precision: str = "fp32"
    layout: str = "nhwc"
    target_share: float | None = None
    tolerance: float = tgt.DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if (self.target_ms is None) == (self.target_share is None):
            raise UsageError("give exactly one of target_ms and target_share")
        if self.target_ms is not None:
            tgt.check_target_ms(self.target_ms)
        elif not 0 < self.target_share <= 1:
            raise UsageError(f"target_share must be in (0, 1], got {self.target_share!r}")
        tgt.check_tolerance(self.tolerance)
        for name in ("search_epochs", "train_epochs", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.calibration_networks < 3:  # the fastest, the slowest and the fastest full network
            raise UsageError(f"calibration_networks must be >= 3, got {self.calibration_networks}")
        if not 0 <= self.warmup_epochs < self.search_epochs:
            raise UsageError("warmup_epochs must be >= 0 and below search_epochs")
        if self.profile_sample is not None and self.profile_sample < 1:
            raise UsageError(f"profile_sample must be >= 1, got {self.profile_sample}")
        if self.max_retries not in (0, 1):
            raise UsageError(f"max_retries must be 0 or 1, got {self.max_retries}")
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "precision", parse_precision(self.precision).value)
        if str(self.layout).lower() not in ("nchw", "nhwc"):
            raise UsageError(f"unknown layout {self.layout!r}; use nchw or nhwc")
        object.__setattr__(self, "layout", str(self.layout).lower())
        if self.precision == Precision.FP16.value and "tflite" not in self.formats:
            raise UsageError("fp16 models are TFLite files; add tflite to the formats")
        get_space(self.space).check_resolution(self.input_resolution())  # before the run folder is made

    def input_resolution(self) -> int | None:
        """``resolution``, or the cpu devices' default (None: the space's own)."""
        if self.resolution is not None:
            return self.resolution
        return CPU_RESOLUTION if self.device.startswith("cpu:") else None

    def fingerprint(self) -> str:
        """A hash of the settings that change what a stage produces."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["CPU_RESOLUTION", "MAX_RETRIES", "PipelineConfig"]
