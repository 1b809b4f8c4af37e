"""Per-layer profiles: where a model's time goes, layer by layer, as the runtime itself reports it.

``latkit measure FILE --per-layer`` asks a session for :meth:`Session.profile_layers
<latkit.devices.base.Session.profile_layers>`; each backend answers with its own
runtime's profiler, never with an estimate:

* ``cpu:onnxruntime``: ONNX Runtime's profiler (``SessionOptions.enable_profiling``),
  one ``<node>_kernel_time`` event per node and run, parsed from the JSON file it
  writes (and deleted); each node's figure is its median over the profiled runs,
  and the runs' own figure is the median of ONNX Runtime's ``model_run`` events;
* ``adb:``: ``benchmark_model --enable_op_profiling`` on the phone, its
  ``Run Order`` table (each operator's mean over the tool's runs); the runs'
  figure is the tool's ``Inference (avg)`` of the same run;
* ``cpu:litert``: LiteRT's Python interpreter has no per-operator profiler, so
  the profile holds the runs' figure and memory but no layers, and says why.

The layers' sum is shown beside the runs' own end-to-end figure: the difference
is time the runtime spends outside any layer (feeding inputs, copying outputs,
scheduling). Memory is what the runtime reports (benchmark_model's footprint,
ONNX Runtime's arena), and on the host the process's peak resident-set rise
while the model was loaded and run, each labelled with what it is.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latkit.core.errors import UsageError

PROFILE_RUNS = 50  # profiled runs per model: enough for a steady median per layer
MAX_PROFILE_RUNS = 10_000
OVERHEAD_NOTED = 0.15  # layers summing to more than the unprofiled run by this share get a note on the profiler's cost


def check_runs(runs: int) -> int:
    """``runs`` when it is a sensible number of profiled runs.

    Raises:
        UsageError: not an integer in 1..MAX_PROFILE_RUNS.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_PROFILE_RUNS:
        raise UsageError(f"profiled runs must be an integer from 1 to {MAX_PROFILE_RUNS}, got {runs!r}")
    return runs


@dataclass(frozen=True)
class LayerTime:
    """One layer (a runtime node or operator) and its time per run, as the runtime measured it."""

    name: str
    op_type: str
    latency_ms: float


@dataclass(frozen=True)
class MemoryFigure:
    """A memory figure and what it is (the runtime's own report, or the host process's RSS)."""

    what: str
    bytes: int


@dataclass(frozen=True)
class LayerProfile:
    """A model's per-layer profile on one runtime.

    Attributes:
        runtime: the profiler that measured it (``onnxruntime profiler``, ``benchmark_model``...).
        layers: the layers in run order (empty when the runtime exposes no per-layer timer).
        run_ms: the profiled runs' own end-to-end figure per run (same runs, same clock).
        runs: how many runs were profiled.
        statistic: how a layer's runs are summarised (``median``, or ``mean`` for benchmark_model).
        memory: memory figures the runtime or host reported.
        note: why there are no layers, or what to keep in mind reading them.
        unprofiled_ms: the model's time per run without the profiler, in runs taken
            alternately with the profiled ones (so under the same load), where the backend measures it.
    """

    runtime: str
    layers: tuple[LayerTime, ...]
    run_ms: float | None
    runs: int
    statistic: str
    memory: tuple[MemoryFigure, ...] = ()
    note: str = ""
    unprofiled_ms: float | None = None

    def __repr__(self) -> str:
        run = f"{self.run_ms:.3f} ms per run" if self.run_ms is not None else "no run figure"
        return (f"LayerProfile({self.runtime!r}, {len(self.layers)} layer(s) summing to {self.sum_ms:.3f} ms, "
                f"{run}, {self.runs} runs, {len(self.memory)} memory figure(s))")

    @property
    def sum_ms(self) -> float:
        """The layers' times added up (ms per run)."""
        return float(sum(layer.latency_ms for layer in self.layers))

    def share(self, layer: LayerTime) -> float:
        """``layer``'s share of the layers' sum (0..1)."""
        total = self.sum_ms
        return layer.latency_ms / total if total > 0 else 0.0

    def to_dict(self, end_to_end_ms: float | None = None) -> dict[str, Any]:
        """JSON-ready form; with ``end_to_end_ms`` (the measurement's figure) the sum is compared with it too."""
        doc: dict[str, Any] = {
            "runtime": self.runtime, "runs": self.runs, "statistic": self.statistic,
            "layers": [{"name": x.name, "op_type": x.op_type, "latency_ms": x.latency_ms,
                        "share": self.share(x)} for x in self.layers],
            "sum_ms": self.sum_ms if self.layers else None, "run_ms": self.run_ms,
            "sum_over_run": self.sum_ms / self.run_ms if self.layers and self.run_ms else None,
            "unprofiled_ms": self.unprofiled_ms,
            "sum_over_unprofiled": self.sum_ms / self.unprofiled_ms if self.layers and self.unprofiled_ms else None,
            "end_to_end_ms": end_to_end_ms,
            "sum_over_end_to_end": self.sum_ms / end_to_end_ms if self.layers and end_to_end_ms else None,
            "memory": [{"what": m.what, "bytes": m.bytes} for m in self.memory],
            "note": self.note,
        }  # fmt: skip
        return doc


