"""Verdicts that survive load: the measure stage's host check, on a device with scripted timings.

The scripted device runs no model: each session reports the latency its script
gives for that model in that session, so every figure the measurement protocol
produces is known. It stands for a host where other processes slow whole
networks down (the judged file and the calibration network alike) while the
isolated reference operators read as profiled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from latkit.core.errors import UsageError
from latkit.deploy.exported_file import ExportedFile
from latkit.deploy.layout import InputLayout
from latkit.deploy.verify import check_host
from latkit.devices.precision import Precision
from latkit.lut.drift import CONTENDED_RATIO, HOST_SESSIONS, CalibrationNetwork, HostReading, Reference
from latkit.pipeline import runner
from latkit.pipeline.report import _attempt_row
from latkit.pipeline.stages import (Attempt, ExportResult, MeasureResult, SearchStageResult,
                                    TrainStageResult)  # fmt: skip
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.spaces import get_space
from latkit.search import target as tgt
from scripted import Script, ScriptedDevice

TARGET_MS = 1.0
TOLERANCE = 0.1
STORED_MS = 1.0  # the calibration network's figure in the calibration
REF = next(s for s in get_space("proxyless_mobile_w05").operators(32) if s.measurable)
REF_MS = 0.05  # the reference operator's LUT figure


def _host(file_ms: Callable[[int], float], calibration_ms: Callable[[int], float]) -> Script:
    """Sessions of the exported file read ``file_ms(n)``, the calibration network ``calibration_ms(n)``
    and the reference operator its LUT figure (steady) in the ``n``-th session of each."""

    def script(key: str, n: int) -> float:
        if key.startswith("export-"):
            return file_ms(n)
        return calibration_ms(n) if key == "calibration-net" else REF_MS

    return script


@pytest.fixture
def exported(tmp_path: Path) -> ExportedFile:
    path = tmp_path / "net.onnx"
    path.write_bytes(b"scripted: never loaded")
    sidecar = tmp_path / "net.onnx.json"
    sidecar.write_text("{}")
    return ExportedFile(path, sidecar, "onnx", Precision.FP32, InputLayout.NCHW, (1, 3, 32, 32), {"passed": True})


TWIN = CalibrationNetwork(SimpleNamespace(key="calibration-net", input_shape=(1, 3, 32, 32)), "#3 of 5", STORED_MS)


def _measure(exported: ExportedFile, script: Script, waits_s: tuple[float, ...] = (0.0, 0.0)) -> MeasureResult:
    """The measure stage's job on the scripted device: the file with a reference operator, then the host check."""
    job = runner._MeasureJob("scripted:host", 1, exported, ProtocolConfig.quick(), TARGET_MS, TOLERANCE,
                             [Reference(REF, REF_MS)], TWIN, waits_s)  # fmt: skip
    entry, host = job.run(ScriptedDevice(script))
    return MeasureResult(str(exported.path), Precision.FP32, entry["latency_ms"], entry["rel_ci"], entry["device"],
                         entry["device_drift"], host)  # fmt: skip


def _attempt(name: str, search_target_ms: float, measure: MeasureResult) -> Attempt:
    search = SearchStageResult("s", "arch.json", {}, {}, search_target_ms, 0.95, None, range_ms=[0.3, 3.0])
    return Attempt(name, search_target_ms, search, TrainStageResult("w", 90.0, 1, "scratch", None),
                   ExportResult({"files": []}), None, measure)  # fmt: skip


