"""``cpu:torch``: time torch modules in eager mode on the host CPU.

Torch's thread count is process-wide, so a session sets it only while it times
and puts the caller's value back afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from latkit.core.files import one_line
from latkit.devices.base import (
    DeviceInfo,
    ModelFormat,
    ModelSource,
    Session,
    host_cpu_info,
    register_device,
)
from latkit.devices.clock import HostDevice
from latkit.devices.precision import Precision, check_precision, precision_of
from latkit.core.errors import DeviceError, MeasurementError, UsageError

INPUT_SEED = 0


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the old count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchCPUSession(Session):
    """A module in eval mode and a fixed input, timed under ``inference_mode``."""

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, threads: int, key: str,
                 now_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        self._now = now_ns
        self._module = module
        self._example = example
        self._threads = threads
        self._key = key

    def run(self) -> Any:
        """One forward pass; its output."""
        with torch_threads(self._threads), torch.inference_mode():
            return self._module(self._example)

    def time(self, iterations: int) -> float:
        """Mean seconds per forward pass over ``iterations`` back-to-back calls."""
        if iterations < 1:
            raise UsageError(f"iterations must be >= 1, got {iterations}")
        module, x = self._module, self._example
        try:
            with torch_threads(self._threads), torch.inference_mode():
                start = self._now()
                for _ in range(iterations):
                    module(x)
                elapsed = self._now() - start
        except RuntimeError as exc:
            raise MeasurementError(f"torch failed running {self._key}: {one_line(exc)}") from exc
        return elapsed / iterations / 1e9


@register_device("cpu:torch")
class TorchCPU(HostDevice):
    """Eager torch on the host CPU."""

    model_format = ModelFormat.TORCH
    precisions = (Precision.FP32,)  # eager CPU torch has no fast fp16 or int8 convolutions

    def info(self) -> DeviceInfo:
        """Runtime version, threads, CPU model and torch's CPU build."""
        return host_cpu_info(self, "torch", torch.__version__, {
            "mode": "eager", "cpu_capability": torch.backends.cpu.get_cpu_capability(), "clock": self.clock,
        })

    def open(self, model: ModelSource) -> TorchCPUSession:
        """Take ``model``'s torch module and run it once on a fixed random input.

        Raises:
            DeviceError: the module cannot run on the model's input shape.
            UsageError: the model is not fp32 (the only precision this device runs).
        """
        check_precision(self, precision_of(model))
        module = model.torch_module().eval()
        gen = torch.Generator().manual_seed(INPUT_SEED)
        example = torch.randn(tuple(model.input_shape), generator=gen)
        session = TorchCPUSession(module, example, self.threads, model.key, self.now_ns)
        try:
            session.run()
        except RuntimeError as exc:
            raise DeviceError(f"torch cannot run {model.key}: {one_line(exc)}") from exc
        return session
