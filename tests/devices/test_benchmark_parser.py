"""benchmark_model output parser: every output variant, plus garbage and truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latkit.devices.benchmark_parser import DelegateReport, parse_benchmark_output, parse_stat_line
from latkit.devices.delegation import summarize_delegation
from latkit.core.errors import ParseError

FIX = Path(__file__).parent / "fixtures"


def _load(name: str):
    return parse_benchmark_output((FIX / name).read_text())


def test_current_summary_and_phase_stats():
    r = _load("bm_current_xnnpack.txt")
    assert r.init_us == pytest.approx(21470)
    assert r.first_us == pytest.approx(2890)
    assert r.warmup_avg_us == pytest.approx(1213.77)
    assert r.inference_avg_us == pytest.approx(1196.42)
    inf = r.runs["inference"]
    # --min_secs made the tool run more than --num_runs=30: the count is read, not assumed
    assert inf.count == 834 and r.inference_count == 834
    assert (inf.min_us, inf.max_us, inf.std_us) == (1141, 1655, 38)
    assert r.runs["warmup"].count == 412
    assert r.mem_init_mb == pytest.approx(6.125) and r.mem_overall_mb == pytest.approx(9.5)
    assert r.peak_mem_mb == pytest.approx(14.75)
    assert r.delegates == ["XNNPACK"] and not r.partially_delegated and not r.warnings


def test_old_average_format():
    r = _load("bm_old_average.txt")
    assert r.init_us == pytest.approx(3918)
    assert r.warmup_avg_us == pytest.approx(5163.4)
    assert r.inference_avg_us == pytest.approx(5101.9)
    assert r.first_us == pytest.approx(6120)  # from the warmup phase's first run
    assert r.inference_count == 196


def test_oldest_no_stats_format_and_single_run_warmup():
    r = _load("bm_old_nostats.txt")
    assert r.inference_avg_us == pytest.approx(401.25)
    assert r.runs["warmup"].count == 1 and r.runs["warmup"].avg_us == 933
    assert r.init_us == pytest.approx(811)


def test_all_same_form():
    r = _load("bm_all_same.txt")
    inf = r.runs["inference"]
    assert inf.all_same and inf.count == 176903
    assert inf.min_us == inf.max_us == inf.avg_us == 3 and inf.std_us == 0
    assert r.inference_avg_us == 3


def test_partial_delegation_is_flagged():
    r = _load("bm_partial_delegate.txt")
    assert r.partially_delegated
    assert r.delegates == ["GPU"]
    assert any("part of the graph" in w for w in r.warnings)
    assert r.inference_avg_us == pytest.approx(8075.04)


def test_op_profiling_tables():
    r = _load("bm_op_profiling.txt")
    assert [o.node_type for o in r.op_profile] == ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD"]
    conv = r.op_profile[0]
    assert conv.name == "conv/Relu6" and conv.avg_ms == pytest.approx(1.688)
    assert conv.pct == pytest.approx(65.12) and conv.times_called == 1
    assert r.op_profile[-1].cdf_pct == pytest.approx(100.0)
    assert len(r.top_by_time) == 3
    assert {t.node_type: t.avg_ms for t in r.node_type_summary} == {
        "CONV_2D": 1.688, "DEPTHWISE_CONV_2D": 0.598, "ADD": 0.306}
    assert sum(o.avg_ms for o in r.op_profile) == pytest.approx(2.592)
    # the profiler's footer "Timings (microseconds): count=381 ..." is not a third phase
    assert r.inference_avg_us == pytest.approx(2622.7)
    assert r.mem_overall_mb == pytest.approx(1.75) and r.peak_mem_mb is None


@pytest.mark.parametrize("name", ["bm_garbage.txt", "bm_truncated.txt"])
def test_garbage_and_truncated_raise_one_line(name):
    with pytest.raises(ParseError) as e:
        _load(name)
    assert "\n" not in str(e.value)


def test_empty_output_raises():
    with pytest.raises(ParseError):
        parse_benchmark_output("")


def test_stat_line_variants():
    s = parse_stat_line("count=5 first=10 curr=11 min=9 max=12.5 avg=10.6 std=1")
    assert (s.count, s.first_us, s.max_us, s.avg_us) == (5, 10, 12.5, 10.6)
    assert parse_stat_line("count=0") is None
    assert parse_stat_line("Loaded model x") is None
    assert parse_stat_line("count=1 curr=7").avg_us == 7


def test_log_prefixes_are_ignored():
    text = (FIX / "bm_old_average.txt").read_text()
    glog = "\n".join(f"I0101 12:00:00.000000 4242 benchmark.cc:10] {ln}" for ln in text.splitlines())
    assert parse_benchmark_output(glog).inference_avg_us == pytest.approx(5101.9)


def test_to_dict_is_json_ready():
    r = _load("bm_op_profiling.txt")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["inference_avg_us"] == pytest.approx(2622.7)
    assert d["inference_count"] == 381 and "raw" not in d
    assert d["op_profile"][1]["node_type"] == "DEPTHWISE_CONV_2D"
    assert "raw" in r.to_dict(include_raw=True)


# ---------------------------------------------------------------- damaged output

GOOD = (FIX / "bm_current_xnnpack.txt").read_text()
INF_LINE = "count=834 first=1198 curr=1187 min=1141 max=1655 avg=1196.42 std=38"
SUMMARY_INF = "Inference (avg): 1196.42"


@pytest.mark.parametrize("avg", ["-1196.42", "nan", "inf", "-inf", "1e999"])
def test_impossible_inference_average_is_refused(avg):
    with pytest.raises(ParseError, match="damaged or impossible") as e:
        parse_benchmark_output(GOOD.replace("avg=1196.42", f"avg={avg}"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("avg", ["0", "0.0", "1e308", "1e9"])
def test_zero_or_implausible_inference_time_is_refused(avg):
    with pytest.raises(ParseError, match="damaged or impossible") as e:
        parse_benchmark_output(GOOD.replace("avg=1196.42", f"avg={avg}"))
    assert "\n" not in str(e.value)
    text = GOOD.replace(INF_LINE, "").replace(SUMMARY_INF, f"Inference (avg): {avg}")
    with pytest.raises(ParseError, match="damaged or impossible"):
        parse_benchmark_output(text)


def test_regular_runs_of_count_zero_are_refused_not_read_from_the_summary():
    with pytest.raises(ParseError, match="0 times") as e:
        parse_benchmark_output(GOOD.replace("count=834", "count=0"))
    assert "--num_runs" in str(e.value) and "\n" not in str(e.value)
    # an empty warmup phase is no warmup, and the next line is still the inference phase
    warm = GOOD.split("count=")[1].split()[0]
    r = parse_benchmark_output(GOOD.replace(f"count={warm} ", "count=0 ", 1))
    assert r.inference_avg_us == pytest.approx(1196.42) and "warmup" not in r.runs


@pytest.mark.parametrize("value", ["-1196.42", "nan", "inf"])
def test_impossible_summary_value_is_refused(value):
    text = GOOD.replace(INF_LINE, "").replace(SUMMARY_INF, f"Inference (avg): {value}")
    with pytest.raises(ParseError, match="damaged or impossible"):
        parse_benchmark_output(text)


def test_damaged_inference_line_never_falls_back_to_the_warmup():
    damaged = GOOD.replace(INF_LINE, "count=834 first=1198 curr=11#7 min=1141 avg=1196.42")
    with pytest.raises(ParseError, match="inference statistics line"):
        parse_benchmark_output(damaged)
    both = damaged.replace(SUMMARY_INF, "Inference (avg): 11?6.42")
    with pytest.raises(ParseError):
        parse_benchmark_output(both)
    # the inference line gone entirely: the summary's figure, never the warmup's 1213.77
    gone = parse_benchmark_output(GOOD.replace(INF_LINE, ""))
    assert gone.inference_avg_us == pytest.approx(1196.42)
    assert gone.runs["warmup"].avg_us == pytest.approx(1213.77) and "inference" not in gone.runs


def test_count_of_thousands_of_digits_is_one_parse_error():
    with pytest.raises(ParseError, match="inference statistics line"):
        parse_benchmark_output(GOOD.replace("count=834", "count=" + "9" * 5000))
    with pytest.raises(ParseError, match="run count"):
        parse_stat_line("count=" + "1" * 4301 + " curr=3")


def test_long_garbage_lines_are_skipped_and_oversized_output_refused():
    # an 80 kB line of each pathological shape the old regexes took seconds over
    junk = ["TF " * 27000, "count=1 " * 10000, "Inference timings in us: " + "Ab ( " * 16000,
            "Explicitly applied " * 4200, "= " + " " * 80000 + "x", "1" * 80000]
    r = parse_benchmark_output("\n".join(junk) + "\n" + GOOD)
    assert r.inference_avg_us == pytest.approx(1196.42) and r.inference_count == 834
    assert any("6 line(s) over" in w for w in r.warnings)
    with pytest.raises(ParseError, match="more than"):
        parse_benchmark_output(GOOD + "x" * (3 * 2**20))


def test_op_table_with_infinite_call_count_is_not_a_traceback():
    text = (FIX / "bm_op_profiling.txt").read_text()
    first_row = next(ln for ln in text.splitlines() if "CONV_2D" in ln and "\t" in ln)
    cells = first_row.split("\t")
    cells[-2] = "inf"
    r = parse_benchmark_output(text.replace(first_row, "\t".join(cells)))
    assert r.inference_avg_us == pytest.approx(2622.7)


# ---------------------------------------------------------------- delegation summary


def test_complete_delegation_gives_no_warning():
    r = _load("bm_current_xnnpack.txt")
    assert r.delegation == [DelegateReport("XNNPACK", True, True, 1, r.delegation[0].line)]
    d = summarize_delegation(r, "xnnpack")
    assert d.to_dict() == {
        "delegate": "xnnpack", "applied": True, "delegated_kernels": 1, "fully_delegated": True,
        "summary": "Explicitly applied XNNPACK delegate, and the model graph will be completely "
                   "executed by the delegate."}
    assert d.warning is None


def test_partial_delegation_counts_kernels_and_warns():
    d = summarize_delegation(_load("bm_partial_delegate.txt"), "gpu")
    assert (d.delegate, d.applied, d.delegated_kernels, d.fully_delegated) == ("gpu", True, 3, False)
    assert d.summary.endswith("partially executed by the delegate w/ 3 delegate kernels.")
    assert d.warning == ("the gpu delegate ran only part of the graph (3 delegate kernels); "
                         "the rest ran on the CPU")


def test_two_delegates_each_read_from_its_own_line():
    r = _load("bm_gpu_nnapi_two_delegates.txt")
    assert [(x.name, x.applied, x.fully_delegated, x.delegated_kernels) for x in r.delegation] == [
        ("GPU", True, True, 1), ("NNAPI", False, False, 0)]
    assert r.delegates_created == ["GPU", "NNAPI"]
    rep = r.replacements[0]
    assert (rep.kernel, rep.nodes, rep.total, rep.partitions) == ("TfLiteGpuDelegateV2", 49, 49, 1)
    assert summarize_delegation(r, "gpu").warning is None
    nnapi = summarize_delegation(r, "nnapi")
    assert (nnapi.applied, nnapi.delegated_kernels, nnapi.fully_delegated) == (False, 0, False)
    assert "took no part of the graph" in nnapi.warning
    assert r.inference_avg_us == pytest.approx(309350)


def test_delegate_that_took_nothing_is_flagged():
    r = _load("bm_nnapi_not_delegated.txt")
    assert r.delegates == [] and not r.partially_delegated
    assert any("NNAPI delegate was applied but took no part" in w for w in r.warnings)
    d = summarize_delegation(r, "nnapi")
    assert d.to_dict()["applied"] is False and d.to_dict()["delegated_kernels"] == 0
    assert d.summary.startswith("Though NNAPI delegate is explicitly applied")
    assert d.warning == "the nnapi delegate took no part of the graph: all of it ran on the CPU"


def test_old_build_is_read_from_its_replacing_line():
    r = _load("bm_old_replacing_only.txt")
    assert r.delegation == [] and r.inference_avg_us == pytest.approx(15902.4)
    rep = r.replacements[0]
    assert (rep.nodes, rep.total, rep.partitions) == (31, None, 1)
    d = summarize_delegation(r, "gpu")
    # nodes were replaced, but without "out of M" nobody can tell if all were
    assert (d.applied, d.delegated_kernels, d.fully_delegated, d.warning) == (True, 1, None, None)
    partial = parse_benchmark_output((FIX / "bm_old_replacing_only.txt").read_text().replace(
        "Replacing 31 node(s)", "Replacing 28 out of 31 node(s)").replace("1 partitions", "2 partitions"))
    d = summarize_delegation(partial, "gpu")
    assert (d.applied, d.delegated_kernels, d.fully_delegated) == (True, 2, False)
    assert d.warning == "the gpu delegate took 28 of 31 nodes (2 partitions); the rest ran on the CPU"


def test_no_summary_at_all_is_unknown_and_warned():
    r = _load("bm_old_average.txt")
    d = summarize_delegation(r, "gpu")
    assert (d.applied, d.delegated_kernels, d.fully_delegated, d.summary) == (False, None, None, "")
    assert "no delegation summary for the gpu delegate" in d.warning
    none = summarize_delegation(r, "none")
    assert none.to_dict()["delegate"] == "none" and none.applied is False and none.warning is None
    # delegate=none, yet the binary applied XNNPACK on its own: said so
    forced = summarize_delegation(_load("bm_current_xnnpack.txt"), "none")
    assert forced.applied and "applied XNNPACK" in forced.warning


def test_unconsumed_flags_are_collected():
    r = _load("bm_unconsumed_delegate_flag.txt")
    assert r.unconsumed_flags == ["--use_gpu=true", "--made_up_flag=3"]
    assert r.inference_avg_us == pytest.approx(1203.25)


def test_implausible_kernel_count_is_partial_with_an_unknown_count():
    line = ("Explicitly applied GPU delegate, and the model graph will be partially executed by the "
            "delegate w/ 99999999999999 delegate kernels.")
    d = summarize_delegation(parse_benchmark_output(line + "\n" + GOOD), "gpu")
    assert (d.applied, d.fully_delegated, d.delegated_kernels) == (True, False, None)
    assert d.warning.startswith("the gpu delegate ran only part of the graph")


@pytest.mark.parametrize("line", [
    "Replacing 1e9 out of x node(s) with delegate (TfLiteGpuDelegateV2) node, yielding -1 partitions",
    "Replacing 3 out of 4 node(s) with delegate (" + "A" * 5000 + ") node, yielding 1 partitions",
    "Though " + "GPU " * 500 + "delegate is explicitly applied, the model graph will not be executed",
    "Explicitly applied  delegate, and the model graph will be completely executed by the delegate.",
    "Unconsumed cmdline flags:" + " --x" * 3000,
])
def test_damaged_delegation_lines_are_not_misread(line):
    r = parse_benchmark_output(line + "\n" + GOOD)
    assert r.inference_avg_us == pytest.approx(1196.42)
    # the damaged line adds no delegate; GOOD's own XNNPACK line is still read
    assert [x.name for x in r.delegation] == ["XNNPACK"]
    assert r.replacements == [] and len(r.unconsumed_flags) <= 32
    assert all(x.delegated_kernels in (None, 0, 1) for x in r.delegation)


def test_delegation_lines_are_capped():
    spam = "Replacing 3 out of 4 node(s) with delegate (K) node, yielding 1 partitions\n" * 50_000
    r = parse_benchmark_output(spam[: 2**20] + GOOD)
    assert len(r.replacements) == 64 and r.replacements[0].kernel == "K"
    # the flood of one kind hides no other: the run's own summary line is still read
    assert summarize_delegation(r, "xnnpack").warning is None