def sum_text(doc: Mapping[str, Any], ms: Callable[[float], str] = "{:.3f}".format) -> str:
    """``sum X ms``, against the runs without the profiler taken beside it (else the profiled runs' own
    figure) and the measured end-to-end figure, from a :meth:`LayerProfile.to_dict` with layers."""
    text = f"sum {ms(doc['sum_ms'])} ms"
    if doc.get("unprofiled_ms"):
        text += (f" = {doc['sum_over_unprofiled']:.0%} of the model's {ms(doc['unprofiled_ms'])} ms per run "
                 "without the profiler (runs taken in turn with the profiled ones)")
    elif doc.get("run_ms"):
        text += f" = {doc['sum_over_run']:.0%} of the profiled runs' own {ms(doc['run_ms'])} ms"
    if doc.get("end_to_end_ms"):
        text += f"; {doc['sum_over_end_to_end']:.0%} of the measured end-to-end {ms(doc['end_to_end_ms'])} ms"
    return text


# ----------------------------------------------------------------------------- host memory


@dataclass
class PeakRss:
    """The host process's peak resident-set rise inside :func:`peak_rss_rise` (filled in when it ends)."""

    rise_bytes: int | None = None
    how: str = field(default="")

    def figure(self, what: str) -> tuple[MemoryFigure, ...]:
        """The rise as a labelled figure (none when it could not be read)."""
        if self.rise_bytes is None:
            return ()
        return (MemoryFigure(f"{what} ({self.how})", self.rise_bytes),)


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def peak_rss_rise() -> Iterator[PeakRss]:
    """Measure how far the process's resident set rose above where it stood when the block began.

    On Linux the peak (``VmHWM``) is reset first (``/proc/self/clear_refs``), so the
    figure is this block's own peak; elsewhere the process's lifetime peak
    (``ru_maxrss``) is compared, which shows nothing if an earlier peak was higher.
    """
    out = PeakRss()
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    base_kb = _status_kb("VmRSS") if reset else None
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        yield out
    finally:
        peak_kb = _status_kb("VmHWM") if reset else None
        if base_kb is not None and peak_kb is not None:
            out.rise_bytes, out.how = max(0, peak_kb - base_kb) * 1024, "peak RSS over RSS at the start"
        else:
            rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max
            out.rise_bytes, out.how = max(0, rise) * 1024, "rise of the process's lifetime peak RSS"


# ----------------------------------------------------------------------------- ONNX Runtime


def _in_run(ts: int, runs: Sequence[tuple[int, int]]) -> int | None:
    for i, (start, end) in enumerate(runs):
        if start <= ts <= end:
            return i
    return None


