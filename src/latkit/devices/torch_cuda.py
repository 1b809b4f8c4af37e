"""``cuda:N``: time torch modules on NVIDIA GPU ``N``.

Runs are timed with CUDA events between two synchronisations, so the figure is
GPU time for the whole batch of back-to-back launches, not the host's launch
time. cuDNN autotuning stays off (its choice varies run to run); the TF32 and
cuDNN settings in force are recorded in :meth:`TorchCUDA.info`.

fp16 runs the module and its input in half precision (``module.half()``), the
way a half-precision GPU deployment computes; int8 is not offered.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch

from latkit.core.files import one_line
from latkit.devices.base import (
    Device,
    DeviceInfo,
    ModelFormat,
    ModelSource,
    Session,
    register_device,
)
from latkit.devices.precision import Precision, check_precision, precision_of
from latkit.core.errors import DeviceError, MeasurementError, UsageError

INPUT_SEED = 0
_URI = re.compile(r"^cuda(?::(\d+))?$")


class TorchCUDASession(Session):
    """A module and its input on one GPU, timed with CUDA events."""

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, device: torch.device, key: str):
        self._module = module
        self._example = example
        self._device = device
        self._key = key

    def run(self) -> Any:
        """One forward pass (synchronised); its output."""
        with torch.cuda.device(self._device), torch.inference_mode():
            out = self._module(self._example)
            torch.cuda.synchronize(self._device)
        return out

    def time(self, iterations: int) -> float:
        """Mean GPU seconds per forward pass over ``iterations`` back-to-back launches."""
        if iterations < 1:
            raise UsageError(f"iterations must be >= 1, got {iterations}")
        module, x = self._module, self._example
        try:
            with torch.cuda.device(self._device), torch.inference_mode():
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(self._device)  # nothing earlier leaks into the window
                start.record()
                for _ in range(iterations):
                    module(x)
                end.record()
                end.synchronize()
                elapsed_ms = start.elapsed_time(end)
        except RuntimeError as exc:
            raise MeasurementError(f"CUDA failed running {self._key}: {one_line(exc)}") from exc
        return elapsed_ms / 1e3 / iterations

    def close(self) -> None:
        """Free the GPU copy of the module."""
        self._module = None  # type: ignore[assignment]
        self._example = None  # type: ignore[assignment]
        torch.cuda.empty_cache()


@register_device("cuda")
class TorchCUDA(Device):
    """Eager torch on one CUDA GPU (``cuda`` means ``cuda:0``)."""

    model_format = ModelFormat.TORCH
    precisions = (Precision.FP32, Precision.FP16)

    def __init__(self, uri: str, threads: int = 1) -> None:
        super().__init__(uri, threads)
        m = _URI.match(uri)
        if not m:
            raise UsageError(f"bad CUDA device {uri!r}; write cuda or cuda:N")
        self.index = int(m[1] or 0)
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceError(f"{uri}: no CUDA GPU is visible to torch on this host")
        if self.index >= count:
            raise DeviceError(f"{uri}: this host has {count} CUDA GPU(s); pick cuda:0..cuda:{count - 1}")
        self.device = torch.device("cuda", self.index)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Usable when torch sees a CUDA GPU."""
        return (True, "") if torch.cuda.is_available() else (False, "no CUDA GPU")

    def info(self) -> DeviceInfo:
        """GPU model, torch/CUDA/cuDNN versions and the numeric settings in force."""
        props = torch.cuda.get_device_properties(self.index)
        return DeviceInfo(
            uri=self.uri,
            kind="cuda",
            runtime="torch",
            runtime_version=torch.__version__,
            threads=self.threads,
            model=props.name,
            extra={
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "capability": f"{props.major}.{props.minor}",
                "mem_bytes": props.total_memory,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "timer": "cuda events",
            },
        )

    def open(self, model: ModelSource) -> TorchCUDASession:
        """Copy ``model``'s module to the GPU and run it once on a fixed random input.

        The module is copied so the caller's CPU module stays on the CPU.

        Raises:
            DeviceError: the module cannot be moved to or run on the GPU.
            UsageError: the model's precision is not one this device runs.
        """
        precision = check_precision(self, precision_of(model))
        dtype = torch.float16 if precision is Precision.FP16 else torch.float32
        gen = torch.Generator().manual_seed(INPUT_SEED)
        try:
            module = copy.deepcopy(model.torch_module()).eval().to(self.device, dtype=dtype)
            example = torch.randn(tuple(model.input_shape), generator=gen).to(self.device, dtype=dtype)
            session = TorchCUDASession(module, example, self.device, model.key)
            session.run()
        except RuntimeError as exc:  # includes torch.cuda.OutOfMemoryError
            raise DeviceError(f"{self.uri} cannot run {model.key}: {one_line(exc)}") from exc
        return session

    def state(self) -> dict[str, Any]:
        """GPU memory in use and, where the driver reports them, clock and temperature."""
        state: dict[str, Any] = {"mem_allocated_bytes": torch.cuda.memory_allocated(self.index)}
        for name, fn in (("sm_clock_mhz", "clock_rate"), ("temperature_c", "temperature")):
            getter = getattr(torch.cuda, fn, None)
            if getter is None:
                continue
            try:
                state[name] = getter(self.index)
            except Exception:  # noqa: BLE001 - NVML errors have their own class tree
                pass  # needs pynvml and an NVML-capable driver; provenance only
        return state
