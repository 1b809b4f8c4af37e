"""A host stand-in for TFLite's ``benchmark_model``, run by the loopback device.

It takes the real tool's flags, really runs the graph with LiteRT
(``ai_edge_litert`` or ``tflite_runtime``) and prints the real tool's log format
with the timings it measured. Two emulations, both done with real work inside
the timed region so the reported numbers stay measurements:

* clock speed: the run is slowed to the clock of the cluster it is pinned to
  (``taskset`` mask; unpinned runs count as big-cluster runs), relative to the
  big cluster's maximum, by spinning ``t * (1/f - 1)`` after each invocation,
  where ``f = scaling_cur_freq / big cpuinfo_max_freq`` is read from the
  sandbox's sysfs (so a ``throttle`` scenario slows it down);
* timing: with one inference thread each run is timed with the thread's CPU
  clock (the host is shared; a phone's benchmark core is not, so time other
  host processes take is left out, as latkit's host devices do), with more
  threads with the wall clock;
* op profiling: LiteRT's Python API exposes no per-node timer, so each
  operator's time is measured as the growth of the time of the graph cut after
  it (:mod:`.op_profile`), with the same delegate, threads and clock as the
  regular runs; the rows are printed in the real tool's tables (run order, top
  by computation time, summary by node type);
* delegates: ``--use_xnnpack`` is LiteRT's real XNNPACK delegate (an explicit
  ``--use_xnnpack=false`` runs the built-in kernels, as the real tool does). The
  host has no GPU or NPU, so ``--use_gpu`` / ``--use_nnapi`` run the graph on the
  host's built-in CPU kernels and *report* the delegation a phone would, by a
  fixed rule (:func:`simulated_delegation`), saying so in the log. The summary
  lines are the real tool's wording, so latkit's parser reads them as on a phone;
* flags it does not know are warned about (``Unconsumed cmdline flags``) and
  ignored, as the real tool does.

Every run leaves a record of what it received (argv, flags, the graph file's
size and SHA-256, the delegation it reported) in the sandbox's
``.loopback/benchmark_runs/`` (:func:`received_runs`), for tests to check what
latkit really sent.

Run as ``python -m latkit.devices.loopback.benchmark_model --graph=... [flags]``.
"""

from __future__ import annotations

import hashlib
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latkit.core.files import read_json, write_json

from .op_profile import OpTime, time_operators
from .sandbox import ENV_ROOT, STATE_DIR, to_device
from .scenario import cpufreq_dir

# name -> (default, description printed when echoed), in the real tool's echo order.
FLAGS: dict[str, tuple[object, str]] = {
    "num_runs": (50, "Min num runs"),
    "min_secs": (1.0, "Min runs duration (seconds)"),
    "max_secs": (150.0, "Max runs duration (seconds)"),
    "run_delay": (-1.0, "Inter-run delay (seconds)"),
    "num_threads": (-1, "Num threads"),
    "benchmark_name": ("", "Benchmark name"),
    "warmup_runs": (1, "Min warmup runs"),
    "warmup_min_secs": (0.5, "Min warmup runs duration (seconds)"),
    "graph": ("", "Graph"),
    "enable_op_profiling": (False, "Enable op profiling"),
    "max_profiling_buffer_entries": (1024, "Max initial profiling buffer entries"),
    "report_peak_memory_footprint": (False, "Report the peak memory footprint"),
    "memory_footprint_check_interval_ms": (50, "Memory footprint check interval (ms)"),
    "use_xnnpack": (True, "Use xnnpack"),
    "use_gpu": (False, "Use gpu"),
    "use_nnapi": (False, "Use NNAPI"),
    "allow_fp16": (False, "Allow fp16"),
    "verbose": (False, "Log parameter values verbosely"),
}
MAX_BIG_FREQ_FALLBACK = 1
RUNS_DIR = "benchmark_runs"  # under STATE_DIR: one JSON record per run
# what each delegate is called in the real tool's log: (provider name, kernel name)
_DELEGATE_NAMES = {"xnnpack": ("XNNPACK", "TfLiteXNNPackDelegate"),
                   "gpu": ("GPU", "TfLiteGpuDelegateV2"), "nnapi": ("NNAPI", "TfLiteNnapiDelegate")}


class BenchmarkError(Exception):
    """A flag or model problem: printed as ``ERROR: ...`` with exit status 1."""


