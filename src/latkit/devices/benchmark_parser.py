"""Parse the text that TFLite/LiteRT's ``benchmark_model`` tool prints.

The tool's output changed over the years; this parser reads every variant a
user is likely to meet:

* the current summary ``Inference timings in us: Init: …, First inference: …,
  Warmup (avg): …, Inference (avg): …`` and the older ``Average inference
  timings in us: Warmup: …, Init: …, Inference: …`` (very old builds print
  ``no stats:`` in place of ``Inference:``);
* the per-phase ``count=… first=… curr=… min=… max=… avg=… std=…`` lines, including
  ``count=N curr=X(all same)`` and the single-run ``count=1 curr=X``;
* the op-profiling tables (``Run Order``, ``Top by Computation Time``,
  ``Summary by node type``);
* memory footprint lines and delegate lines (a partially delegated graph is
  flagged, never silently mixed with a fully delegated one).

Lines may carry a log prefix (``INFO: ``, ``I0101 12:00:00.0 1234 file.cc:12]``,
an Android logcat prefix); it is ignored.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latkit.core.errors import ParseError, UsageError

# Every pattern here runs in time linear in the line: no unbounded repeat is
# followed by something it can also match (such a pair backtracks, and its time
# grows with the square of the line's length, so one long line of damaged output
# stalls the parser), and free-text spans are bounded ({0,80}). Stat lines and
# the summary are split into tokens rather than matched as a whole.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_NUM_FULL_RE = re.compile(rf"(?:{_NUM})", re.IGNORECASE)
_INIT_MS_RE = re.compile(rf"Initialized session in ({_NUM})\s*ms")
_MEM_DELTA_RE = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\):\s*init=({_NUM})\s+overall=({_NUM})"
)
_MEM_PEAK_RE = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({_NUM})")
# Delegation, as TensorFlow Lite words it (sources: BenchmarkTfLiteModel::Init in
# tensorflow/lite/tools/benchmark/benchmark_tflite_model.cc prints one of the three
# summary forms per applied delegate; Subgraph::ReplaceNodeSubsetsWithDelegateKernels
# in tensorflow/lite/core/subgraph.cc the "Replacing ..." line, "N out of M" in newer
# builds; the delegates' constructors the "Created TensorFlow Lite ..." line;
# BenchmarkModel::ParseFlags warns "Unconsumed cmdline flags:" for flags it does not know).
_DELEGATE_RE = re.compile(
    r"Explicitly applied (?P<name>[\w ]{1,60}?) delegate, and the model graph will be "
    r"(?P<how>completely|partially) executed by the delegate"
    r"(?: w/ (?P<kernels>\d{1,9}) delegate kernels)?"
)
_NOT_DELEGATED_RE = re.compile(
    r"Though (?P<name>[\w ]{1,60}?) delegate is explicitly applied, the model graph will not "
    r"be executed by the delegate"
)
_REPLACING_RE = re.compile(
    r"Replacing (?P<nodes>\d{1,9})(?: out of (?P<total>\d{1,9}))? node\(s\) with delegate "
    r"\((?P<kernel>[\w.:/-]{1,80})\) node, yielding (?P<parts>\d{1,9}) partitions"
)
_CREATED_RE = re.compile(
    r"Created TensorFlow Lite (?:(?P<cpu>[\w]{1,40}) delegate for CPU|delegate for (?P<name>\w{1,40}))"
)
_UNCONSUMED_MARK = "Unconsumed cmdline flags:"
_VERSION_RE = re.compile(
    r"(?:TF(?:Lite)?|LiteRT|TensorFlow Lite)[^\n]{0,80}?[Vv]ersion[:\s]{1,8}\[?([\w.\-]{1,40})"
)
_SECTION_RE = re.compile(r"=+[^=]+=+")
_SUMMARY_MARK = "nference timings in us:"
# a log prefix: "INFO: ", "I0101 12:00:00.123 123 file.cc:45] ", logcat "tflite  : "
_PREFIX_RE = re.compile(
    r"(?:(?:INFO|WARNING|WARN|ERROR|VERBOSE|DEBUG):\s?"
    r"|[IWEF]\d{4} [\d:.]{1,20}\s{1,8}\d{1,10}\s{1,8}\S{1,120}:\d{1,8}\]\s?"
    r"|\S{1,80}\s{1,20}:\s)"
)
MAX_LINE_CHARS = 16_384  # longer lines are no line benchmark_model prints: skipped
MAX_OUTPUT_BYTES = 2 * 2**20  # what latkit reads of one run's output (a device's or a file)
_MAX_COUNT_DIGITS = 15  # a count beyond 10**15 runs is damage (and int() refuses >4300 digits)
#: no inference takes 1000 s (the LUT's bound on a latency): a larger time is garbage
MAX_TIME_US = 1e9


@dataclass
class RunStats:
    """One ``count=… first=… …`` line: statistics of one phase, in microseconds."""

    count: int
    first_us: float
    curr_us: float
    min_us: float
    max_us: float
    avg_us: float
    std_us: float
    all_same: bool = False


# a "count=0 ..." line: a phase that ran no iteration (kept so the next line is not
# taken for this phase)
_EMPTY = RunStats(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_EMPTY_RE = re.compile(r"count=0+(\s|$)")


@dataclass
class OpRow:
    """One row of an op-profiling table (times in milliseconds)."""

    node_type: str
    first_ms: float
    avg_ms: float
    pct: float
    cdf_pct: float
    mem_kb: float
    times_called: int
    name: str


@dataclass
class NodeTypeRow:
    """One row of the ``Summary by node type`` table (times in milliseconds)."""

    node_type: str
    count: int
    avg_ms: float
    avg_pct: float
    cdf_pct: float
    mem_kb: float
    times_called: int


_MAX_DELEGATE_LINES = 64  # more delegation lines than this in one run is no real output


@dataclass
class DelegateReport:
    """One delegate's line of ``benchmark_model``'s delegation summary.

    ``applied``: the delegate took at least one node; ``fully_delegated``: it took
    the whole graph (one kernel, nothing left on the CPU); ``delegated_kernels``:
    how many delegate kernels (partitions) it made (1 when complete, 0 when none).
    """

    name: str  # as printed: "XNNPACK", "GPU", "NNAPI", ...
    applied: bool
    fully_delegated: bool
    delegated_kernels: int | None
    line: str


@dataclass
class NodeReplacement:
    """A ``Replacing N [out of M] node(s) with delegate (KERNEL) node, yielding P partitions`` line."""

    kernel: str  # the delegate kernel's name: TfLiteXNNPackDelegate, TfLiteGpuDelegateV2, ...
    nodes: int
    total: int | None  # None on builds that print no "out of M"
    partitions: int
    line: str


@dataclass
class BenchmarkResult:
    """Everything a ``benchmark_model`` run printed that latkit uses.

    Times are in microseconds unless the name says otherwise. ``runs`` holds one
    :class:`RunStats` per phase, keyed ``"warmup"`` and ``"inference"``.
    """

    init_us: float | None
    first_us: float | None
    warmup_avg_us: float | None
    inference_avg_us: float
    runs: dict[str, RunStats] = field(default_factory=dict)
    op_profile: list[OpRow] = field(default_factory=list)
    top_by_time: list[OpRow] = field(default_factory=list)
    node_type_summary: list[NodeTypeRow] = field(default_factory=list)
    mem_init_mb: float | None = None
    mem_overall_mb: float | None = None
    peak_mem_mb: float | None = None
    delegates: list[str] = field(default_factory=list)
    partially_delegated: bool = False
    warnings: list[str] = field(default_factory=list)
    runtime_version: str = ""
    raw: str = ""
    delegation: list[DelegateReport] = field(default_factory=list)
    replacements: list[NodeReplacement] = field(default_factory=list)
    delegates_created: list[str] = field(default_factory=list)
    unconsumed_flags: list[str] = field(default_factory=list)

    @property
    def inference_count(self) -> int:
        """How many timed runs the inference phase made (can exceed ``--num_runs``)."""
        stats = self.runs.get("inference")
        return stats.count if stats else 0

    def to_dict(self, include_raw: bool = False) -> dict[str, Any]:
        """JSON-ready form (``raw`` left out unless asked for)."""
        d = asdict(self)
        if not include_raw:
            d.pop("raw")
        d["inference_count"] = self.inference_count
        return d


def _strip_prefix(line: str) -> str:
    line = line.rstrip("\r")
    m = _PREFIX_RE.match(line)
    return line[m.end():] if m else line


def _number(text: str) -> float | None:
    """A number token (``nan``/``inf`` included, so callers can refuse them); None if not one."""
    if not _NUM_FULL_RE.fullmatch(text):
        return None
    return float(text)


def _damaged(what: str) -> ParseError:
    return ParseError(
        f"benchmark_model printed a damaged or impossible {what}; the device's output is "
        "garbled: rerun it and check the device log"
    )


def _stat_tokens(line: str) -> tuple[str, dict[str, float], bool] | None:
    """``(count, {key: value}, intact)`` of a ``count=…`` line; None if it has none.

    ``intact`` is False when a token after the count is not ``key=number``.
    """
    start = line.find("count=")
    if start < 0:
        return None
    tokens = line[start:].replace("(all same)", " ").split()
    kv: dict[str, float] = {}
    for tok in tokens[1:]:
        key, sep, value = tok.partition("=")
        number = _number(value) if sep and key.isidentifier() else None
        if number is None:
            return tokens[0][len("count="):], kv, False
        kv[key] = number
    return tokens[0][len("count="):], kv, True


def parse_stat_line(line: str) -> RunStats | None:
    """Parse a ``count=…`` statistics line; ``None`` if the line is not one.

    ``count=0`` (an empty phase) also gives ``None``.

    Raises:
        ParseError: a count or time that cannot be real (negative, NaN,
            infinite, a count of more than 15 digits).
    """
    parsed = _stat_tokens(line)
    if parsed is None:
        return None
    count_text, kv, intact = parsed
    if not count_text.isdigit():
        return None
    if not intact:
        raise _damaged("statistics line")
    if len(count_text) > _MAX_COUNT_DIGITS:
        raise _damaged(f"run count ({len(count_text)} digits)")
    count = int(count_text)
    if count == 0:
        return None
    for key, value in kv.items():
        if not math.isfinite(value) or value < 0 or value >= MAX_TIME_US:
            raise _damaged(f"statistic {key}={value:g}")
    if "curr" not in kv:
        return None
    if "avg" not in kv:  # "count=N curr=X(all same)" or the single-run "count=1 curr=X"
        x = kv["curr"]
        return RunStats(count, x, x, x, x, x, 0.0, all_same=True)
    return RunStats(
        count=count,
        first_us=kv.get("first", kv["curr"]),
        curr_us=kv["curr"],
        min_us=kv.get("min", kv["avg"]),
        max_us=kv.get("max", kv["avg"]),
        avg_us=kv["avg"],
        std_us=kv.get("std", 0.0),
    )


_SUMMARY_KEYS = {
    "init": "init", "first inference": "first", "warmup (avg)": "warmup", "warmup": "warmup",
    "inference (avg)": "inference", "inference": "inference", "no stats": "inference",
}  # fmt: skip


def _parse_summary(body: str) -> tuple[dict[str, float], str]:
    """``Init: 1, First inference: 2, …`` -> ({"init": 1, "first": 2, …}, damage).

    An item whose value is not one clean number is left out (so a damaged
    ``Inference (avg)`` is never read as a number); one that is negative, NaN
    or infinite is left out and described in ``damage``.
    """
    out: dict[str, float] = {}
    damage = ""
    for item in body.split(","):
        label, sep, value = item.partition(":")
        key = _SUMMARY_KEYS.get(label.strip().lower())
        if not sep or key is None:
            continue
        number = _number(value.strip())
        if number is None:
            continue
        if not math.isfinite(number) or number < 0 or number >= MAX_TIME_US:
            damage = str(_damaged(f"summary value {label.strip()}: {value.strip()[:20]}"))
            continue
        out[key] = number
    return out, damage


def _table_cells(line: str) -> list[str]:
    # tables are tab-separated with padding; fall back to runs of 2+ spaces
    cells = [c.strip() for c in line.split("\t")]
    cells = [c for c in cells if c]
    if len(cells) <= 2:
        cells = [c for c in re.split(r"\s{2,}", line.strip()) if c]
    return cells


def _pct(text: str) -> float:
    return float(text.rstrip("%"))


def _op_row(cells: list[str]) -> OpRow | None:
    # [node type] [(start)] [first] [avg ms] [%] [cdf%] [mem KB] [times called] [Name]
    if len(cells) < 8:
        return None
    if len(cells) >= 9 and "%" not in cells[3]:  # has a [start] column
        cells = [cells[0], *cells[2:]]
    try:
        return OpRow(cells[0], float(cells[1]), float(cells[2]), _pct(cells[3]), _pct(cells[4]),
                     float(cells[5]), int(float(cells[6])), " ".join(cells[7:]).strip("[]"))
    except (ValueError, OverflowError):  # int(inf), or a 5000-digit count
        return None


def _node_type_row(cells: list[str]) -> NodeTypeRow | None:
    # [Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called]
    if len(cells) < 7:
        return None
    try:
        return NodeTypeRow(cells[0], int(cells[1]), float(cells[2]), _pct(cells[3]),
                           _pct(cells[4]), float(cells[5]), int(float(cells[6])))
    except (ValueError, OverflowError):  # int(inf), or a 5000-digit count
        return None


class _State:
    """Mutable parse state, folded into a :class:`BenchmarkResult` at the end."""

    def __init__(self) -> None:
        # one entry per phase statistics line, in order; None: the line was damaged
        self.phase_stats: list[RunStats | None] = []
        self.summary_damage = ""
        self.long_lines = 0
        self.summary: dict[str, float] = {}
        self.init_ms: float | None = None
        self.section = ""
        self.in_profile = False
        self.ops: list[OpRow] = []
        self.top: list[OpRow] = []
        self.types: list[NodeTypeRow] = []
        self.mem: dict[str, float] = {}
        self.delegates: list[str] = []
        self.reports: list[DelegateReport] = []
        self.replacements: list[NodeReplacement] = []
        self.created: list[str] = []
        self.unconsumed: list[str] = []
        self.partial = False
        self.warnings: list[str] = []
        self.version = ""


def _feed(st: _State, line: str) -> None:
    if "Profiling Info for" in line:
        # only the regular runs' tables count; warmup/init profiles are separate
        st.in_profile = "Regular Benchmark Runs" in line
        st.section = ""
        return
    stripped = line.strip()
    if stripped.startswith("=") and _SECTION_RE.fullmatch(stripped):
        st.section = stripped.strip("=").strip().lower()
        return
    if st.section and st.in_profile and ("\t" in line or line.startswith("  ")):
        cells = _table_cells(line)
        if cells and not cells[0].startswith("["):
            if st.section == "run order" and (row := _op_row(cells)):
                st.ops.append(row)
                return
            if st.section.startswith("top by computation") and (row := _op_row(cells)):
                st.top.append(row)
                return
            if st.section.startswith("summary by node type") and (t := _node_type_row(cells)):
                st.types.append(t)
                return
    if line.startswith("Timings (microseconds):") or line.startswith("Memory (bytes):"):
        return  # per-table footers of the profiler, not phase statistics
    if (at := line.find(_SUMMARY_MARK)) >= 0:
        st.summary, st.summary_damage = _parse_summary(line[at + len(_SUMMARY_MARK):])
        return
    if stripped.startswith("count="):
        try:
            stats = parse_stat_line(stripped)
        except ParseError:
            st.phase_stats.append(None)
            return
        if stats:
            st.phase_stats.append(stats)
        elif _EMPTY_RE.match(stripped):
            st.phase_stats.append(_EMPTY)
        else:
            st.phase_stats.append(None)  # "count=-5 ...", "count=x": damaged
        return
    if m := _INIT_MS_RE.search(line):
        st.init_ms = float(m.group(1))
    elif m := _MEM_DELTA_RE.search(line):
        st.mem["init"], st.mem["overall"] = float(m.group(1)), float(m.group(2))
    elif m := _MEM_PEAK_RE.search(line):
        st.mem["peak"] = float(m.group(1))
    elif "elegate" in line or _UNCONSUMED_MARK in line:
        _feed_delegation(st, line)
    elif "ersion" in line and (m := _VERSION_RE.search(line)):
        st.version = st.version or m.group(1)


def _feed_delegation(st: _State, line: str) -> None:
    """Delegation summary, node replacement, delegate creation and unknown-flag lines.

    Each kind keeps at most ``_MAX_DELEGATE_LINES`` entries (no real run prints
    that many), so a flood of one kind neither grows memory nor hides the others.
    """
    if (at := line.find(_UNCONSUMED_MARK)) >= 0:
        if len(st.unconsumed) < 32:
            flags = line[at + len(_UNCONSUMED_MARK):].split()
            st.unconsumed.extend(f[:80] for f in flags[: 32 - len(st.unconsumed)] if f.startswith("-"))
        return
    text = line.strip()[:240]
    room = len(st.reports) < _MAX_DELEGATE_LINES
    if room and (m := _DELEGATE_RE.search(line)):
        name, partial = m.group("name").strip(), m.group("how") == "partially"
        kernels = int(m.group("kernels")) if m.group("kernels") else (None if partial else 1)
        st.delegates.append(name)
        st.reports.append(DelegateReport(name, True, not partial, kernels, text))
        if partial:
            st.partial = True
            st.warnings.append(f"{name} delegate ran only part of the graph; the rest ran "
                               "on the default CPU kernels")
    elif room and (m := _NOT_DELEGATED_RE.search(line)):
        name = m.group("name").strip()
        st.reports.append(DelegateReport(name, False, False, 0, text))
        st.warnings.append(f"{name} delegate was applied but took no part of the graph; "
                           "all of it ran on the default CPU kernels")
    elif len(st.replacements) < _MAX_DELEGATE_LINES and (m := _REPLACING_RE.search(line)):
        total = int(m.group("total")) if m.group("total") else None
        st.replacements.append(NodeReplacement(m.group("kernel"), int(m.group("nodes")), total,
                                               int(m.group("parts")), text))
    elif len(st.created) < _MAX_DELEGATE_LINES and (m := _CREATED_RE.search(line)):
        st.created.append(m.group("cpu") or m.group("name"))


def _phases(st: _State) -> dict[str, RunStats]:
    """The warmup and inference phases' statistics (printed in that order).

    Raises:
        ParseError: the inference phase's line is missing or damaged, so its
            figure must not be taken from anywhere else (the warmup line).
    """
    lines = st.phase_stats
    if len(lines) >= 2:
        if lines[1] is None:
            raise _damaged("inference statistics line")
        if lines[1] is _EMPTY:
            raise _no_runs()
        runs = {"inference": lines[1]}
        if lines[0] is not None and lines[0] is not _EMPTY:
            runs["warmup"] = lines[0]
        return runs
    if len(lines) == 1 and ("inference" in st.summary or st.summary_damage):
        # very old builds print one stat line before the summary; it is the run
        # phase only when the summary names no separate warmup figure
        if "warmup" in st.summary:
            return {"warmup": lines[0]} if lines[0] is not None and lines[0] is not _EMPTY else {}
        if st.summary_damage:
            raise ParseError(st.summary_damage)
        if lines[0] is None:
            raise _damaged("inference statistics line")
        if lines[0] is _EMPTY:
            raise _no_runs()
        return {"inference": lines[0]}
    if len(lines) == 1:
        # one stat line and no summary: the regular runs never finished
        raise ParseError(
            "benchmark_model output stops after the warmup phase (no inference statistics); "
            "the run crashed or the output was cut short: rerun it and check the device log"
        )
    return {}


def _no_runs() -> ParseError:
    return ParseError(
        "benchmark_model's regular runs ran 0 times (count=0), so the output holds no inference "
        "time: rerun it with --num_runs of 1 or more"
    )


def read_output_file(path: str | Path) -> str:
    """The text of a saved ``benchmark_model`` output file, read with a bound.

    Raises:
        UsageError: missing, unreadable, not a regular file (``/dev/zero``, a
            FIFO, a folder) or larger than :data:`MAX_OUTPUT_BYTES`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UsageError(f"{path} is not a regular file; save the benchmark_model output "
                                 "to a file and pass that")
            data = f.read(MAX_OUTPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_OUTPUT_BYTES:
        raise UsageError(f"{path} is larger than {MAX_OUTPUT_BYTES} bytes, more than one "
                         "benchmark_model run prints; pass the output of one run")
    return data.decode("utf-8", errors="replace")


def parse_benchmark_output(text: str) -> BenchmarkResult:
    """Parse the full stdout/stderr of one ``benchmark_model`` run.

    Args:
        text: what the tool printed (stdout and stderr together is fine).

    Returns:
        The run's timings, per-phase statistics, op profile, memory and delegates.

    Raises:
        ParseError: the text holds no inference statistics (garbage, a crash or
            output cut short).
    """
    if len(text) > MAX_OUTPUT_BYTES:
        raise ParseError(
            f"benchmark_model output is {len(text)} characters, more than the "
            f"{MAX_OUTPUT_BYTES} latkit reads; pass the output of one run"
        )
    st = _State()
    for raw_line in text.splitlines():
        if len(raw_line) > MAX_LINE_CHARS:
            st.long_lines += 1
            continue
        _feed(st, _strip_prefix(raw_line))

    runs = _phases(st)
    inference = st.summary.get("inference")
    if "inference" in runs and (inference is None or not runs["inference"].all_same):
        # the summary rounds differently; the stat line is the primary figure
        inference = runs["inference"].avg_us
    if inference is None:
        if st.summary_damage:
            raise ParseError(st.summary_damage)
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:60]
        raise ParseError(
            "no inference timings in benchmark_model output "
            f"(starts with {first!r}); pass the complete output of a finished run"
        )
    if not 0 < inference < MAX_TIME_US:
        raise _damaged(f"inference time ({inference:g} us)")
    if st.long_lines:
        st.warnings.append(f"{st.long_lines} line(s) over {MAX_LINE_CHARS} characters skipped")

    return _result(st, runs, inference, text)


def _result(st: _State, runs: dict[str, RunStats], inference: float, text: str) -> BenchmarkResult:
    """Fold the parse state into the result; phases fill what the summary left out."""
    init = st.summary.get("init", st.init_ms * 1000.0 if st.init_ms is not None else None)
    first = st.summary.get("first")
    if first is None and "warmup" in runs:
        first = runs["warmup"].first_us
    warmup = st.summary.get("warmup")
    if warmup is None and "warmup" in runs:
        warmup = runs["warmup"].avg_us
    return BenchmarkResult(
        init_us=init, first_us=first, warmup_avg_us=warmup, inference_avg_us=inference, runs=runs,
        op_profile=st.ops, top_by_time=st.top, node_type_summary=st.types,
        mem_init_mb=st.mem.get("init"), mem_overall_mb=st.mem.get("overall"),
        peak_mem_mb=st.mem.get("peak"), delegates=st.delegates, partially_delegated=st.partial,
        warnings=st.warnings, runtime_version=st.version, raw=text, delegation=st.reports,
        replacements=st.replacements, delegates_created=st.created, unconsumed_flags=st.unconsumed,
    )  # fmt: skip