def test_a_network_slowed_by_load_with_steady_operators_is_judged_on_the_corrected_figure(exported) -> None:
    # the whole host 1.45x slower for networks; the reference operator reads its LUT figure
    m = _measure(exported, _host(lambda n: 0.95 * 1.45, lambda n: STORED_MS * 1.45))
    assert m.latency_ms == pytest.approx(1.3775) and m.drift["steady"] and m.drift["ratio"] == pytest.approx(1.0)
    assert tgt.judge(m.latency_ms, TARGET_MS, TOLERANCE, m.drift).kind == tgt.OVER  # what the operators alone gave
    assert m.host["ratio"] == pytest.approx(1.45) and m.host["judged"] and m.host["over_budget"]
    assert m.host["corrected_ms"] == pytest.approx(0.95) and m.host["calibration_network"] == "#3 of 5"
    assert len(m.host["readings"]) == 1 and len(m.host["readings"][0]["network_ms"]) == HOST_SESSIONS == 2
    assert not m.contended and MeasureResult.from_dict(m.to_dict()).corrected_ms == pytest.approx(0.95)
    first = _attempt("first", TARGET_MS, m)
    verdict = runner._judge(first, TARGET_MS, TOLERANCE)
    assert verdict.kind == tgt.HIT and verdict.budget_used == pytest.approx(0.95)
    assert verdict.text.startswith("HIT: corrected 0.950 ms, 95% of the 1 ms budget")
    assert "measured 1.377 ms while calibration network #3 of 5 read 1.45x its stored figure" in verdict.text
    runs: list[float] = []
    attempts = runner._attempts(lambda i, t: runs.append(t) or first, TARGET_MS, TOLERANCE, 1, lambda *a: None)
    assert len(attempts) == 1 and runs == [TARGET_MS]  # no re-search
    row = _attempt_row(first.to_dict(), TARGET_MS)
    assert "| 1.377 | 0.950 | 95% | 1.00x | 1.45x |" in row


def test_a_host_too_contended_to_judge_waits_then_says_so_and_does_not_search_again(exported) -> None:
    # the calibration network reads 2.6x its figure in every session: beyond a correction
    assert 2.6 > CONTENDED_RATIO
    m = _measure(exported, _host(lambda n: 2.2, lambda n: 2.6 * STORED_MS))
    assert m.contended and not m.host["judged"] and m.host["corrected_ms"] is None
    assert len(m.host["readings"]) == 3 and m.host["waited_s"] == [0.0, 0.0]  # read again after each pause
    assert "read 2.60x its stored 1.000 ms" in m.host["unjudgeable"]
    first = _attempt("first", TARGET_MS, m)
    assert first.judged_ms == pytest.approx(2.2)
    verdict = runner._judge(first, TARGET_MS, TOLERANCE)
    assert verdict.kind == tgt.CONTENDED and not verdict.ok
    assert verdict.text.startswith("COULD NOT JUDGE: host contended. Measured 2.200 ms, 220% of the 1 ms budget")
    runs: list[float] = []
    attempts = runner._attempts(lambda i, t: runs.append(t) or first, TARGET_MS, TOLERANCE, 1, lambda *a: None)
    assert len(attempts) == 1 and runs == [TARGET_MS]
    assert "| 2.200 | - | 220% | 1.00x | 2.60x (contended) |" in _attempt_row(first.to_dict(), TARGET_MS)
    # the file read within the budget in the host check's sessions: load only slows, so that figure stands
    once = _measure(exported, _host(lambda n: 2.2 if n == 0 else 1.05, lambda n: 2.6 * STORED_MS))
    assert not once.contended and once.judged_ms == pytest.approx(1.05) and len(once.host["readings"]) == 1
    text = runner._judge(_attempt("first", TARGET_MS, once), TARGET_MS, TOLERANCE).text
    assert text.startswith("HIT: measured 1.050 ms") and "Not corrected for the host's state: calibration network #3 "\
        "of 5 read 2.60x its stored figure; host too contended to correct" in text


def test_sessions_that_disagree_are_unjudgeable_and_the_pauses_are_bounded(exported) -> None:
    # the file alternates 1.3 / 2.0 ms between sessions under a steady calibration network
    sleeps: list[float] = []
    check = check_host(ScriptedDevice(_host(lambda n: (1.3, 2.0)[n % 2], lambda n: STORED_MS)), exported, TWIN,
                       ProtocolConfig.quick(), TARGET_MS, TOLERANCE, sleep=sleeps.append)  # fmt: skip
    assert sleeps == [10.0, 30.0] and len(check.readings) == 3 and not check.judged
    assert "disagree by 54%" in check.reading.unjudgeable
    # within the budget whatever the host does: nothing to judge, no pause
    sleeps.clear()
    calm = check_host(ScriptedDevice(_host(lambda n: 0.7, lambda n: 2.6)), exported, TWIN, ProtocolConfig.quick(),
                      TARGET_MS, TOLERANCE, sleep=sleeps.append)  # fmt: skip
    assert sleeps == [] and len(calm.readings) == 1
    # the host calms down after the first pause: the second reading judges
    # (each reading opens HOST_SESSIONS sessions of the file and of the calibration network)
    later = check_host(ScriptedDevice(_host(lambda n: 2.2 if n < HOST_SESSIONS else 1.05,
                                            lambda n: 2.6 if n < HOST_SESSIONS else 1.1)),
                       exported, TWIN, ProtocolConfig.quick(), TARGET_MS, TOLERANCE, sleep=sleeps.append)  # fmt: skip
    assert sleeps == [10.0] and later.judged and later.reading.corrected_ms == pytest.approx(1.05 / 1.1)


