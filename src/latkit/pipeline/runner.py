"""One command from a device to a deployed, measured network: :func:`run_pipeline`.

Stages, each writing its outputs into the run folder and recorded in
``pipeline.json`` when done (a rerun skips finished stages; a killed profile
resumes from the LUT, which commits every operator as it is measured):

1. ``profile``: every operator of the space at the resolution, plus the
   classifier at the dataset's class count, into a LUT cached per device,
   space and resolution (``$LATKIT_LUT_DIR`` or ``~/.cache/latkit/luts``).
2. ``calibrate``: a few networks of the space measured end to end; the fit
   ``e2e = a * lut_sum + b * n_ops + c`` is stored in the LUT.
3. ``search``: ProxylessNAS gradient search for the target on the calibrated
   LUT (:func:`latkit.search.run.run_search`), writing ``arch.json``.
4. ``train``: the chosen network, built standalone, trained briefly on the data.
5. ``export``: ONNX + TFLite files with sidecars and parity checks; at int8 also
   the full-integer int8 TFLite and ONNX (QDQ) files, calibrated on images of the
   training set.
6. ``evaluate``: the held-out accuracy of the shipped files (at the run's
   precision) in their own runtimes, beside the float32 network's.
7. ``measure``: the shipped file of the device's format measured on the device,
   then timed again in fresh sessions beside the calibration network nearest
   its prediction (:func:`latkit.deploy.verify.check_host`): how far that network
   reads from its stored figure is the host's state now (network-level drift),
   and the file's figure divided by it is what the verdict rests on (the
   measured figure when lower: load only slows a run). A file
   over the budget on a host too contended to correct (see
   :class:`latkit.lut.drift.HostReading`) is re-read after bounded pauses and
   then reported CONTENDED: not a miss, no re-search, and the stage is not
   kept as done, so a rerun measures it again.

Precision: ``precision`` is the one the model ships at. The
LUT is profiled and calibrated at it, the search reads only its rows, training
stays float32, and the file measured and reported is the one at that precision;
the report shows the float32 and the shipped file's accuracy side by side.

If the judged latency is more than 10% over the target, stages 3-7 run once
more in ``retry1/`` with the search target scaled by ``target / judged`` (the
corrected figure, so a reading inflated by load does not cause an undershoot);
not when the target is above the space's slowest architecture (the largest
network is then the answer, reported as MET, not HIT).
The report (``report.md`` + PNG plots) states plainly whether the final
network hits the target; nothing is reported as a success that was not
measured as one.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, TypedDict

import numpy as np

from latkit.core.reprs import short_repr
from latkit.core.files import check_output_dir, read_json, write_json
from latkit._version import __version__
from latkit.devices.base import Device, ModelFormat, open_device
from latkit.devices.precision import Precision, check_precision, parse_precision
from latkit.deploy.layout import parse_layout
from latkit.core.errors import LatkitError, StoreError, UsageError
from latkit.lut.cache import lut_path_for
from latkit.lut.drift import CalibrationNetwork, Reference, reference_ops
from latkit.profiler.ops import OpSpec, measurable_by_key
from latkit.profiler.protocol import ProtocolConfig, Statistic
from latkit.profiler.spaces.base import Network, SearchSpace, get_space
from latkit.search import target as tgt
from latkit.search.target import within_budget
from latkit.deploy.app_metadata import TrainingData
from latkit.deploy.export import export_arch, export_steps, save_weights
from latkit.deploy.exported_file import ExportedFile
from latkit.deploy.verify import HOST_WAITS_S, check_host, measure_exported
from latkit.pipeline import report as rpt
from latkit.pipeline.config import REPRESENTATIVE_IMAGES, PipelineConfig
from latkit.pipeline.search_stage import (
    SEARCH_RESOLUTION,
    SearchInputs,
    adopt_supernet_weights,
    classifier_specs,
    deployed_network,
    latency_model,
    search_stage,
)
from latkit.pipeline.stages import (
    Attempt,
    AttemptSummary,
    CalibrationResult,
    EvaluateResult,
    ExportResult,
    MeasureResult,
    ProfileResult,
    SearchStageResult,
    TrainStageResult,
)

if TYPE_CHECKING:
    from latkit.lut.tables import TableLatencyModel
    from latkit.deploy.sidecar import ExportedFileDict, ExportReportDict, MeasuredLatency
    from latkit.search.supernet.data import SearchData

log = logging.getLogger(__name__)

SCHEMA = "latkit.pipeline"
SCHEMA_VERSION = 1
STATE_FILE = "pipeline.json"
SUMMARY_FILE = "summary.json"

ProgressFn = Callable[[str, int, int, str], None]  # (stage, done, total, message)


@dataclass
class PipelineResult:
    """What a run produced: the final attempt's files and whether it kept to the budget.

    ``met``: measured at most ``target * (1 + tolerance)``. ``hit``: met, and the
    target was inside the space's range (a real trade-off); ``warning`` when the
    network uses far less of the budget than it could.
    """

    out_dir: Path
    target_ms: float
    measured_ms: float
    predicted_ms: float
    hit: bool
    met: bool
    verdict: str
    arch_path: Path
    export: ExportReportDict  # the final attempt's export.json (see :func:`exported_file`)
    report_path: Path
    attempts: list[AttemptSummary] = field(default_factory=list)
    precision: Precision = Precision.FP32
    fp32_accuracy_pct: float | None = None
    deployed_accuracy_pct: float | None = None  # the shipped file (at ``precision``) in its runtime
    accuracy_drop_pct: float | None = None  # fp32 minus deployed, in points
    warning: str | None = None  # within budget but far under it (see latkit.search.target.judge)
    statistic: Statistic = Statistic.P5  # what every figure of the run is (a quantile of its samples)
    verdict_kind: str = tgt.OVER  # HIT, MET, OVER or CONTENDED (over the budget on a host too contended to judge)
    judged_ms: float | None = None  # measured_ms corrected for the host's state: what the verdict rests on
    host: Mapping[str, object] | None = None  # the host check (network-level drift and the decision)

    @property
    def contended(self) -> bool:
        """Whether the host was too contended to judge the network (neither a success nor a miss)."""
        return self.verdict_kind == tgt.CONTENDED

    def __repr__(self) -> str:
        return short_repr(self, 'verdict', 'measured_ms', 'target_ms', 'met', 'precision', 'out_dir')


# --------------------------------------------------------------------------- state


class _StageEntry(TypedDict):
    done: bool
    seconds: float
    outputs: Mapping[str, object]


class _StateDoc(TypedDict):
    """``pipeline.json``."""

    schema: str
    schema_version: int
    latkit_version: str
    config: dict[str, object]
    fingerprint: str
    stages: dict[str, _StageEntry]


class _Result(Protocol):
    """A stage's result: saved in the state as ``to_dict()``."""

    def to_dict(self) -> Mapping[str, object]: ...


