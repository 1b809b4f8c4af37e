"""Per-operator times for the loopback ``benchmark_model`` (``--enable_op_profiling``), measured.

LiteRT's Python interpreter has no per-operator timer, so the loopback phone
measures each operator's time as the growth of a measured time: for every
operator ``k`` of the main subgraph it builds the graph cut after ``k`` (the
operators ``0..k``, whose outputs are every tensor they produce and do not
consume, so nothing is dead code), runs it ``runs`` times with the same
interpreter settings and clock as the regular runs, and takes the mean (the
real tool's tables give means). An operator's time is how much its prefix's
mean exceeds the previous one's (a running maximum keeps every row >= 0, so
the rows add up to the slowest prefix, the whole graph). Each row is a real measurement of the work the
operator adds; it is noisier than a phone's per-operator timer, and the
rows' sum is the whole graph measured once more, which the tool's regular
runs measured too.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MIN_RUNS, MAX_RUNS = 5, 100  # timed runs per prefix graph


@dataclass(frozen=True)
class OpTime:
    """One operator of the profile (milliseconds)."""

    node_type: str
    name: str
    first_ms: float
    avg_ms: float


def _op_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _op_type(model: Any, op: Any, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    if code.customCode:
        return code.customCode.decode(errors="replace") if isinstance(code.customCode, bytes) else str(code.customCode)
    return names.get(builtin, f"OP_{builtin}")


def _tensor_name(graph: Any, index: int) -> str:
    name = graph.tensors[index].name if index >= 0 else b""
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name or "")


def prefix_graphs(data: bytes) -> Iterator[tuple[str, str, bytes]] | None:
    """``(op type, name, the graph cut after it)`` for each operator of the main subgraph, in run order,
    made one at a time (each cut is a copy of the model, weights included); None for a model with several
    subgraphs (control flow), whose operators are not one sequence."""
    from latkit.devices.tflite_flatbuffer import unpack

    unpacked = unpack(data)
    if len(unpacked.model.subgraphs or []) != 1:
        return None
    return _cuts(unpacked)


def _cuts(unpacked: Any) -> Iterator[tuple[str, str, bytes]]:
    from ai_edge_litert import schema_py_generated as schema

    from latkit.devices.tflite_flatbuffer import pack

    model = unpacked.model  # this module's own copy: cut in place
    graph = model.subgraphs[0]
    ops, names = list(graph.operators or []), _op_names(schema)
    model.signatureDefs = None  # a signature names the whole graph's outputs
    for k, op in enumerate(ops):
        graph.operators = ops[: k + 1]
        made = [int(t) for o in graph.operators for t in (o.outputs if o.outputs is not None else []) if t >= 0]
        used = {int(t) for o in graph.operators for t in (o.inputs if o.inputs is not None else []) if t >= 0}
        graph.outputs = [t for t in dict.fromkeys(made) if t not in used] or made[-1:]
        first_out = int(op.outputs[0]) if op.outputs is not None and len(op.outputs) else -1
        yield _op_type(model, op, names), _tensor_name(graph, first_out), pack(unpacked)


def time_graph(interp: Any, runs: int, now: Callable[[], float],
               slow_down: Callable[[float], None]) -> tuple[float, float]:  # fmt: skip
    """(first, mean) seconds per invocation of ``interp`` over ``runs`` runs after one untimed run."""
    interp.invoke()
    times = []
    for _ in range(runs):
        t0 = now()
        interp.invoke()
        slow_down(now() - t0)
        times.append(now() - t0)
    return times[0], statistics.fmean(times)


def time_operators(data: bytes, load: Callable[[bytes], Any], runs: int, now: Callable[[], float],
                   slow_down: Callable[[float], None]) -> list[OpTime] | None:  # fmt: skip
    """Each operator's time in the model ``data`` (see the module doc); None when it has several subgraphs.

    ``load`` makes a ready interpreter (tensors allocated, inputs set) from a model's bytes.
    """
    graphs = prefix_graphs(data)
    if graphs is None:
        return None
    runs = min(max(runs, MIN_RUNS), MAX_RUNS)
    rows: list[OpTime] = []
    high_first = high = 0.0
    for op_type, name, content in graphs:
        first, mean = time_graph(load(content), runs, now, slow_down)
        step, high = max(mean - high, 0.0), max(high, mean)
        first_step, high_first = max(first - high_first, 0.0), max(high_first, first)
        rows.append(OpTime(op_type, name, first_step * 1e3, step * 1e3))
    return rows


__all__ = ["OpTime", "prefix_graphs", "time_graph", "time_operators"]