def test_a_retry_target_is_scaled_from_the_corrected_figure(exported) -> None:
    # read 1.56 ms with the calibration network at 1.2x: 1.3 ms corrected, over the budget
    over = _measure(exported, _host(lambda n: 1.56, lambda n: 1.2 * STORED_MS))
    assert over.corrected_ms == pytest.approx(1.3)
    retry = _measure(exported, _host(lambda n: 0.93, lambda n: STORED_MS))
    made = {0: _attempt("first", TARGET_MS, over)}
    attempts = runner._attempts(lambda i, t: made.setdefault(i, _attempt(f"retry{i}", t, retry)), TARGET_MS,
                                TOLERANCE, 1, lambda *a: None)  # fmt: skip
    assert len(attempts) == 2
    # target / corrected, not target / measured (1 / 1.56 would undershoot by a further 17%)
    assert attempts[1].search_target_ms == pytest.approx(TARGET_MS / 1.3)
    assert runner._judge(attempts[1], TARGET_MS, TOLERANCE).kind == tgt.HIT


def test_a_host_reading_corrects_each_session_by_its_own_ratio() -> None:
    r = HostReading((1.5, 1.2, 1.45), (1.5, 1.2, 1.4), 1.0)
    assert r.ratios == pytest.approx([1.5, 1.2, 1.4]) and r.ratio == pytest.approx(1.4)
    assert r.corrected == pytest.approx([1.0, 1.0, 1.45 / 1.4]) and r.corrected_ms == pytest.approx(1.0)
    assert r.unjudgeable == "" and r.to_dict()["ratio"] == pytest.approx(1.4)
    assert "faster" not in HostReading((0.5,), (0.5,), 1.0).unjudgeable  # 0.5x: beyond 1/1.75 too
    assert HostReading((0.5,), (0.5,), 1.0).unjudgeable.startswith("the calibration network read 0.50x")
    with pytest.raises(UsageError, match="one judged and one calibration figure per session"):
        HostReading((1.0,), (), 1.0)


def test_run_exits_3_when_the_host_was_too_contended_to_judge() -> None:
    from latkit.cli.deploy import EXIT_CONTENDED, _exit_on_verdict

    with pytest.raises(typer.Exit) as contended:
        _exit_on_verdict(SimpleNamespace(contended=True, met=False))
    with pytest.raises(typer.Exit) as over:
        _exit_on_verdict(SimpleNamespace(contended=False, met=False))
    assert (contended.value.exit_code, over.value.exit_code) == (EXIT_CONTENDED, 1) and EXIT_CONTENDED == 3
    _exit_on_verdict(SimpleNamespace(contended=False, met=True))  # within the budget: no exit


def test_a_contended_measurement_is_not_kept_as_the_stage_result(tmp_path: Path, exported) -> None:
    from latkit.pipeline.config import PipelineConfig

    config = PipelineConfig(device="cpu:onnxruntime", space="proxyless_mobile_w05", target=tgt.parse_target("1"),
                            resolution=32)  # fmt: skip
    pipeline = SimpleNamespace(state=runner._State(tmp_path, config), progress=lambda *a: None)
    contended = _measure(exported, _host(lambda n: 2.2, lambda n: 2.6))
    judged = _measure(exported, _host(lambda n: 0.9, lambda n: 1.0))
    for name, m in (("measure", contended), ("retry1.measure", judged)):
        got = runner._Pipeline.stage(pipeline, name, lambda m=m: m, MeasureResult.from_dict,
                                     final=lambda r: not r.contended)  # fmt: skip
        assert got is m
    assert pipeline.state.done("measure") is None  # a rerun measures again
    assert pipeline.state.done("retry1.measure")["host"]["corrected_ms"] == pytest.approx(0.9)