R = TypeVar("R", bound=_Result)


class _State:
    """``pipeline.json``: settings, and per stage whether it finished and what it wrote."""

    def __init__(self, out: Path, config: PipelineConfig) -> None:
        self.path = out / STATE_FILE
        self.config = config
        self.data: _StateDoc = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "latkit_version": __version__,
            "config": config.to_dict(), "fingerprint": config.fingerprint(), "stages": {},
        }  # fmt: skip
        if self.path.is_file():
            try:
                old = read_json(self.path, "pipeline state")
            except StoreError as exc:
                raise StoreError(f"{exc}; delete it to start over") from exc
            if (not isinstance(old, dict) or old.get("schema") != SCHEMA
                    or old.get("schema_version") != SCHEMA_VERSION or not isinstance(old.get("stages", {}), dict)):
                raise StoreError(f"{self.path} is not a version-{SCHEMA_VERSION} pipeline state; use a new --out")
            if old.get("fingerprint") != self.data["fingerprint"]:
                raise UsageError(
                    f"{out} holds a run with other settings ({_diff(old.get('config', {}), config.to_dict())}); "
                    "use a new --out folder or the same settings to resume"
                )
            self.data["stages"] = old.get("stages", {})

    def done(self, name: str) -> Mapping[str, object] | None:
        entry = self.data["stages"].get(name)
        return entry["outputs"] if entry and entry.get("done") else None

    def finish(self, name: str, outputs: Mapping[str, object], seconds: float) -> None:
        self.data["stages"][name] = {"done": True, "seconds": round(seconds, 2), "outputs": outputs}
        write_json(self.path, self.data, "pipeline state", indent=1, default=str, nan_to_null=True)

    def seconds(self) -> dict[str, float]:
        return {k: v.get("seconds", 0.0) for k, v in self.data["stages"].items()}


def _diff(old: Mapping[str, object], new: Mapping[str, object]) -> str:
    new = json.loads(json.dumps(new))  # tuples as lists, as the saved state has them
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "schema"


# --------------------------------------------------------------------------- runner

Say = Callable[[int, int, str], None]  # (done, total, message) of one stage


