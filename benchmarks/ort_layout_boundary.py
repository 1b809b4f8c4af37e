"""How much of a kernel timed alone on ONNX Runtime is the layout change at the model's edges?

ONNX Runtime's CPU provider, at its default optimisation level, runs convolutions
and pools in a blocked channel layout (NCHWc) and inserts a ``ReorderInput`` before
the first such node and a ``ReorderOutput`` after the last. Inside a network those
two run once, at its edges; a kernel measured on its own, as latkit's kernel
predictors measure them, pays both every run. Two figures per kernel, both printed:

* ``alone / in chain``: one kernel's time alone against an eighth of a chain of
  eight identical kernels (shape-preserving kernels only), at the default level and
  with the NCHWc transform off (``ORT_ENABLE_EXTENDED``);
* ``layout share``: for latkit's own kernel model files (:class:`KernelModel`),
  the share of a profiled run (:meth:`OrtSession.profile_layers`) spent in the
  nodes ONNX Runtime inserted to change the layout.

The kernel sum of a depthwise network is over its measured time by 35-45% on this
host (``benchmarks/predict_zoo.py``, stop 32 notes), which these figures explain
when the layout share of its kernels is about that large.

    python benchmarks/ort_layout_boundary.py [--json]

One thread; run it on a quiet host (the chain and the lone kernel are timed in turn).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAYOUT_OPS = ("ReorderInput", "ReorderOutput")  # what ONNX Runtime inserts around NCHWc nodes
CHAIN = 8
# (kind, H=W, channels): shapes MobileNet-like networks use, 1x1 and depthwise 3x3, stride 1
CHAIN_SHAPES = [("depthwise", 112, 32), ("depthwise", 56, 96), ("depthwise", 14, 384), ("depthwise", 7, 960),
                ("pointwise", 56, 24), ("pointwise", 28, 64), ("pointwise", 14, 320)]  # fmt: skip


def _chain_model(kind: str, size: int, channels: int, n: int) -> bytes:
    """``n`` identical stride-1 convolutions in a row, NCHW float32 input and output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for i in range(n):
        if kind == "depthwise":
            w = (rng.standard_normal((channels, 1, 3, 3)) * 0.3).astype(np.float32)
            attrs = {"group": channels, "pads": [1, 1, 1, 1]}
        else:
            w = (rng.standard_normal((channels, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32)
            attrs = {}
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [f"x{i}", f"w{i}"], [f"x{i + 1}"], **attrs))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x0", TensorProto.FLOAT,
                                                                              [1, channels, size, size])],
                              [helper.make_tensor_value_info(f"x{n}", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _best_ms(run, iterations: int, repeats: int = 15) -> float:
    """The lowest of ``repeats`` means over ``iterations`` back-to-back runs (ms)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            run()
        best = min(best, (time.perf_counter_ns() - start) / iterations / 1e6)
    return best


def chain_figures() -> list[dict[str, object]]:
    import onnxruntime as ort

    rows = []
    for kind, size, channels in CHAIN_SHAPES:
        x = np.random.default_rng(1).standard_normal((1, channels, size, size)).astype(np.float32)
        row: dict[str, object] = {"kernel": kind, "hw": size, "channels": channels}
        for label, level in (("default", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                             ("no_nchwc", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)):  # fmt: skip
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.graph_optimization_level = level
            times = []
            for n in (1, CHAIN):
                session = ort.InferenceSession(_chain_model(kind, size, channels, n), options,
                                               providers=["CPUExecutionProvider"])  # fmt: skip
                iterations = max(5, int(2e5 / (size * size * channels)))
                times.append(_best_ms(lambda s=session: s.run(None, {"x0": x}), iterations))
            row[f"{label}_alone_ms"] = round(times[0], 4)
            row[f"{label}_in_chain_ms"] = round(times[1] / CHAIN, 4)
        rows.append(row)
    return rows


def layout_shares(cache: Path) -> list[dict[str, object]]:
    """The layout nodes' share of profiled runs of latkit's own kernel models."""
    from latkit.devices.base import open_device
    from latkit.profiler.kernel_models import KernelModel
    from latkit.profiler.kernel_sampling import sample_configs
    from latkit.profiler.kernels import KernelType

    device = open_device("cpu:onnxruntime", threads=1)
    rows = []
    try:
        for kind in (KernelType.DWCONV, KernelType.POINTWISE, KernelType.CONV, KernelType.POOL, KernelType.SE):
            for config in sample_configs(kind, 4, seed=7):
                with device.open(KernelModel(config, cache)) as session:
                    profile = session.profile_layers(40)
                total = sum(layer.latency_ms for layer in profile.layers)
                layout = sum(layer.latency_ms for layer in profile.layers if layer.op_type in LAYOUT_OPS)
                rows.append({"kernel": config.key, "profiled_ms": round(total, 4),
                             "layout_ms": round(layout, 4), "layout_share": round(layout / total, 3) if total else 0.0})
    finally:
        device.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="latkit-layout-") as tmp:
        chain, shares = chain_figures(), layout_shares(Path(tmp))
    if args.json:
        print(json.dumps({"chain": chain, "layout_share": shares}, indent=1))
        return 0
    print(f"one kernel alone against 1/{CHAIN} of a chain of {CHAIN} (ms, 1 thread)")
    print(f"{'kernel':10s} {'HxW':>5s} {'C':>4s}  {'default alone':>13s} {'in chain':>9s} {'ratio':>6s}"
          f"   {'no NCHWc alone':>14s} {'in chain':>9s} {'ratio':>6s}")
    for r in chain:
        print(f"{r['kernel']:10s} {r['hw']:5d} {r['channels']:4d}  {r['default_alone_ms']:13.4f} "
              f"{r['default_in_chain_ms']:9.4f} {r['default_alone_ms'] / r['default_in_chain_ms']:6.2f}"
              f"   {r['no_nchwc_alone_ms']:14.4f} {r['no_nchwc_in_chain_ms']:9.4f} "
              f"{r['no_nchwc_alone_ms'] / r['no_nchwc_in_chain_ms']:6.2f}")
    print("\nlatkit kernel models, ONNX Runtime's profiler: share of a run in inserted layout nodes")
    for r in shares:
        print(f"  {r['layout_share']:6.1%}  of {r['profiled_ms']:.4f} ms  {r['kernel']}")
    median = float(np.median([r["layout_share"] for r in shares])) if shares else 0.0
    print(f"median layout share: {median:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
