"""Session artefacts that many tests read: built once per test session, shared by the xdist workers.

Profiling a space, calibrating it and running the whole pipeline each take from
seconds to minutes, and several test files asserted on the same ones, each built
anew. Here each is built once:

- :func:`profiled_lut`: ``proxyless_mobile_w05`` at 32x32 profiled on
  ``cpu:onnxruntime`` with the quick protocol (what ``latkit profile --quick``
  makes: the space's 70 operators and the 10-class classifier);
- :func:`pipeline_run`: one finished ``latkit run`` smoke run on a copy of it
  (:data:`RUN_ARGV`), with a target inside the space's range;
- :func:`int8_run`: the same smoke run at int8 on its own int8 LUT
  (:data:`INT8_ARGV`), with a target above the space (the largest network is the
  answer on any machine).

The first worker that needs an artefact builds it under a file lock in the folder
the workers share (:func:`_built_once`); the others wait for it and read the same
files, so a parallel run pays for each artefact once. A run's in-memory result
crosses to the other workers as JSON (:func:`_save_run`, :func:`_load_run`).

A test that only reads an artefact takes it as it is; a test that writes (a
profile, a calibration, a resumed run) works on a copy made with :func:`copy_lut`
or :func:`copy_run`, so no test sees another's writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from latkit.search.target import parse_target

SPACE = "proxyless_mobile_w05"
RESOLUTION = 32
DEVICE = "cpu:onnxruntime"
CLASSES = 10  # the embedded digits the pipeline trains on

# the shared run as `latkit run` arguments: a run folder made by run_pipeline(**RUN_SETTINGS) is resumed
# by `latkit run *RUN_ARGV` (the same settings, so the same fingerprint)
RUN_ARGV = ("--resolution", str(RESOLUTION), "--quick", "--search-epochs", "2", "--train-epochs", "1",
            "--max-steps", "2", "--speedup", "1.5x", "--tolerance", "0.2")  # fmt: skip
RUN_SETTINGS = dict(resolution=RESOLUTION, profile_quick=True, search_epochs=2, warmup_epochs=1, train_epochs=1,
                    max_steps_per_epoch=2, tolerance=0.2)  # fmt: skip
INT8_ARGV = ("--resolution", str(RESOLUTION), "--quick", "--search-epochs", "2", "--train-epochs", "1",
             "--max-steps", "2", "--precision", "int8", "--target-ms", "1000")  # fmt: skip
INT8_SETTINGS = dict(resolution=RESOLUTION, profile_quick=True, search_epochs=2, warmup_epochs=1, train_epochs=1,
                     max_steps_per_epoch=2, precision="int8")  # fmt: skip
INT8_TARGET_MS = 1000.0  # far above the space: MET by its largest network on any machine
# 1/1.5 of the slowest calibrated network: inside the space's range (the fastest is about half the slowest)
RUN_TARGET = parse_target(speedup="1.5x")


def copy_lut(src: Path, dst: Path) -> Path:
    """A consistent copy of the SQLite LUT ``src`` at ``dst`` (through SQLite's backup, WAL included)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


@pytest.fixture(scope="session")
def profiled_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The space's 70 operators and its 10-class classifier at 32x32 on cpu:onnxruntime, quick protocol
    (read it; copy to write)."""
    from latkit.devices.base import open_device
    from latkit.lut.store import LUT
    from latkit.profiler.protocol import Preset, ProtocolConfig
    from latkit.profiler.runner import profile_ops
    from latkit.profiler.spaces import get_space
    from latkit.profiler.spaces.base import head_specs

    def build(folder: Path) -> None:
        space = get_space(SPACE)
        specs = list(space.operators(RESOLUTION)) + head_specs(space, RESOLUTION, CLASSES)
        device = open_device(DEVICE, threads=1)
        try:
            with LUT.open(folder / "cpu.db", create=True) as lut:  # as `latkit profile --quick` does it
                report = profile_ops(device, specs, lut, ProtocolConfig.preset(Preset.QUICK))
        finally:
            device.close()
        assert not report.failed and len(report.measured) == 71, report.failed

    return _built_once(tmp_path_factory, "artefact-lut", build) / "cpu.db"


@dataclass(frozen=True)
class PipelineRun:
    """The shared run: its result, folder, LUT, and the progress it reported."""

    result: object  # latkit.pipeline.runner.PipelineResult
    out: Path
    lut: Path
    stages: tuple[str, ...]
    counts: dict[str, tuple[int, int]]  # each stage's last (done, total)
    warnings: tuple[str, ...] = ()  # what the run logged at WARNING and above
    events: tuple[tuple[str, int, int, str], ...] = ()  # every (stage, done, total, message) reported


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, profiled_lut: Path) -> PipelineRun:
    """One finished smoke run (:data:`RUN_SETTINGS`, target :data:`RUN_TARGET`) on a copy of the profiled LUT."""
    from latkit.api import run as run_pipeline  # the public door parses the text settings

    def build(tmp: Path) -> None:
        lut = copy_lut(profiled_lut, tmp / "lut.db")
        stages: list[str] = []
        counts: dict[str, tuple[int, int]] = {}
        events: list[tuple[str, int, int, str]] = []

        def progress(stage: str, done: int, total: int, message: str) -> None:
            stages.append(stage)
            counts[stage] = (done, total)
            events.append((stage, done, total, message))

        result = run_pipeline(DEVICE, SPACE, RUN_TARGET, tmp / "run", lut=lut, on_progress=progress, **RUN_SETTINGS)
        _save_run(PipelineRun(result, tmp / "run", lut, tuple(stages), counts, events=tuple(events)), tmp)

    return _load_run(_built_once(tmp_path_factory, "artefact-run", build))


@pytest.fixture(scope="session")
def int8_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """One finished int8 smoke run (:data:`INT8_SETTINGS`, 1000 ms) on a new LUT; ``stages`` are those reported.

    ``warnings`` holds what it logged (the warning that the target is above the space).
    """
    from latkit.api import run as run_pipeline  # the public door parses the text settings

    def build(tmp: Path) -> None:
        stages: list[str] = []
        warnings = _Warnings()
        logging.getLogger("latkit").addHandler(warnings)
        try:
            result = run_pipeline(DEVICE, SPACE, INT8_TARGET_MS, tmp / "run", lut=tmp / "cpu.db",
                                  on_progress=lambda s, d, t, m: stages.append(s), **INT8_SETTINGS)  # fmt: skip
        finally:
            logging.getLogger("latkit").removeHandler(warnings)
        _save_run(PipelineRun(result, tmp / "run", tmp / "cpu.db", tuple(stages), {}, tuple(warnings.lines)), tmp)

    return _load_run(_built_once(tmp_path_factory, "artefact-int8", build))


class _Warnings(logging.Handler):
    """The warnings logged while a run is made."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` that ``build`` fills, built by the first worker that asks, under a file lock.

    Under xdist every worker's base temp folder sits in one folder for the session;
    the artefact lives there, so the workers share it. A build that failed leaves no
    ``.built`` mark and the next worker to ask tries again (and fails its own tests).
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / name
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def _save_run(run: PipelineRun, folder: Path) -> None:
    """``run`` as ``run.json`` in ``folder``, for the workers that did not build it."""
    doc = dataclasses.asdict(run)
    doc["result"] = dataclasses.asdict(run.result)  # asdict leaves fields typed ``object`` as they are
    (folder / "run.json").write_text(json.dumps(doc, default=str))


def _load_run(folder: Path) -> PipelineRun:
    """The :class:`PipelineRun` that :func:`_save_run` wrote, its paths, precision and statistic typed again."""
    from latkit.devices.precision import Precision
    from latkit.pipeline.runner import PipelineResult
    from latkit.profiler.protocol import Statistic

    doc = json.loads((folder / "run.json").read_text())
    res = doc["result"]
    for key in ("out_dir", "arch_path", "report_path"):
        res[key] = Path(res[key])
    res["precision"], res["statistic"] = Precision(res["precision"]), Statistic(res["statistic"])
    counts = {stage: (done, total) for stage, (done, total) in doc["counts"].items()}
    events = tuple((stage, done, total, message) for stage, done, total, message in doc["events"])
    return PipelineRun(PipelineResult(**res), Path(doc["out"]), Path(doc["lut"]), tuple(doc["stages"]), counts,
                       tuple(doc["warnings"]), events)  # fmt: skip


def copy_run(run: PipelineRun, dst: Path) -> tuple[Path, Path]:
    """(run folder, LUT) copied under ``dst``: a resume there finds every stage done and writes only there.

    The copied ``pipeline.json`` still names the shared run's files (arch, weights,
    exports), which a resume only reads.
    """
    out = dst / "run"
    shutil.copytree(run.out, out)
    return out, copy_lut(run.lut, dst / "lut.db")