class _Pipeline:
    def __init__(self, config: PipelineConfig, out: Path, lut: Path | None, on_progress: ProgressFn | None,
                 protocol: ProtocolConfig | None, search_options: Mapping[str, object],
                 device_options: Mapping[str, object]) -> None:  # fmt: skip
        self.cfg = config
        self.out = out
        self.space: SearchSpace = get_space(config.space)
        self.resolution = self.space.check_resolution(config.input_resolution())
        self.state = _State(out, config)  # refuses a folder of other settings before touching the device
        self.device: Device = open_device(config.device, threads=config.threads, **device_options)
        try:
            self.precision = check_precision(self.device, config.precision)
        except UsageError:
            self.device.close()
            raise
        if self.device.model_format not in (ModelFormat.ONNX, ModelFormat.TFLITE):
            raise UsageError(f"the pipeline deploys ONNX or TFLite files; {config.device} runs neither")
        if self.device.model_format.value not in config.formats:
            raise UsageError(f"{config.device} runs {self.device.model_format.value} files; add it to the formats")
        self.lut_path = Path(lut) if lut else lut_path_for(config.device, config.space, self.resolution,
                                                           statistic=config.statistic)  # fmt: skip
        self.progress = on_progress or (lambda stage, done, total, msg: None)
        self.protocol = protocol
        self.search_options = search_options
        self._data: SearchData | None = None
        self.target_ms: float = config.target.ms or 0.0  # a share is resolved after calibration
        self.target_text = f"{config.target.ms:g} ms" if config.target.ms else ""
        self.calibration: CalibrationResult | None = None  # the calibrate stage's result, once it is done

    # -- helpers

    def stage(self, name: str, fn: Callable[[], R], load: Callable[[Mapping[str, object]], R],
              start: Callable[[], tuple[int, str]] | None = None,
              final: Callable[[R], bool] = lambda result: True) -> R:  # fmt: skip
        """``fn()``, saved in the state as done when ``final(result)``; a stage the state has as done is loaded instead.

        ``start`` gives the stage's total and a note, announced (``done`` 0) before
        ``fn`` runs, so a display shows the stage and its total from its first moment
        (a stage without it announces itself). A result that is not final (a measurement
        the host was too contended to judge) is used by this run and taken again by a rerun.
        """
        done = self.state.done(name)
        if done is not None:
            self.progress(name, 1, 1, "already done")
            return load(done)
        if start is not None:
            total, note = start()
            self.progress(name, 0, total, note)
        t0 = time.perf_counter()
        result = fn()
        if final(result):
            self.state.finish(name, result.to_dict(), time.perf_counter() - t0)
        return result

    def data(self) -> SearchData:
        if self._data is None:
            from latkit.search.supernet.data import load_data

            self._data = load_data(self.cfg.data, self.resolution, seed=self.cfg.seed)
        return self._data

    def _protocol(self, preset: str) -> ProtocolConfig:
        """The run's protocol, else the quick one (``profile_quick``) or ``preset``; reporting the run's statistic."""
        from latkit.profiler.protocol import ProtocolConfig

        if self.protocol is not None:
            return self.cfg.statistic.apply(self.protocol)
        return self.cfg.statistic.apply(ProtocolConfig.preset("quick" if self.cfg.profile_quick else preset))

    def profile_config(self) -> ProtocolConfig:
        """Operators: fewer samples than a reference LUT, enough for the 10% goal on an e2e latency."""
        return self._protocol("pipeline")

    def measure_config(self) -> ProtocolConfig:
        """Whole networks (calibration, the exported file)."""
        return self._protocol("network")

    def network(self, native: object) -> Network:
        return deployed_network(self.space, native, self.resolution, self.data().n_classes)

    def latency_model(self) -> TableLatencyModel:
        """The calibrated per-slot latency tables of the LUT, with the dataset's classifier."""
        return latency_model(self.space, self.lut_path, self.cfg.device, self.resolution, self.precision,
                             self.data().n_classes)  # fmt: skip

    # -- stages

    def profile_specs(self) -> tuple[list[OpSpec], list[OpSpec]]:
        """The space's operators and the classifier's (the dataset's classes, not the space's)."""
        specs = list(self.space.operators(self.resolution))
        return specs, classifier_specs(self.space, self.resolution, self.data().n_classes)

    def profile_plan(self) -> tuple[int, str]:
        """The profile stage's total (operators to measure: those the LUT lacks, or the sample) and a note."""
        from latkit.lut.store import LUT

        specs, head = self.profile_specs()
        unique = measurable_by_key(specs + head)
        with LUT.open(self.lut_path, create=True) as lut:
            done = lut.done_keys(self.device.uri, precision=self.precision)  # as profile_ops reads it
        if self.cfg.profile_sample is None:
            todo = sum(k not in done for k in unique)
            return todo, f"{todo} of {len(unique)} operator(s) to measure ({len(unique) - todo} already in the LUT)"
        todo = sum(k not in done for k in measurable_by_key(head)) + self.cfg.profile_sample
        return todo, f"the classifier and {self.cfg.profile_sample} sampled operator(s); the rest predicted"

    def profile(self) -> ProfileResult:
        from latkit.lut.store import LUT, check_statistic
        from latkit.profiler.runner import profile_ops

        specs, head = self.profile_specs()
        total, _ = self.profile_plan()
        offset = 0  # the sampled operators count on from the classifier's

        def progress(d: int, t: int, key: str, m: object) -> None:
            self.progress("profile", offset + d, max(total, offset + t), key)

        predicted = predictor = None
        with LUT.open(self.lut_path, create=True) as lut:
            check_statistic(lut, self.cfg.device, self.cfg.statistic.quantile, precision=self.precision)
            rep = profile_ops(self.device, specs + head if self.cfg.profile_sample is None else head, lut,
                              self.profile_config(), on_progress=progress, precision=self.precision)  # fmt: skip
            failed, measured, reused = rep.failed, len(rep.measured), len(rep.skipped)
            if self.cfg.profile_sample is not None:
                from latkit.predictors.sampling import profile_sampled

                offset = len(rep.measured) + len(rep.failed)
                sampled = profile_sampled(self.device, specs, lut, self.profile_config(), self.cfg.profile_sample,
                                          rng=self.cfg.seed, on_progress=progress, precision=self.precision)  # fmt: skip
                failed, measured = {**failed, **sampled.failed}, measured + len(sampled.measured)
                predicted, predictor = sampled.n_predicted, sampled.predictor
        if failed:
            key, why = next(iter(failed.items()))
            raise StoreError(f"{len(failed)} operator(s) failed to profile on {self.cfg.device}, e.g. {key}: {why}")
        return ProfileResult(str(self.lut_path), self.precision, measured, reused, predicted, predictor)

    def calibrate_plan(self) -> tuple[int, str]:
        """The calibration's total as planned: every network twice (more if the device is not steady)."""
        from latkit.lut.calibrate import MAX_PASSES, PASSES

        n = self.cfg.calibration_networks
        return PASSES * n, f"{n} networks end to end, {PASSES} passes (up to {MAX_PASSES} if the device is not steady)"

    def calibrate(self) -> CalibrationResult:
        from latkit.lut.calibrate import calibrate_device, pick_calibration_archs
        from latkit.lut.store import LUT
        from latkit.lut.tables import TableLatencyModel

        with LUT.open(self.lut_path) as lut:
            lm = TableLatencyModel.from_lut(self.space, lut, self.cfg.device, self.resolution,
                                            precision=self.precision)  # fmt: skip
        rng = np.random.default_rng(self.cfg.seed + 17)
        archs = pick_calibration_archs(lm, self.cfg.calibration_networks - 1, rng)
        nets = [self.network(self.space.arch_to_native(a)) for a in archs]  # in the order of the result's archs
        with LUT.open(self.lut_path) as lut:
            cal = calibrate_device(
                lut, self.device, nets, self.measure_config(),
                on_progress=lambda d, t, name: self.progress("calibrate", d, t, name), precision=self.precision,
            )  # fmt: skip
            prov = lut.calibrations(self.cfg.device, precision=self.precision)[-1]["provenance"]
        natives = [self.space.arch_to_native(a) for a in archs]
        return CalibrationResult(cal, prov["lut_sums_ms"], prov["n_ops"], prov["e2e_ms"], natives)

    def attempt(self, index: int, search_target_ms: float) -> Attempt:
        """Search -> train -> export -> measure, in ``out`` (attempt 0) or ``out/retryN``."""
        name = "" if index == 0 else f"retry{index}"
        folder = self.out / name if name else self.out
        prefix = f"{name}." if name else ""
        say = lambda stage: (lambda d, t, msg: self.progress(prefix + stage, d, t, msg))  # noqa: E731
        search = self.stage(prefix + "search", lambda: search_stage(self.search_inputs(), folder / "search",
                                                                    search_target_ms, say("search")),
                            SearchStageResult.from_dict,
                            lambda: (self.cfg.search_epochs, f"{self.cfg.search_epochs} epoch(s), "
                                                             f"for {search_target_ms:.3f} ms"))  # fmt: skip
        train = self.stage(prefix + "train", lambda: self.train(folder / "train", search, say("train")),
                           TrainStageResult.from_dict,
                           lambda: (self.cfg.train_epochs, f"{self.cfg.train_epochs} epoch(s)"))  # fmt: skip
        export = self.stage(prefix + "export", lambda: self.export(folder / "export", search, train, say("export")),
                            ExportResult.from_dict)  # fmt: skip
        evaluate = self.stage(prefix + "evaluate", lambda: self.evaluate(export, train, say("evaluate")),
                              EvaluateResult.from_dict)  # fmt: skip
        measured = self.stage(prefix + "measure", lambda: self.measure(export, search, say("measure")),
                              MeasureResult.from_dict, final=lambda m: not m.contended)  # fmt: skip
        return Attempt(name or "first", search_target_ms, search, train, export, evaluate, measured)

    def search_inputs(self) -> SearchInputs:
        cfg = self.cfg
        return SearchInputs(
            space=self.space, lut_path=self.lut_path, device=cfg.device, resolution=self.resolution,
            precision=self.precision, data=self.data(), data_spec=cfg.data, target_ms=self.target_ms,
            target_text=self.target_text, tolerance=cfg.tolerance, epochs=cfg.search_epochs,
            warmup_epochs=cfg.warmup_epochs, max_steps_per_epoch=cfg.max_steps_per_epoch,
            eval_samples=cfg.eval_samples, seed=cfg.seed, options=self.search_options,
        )  # fmt: skip

    def train(self, folder: Path, search: SearchStageResult, say: Say) -> TrainStageResult:
        import torch

        from latkit.profiler.build import build_network
        from latkit.search.supernet.train import accuracy_pct, train_network

        torch.set_num_threads(self.cfg.threads)  # oversubscribed OpenMP threads are many times slower
        data = self.data()
        network = self.network(search.arch)
        module = build_network(network, seed=self.cfg.seed)
        space_network = self.space.network(self.space.arch_from_native(search.arch), self.resolution)
        init = adopt_supernet_weights(module, search, space_network)
        total = self.cfg.train_epochs
        losses: list[float] = []
        for epoch in range(total):
            losses += train_network(module, data, epochs=1, seed=self.cfg.seed + epoch,
                                    max_steps=self.cfg.max_steps_per_epoch)  # fmt: skip
            say(epoch + 1, total, f"epoch {epoch + 1}: loss {np.mean(losses[-10:]):.3f}")
        module.eval()
        with torch.no_grad():
            acc = accuracy_pct(module, data.x_valid, data.y_valid)
        folder.mkdir(parents=True, exist_ok=True)
        weights = save_weights(module, folder / "weights.safetensors", network,
                               {"dataset": self.cfg.data, "epochs": str(total), "accuracy_pct": f"{acc:.2f}"})  # fmt: skip
        return TrainStageResult(str(weights), acc, total, init, float(np.mean(losses[-10:])) if losses else None)

    def export(self, folder: Path, search: SearchStageResult, train: TrainStageResult, say: Say) -> ExportResult:
        steps = itertools.count()  # each message comes before its step: the k-th (from 0) means k steps done
        quantized = self.precision != Precision.FP32
        total = export_steps(self.cfg.formats, precision=self.precision)
        rep = export_arch(search.arch_path, train.weights, formats=self.cfg.formats, out_dir=folder,
                          precision=self.precision, layout=self.cfg.layout,
                          representative=self.representative() if quantized else None,
                          training_data=TrainingData.from_provenance(self.cfg.data, self.data().provenance),
                          on_progress=lambda msg: say(min(next(steps), total), total, msg))  # fmt: skip
        say(total, total, f"{len(rep.files)} file(s) written")
        return ExportResult(rep.to_dict())

    def representative(self) -> np.ndarray:
        """Training images the int8 activation ranges are calibrated on (a seeded draw)."""
        x = self.data().x_train
        pick = np.random.default_rng(self.cfg.seed + 29).permutation(len(x))[:REPRESENTATIVE_IMAGES]
        return x[np.sort(pick)].numpy()

    def evaluate(self, export: ExportResult, train: TrainStageResult, say: Say) -> EvaluateResult:
        """Held-out accuracy of the files at the shipped precision, run in their own runtimes."""
        from latkit.deploy.evaluate import file_accuracy_pct

        data = self.data()
        shipped = [f for f in export.files if f["variant"] == self.precision.value]
        files = {}
        for i, f in enumerate(shipped):
            say(i, len(shipped), f"{Path(f['path']).name} on {len(data.y_valid)} held-out images")
            files[f["format"]] = file_accuracy_pct(Path(f["path"]), f["format"], parse_layout(f["layout"]),
                                                   data.x_valid, data.y_valid)  # fmt: skip
        say(len(shipped), len(shipped), ", ".join(f"{k} {v:.2f}%" for k, v in files.items()))
        format = self.device.model_format.value
        deployed = files.get(format, next(iter(files.values()), None))
        fp32 = train.accuracy_pct
        return EvaluateResult(self.precision, fp32, files, format, deployed,
                              None if deployed is None else fp32 - deployed, len(data.y_valid))  # fmt: skip

    def measure(self, export: ExportResult, search: SearchStageResult, say: Say) -> MeasureResult:
        """The shipped file on the device, then again beside a calibration network (:func:`check_host`)."""
        from latkit.lut.store import LUT

        f = export.file(self.device.model_format.value, self.precision)
        with LUT.open(self.lut_path) as lut:
            keys = [layer.spec.key for layer in self.network(search.arch).layers if layer.spec.measurable]
            refs = reference_ops(lut, self.cfg.device, keys, precision=self.precision)
        twin = self.calibration_twin(search.predicted_ms)
        say(0, 1, f"measuring {f.path.name} on {self.cfg.device} (and {len(refs)} reference operators"
                  + (f", then beside calibration network {twin.name})" if twin else ")"))  # fmt: skip
        job = _MeasureJob(self.cfg.device, self.cfg.threads, f, self.measure_config(), self.target_ms,
                          self.cfg.tolerance, refs, twin)  # fmt: skip
        # a host CPU device runs in a fresh interpreter: after this process trained
        # networks with torch, the same ONNX file measures slower in it than in a
        # fresh one, enough to fake a miss of the target
        entry, host = _in_fresh_process(job) if self.device.info().kind == "cpu" else job.run(self.device)
        drift = entry.get("device_drift")
        say(1, 1, f"{entry['latency_ms']:.3f} ms" + (f" (device drift {drift['ratio']:.2f}x)" if drift else "")
                  + (f"; {host_sentence(host)}" if host else ""))  # fmt: skip
        if f.precision != Precision.FP32:
            self.check_precision(export, f, entry["latency_ms"], say)
        return MeasureResult(str(f.path), f.precision, entry["latency_ms"], entry["rel_ci"], entry["device"], drift,
                             host)  # fmt: skip

    def calibration_twin(self, predicted_ms: float) -> CalibrationNetwork | None:
        """The calibration network whose stored figure is nearest ``predicted_ms`` (None: none is known)."""
        from latkit.profiler.export import BuiltModel

        calib = self.calibration
        if calib is None or not calib.archs or len(calib.archs) != len(calib.e2e_ms):
            return None  # a run folder from before the calibration kept its networks
        i = min(range(len(calib.e2e_ms)), key=lambda j: abs(np.log(calib.e2e_ms[j] / predicted_ms)))
        model = BuiltModel(self.network(calib.archs[i]), precision=self.precision)
        return CalibrationNetwork(model, f"#{i + 1} of {len(calib.e2e_ms)}", calib.e2e_ms[i])

    def check_precision(self, export: ExportResult, f: ExportedFile, latency_ms: float, say: Say) -> None:
        """Measure the float32 file beside the shipped quantized one; record in its sidecar whether the precision paid."""
        from latkit.deploy.checks import precision_check

        fp32 = export.file(f.format, Precision.FP32)
        say(1, 1, f"measuring {fp32.path.name} to compare")
        job = _MeasureJob(self.cfg.device, self.cfg.threads, fp32, self.measure_config(), None, self.cfg.tolerance, [])
        base = (_in_fresh_process(job) if self.device.info().kind == "cpu" else job.run(self.device))[0]
        check = precision_check(f.precision, latency_ms, base["latency_ms"])
        meta = f.meta()
        meta["precision_check"] = check  # type: ignore[typeddict-unknown-key]
        write_json(f.sidecar, meta, "model sidecar", indent=1, nan_to_null=True)
        say(1, 1, check["text"])


