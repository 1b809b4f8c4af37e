"""Whole networks through the kernel predictors: batched prediction, and the ``predict_model`` entry.

:func:`predict_graphs` predicts many grouped graphs at once: it gathers every
kernel configuration of every graph, calls each kernel type's model once for
all of them, and sums per graph, so a batch of parsed graphs costs a few
model calls, not one per kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from latkit.profiler.kernels import KernelConfig, KernelGraph, KernelType
from latkit.predictors.kernels import KernelPrediction, KernelPredictors, NetworkPrediction

FALLBACK_TYPE = KernelType.ELEMENTWISE


def _fallback_config(out_elems: int) -> KernelConfig:
    """An element-wise kernel over ``out_elems`` values: the stand-in for an uncovered operator."""
    return KernelConfig(FALLBACK_TYPE, h=max(int(out_elems), 1), variant="add")


def predict_graphs(predictors: KernelPredictors, graphs: Sequence[KernelGraph]) -> list[NetworkPrediction]:
    """Every graph's :class:`NetworkPrediction`, with one model call per kernel type for the batch."""
    configs: list[KernelConfig] = []
    slots: list[list[int | None]] = []
    for g in graphs:
        mine: list[int | None] = []
        for k in g.kernels:
            if k.type is KernelType.UNKNOWN or k.config is None:
                if k.out_elems <= 0:
                    mine.append(None)
                    continue
                cfg = _fallback_config(k.out_elems)
            else:
                cfg = k.config
            mine.append(len(configs))
            configs.append(cfg)
        slots.append(mine)
    unique: dict[KernelConfig, int] = {}
    index = np.asarray([unique.setdefault(c, len(unique)) for c in configs], dtype=np.int64)
    times = predictors.predict_configs(list(unique))[index] if configs else np.zeros(0)
    return [_network(predictors, g, s, times) for g, s in zip(graphs, slots)]


def _network(predictors: KernelPredictors, g: KernelGraph, slots: list[int | None],
             times: np.ndarray) -> NetworkPrediction:
    kernels = []
    for k, slot in zip(g.kernels, slots):
        ms = float(times[slot]) if slot is not None else 0.0
        fallback = k.fallback
        if not fallback and k.type not in predictors.models:
            fallback = f"no {k.type.value} predictor on this device: predicted as an element-wise kernel"
        kernels.append(KernelPrediction(k.type.value, k.config.key if k.config else None, k.nodes, k.op_types,
                                        ms, fallback))  # fmt: skip
    total = float(sum(kp.latency_ms for kp in kernels))
    return NetworkPrediction(g.name, predictors.calibrated(total), total, predictors.overhead_ms, tuple(kernels),
                             g.folded, g.rules.source, bool(predictors.calibration), predictors.uri,
                             predictors.precision)  # fmt: skip


def predict_model(model: Any, predictors: KernelPredictors, input_shape: tuple[int, ...] | None = None,
                  rules: Any = None) -> NetworkPrediction:
    """Predict one model (ONNX / TFLite file, or torch module with ``input_shape``) with ``predictors``.

    The graph is grouped with ``rules`` (default the predictors' own: the
    device's detected rules, or its runtime's defaults).
    """
    from latkit.profiler.graph import read_graph
    from latkit.profiler.kernel_patterns import group_kernels

    graph = read_graph(model, input_shape)
    return predict_graphs(predictors, [group_kernels(graph, rules or predictors.rules)])[0]


__all__ = ["predict_graphs", "predict_model"]