def test_a_host_faster_than_at_calibration_keeps_the_measured_figure(exported) -> None:
    # the calibration network reads 0.8x its stored figure: the calibration was the loaded state
    m = _measure(exported, _host(lambda n: 1.0, lambda n: 0.8 * STORED_MS))
    assert m.corrected_ms == pytest.approx(1.25) and m.judged_ms == pytest.approx(1.0)
    verdict = runner._judge(_attempt("first", TARGET_MS, m), TARGET_MS, TOLERANCE)
    assert verdict.kind == tgt.HIT and verdict.text.startswith("HIT: measured 1.000 ms")
    assert "read 0.80x its stored figure; corrected figure 1.250 ms; the lower, measured figure stands" in verdict.text


def test_the_measure_job_goes_to_a_fresh_interpreter_as_json_and_comes_back_whole(tmp_path: Path, exported) -> None:
    import json
    from dataclasses import replace

    from onnx import TensorProto, helper, save

    twin_file = tmp_path / "calibration 'net' #3.onnx"  # odd characters travel as they are
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])  # fmt: skip
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(twin_file))
    source = SimpleNamespace(key="calibration-net", input_shape=(1, 3, 32, 32), file=lambda fmt: twin_file)
    exported.measured = {"latency_ms": 0.5, "rel_ci": 0.01}  # type: ignore[typeddict-item]
    job = runner._MeasureJob("cpu:onnxruntime", 2, exported, ProtocolConfig.quick(seed=4), TARGET_MS, TOLERANCE,
                             [Reference(REF, REF_MS, Precision.INT8)], CalibrationNetwork(source, "#3 of 5", STORED_MS),
                             (0.0, 1.5))  # fmt: skip

    def through_json(j: runner._MeasureJob) -> runner._MeasureJob:
        return runner._MeasureJob.from_request(json.loads(json.dumps(j.to_request())))

    back = through_json(job)
    assert (back.uri, back.threads, back.exported, back.protocol, back.target_ms, back.tolerance, back.refs,
            back.waits_s) == (job.uri, job.threads, exported, job.protocol, TARGET_MS, TOLERANCE, job.refs, (0.0, 1.5))
    assert (back.twin.model.path, back.twin.model.input_shape, back.twin.name, back.twin.stored_ms) == (
        twin_file, (1, 3, 32, 32), "#3 of 5", STORED_MS)
    assert through_json(replace(job, twin=None, target_ms=None)).twin is None


class _HostCPU(ScriptedDevice):
    """The scripted device, reporting itself as a host CPU."""

    def info(self):
        from latkit.devices.base import DeviceInfo

        return DeviceInfo(self.uri, "cpu", "scripted", "0", 1)


@pytest.mark.parametrize(("sessions_ms", "taken", "kept"), [
    ([0.60, 0.34, 0.59, 0.35, 0.3], 4, 0.34),  # a slow first session, then the two lowest agree at the 4th
    ([0.40, 0.41, 0.1], 2, 0.40),  # two agreeing sessions are enough
    ([0.60, 0.34, 0.59, 0.45, 0.3], 4, 0.34),  # never agreeing: four sessions at most, the lowest kept
])  # fmt: skip
def test_a_file_on_the_host_cpu_is_measured_in_fresh_sessions_until_two_agree(exported, sessions_ms, taken,
                                                                               kept) -> None:  # fmt: skip
    from latkit.deploy.verify import measure_exported

    host = _HostCPU(lambda key, n: sessions_ms[n])
    entry = measure_exported(host, exported, ProtocolConfig.quick())
    assert entry["measurements_ms"] == pytest.approx(sessions_ms[:taken]) and entry["latency_ms"] == pytest.approx(kept)
    # a phone's benchmark_model starts a new process for every run: one measurement
    phone = ScriptedDevice(lambda key, n: sessions_ms[n])
    entry = measure_exported(phone, exported, ProtocolConfig.quick())
    assert entry["measurements_ms"] == pytest.approx(sessions_ms[:1])
