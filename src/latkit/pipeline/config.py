"""The settings of a :func:`latkit.pipeline.runner.run_pipeline` run: :class:`PipelineConfig`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields

from latkit.devices.precision import Precision
from latkit.core.errors import UsageError
from latkit.deploy.layout import InputLayout
from latkit.profiler.protocol import Statistic
from latkit.profiler.spaces.base import get_space
from latkit.search import target as tgt

REPRESENTATIVE_IMAGES = 300  # training images the int8 activation ranges are calibrated on
CPU_RESOLUTION = 64  # cpu devices: a reduced input keeps the default run within minutes
MAX_RETRIES = 1


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of a run (stored in ``pipeline.json`` by :meth:`to_dict`; a rerun must match them).

    The typed values are parsed where text enters (the CLI, :func:`latkit.api.run`):
    ``target`` by :func:`latkit.search.target.parse_target`, ``precision`` by
    :func:`latkit.devices.precision.parse_precision`, ``layout`` by
    :func:`latkit.deploy.layout.parse_layout`.

    Attributes:
        device: device URI (``cpu:onnxruntime``, ``cpu:litert``, ``adb:...``).
        space: search space name.
        target: the latency target on the device: milliseconds, or a share of the
            slowest network's calibrated latency there (``--target-ms 60%``,
            ``--speedup 2x``), resolved to ms after calibration.
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
        precision: what the model ships at: the LUT rows profiled, calibrated and
            searched, and the file measured. Training is float32.
        layout: input layout of the TFLite files (NHWC is what phone apps feed).
        statistic: the figure every measurement of the run reports (operators,
            calibration networks, the shipped file): a quantile of its samples.
    """

    device: str
    space: str
    target: tgt.Target
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
    precision: Precision = Precision.FP32
    layout: InputLayout = InputLayout.NHWC
    tolerance: float = tgt.DEFAULT_TOLERANCE
    statistic: Statistic = Statistic.P5

    def __post_init__(self) -> None:
        for name, kind in (("target", tgt.Target), ("precision", Precision), ("layout", InputLayout),
                           ("statistic", Statistic)):  # fmt: skip
            if not isinstance(getattr(self, name), kind):
                raise UsageError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}; the CLI and "
                                 "latkit.run parse text into it")  # fmt: skip
        if (self.target.ms is None) == (self.target.fraction is None):
            raise UsageError("a target is either ms or a share of the slowest network")
        if self.target.ms is not None:
            tgt.check_target_ms(self.target.ms)
        elif not 0 < self.target.fraction <= 1:
            raise UsageError(f"a target share must be in (0, 1], got {self.target.fraction!r}")
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
        if self.precision == Precision.FP16 and "tflite" not in self.formats:
            raise UsageError("fp16 models are TFLite files; add tflite to the formats")
        get_space(self.space).check_resolution(self.input_resolution())  # before the run folder is made

    def input_resolution(self) -> int | None:
        """``resolution``, or the cpu devices' default (None: the space's own)."""
        if self.resolution is not None:
            return self.resolution
        return CPU_RESOLUTION if self.device.startswith("cpu:") else None

    def to_dict(self) -> dict[str, object]:
        """The settings as ``pipeline.json`` holds them: the target as ``target_ms`` or
        ``target_share`` (its fraction), the precision, layout and statistic as their text.

        The default statistic (p5) is left out, so run folders made before it could be
        chosen keep their fingerprint and resume."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "target":
                out["target_ms"] = value.ms
            elif f.name == "statistic":
                if value != Statistic.P5:
                    out["statistic"] = value.value
            elif f.name == "tolerance":
                out["target_share"] = self.target.fraction
                out["tolerance"] = value
            else:
                out[f.name] = value.value if isinstance(value, (Precision, InputLayout)) else value
        return out

    def fingerprint(self) -> str:
        """A hash of the settings that change what a stage produces."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["CPU_RESOLUTION", "MAX_RETRIES", "PipelineConfig"]