@dataclass(frozen=True)
class _MeasureJob:
    """What the measure stage times: the file (with reference operators), then the host check beside ``twin``."""

    uri: str
    threads: int
    exported: ExportedFile
    protocol: ProtocolConfig
    target_ms: float | None
    tolerance: float
    refs: list[Reference]
    twin: CalibrationNetwork | None = None
    waits_s: tuple[float, ...] = HOST_WAITS_S  # pauses of the host check while the host is too contended

    def run(self, device: Device) -> tuple[MeasuredLatency, dict[str, object] | None]:
        """The sidecar's ``measured_latency`` and the host check's record (None without a twin).

        With a twin the host check is the confirmation of a miss, so the
        operator-level confirmation of :func:`measure_exported` is skipped.
        """
        entry = measure_exported(device, self.exported, self.protocol,
                                 confirm_target_ms=None if self.twin else self.target_ms,
                                 tolerance=self.tolerance, references=self.refs, per_layer=True)  # fmt: skip
        if self.twin is None:
            return entry, None
        budget = self.target_ms if not within_budget(entry["latency_ms"], self.target_ms or 0.0,
                                                     self.tolerance) else None  # fmt: skip
        check = check_host(device, self.exported, self.twin, self.protocol, budget, self.tolerance, self.waits_s)
        # uncorrected, the lowest of the file's figures is the one load disturbed least
        lowest = min([entry["latency_ms"], *(ms for r in check.readings for ms in r.network_ms)])
        over = self.target_ms is not None and not within_budget(lowest, self.target_ms, self.tolerance)
        return entry, {**check.to_dict(), "lowest_ms": lowest, "over_budget": over}

    def to_request(self) -> dict[str, Any]:
        """The job as JSON for a fresh interpreter; the twin goes as its model file (exported here if need be)."""
        twin = None if self.twin is None else {"file": str(self.twin.model.file(self.exported.format)),
                                                "name": self.twin.name, "stored_ms": self.twin.stored_ms}  # fmt: skip
        return {"uri": self.uri, "threads": self.threads, "exported": self.exported.to_dict(),
                "protocol": self.protocol.to_dict(), "target_ms": self.target_ms, "tolerance": self.tolerance,
                "refs": [{"spec": r.spec.to_dict(), "lut_ms": r.lut_ms, "precision": r.precision.value}
                         for r in self.refs],
                "twin": twin, "waits_s": list(self.waits_s)}  # fmt: skip

    @classmethod
    def from_request(cls, d: dict[str, Any]) -> _MeasureJob:
        """The job :meth:`to_request` described."""
        from latkit.profiler.model_file import ModelFile

        t = d["twin"]
        twin = None if t is None else CalibrationNetwork(ModelFile(t["file"]), t["name"], t["stored_ms"])
        refs = [Reference(OpSpec.from_dict(r["spec"]), r["lut_ms"], parse_precision(r["precision"])) for r in d["refs"]]
        return cls(d["uri"], d["threads"], ExportedFile.from_dict(d["exported"]), ProtocolConfig(**d["protocol"]),
                   d["target_ms"], d["tolerance"], refs, twin, tuple(d["waits_s"]))  # fmt: skip