def log(line: str) -> None:
    """One line of the tool's log (stdout; the real tool logs there too on Android)."""
    sys.stdout.write(f"INFO: {line}\n")


def parse_flags(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """Parse ``--name=value`` flags; return (values, unconsumed arguments)."""
    values = {k: d for k, (d, _) in FLAGS.items()}
    rest = []
    for arg in argv:
        name, sep, raw = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in FLAGS:
            rest.append(arg)
            continue
        default = FLAGS[name][0]
        try:
            if isinstance(default, bool):
                if sep and raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                values[name] = (raw.lower() in ("true", "1")) if sep else True
            elif isinstance(default, int):
                values[name] = int(raw)
            elif isinstance(default, float):
                values[name] = float(raw)
            else:
                values[name] = raw
        except ValueError as exc:
            raise BenchmarkError(f"Invalid value for --{name}: {raw!r}") from exc
    return values, rest


@dataclass
class Stats:
    """The real tool's per-phase statistics, in integer microseconds."""

    samples_us: list[int]

    def line(self) -> str:
        s = self.samples_us
        n = len(s)
        avg = sum(s) / n
        std = int(math.sqrt(sum((x - avg) ** 2 for x in s) / n))
        return (f"count={n} first={s[0]} curr={s[-1]} min={min(s)} max={max(s)} "
                f"avg={avg:g} std={std}")

    @property
    def avg(self) -> float:
        return sum(self.samples_us) / len(self.samples_us)


class ClockEmulator:
    """Extra spinning that brings the host's speed down to the emulated cluster's clock."""

    def __init__(self, root: Path | None, mask: str | None, now: Callable[[], float] = time.perf_counter):
        self.now = now  # the clock runs are timed (and slowed down) with
        self.root, self._next_read, self.fraction = root, 0.0, 1.0
        self.cpu = self._pick_cpu(mask)
        self.big_max = self._read_int(self.root and cpufreq_dir(self.root, 7) /
                                      "cpuinfo_max_freq") or MAX_BIG_FREQ_FALLBACK

    @staticmethod
    def _pick_cpu(mask: str | None) -> int:
        """A representative core: the highest one in the mask (unpinned: the big cluster)."""
        if not mask:
            return 7
        try:
            bits = int(mask, 16)
        except ValueError:
            return 7
        return bits.bit_length() - 1 if bits else 7

    @staticmethod
    def _read_int(path: Path | None) -> int | None:
        try:
            return int(Path(path).read_text().split()[0]) if path else None
        except (OSError, ValueError, IndexError):
            return None

    def current_fraction(self) -> float:
        """cur freq of the pinned cluster / big max, re-read at most every 20 ms."""
        now = time.perf_counter()
        if self.root is not None and now >= self._next_read:
            cur = self._read_int(cpufreq_dir(self.root, self.cpu) / "scaling_cur_freq")
            if cur and self.big_max > 1:
                self.fraction = min(1.0, cur / self.big_max)
            self._next_read = now + 0.02
        return self.fraction

    def slow_down(self, elapsed_s: float) -> None:
        """Spin for ``elapsed_s * (1/f - 1)`` seconds (real CPU work, inside the timed run)."""
        f = self.current_fraction()
        if f >= 1.0:
            return
        until = self.now() + elapsed_s * (1.0 / f - 1.0)
        while self.now() < until:
            pass


def _load_interpreter(graph: str | None, threads: int, use_xnnpack: bool, content: bytes | None = None):
    try:
        from ai_edge_litert import interpreter as lite
    except ImportError:
        try:
            from tflite_runtime import interpreter as lite  # type: ignore[no-redef]
        except ImportError as exc:
            raise BenchmarkError("no LiteRT runtime (pip install 'latkit[tflite]')") from exc
    resolver = (lite.OpResolverType.AUTO if use_xnnpack
                else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    # LiteRT announces its delegate on stderr itself; we print the tool's own lines on
    # stdout instead, so silence fd 2 while loading (errors still surface as exceptions).
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        source = {"model_content": content} if content is not None else {"model_path": graph}
        interp = lite.Interpreter(**source, num_threads=threads if threads > 0 else None,
                                  experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise BenchmarkError(f"Failed to load or prepare the model {graph or 'graph'}: {exc}") from exc
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return interp


def asked_delegate(values: dict[str, object]) -> str:
    """The delegate the flags ask for: ``gpu``, ``nnapi``, ``xnnpack`` or ``none``.

    Raises:
        BenchmarkError: GPU and NNAPI together (the loopback simulates one at a time).
    """
    if values["use_gpu"] and values["use_nnapi"]:
        raise BenchmarkError("the loopback device simulates one delegate per run; "
                             "pass --use_gpu=true or --use_nnapi=true, not both")
    if values["use_gpu"]:
        return "gpu"
    if values["use_nnapi"]:
        return "nnapi"
    return "xnnpack" if values["use_xnnpack"] else "none"


def simulated_delegation(delegate: str, nodes: int, int8: bool) -> tuple[int, int]:
    """(nodes the delegate takes, partitions it makes) under the loopback's fixed rule.

    * ``gpu``: a float graph (fp32, fp16 weights) is taken whole. A graph holding
      int8 tensors is taken except its first and last node, standing in for the
      int8 boundary (quantize/dequantize, layout) a GPU delegate leaves to the
      CPU: one partition, so "partially executed"; with 2 nodes or fewer, none.
    * ``nnapi``: an int8 graph is taken whole (an NPU runs int8); a float graph is
      not taken at all, as on phones whose NNAPI driver accepts only quantized graphs.
    * ``xnnpack``: not simulated: LiteRT's real XNNPACK delegate (see :func:`_report_delegation`).
    * ``none``: nothing is delegated.
    """
    if delegate == "none" or nodes <= 0:
        return 0, 0
    if delegate == "gpu" and int8:
        return (nodes - 2, 1) if nodes > 2 else (0, 0)
    if delegate == "nnapi" and not int8:
        return 0, 0
    return nodes, 1


def _graph_facts(interp) -> tuple[int, int, bool]:
    """(the model's nodes, delegate nodes LiteRT added, whether any tensor is int8/uint8)."""
    import numpy as np

    ops = interp._get_ops_details() if hasattr(interp, "_get_ops_details") else []
    delegated = sum(1 for op in ops if op.get("op_name") == "DELEGATE")
    int8 = any(np.dtype(t["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8))
               for t in interp.get_tensor_details())
    return len(ops) - delegated, delegated, int8


def _report_delegation(delegate: str, nodes: int, int8: bool, xnnpack_kernels: int = 0) -> dict[str, Any]:
    """Print the real tool's delegate lines for ``delegate``; return what was reported.

    For XNNPACK (really applied) ``xnnpack_kernels`` is how many delegate nodes
    LiteRT added: none means it took nothing; otherwise the graph counts as taken whole.
    """
    if delegate == "none":
        return {"delegate": "none", "nodes": nodes, "taken": 0, "partitions": 0, "int8": int8}
    name, kernel = _DELEGATE_NAMES[delegate]
    if delegate == "xnnpack":
        taken, parts = (nodes, xnnpack_kernels) if xnnpack_kernels else (0, 0)
    else:
        taken, parts = simulated_delegation(delegate, nodes, int8)
    if delegate == "xnnpack":
        log("Created TensorFlow Lite XNNPACK delegate for CPU.")
    else:
        log(f"Created TensorFlow Lite delegate for {name}.")
        log(f"SIMULATED {name} delegate: the loopback device has no {name}; the graph runs on "
            f"the host CPU and its placement follows a fixed rule ({nodes} nodes, "
            f"{'int8' if int8 else 'float'} graph)")
    if taken:
        sys.stdout.write(f"VERBOSE: Replacing {taken} out of {nodes} node(s) with delegate "
                         f"({kernel}) node, yielding {parts} partitions for the whole graph.\n")
    if taken == nodes and parts == 1:
        log(f"Explicitly applied {name} delegate, and the model graph will be completely "
            "executed by the delegate.")
    elif taken:
        log(f"Explicitly applied {name} delegate, and the model graph will be partially "
            f"executed by the delegate w/ {parts} delegate kernels.")
    else:
        log(f"Though {name} delegate is explicitly applied, the model graph will not be "
            "executed by the delegate.")
    return {"delegate": delegate, "nodes": nodes, "taken": taken, "partitions": parts, "int8": int8}


def _record_run(root: Path | None, argv: list[str], values: dict[str, object], graph: str,
                shown_graph: str, rest: list[str], delegation: dict[str, Any]) -> None:
    """Leave what this run received in ``.loopback/benchmark_runs`` (best effort)."""
    if root is None:
        return
    data = Path(graph).read_bytes()
    record = {"argv": argv, "graph": shown_graph, "graph_bytes": len(data),
              "graph_sha256": hashlib.sha256(data).hexdigest(), "unconsumed": rest,
              "flags": {k: values[k] for k in ("use_xnnpack", "use_gpu", "use_nnapi", "num_threads",
                                                "num_runs")},
              "delegation": delegation}
    out = root / STATE_DIR / RUNS_DIR / f"{time.time_ns()}-{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record, what="loopback run record")


def received_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every ``benchmark_model`` run's record on the loopback device at ``root``, oldest first."""
    folder = Path(root) / STATE_DIR / RUNS_DIR
    if not folder.is_dir():
        return []
    names = sorted(folder.glob("*.json"), key=lambda p: tuple(int(x) for x in p.stem.split("-")))
    return [read_json(p, what="loopback run record") for p in names]


def _fill_inputs(interp) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        dtype = detail["dtype"]
        shape = detail["shape"]
        if np.issubdtype(dtype, np.floating):
            data = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        elif dtype == np.bool_:
            data = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -128), min(info.max, 127) + 1,
                                size=shape).astype(dtype)
        interp.set_tensor(detail["index"], data)


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _run_phase(interp, min_runs: int, min_secs: float, max_secs: float, delay_s: float,
               clock: ClockEmulator) -> Stats:
    now = clock.now
    log(f"Running benchmark for at least {min_runs} iterations and at least {min_secs:g} "
        f"seconds but terminate if exceeding {max_secs:g} seconds.")
    samples: list[int] = []
    start = time.perf_counter()
    while True:
        t0 = now()
        interp.invoke()
        clock.slow_down(now() - t0)
        samples.append(int((now() - t0) * 1e6))
        elapsed = time.perf_counter() - start
        if (len(samples) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
            break
        if delay_s > 0:
            time.sleep(delay_s)
    return Stats(samples)


_TABLE_HEAD = ("\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]"
               "\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n")


def _op_rows(rows: list[OpTime]) -> str:
    """The rows of an op table, with their start, share and cumulative share, as the real tool lays them out."""
    total = sum(r.avg_ms for r in rows) or 1.0
    lines, start, cdf = [], 0.0, 0.0
    for r in rows:
        cdf += 100.0 * r.avg_ms / total
        lines.append(f"\t{r.node_type:>24}\t{start:17.3f}\t{r.first_ms:9.3f}\t{r.avg_ms:9.3f}\t"
                     f"{100.0 * r.avg_ms / total:7.3f}%\t{min(cdf, 100.0):7.3f}%\t{0.0:10.3f}\t{1:9d}\t[{r.name}]\n")
        start += r.avg_ms
    return "".join(lines)


def _node_type_rows(rows: list[OpTime]) -> str:
    by_type: dict[str, list[float]] = {}
    for r in rows:
        by_type.setdefault(r.node_type, []).append(r.avg_ms)
    total = sum(r.avg_ms for r in rows) or 1.0
    out, cdf = [], 0.0
    for node_type, times in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
        pct = 100.0 * sum(times) / total
        cdf += pct
        out.append(f"\t{node_type:>24}\t{len(times):9d}\t{sum(times):10.3f}\t{pct:10.3f}%\t"
                   f"{min(cdf, 100.0):10.3f}%\t{0.0:10.3f}\t{len(times):9d}\n")
    return "".join(out)


def _profile_tables(rows: list[OpTime] | None, runs: Stats, why: str = "") -> None:
    """The real tool's op-profiling tables: run order, top by computation time, summary by node type."""
    sys.stdout.write("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n")
    if not rows:
        sys.stdout.write(f"Per-operator timings are not available on the loopback device: {why}\n\n")
        return
    top = sorted(rows, key=lambda r: -r.avg_ms)
    for title, table in (("Run Order", rows), ("Top by Computation Time", top)):
        sys.stdout.write(f"{'=' * 30} {title} {'=' * 30}\n{_TABLE_HEAD}{_op_rows(table)}\n")
    sys.stdout.write(f"Number of nodes executed: {len(rows)}\n{'=' * 30} Summary by node type {'=' * 30}\n"
                     "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]"
                     f"\t[times called]\n{_node_type_rows(rows)}\n"
                     f"Timings (microseconds): {runs.line()}\nMemory (bytes): count=0\n{len(rows)} nodes observed\n\n")


def _op_profiling(graph: str, threads: int, use_xnnpack: bool, runs: Stats, n_runs: int,
                  clock: ClockEmulator) -> None:  # fmt: skip
    """Measure every operator (:mod:`.op_profile`) and print the tables."""

    def load(content: bytes) -> Any:
        interp = _load_interpreter(None, threads, use_xnnpack, content=content)
        _fill_inputs(interp)
        return interp

    try:
        rows = time_operators(Path(graph).read_bytes(), load, n_runs, clock.now, clock.slow_down)
    except BenchmarkError as exc:
        _profile_tables(None, runs, f"a cut of the graph did not load ({exc})")
        return
    _profile_tables(rows, runs, "the model has several subgraphs (control flow), whose operators the "
                                "loopback cannot time one by one")


def _echo_flags(values: dict[str, object], rest: list[str], shown: Callable[[str], str]) -> None:
    log("STARTING!")
    if rest:
        sys.stdout.write(f"WARNING: Unconsumed cmdline flags: {' '.join(rest)}\n")
    log(f"Log parameter values verbosely: [{int(bool(values['verbose']))}]")
    for name, (default, text) in FLAGS.items():
        value = values[name]
        if name == "verbose" or (value == default and not values["verbose"]):
            continue
        shown_value = int(value) if isinstance(value, bool) else value
        log(f"{text}: [{shown(str(shown_value)) if name == 'graph' else shown_value}]")


def _load(values: dict[str, object], graph: str, threads: int,
          shown: Callable[[str], str]) -> tuple[Any, dict[str, Any]]:
    """The interpreter for the asked delegate, with the tool's delegate lines printed."""
    delegate = asked_delegate(values)
    interp = _load_interpreter(graph, threads, delegate == "xnnpack")
    log(f"Loaded model {shown(graph)}")
    nodes, delegate_nodes, int8 = _graph_facts(interp)
    return interp, _report_delegation(delegate, nodes, int8, delegate_nodes)


def run(argv: list[str]) -> int:
    """The tool's main: parse flags, benchmark, print the report. Returns the exit status."""
    values, rest = parse_flags(argv)
    root_env = os.environ.get(ENV_ROOT)
    root = Path(root_env) if root_env else None
    shown = (lambda p: to_device(root, p)) if root else (lambda p: p)
    _echo_flags(values, rest, shown)
    graph = str(values["graph"])
    if not graph:
        raise BenchmarkError("Please specify the name of your TF Lite input file with --graph")
    if not Path(graph).is_file():
        raise BenchmarkError(f"File {shown(graph)} does not exist or is not a file; "
                             "push the model first")
    threads = int(values["num_threads"])  # type: ignore[arg-type]
    log(f"#threads used for CPU inference: [{threads}]")
    rss0 = _rss_mb()
    t_init = time.perf_counter()
    interp, delegation = _load(values, graph, threads, shown)
    _record_run(root, argv, values, graph, shown(graph), rest, delegation)
    _fill_inputs(interp)
    init_us = int((time.perf_counter() - t_init) * 1e6)
    rss_init = _rss_mb()
    log(f"The input model file size (MB): {Path(graph).stat().st_size / 1e6:g}")
    log(f"Initialized session in {init_us / 1000:g}ms.")
    clock = ClockEmulator(root, os.environ.get("LATKIT_LOOPBACK_CPU_MASK"),
                          now=time.thread_time if threads == 1 else time.perf_counter)
    delay = float(values["run_delay"])  # type: ignore[arg-type]
    warm = _run_phase(interp, int(values["warmup_runs"]), float(values["warmup_min_secs"]),
                      float(values["max_secs"]), delay, clock)
    log(warm.line())
    sys.stdout.write("\n")
    runs = _run_phase(interp, int(values["num_runs"]), float(values["min_secs"]),
                      float(values["max_secs"]), delay, clock)
    log(runs.line())
    sys.stdout.write("\n")
    log(f"Inference timings in us: Init: {init_us}, First inference: {warm.samples_us[0]}, "
        f"Warmup (avg): {warm.avg:g}, Inference (avg): {runs.avg:g}")
    _report_memory(values, rss0, rss_init)
    if values["enable_op_profiling"]:
        _op_profiling(graph, threads, delegation["delegate"] == "xnnpack", runs, int(values["num_runs"]), clock)
    sys.stdout.flush()
    return 0


def _report_memory(values: dict[str, object], rss0: float, rss_init: float) -> None:
    log("Note: as the benchmark tool itself affects memory footprint, the following is only "
        "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
        "information at your discretion.")
    log(f"Memory footprint delta from the start of the tool (MB): init={rss_init - rss0:g} "
        f"overall={_rss_mb() - rss0:g}")
    if values["report_peak_memory_footprint"]:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        log(f"Overall peak memory footprint (MB) via periodic monitoring: {peak_mb:g}")


SIMULATOR_MARK = "SIMULATED benchmark_model"

# A POSIX-sh benchmark_model that runs nothing: it sleeps the configured latency per
# run and prints the real tool's report (stating it is simulated). A shell starts in
# ~1 ms, so a farm of simulated phones exercises the ADB and farm plumbing for real
# without each run costing a Python start and a core of the host.
_SIMULATOR = r"""#!/bin/sh
# latkit loopback-device --simulate-latency-ms: __MARK__
LAT_US=__LAT_US__
graph=""; runs=50; warm=1; delegate=XNNPACK
for a in "$@"; do
  case "$a" in
    --graph=*) graph="${a#--graph=}" ;;
    --num_runs=*) runs="${a#--num_runs=}" ;;
    --warmup_runs=*) warm="${a#--warmup_runs=}" ;;
    --use_xnnpack=false) [ "$delegate" = XNNPACK ] && delegate="" ;;
    --use_gpu=true) delegate=GPU ;;
    --use_nnapi=true) delegate=NNAPI ;;
  esac
done
echo "INFO: STARTING!"
echo "INFO: __MARK__: every run sleeps $LAT_US us, the model is not run (latkit loopback-device --simulate-latency-ms)"
if [ ! -f "$graph" ]; then
  echo "ERROR: File $graph does not exist or is not a file; push the model first" >&2
  echo "ERROR: Benchmarking failed." >&2; exit 1
fi
echo "INFO: Graph: [$graph]"
echo "INFO: #threads used for CPU inference: [1]"
echo "INFO: Loaded model $graph"
[ -n "$delegate" ] && echo "INFO: Explicitly applied $delegate delegate, and the model graph will be completely executed by the delegate."
echo "INFO: Initialized session in 0.1ms."
[ "$warm" -ge 1 ] 2>/dev/null || warm=1
[ "$runs" -ge 1 ] 2>/dev/null || runs=1
sleep "$(awk -v n=$((runs + warm)) -v us=$LAT_US 'BEGIN { printf "%.6f", n * us / 1e6 }')"
echo "INFO: Running benchmark for at least $warm iterations and at least 0 seconds but terminate if exceeding 150 seconds."
echo "INFO: count=$warm first=$LAT_US curr=$LAT_US min=$LAT_US max=$LAT_US avg=$LAT_US std=0"
echo ""
echo "INFO: Running benchmark for at least $runs iterations and at least 0 seconds but terminate if exceeding 150 seconds."
echo "INFO: count=$runs first=$LAT_US curr=$LAT_US min=$LAT_US max=$LAT_US avg=$LAT_US std=0"
echo ""
echo "INFO: Inference timings in us: Init: 100, First inference: $LAT_US, Warmup (avg): $LAT_US, Inference (avg): $LAT_US"
"""


def install_simulator(root: str | Path, latency_ms: float) -> Path:
    """Replace the sandbox's ``benchmark_model`` with one that sleeps ``latency_ms`` per run.

    For farm and throughput tests: the plumbing (ADB, pushes, the profiler, the
    farm) runs for real, the model does not, and every report says so.

    Returns:
        The installed tool's path in the sandbox.
    """
    if not (isinstance(latency_ms, (int, float)) and math.isfinite(latency_ms) and latency_ms > 0):
        from latkit.core.errors import UsageError

        raise UsageError(f"simulated latency must be a positive number of ms, got {latency_ms!r}")
    path = Path(root) / "data/local/tmp/benchmark_model"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (_SIMULATOR.replace("__MARK__", SIMULATOR_MARK)
            .replace("__LAT_US__", str(max(1, round(latency_ms * 1000)))))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point: registers as a running benchmark (for the thermal scenario)."""
    root_env = os.environ.get(ENV_ROOT)
    pidfile = Path(root_env) / STATE_DIR / "running" / str(os.getpid()) if root_env else None
    try:
        if pidfile is not None:
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.touch()
        return run(sys.argv[1:] if argv is None else argv)
    except BenchmarkError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"ERROR: {exc}\n")
        sys.stderr.write("ERROR: Benchmarking failed.\n")
        return 1
    finally:
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