def quantile_name(quantile: float) -> str:
    """``median`` for 0.5, else ``pN`` (``p5`` for 0.05)."""
    return "median" if quantile == 0.5 else f"p{100 * quantile:g}"


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile of ``values`` (linear interpolation, as numpy's default)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


UNDISTURBED = 1.1  # a run whose wall time exceeds its CPU time by more than this was interrupted
MIN_KEPT = 5  # the least interrupted runs kept when fewer are undisturbed


def undisturbed(wall_cpu_ns: Sequence[tuple[int, int]]) -> list[bool]:
    """Which runs (wall, CPU time of the thread that ran them) no other process interrupted.

    ONNX Runtime's profiler times with the wall clock; on a shared host another
    process can take the core mid-run, which the CPU time leaves out. Runs whose
    wall time is within :data:`UNDISTURBED` of their CPU time are kept, and at
    least the :data:`MIN_KEPT` least disturbed ones.
    """
    ratios = [w / c if c > 0 else float("inf") for w, c in wall_cpu_ns]
    floor = sorted(ratios)[min(MIN_KEPT, len(ratios)) - 1] if ratios else 0.0
    return [r <= max(UNDISTURBED, floor) for r in ratios]


def ort_layer_profile(events: Sequence[Mapping[str, Any]], runs: int, host: PeakRss | None = None,
                      quantile: float = 0.5, keep: Sequence[bool] | None = None,
                      unprofiled_ms: Sequence[float] = ()) -> LayerProfile:  # fmt: skip
    """The per-node profile in ONNX Runtime's profiler events, over its last ``runs`` ``model_run`` events.

    Earlier runs (warmup) are left out, and with ``keep`` (one flag per profiled
    run, see :func:`undisturbed`) the runs it flags False; a node run several
    times in one run counts its sum. Each node's figure, and the runs' own, is
    the ``quantile`` of the runs kept; ``unprofiled_ms`` are the times of runs without the
    profiler taken alongside, summarised the same way.

    Raises:
        UsageError: the events hold no ``model_run`` (not an ONNX Runtime profile).
    """
    spans = sorted((int(e["ts"]), int(e["ts"]) + int(e["dur"])) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")  # fmt: skip
    if not spans:
        raise UsageError("the ONNX Runtime profile holds no model_run event; nothing was profiled")
    spans = spans[-runs:]
    if keep is not None and len(keep) == len(spans) and any(keep):
        spans = [span for span, kept in zip(spans, keep) if kept]
    per_run: list[dict[str, float]] = [{} for _ in spans]
    op_types: dict[str, str] = {}
    arena = 0
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        i = _in_run(int(e["ts"]), spans)
        if i is None:
            continue
        node = name[: -len("_kernel_time")]
        args = e.get("args") or {}
        op_types.setdefault(node, str(args.get("op_name", "?")))
        per_run[i][node] = per_run[i].get(node, 0.0) + float(e["dur"]) / 1000.0
        arena = max(arena, int(args.get("mem_arena_held", 0) or 0))
    layers = tuple(LayerTime(node, op_types[node], _quantile([r.get(node, 0.0) for r in per_run], quantile))
                   for node in op_types)  # fmt: skip
    memory = (MemoryFigure("ONNX Runtime arena held (profiler)", arena),) if arena else ()
    run_ms = _quantile([(end - start) / 1000.0 for start, end in spans], quantile)
    notes = [] if len(spans) == runs else [f"{runs - len(spans)} of the {runs} profiled runs were left out: "
                                           "another process interrupted them (wall time over CPU time)"]
    plain = _quantile(list(unprofiled_ms), quantile) if unprofiled_ms else None
    total = sum(layer.latency_ms for layer in layers)
    if plain and layers and total > (1 + OVERHEAD_NOTED) * plain:
        per_node_us = 1000 * (total - plain) / len(layers)
        notes.append(f"the layers add up to {total / plain:.0%} of the run without the profiler: about "
                     f"{per_node_us:.1f} us per node is the profiler's own, large beside layers this short; "
                     "read their shares rather than their times")  # fmt: skip
    return LayerProfile("onnxruntime profiler", layers, run_ms, len(spans), quantile_name(quantile),
                        memory + (host.figure("host: model loaded and run") if host else ()), "; ".join(notes),
                        plain)  # fmt: skip


# ----------------------------------------------------------------------------- benchmark_model


def benchmark_layer_profile(result: Any, runs: int) -> LayerProfile:
    """The per-operator profile of a ``benchmark_model --enable_op_profiling`` run
    (a :class:`latkit.devices.benchmark_parser.BenchmarkResult`)."""
    rows = result.op_profile or result.top_by_time
    layers = tuple(LayerTime(r.name, r.node_type, r.avg_ms) for r in rows)
    memory: list[MemoryFigure] = []
    if result.peak_mem_mb is not None:
        memory.append(MemoryFigure("peak memory footprint (benchmark_model, periodic monitoring)",
                                   int(result.peak_mem_mb * 2**20)))  # fmt: skip
    if result.mem_overall_mb is not None:
        memory.append(MemoryFigure("memory footprint rise from the tool's start (benchmark_model)",
                                   int(max(result.mem_overall_mb, 0.0) * 2**20)))  # fmt: skip
    note = "" if layers else ("benchmark_model printed no per-operator rows for this run (a delegate that "
                              "does not report its operators?)")  # fmt: skip
    if len(layers) == 1 and "delegate" in layers[0].op_type.lower():
        note = ("the delegate ran the whole graph as one node and reports no operators inside it; the "
                "row is its time (?delegate=none shows every operator on the CPU kernels)")
    return LayerProfile("benchmark_model", layers, result.inference_avg_us / 1000.0, result.inference_count or runs,
                        "mean", tuple(memory), note)  # fmt: skip


__all__ = ["MAX_PROFILE_RUNS", "PROFILE_RUNS", "LayerProfile", "LayerTime", "MemoryFigure", "PeakRss",
           "benchmark_layer_profile", "check_runs", "ort_layer_profile", "peak_rss_rise",
           "quantile_name", "sum_text", "undisturbed"]