_MEASURE_CHILD = "from latkit.pipeline.runner import serve_measure_job; serve_measure_job()"


def serve_measure_job() -> None:
    """The fresh interpreter's side of :func:`_in_fresh_process`."""
    from latkit.core.fresh import serve

    serve(_run_request)


def _run_request(request: dict[str, Any]) -> tuple[MeasuredLatency, dict[str, object] | None]:
    job = _MeasureJob.from_request(request)
    device = open_device(job.uri, threads=job.threads)
    try:
        return job.run(device)
    finally:
        device.close()


def _in_fresh_process(job: _MeasureJob) -> tuple[MeasuredLatency, dict[str, object] | None]:
    """``job`` on its own device in a newly started interpreter (nothing of this one's state)."""
    from latkit.core.fresh import in_fresh_interpreter

    entry, host = in_fresh_interpreter(_MEASURE_CHILD, job.to_request(), what=f"measuring {job.exported.path.name}")
    return entry, host


def host_sentence(host: Mapping[str, object]) -> str:
    """One line on a host check: the network-level drift and the corrected figure, or why there is none."""
    head = f"calibration network {host['calibration_network']} read {float(host['ratio']):.2f}x its stored figure"  # type: ignore[arg-type]
    if host.get("judged"):
        return f"{head}; corrected figure {float(host['corrected_ms']):.3f} ms"  # type: ignore[arg-type]
    return f"{head}; host too contended to correct ({host.get('unjudgeable')})"


