"""Fusion detection by measurement: which operator pairs a device's runtime runs as one kernel.

For each candidate pair ``A -> B`` three small models are timed with the
measurement protocol: ``A`` alone, ``B`` alone (on ``A``'s output shape) and
``A`` followed by ``B``, each as a chain of :data:`REPEATS` copies so that
what a lone operator pays once (the invocation, a layout change at the
model's edges) does not drown ``B``. With the per-invocation overhead taken
off each and the chain divided by its length, a pair the runtime runs as two
kernels costs about ``A + B``; a fused pair costs about ``A``. The pair is
fused when chaining it adds less than half of ``B``'s own time. Every timing
is kept as the rule's evidence.

The shapes are chosen so that ``B`` is not lost in ``A``'s noise: the
convolution is a depthwise 1x1 one (a per-channel scale) and the matrix
product a thin one (4096 x 16 by 16 x 16), each memory-bound like an
element-wise ``B`` and about as costly, while the runtime treats them as any
convolution or product for fusion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latkit.devices.precision import Precision
from latkit.core.files import write_bytes
from latkit.devices.base import ModelFormat
from latkit.profiler.kernels import FusionRules

log = logging.getLogger(__name__)

FUSED_SHARE = 0.5  # fused when A->B costs less than A + this share of B
REPEATS = 8  # each probe is a chain of this many copies of its operators
_C, _HW = 32, 56
_ROWS, _WIDTH = 4096, 16  # a thin matrix product: memory-bound like the element-wise B after it
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("Conv", "BatchNormalization"), ("Conv", "Relu"), ("Conv", "Clip"), ("Conv", "HardSwish"),
    ("Conv", "Sigmoid"), ("Conv", "Add"), ("Add", "Relu"), ("MatMul", "Add"), ("Gemm", "Relu"),
)  # fmt: skip


def _node(b: Any, op: str, x: str, rows: bool) -> str:
    """One operator ``op`` applied to ``x`` (image NCHW, or rows x width with ``rows``)."""
    c = _WIDTH if rows else _C
    if op == "Conv":
        return b.op("Conv", [x, b.const((_C, 1, 1, 1)), b.const((_C,))], kernel_shape=[1, 1], group=_C)
    if op == "BatchNormalization":
        return b.op(op, [x, b.const((c,)), b.const((c,)), b.const((c,)), b.const_abs((c,))])
    if op == "Add":
        return b.op("Add", [x, b.const((_WIDTH,) if rows else (1, _C, _HW, _HW))])
    if op == "MatMul":
        return b.op("MatMul", [x, b.const((_WIDTH, _WIDTH))])
    if op == "Gemm":
        return b.op("Gemm", [x, b.const((_WIDTH, _WIDTH)), b.const((_WIDTH,))])
    if op == "Clip":
        return b.op("Clip", [x, b.const_scalar(0.0), b.const_scalar(6.0)])
    return b.op(op, [x])


def _on_rows(pair: tuple[str, str]) -> bool:
    """Whether the pair works on a rows x width matrix (a product first) rather than an image."""
    return pair[0] in ("MatMul", "Gemm")


def probe_key(pair: tuple[str, str], name: str) -> str:
    """The cache key of one probe (``name`` is ``a``, ``b`` or ``ab``): pairs that share a probe share its key."""
    ops = {"a": pair[:1], "b": pair[1:], "ab": pair}[name]
    return f"fusion-{'rows' if _on_rows(pair) else 'image'}-{'-'.join(ops)}-x{REPEATS}"


def pair_models(pair: tuple[str, str]) -> dict[str, Any]:
    """The ONNX protos of ``A``, ``B`` and ``A -> B`` for one candidate pair, each a chain of
    :data:`REPEATS` copies (every operator keeps its input's shape, so copies chain)."""
    from onnx import TensorProto, helper

    from latkit.profiler.kernel_models import OPSET, _Builder

    rows = _on_rows(pair)
    shape = [_ROWS, _WIDTH] if rows else [1, _C, _HW, _HW]
    out = {}
    for name, ops in (("a", pair[:1]), ("b", pair[1:]), ("ab", pair)):
        b = _Builder(seed=0)
        y = "x"
        for op in ops * REPEATS:
            y = _node(b, op, y, rows)
        graph = helper.make_graph(b.nodes, f"fusion_{'_'.join(ops)}",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], initializer=b.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="latkit")
        model.ir_version = 9
        out[name] = model
    return out


class _ProtoSource:
    """A model proto as a :class:`~latkit.devices.base.ModelSource` (written to ``folder``)."""

    precision = Precision.FP32

    def __init__(self, key: str, proto: Any, folder: Path) -> None:
        self.key, self._proto, self._folder = key, proto, folder
        self.input_shape = tuple(d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim)

    def file(self, fmt: ModelFormat | str) -> Path:
        path = self._folder / f"{self.key}.onnx"
        if not path.is_file():
            write_bytes(path, self._proto.SerializeToString(), "fusion probe model")
        return path

    def torch_module(self) -> Any:
        raise NotImplementedError


def detect_fusion(device: Any, protocol: Any = None, candidates: tuple[tuple[str, str], ...] = CANDIDATES,
                  cache_dir: Path | str | None = None,
                  on_progress: Callable[[int, int, str, Any], None] | None = None) -> FusionRules:
    """Measure every candidate pair on ``device``; the rules of the pairs it runs as one kernel.

    Returns:
        :class:`FusionRules` with ``source="measured"`` and, per pair, the
        evidence (``a_ms``, ``b_ms``, ``ab_ms``, ``overhead_ms``, ``fused``).
    """
    from latkit.core.cache import models_dir
    from latkit.core.errors import UsageError
    from latkit.profiler.kernel_models import OVERHEAD_CONFIG, KernelModel
    from latkit.profiler.protocol import measure_many

    if getattr(device, "model_format", ModelFormat.ONNX) is not ModelFormat.ONNX:
        raise UsageError(f"fusion detection times ONNX probe models; {device.uri} runs "
                         f"{device.model_format.value} files, so its runtime's documented fusion defaults apply")

    folder = Path(cache_dir) if cache_dir is not None else models_dir() / "fusion"
    probes: dict[str, Any] = {}
    for pair in candidates:
        for name, proto in pair_models(pair).items():
            probes.setdefault(probe_key(pair, name), proto)
    sources: list[Any] = [KernelModel(OVERHEAD_CONFIG, folder)]
    sources += [_ProtoSource(key, proto, folder) for key, proto in probes.items()]
    ms = {m.key: m.latency_ms for m in measure_many(device, sources, protocol, None, on_progress)}
    overhead = ms[sources[0].key]
    pairs, evidence = set(), {}
    for a, b in candidates:
        ta, tb, tab = (max(ms[probe_key((a, b), n)] - overhead, 0.0) / REPEATS for n in ("a", "b", "ab"))
        fused = bool(tab < ta + FUSED_SHARE * tb)
        evidence[f"{a}->{b}"] = {"a_ms": ta, "b_ms": tb, "ab_ms": tab, "overhead_ms": overhead, "fused": fused,
                                 "added_share_of_b": float(np.round((tab - ta) / tb, 3)) if tb > 0 else None}
        if fused:
            pairs.add((a, b))
    log.info("fusion detection on %s: %d of %d pairs fused", device.uri, len(pairs), len(candidates))
    return FusionRules(frozenset(pairs), "measured", evidence)


__all__ = ["CANDIDATES", "FUSED_SHARE", "REPEATS", "detect_fusion", "pair_models", "probe_key"]