# --------------------------------------------------------------------------- entry


def run_pipeline(
    config: PipelineConfig,
    out_dir: str | Path,
    *,
    lut: str | Path | None = None,
    on_progress: ProgressFn | None = None,
    protocol: ProtocolConfig | None = None,
    search_options: Mapping[str, object] | None = None,
    device_options: Mapping[str, object] | None = None,
) -> PipelineResult:
    """Profile, calibrate, search, train, export and measure; write ``report.md``.

    Args:
        config: the run's settings: device, space, target (ms, or a share of the
            slowest network resolved after calibration), data, precision...
        out_dir: run folder (created; a rerun with the same settings resumes).
        lut: LUT file (default the per-device cache, see :func:`lut_path_for`).
        on_progress: called as ``(stage, done, total, message)`` throughout.
        protocol: measurement protocol for every measurement of the run (default: a
            medium one for profiling, a stricter one for whole networks).
        search_options: extra :class:`~latkit.search.supernet.proxyless_grad.ProxylessConfig` fields.
        device_options: keyword options for :func:`~latkit.devices.base.open_device`
            (e.g. ``key_path`` of an ADB device).

    Returns:
        The result; ``hit`` is true when the exported model, measured on the
        device, is within the budget (at most ``target_ms * (1 + tolerance)``)
        and the target was inside the space's range; ``met`` when it is within
        the budget at all (the command exits 0 when ``met``); ``contended`` when
        it read over the budget on a host too contended to judge it (exit 3).
        The budget is judged on ``judged_ms``: the measured figure corrected for
        the host's state.

    Raises:
        UsageError: bad settings, or ``out_dir`` holds a run with other settings.
        LatkitError: a stage failed (device, export, unreachable target...).
    """
    out = check_output_dir(out_dir, "--out folder")
    p = _Pipeline(config, out, Path(lut) if lut else None, on_progress, protocol, search_options or {},
                  device_options or {})
    try:
        p.stage("profile", p.profile, ProfileResult.from_dict, p.profile_plan)
        calib = p.calibration = p.stage("calibrate", p.calibrate, CalibrationResult.from_dict, p.calibrate_plan)
        _resolve_target(p, config.target)
        attempts = _attempts(p.attempt, p.target_ms, config.tolerance, config.max_retries, p.progress)
        device_state = _device_state(p.device)  # thermal state for the report, before the device closes
    finally:
        p.device.close()
    return _finish(p, calib, attempts, device_state)


def _finish(p: _Pipeline, calib: CalibrationResult, attempts: list[Attempt],
            device_state: Mapping[str, object] | None) -> PipelineResult:  # fmt: skip
    """Write the summary and the report; the best attempt as the result."""
    best = attempts[tgt.best_attempt([a.judged_ms for a in attempts], p.target_ms, p.cfg.tolerance)]
    judged = _judge(best, p.target_ms, p.cfg.tolerance)
    ev = best.evaluate
    summary = _summary(p, calib, attempts, best, device_state)
    report_path = rpt.write_report(p.out, summary)
    write_json(p.out / SUMMARY_FILE, summary, "run summary", indent=1, default=str, nan_to_null=True)
    p.progress("report", 1, 1, str(report_path))
    return PipelineResult(
        out_dir=p.out, target_ms=p.target_ms, measured_ms=best.measured_ms, predicted_ms=best.predicted_ms,
        hit=judged.kind == tgt.HIT, met=judged.ok, warning=judged.warning, verdict=summary["verdict"],
        verdict_kind=judged.kind, judged_ms=best.judged_ms, host=best.host, statistic=p.cfg.statistic,
        arch_path=Path(best.search.arch_path), export=best.export.to_dict(), report_path=report_path,
        attempts=[a.brief() for a in attempts], precision=p.cfg.precision,
        fp32_accuracy_pct=ev.fp32_accuracy_pct if ev else best.train.accuracy_pct,
        deployed_accuracy_pct=ev.deployed_accuracy_pct if ev else None,
        accuracy_drop_pct=ev.accuracy_drop_pct if ev else None,
    )  # fmt: skip


def _resolve_target(p: _Pipeline, target: tgt.Target) -> None:
    """The target in ms: a share of the slowest network is resolved on the calibrated per-slot latency tables."""
    if target.relative:
        p.target_ms, p.target_text = tgt.resolve_on_model(target, p.latency_model())
    else:
        p.target_text = target.describe()
    p.progress("target", 1, 1, p.target_text)


def _judge(attempt: Attempt, target_ms: float, tolerance: float) -> tgt.Verdict:
    """The verdict on the attempt's judged figure (corrected for the host's state when the host check could).

    A file over the budget on a host too contended to judge it is CONTENDED; with a
    host check, the operator-level drift no longer qualifies an OVER (the correction
    has taken the host's state into account).
    """
    host = attempt.host
    if attempt.contended:
        return tgt.contended(attempt.measured_ms, target_ms, str(host.get("unjudgeable")))  # type: ignore[union-attr]
    corrected = attempt.corrected
    verdict = tgt.judge(attempt.judged_ms, target_ms, tolerance, None if host else attempt.drift, attempt.range_ms,
                        figure="corrected" if corrected else "measured")  # fmt: skip
    if not host:
        return verdict
    if corrected:
        note = (f"Judged on the figure corrected for the host's state: measured {attempt.measured_ms:.3f} ms while "
                f"{host_sentence(host)}.")  # fmt: skip
    elif host.get("judged"):
        note = f"Host check: {host_sentence(host)}; the lower, measured figure stands (load only slows a run)."
    else:
        note = f"Not corrected for the host's state: {host_sentence(host)}."
    return replace(verdict, text=f"{verdict.text} {note}")


def _attempts(run_attempt: Callable[[int, float], Attempt], target_ms: float, tolerance: float, max_retries: int,
              progress: ProgressFn) -> list[Attempt]:  # fmt: skip
    """The first attempt and, when it is over the budget, one re-search with the target scaled by target / measured.

    A network under the budget is kept, however far under (the verdict warns about
    a large undershoot): a re-search there would spend minutes to use more budget.
    """
    attempts = [run_attempt(0, target_ms)]
    for i in range(1, max_retries + 1):
        last = attempts[-1]
        judged = _judge(last, target_ms, tolerance)
        if judged.ok:
            break
        if judged.kind == tgt.CONTENDED or (last.host is None and last.drift and not last.drift["steady"]):
            # the host is not in the state it was profiled in (and no calibration network
            # corrected for it): a search scaled by this figure would chase the machine's
            # state, not correct the prediction
            log.warning("%s Not searching again.", judged.text)
            break
        # scaled from the corrected figure: a reading inflated by load would undershoot
        scaled = last.search_target_ms * target_ms / last.judged_ms
        log.warning("%s Searching again with target %.3f ms", judged.text, scaled)
        progress("retry", 0, 1, f"over budget; re-searching for {scaled:.3f} ms")
        attempts.append(run_attempt(i, scaled))
    return attempts


def _summary(p: _Pipeline, calib: CalibrationResult, attempts: list[Attempt], best: Attempt,
             device_state: Mapping[str, object] | None) -> rpt.RunSummary:  # fmt: skip
    from latkit.lut.calibration import describe_fit
    from latkit.lut.estimate import estimate
    from latkit.lut.store import LUT

    cfg = p.cfg
    points: list[rpt.Point] = [
        {"predicted_ms": calib.calibration.apply(s, n), "measured_ms": e, "kind": "calibration", "label": ""}
        for s, n, e in zip(calib.lut_sums_ms, calib.n_ops, calib.e2e_ms)
    ]
    points += [{"predicted_ms": a.predicted_ms, "measured_ms": a.measured_ms, "kind": "final", "label": a.name}
               for a in attempts]  # fmt: skip
    with LUT.open(p.lut_path) as lut:
        est = estimate(lut, p.network(best.search.arch), device=cfg.device, precision=p.precision)
    judged = _judge(best, p.target_ms, cfg.tolerance)
    verdict = judged.text
    if len(attempts) > 1 and best is not attempts[-1]:
        verdict += " (the first attempt fitted the budget better than the retry and is the one reported)"
    verdict += f" Predicted by the calibration: {describe_fit(calib.calibration.to_dict())}."
    paid = read_json(best.export.file(p.device.model_format.value, p.precision.value).sidecar,
                     "model sidecar").get("precision_check")  # fmt: skip
    if paid and not paid["paid"]:
        verdict += f" Warning: {paid['text']}."
    search = best.search
    return {
        "device": cfg.device, "space": cfg.space, "resolution": p.resolution, "target_ms": p.target_ms,
        "supernet_resolution": min(p.resolution, SEARCH_RESOLUTION),  # the search's own training images
        "target": p.target_text, "tolerance": cfg.tolerance, "budget_used": judged.budget_used,
        "verdict_kind": judged.kind, "warning": judged.warning, "judged_ms": best.judged_ms, "host_check": best.host,
        "data": f"{cfg.data} ({p.data().n_classes} classes)", "latkit_version": __version__,
        "verdict": verdict, "attempts": [a.to_dict() for a in attempts], "arch": search.arch,
        "precision": cfg.precision.value, "layout": cfg.layout.value, "statistic": cfg.statistic.value,
        "accuracy": best.train.accuracy_pct, "evaluate": None if best.evaluate is None else best.evaluate.to_dict(),
        "files": [_file_row(f) for f in best.export.files], "calibration": calib.calibration.to_dict(),
        "layers": [asdict(layer) for layer in est.layers], "points": points,
        "history": search.history, "samples": search.samples,
        "chosen": {"latency_ms": search.predicted_ms, "accuracy": search.accuracy}
        if search.accuracy is not None else None,
        "stages": p.state.seconds(),
        **_report_extras(p, calib, best),
        "device_state": device_state,
    }  # fmt: skip


def _file_row(f: ExportedFileDict) -> rpt.FileRow:
    """An exported file as the report lists it: size, parity, measured latency."""
    measured = read_json(f["sidecar"], "model sidecar").get("measured_latency") or {}
    return {"file": Path(f["path"]).name, "format": f["format"], "variant": f["variant"],
            "top1_agreement": f["parity"].get("top1_agreement"), "parity_passed": f["parity"].get("passed"),
            "size_bytes": Path(f["path"]).stat().st_size, "max_rel_err": f["parity"]["max_rel_err"],
            "measured_ms": measured.get("latency_ms")}  # fmt: skip


def _device_state(device: Device) -> Mapping[str, object] | None:
    """Clocks and temperatures of a device that reports them (phones), else None."""
    state = getattr(device, "state", None)
    if state is None:
        return None
    try:
        return state()
    except LatkitError as exc:  # a report line is not worth failing a finished run
        log.warning("could not read the device state for the report: %s", exc)
        return None


def _report_extras(p: _Pipeline, calib: CalibrationResult, best: Attempt) -> rpt.RunSummary:
    """What the report compares and cites: baseline, sizes, statistics, command."""
    from latkit.lut.store import LUT
    from latkit.lut.tables import TableLatencyModel
    from latkit.pipeline import pareto

    with LUT.open(p.lut_path) as lut:  # the slowest network by LUT sum: the one calibration measured
        slowest = TableLatencyModel.from_lut(p.space, lut, p.cfg.device, p.resolution,
                                             precision=p.precision).max_latency()[1]  # fmt: skip
    slowest_ms = p.latency_model().latency_ms(slowest)
    native = p.space.arch_to_native(slowest)
    deployed = best.export.file(p.device.model_format.value, p.precision)
    sidecar = read_json(deployed.sidecar, "model sidecar")
    return {
        "best_attempt": best.name,
        "baseline": pareto.baseline_entry(p.cfg.space, native, p.network(native), calib.lut_sums_ms,
                                          calib.e2e_ms, slowest_ms),  # fmt: skip
        "chosen_size": pareto.network_size(p.network(best.search.arch)),
        "measurement": sidecar.get("measured_latency"),
        "layer_profile": sidecar.get("layer_profile"),
        "command": rpt.reproduce_command(p.cfg.to_dict(), p.out, p.lut_path),
    }


__all__ = ["PipelineResult", "run_pipeline"]
