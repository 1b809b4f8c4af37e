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
7. ``measure``: the shipped file of the device's format measured on the device.

Precision: ``precision`` (fp32, fp16, int8) is the one the model ships at. The
LUT is profiled and calibrated at it, the search reads only its rows, training
stays float32, and the file measured and reported is the one at that precision;
the report shows the float32 and the shipped file's accuracy side by side.

If the measured latency is more than 10% off the target, stages 3-6 run once
more in ``retry1/`` with the search target scaled by ``target / measured``;
not when the target is above the space's slowest architecture (the largest
network is then the answer, reported as MET, not HIT).
The report (``report.md`` + PNG plots) states plainly whether the final
network hits the target; nothing is reported as a success that was not
measured as one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latkit._files import check_output_dir, read_json, write_json
from latkit._version import __version__
from latkit.devices.base import Device, ModelFormat, open_device
from latkit.devices.precision import Precision, check_precision, parse_precision
from latkit.errors import LatkitError, StoreError, UsageError
from latkit.lut.drift import Reference, reference_ops
from latkit.profiler.spaces.base import Network, SearchSpace, get_space
from latkit.search.pipeline import report as rpt
from latkit.search import target as tgt
from latkit.search.deploy.export import ExportedFile, export_arch, save_weights, with_classes
from latkit.search.pipeline.search_stage import SEARCH_RESOLUTION, adopt_supernet_weights, classifier_specs, search_stage
from latkit.search.deploy.verify import measure_exported

log = logging.getLogger(__name__)

SCHEMA = "latkit.pipeline"
SCHEMA_VERSION = 1
STATE_FILE = "pipeline.json"
SUMMARY_FILE = "summary.json"
REPRESENTATIVE_IMAGES = 300  # training images the int8 activation ranges are calibrated on
CPU_RESOLUTION = 64  # cpu devices: a reduced input keeps the default run within minutes
MAX_RETRIES = 1

ProgressFn = Callable[[str, int, int, str], None]  # (stage, done, total, message)


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of a run (stored in ``pipeline.json``; a rerun must match them).

    Attributes:
        device: device URI (``cpu:onnxruntime``, ``cpu:litert``, ``adb:...``).
        space: search space name.
        target_ms: latency target on the device (None when ``target_share`` is given).
        target_share: the target as a share of the slowest network's calibrated
            latency on the device (``0.6`` for ``--target-ms 60%``), resolved to ms
            after calibration.
        tolerance: how far over the target a measured network still counts as
            within the budget (a fraction; see :mod:`latkit.search.target`).
        data: dataset (``digits``, ``cifar10:PATH``, ``folder:PATH``).
        resolution: input resolution (None: 64 on cpu devices, else the space's default).
        threads: device threads.
        search_epochs: epochs of the gradient search (warm-up included).
        warmup_epochs: weight-only epochs before architecture steps.
        train_epochs: epochs of the final network's training.
        max_steps_per_epoch: cap on steps per epoch (None: whole split).
        calibration_networks: networks measured end to end for the calibration.
        eval_samples: architectures sampled per search epoch for the accuracy-latency plot.
        formats: export formats (ONNX and TFLite by default).
        profile_quick: a short measurement protocol (for smoke runs and tests).
        profile_sample: measure only this many of the space's operators (the most
            informative, plus the deployed classifier) and fill the rest of the LUT
            with an op-level predictor's figures (rows marked ``predicted:...``);
            None measures every operator. For slow devices such as phones.
        max_retries: re-searches after a miss (0 or 1).
        seed: seed of every random choice.
        precision: what the model ships at (fp32, fp16, int8): the LUT rows profiled,
            calibrated and searched, and the file measured. Training is float32.
        layout: input layout of the TFLite files (``nhwc``, what phone apps feed, or ``nchw``).
    """

    device: str
    space: str
    target_ms: float | None
    data: str = "digits"
    resolution: int | None = None
    threads: int = 1
    search_epochs: int = 6
    warmup_epochs: int = 2
    train_epochs: int = 3
    max_steps_per_epoch: int | None = None
    calibration_networks: int = 5
    eval_samples: int = 2
    formats: tuple[str, ...] = ("onnx", "tflite")
    profile_quick: bool = False
    profile_sample: int | None = None
    max_retries: int = MAX_RETRIES
    seed: int = 0
    precision: str = "fp32"
    layout: str = "nhwc"
    target_share: float | None = None
    tolerance: float = tgt.DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if (self.target_ms is None) == (self.target_share is None):
            raise UsageError("give exactly one of target_ms and target_share")
        if self.target_ms is not None:
            tgt.check_target_ms(self.target_ms)
        elif not 0 < self.target_share <= 1:
            raise UsageError(f"target_share must be in (0, 1], got {self.target_share!r}")
        tgt.check_tolerance(self.tolerance)
        for name in ("search_epochs", "train_epochs", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.calibration_networks < 3:  # the fastest, the slowest and the fastest full network
            raise UsageError(f"calibration_networks must be >= 3, got {self.calibration_networks}")
        if not 0 <= self.warmup_epochs < self.search_epochs:
            raise UsageError("warmup_epochs must be >= 0 and below search_epochs")
        if self.profile_sample is not None and self.profile_sample < 1:
            raise UsageError(f"profile_sample must be >= 1, got {self.profile_sample}")
        if self.max_retries not in (0, 1):
            raise UsageError(f"max_retries must be 0 or 1, got {self.max_retries}")
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "precision", parse_precision(self.precision).value)
        if str(self.layout).lower() not in ("nchw", "nhwc"):
            raise UsageError(f"unknown layout {self.layout!r}; use nchw or nhwc")
        object.__setattr__(self, "layout", str(self.layout).lower())
        if self.precision == Precision.FP16.value and "tflite" not in self.formats:
            raise UsageError("fp16 models are TFLite files; add tflite to the formats")
        get_space(self.space).check_resolution(self.input_resolution())  # before the run folder is made

    def input_resolution(self) -> int | None:
        """``resolution``, or the cpu devices' default (None: the space's own)."""
        if self.resolution is not None:
            return self.resolution
        return CPU_RESOLUTION if self.device.startswith("cpu:") else None

    def fingerprint(self) -> str:
        """A hash of the settings that change what a stage produces."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


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
    export: dict[str, Any]
    report_path: Path
    attempts: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    fp32_accuracy_pct: float | None = None
    deployed_accuracy_pct: float | None = None  # the shipped file (at ``precision``) in its runtime
    accuracy_drop_pct: float | None = None  # fp32 minus deployed, in points
    warning: str | None = None  # within budget but far under it (see latkit.search.target.judge)


# --------------------------------------------------------------------------- state


def default_lut_dir() -> Path:
    """Where per-device LUTs are cached: ``$LATKIT_LUT_DIR`` or ``~/.cache/latkit/luts``."""
    from latkit._cache import luts_dir

    return luts_dir()


def lut_path_for(device_uri: str, space: str, resolution: int, lut_dir: Path | None = None) -> Path:
    """The cached LUT of a device, space and resolution."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_uri).strip("_")
    return (lut_dir or default_lut_dir()) / f"{slug}-{space}-{resolution}.db"


class _State:
    """``pipeline.json``: settings, and per stage whether it finished and what it wrote."""

    def __init__(self, out: Path, config: PipelineConfig) -> None:
        self.path = out / STATE_FILE
        self.config = config
        self.data: dict[str, Any] = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "latkit_version": __version__,
            "config": asdict(config), "fingerprint": config.fingerprint(), "stages": {},
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
                    f"{out} holds a run with other settings ({_diff(old.get('config', {}), asdict(config))}); "
                    "use a new --out folder or the same settings to resume"
                )
            self.data["stages"] = old.get("stages", {})

    def done(self, name: str) -> dict[str, Any] | None:
        entry = self.data["stages"].get(name)
        return entry["outputs"] if entry and entry.get("done") else None

    def finish(self, name: str, outputs: dict[str, Any], seconds: float) -> None:
        self.data["stages"][name] = {"done": True, "seconds": round(seconds, 2), "outputs": outputs}
        write_json(self.path, self.data, "pipeline state", indent=1, default=str, nan_to_null=True)

    def seconds(self) -> dict[str, float]:
        return {k: v.get("seconds", 0.0) for k, v in self.data["stages"].items()}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    new = json.loads(json.dumps(new))  # tuples as lists, as the saved state has them
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "schema"


# --------------------------------------------------------------------------- runner


class _Pipeline:
    def __init__(self, config: PipelineConfig, out: Path, lut: Path | None, on_progress: ProgressFn | None,
                 protocol: Any, search_options: dict[str, Any], device_options: dict[str, Any]) -> None:  # fmt: skip
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
        self.lut_path = Path(lut) if lut else lut_path_for(config.device, config.space, self.resolution)
        self.progress = on_progress or (lambda stage, done, total, msg: None)
        self.protocol = protocol
        self.search_options = search_options
        self._data = None
        self.target_ms: float = config.target_ms or 0.0  # a share is resolved after calibration
        self.target_text = f"{config.target_ms:g} ms" if config.target_ms else ""

    # -- helpers

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = self.state.done(name)
        if done is not None:
            self.progress(name, 1, 1, "already done")
            return done
        t0 = time.perf_counter()
        outputs = fn()
        self.state.finish(name, outputs, time.perf_counter() - t0)
        return outputs

    def data(self) -> Any:
        if self._data is None:
            from latkit.search.supernet.data import load_data

            self._data = load_data(self.cfg.data, self.resolution, seed=self.cfg.seed)
        return self._data

    def profile_config(self) -> Any:
        from latkit.profiler.protocol import ProtocolConfig

        if self.protocol is not None:
            return self.protocol
        if self.cfg.profile_quick:
            return ProtocolConfig.quick()
        # fewer samples than a reference LUT: enough for the 10% goal on an e2e latency
        return ProtocolConfig(min_samples=20, max_samples=120, target_rel_ci=0.03, max_seconds_per_op=2.0)

    def network(self, native: Any) -> Network:
        arch = self.space.arch_from_native(native)
        return with_classes(self.space.network(arch, self.resolution), self.data().n_classes)

    # -- stages

    def profile(self) -> dict[str, Any]:
        from latkit.lut.store import LUT
        from latkit.profiler.runner import profile_ops

        n_classes = self.data().n_classes
        specs = list(self.space.operators(self.resolution))
        # the deployed classifier has the dataset's classes, not the space's
        head = classifier_specs(self.space, self.resolution, n_classes)
        progress = lambda d, t, key, m: self.progress("profile", d, t, key)  # noqa: E731
        with LUT.open(self.lut_path, create=True) as lut:
            if self.cfg.profile_sample is None:
                rep = profile_ops(self.device, specs + head, lut, self.profile_config(), on_progress=progress,
                                  precision=self.precision)  # fmt: skip
                failed, measured, reused = rep.failed, len(rep.measured), len(rep.skipped)
            else:
                from latkit.predictors.sampling import profile_sampled

                rep = profile_ops(self.device, head, lut, self.profile_config(), on_progress=progress,
                                  precision=self.precision)  # fmt: skip
                sampled = profile_sampled(self.device, specs, lut, self.profile_config(), self.cfg.profile_sample,
                                          rng=self.cfg.seed, on_progress=progress, precision=self.precision)  # fmt: skip
                failed = {**rep.failed, **sampled.failed}
                measured, reused = len(rep.measured) + len(sampled.measured), len(rep.skipped)
        if failed:
            key, why = next(iter(failed.items()))
            raise StoreError(f"{len(failed)} operator(s) failed to profile on {self.cfg.device}, e.g. {key}: {why}")
        out = {"lut": str(self.lut_path), "precision": self.precision.value, "measured": measured, "reused": reused}
        if self.cfg.profile_sample is not None:
            out.update(predicted=sampled.n_predicted, predictor=sampled.predictor)
        return out

    def calibrate(self) -> dict[str, Any]:
        from latkit.lut.calibration import calibrate_device
        from latkit.lut.store import LUT
        from latkit.lut.tables import TableLatencyModel

        with LUT.open(self.lut_path) as lut:
            lm = TableLatencyModel.from_lut(self.space, lut, self.cfg.device, self.resolution,
                                            precision=self.precision)  # fmt: skip
        rng = np.random.default_rng(self.cfg.seed + 17)
        archs = lm.calibration_archs(self.cfg.calibration_networks - 1, rng)
        nets = [self.network(self.space.arch_to_native(a)) for a in archs]
        with LUT.open(self.lut_path) as lut:
            cal = calibrate_device(
                lut, self.device, nets, self.measure_config(),
                on_progress=lambda d, t, name: self.progress("calibrate", d, t, name), precision=self.precision,
            )  # fmt: skip
            prov = lut.calibrations(self.cfg.device, precision=self.precision)[-1]["provenance"]
        return {"calibration": cal.to_dict(), "lut_sums_ms": prov["lut_sums_ms"], "n_ops": prov["n_ops"],
                "e2e_ms": prov["e2e_ms"]}  # fmt: skip

    def measure_config(self) -> Any:
        from latkit.profiler.protocol import ProtocolConfig

        if self.protocol is not None:
            return self.protocol
        if self.cfg.profile_quick:
            return ProtocolConfig.quick()
        return ProtocolConfig(min_samples=30, max_samples=200, target_rel_ci=0.02, max_seconds_per_op=4.0)

    def attempt(self, index: int, search_target_ms: float) -> dict[str, Any]:
        """Search -> train -> export -> measure, in ``out`` (attempt 0) or ``out/retryN``."""
        name = "" if index == 0 else f"retry{index}"
        folder = self.out / name if name else self.out
        prefix = f"{name}." if name else ""
        say = lambda stage: (lambda d, t, msg: self.progress(prefix + stage, d, t, msg))  # noqa: E731
        search = self.stage(prefix + "search", lambda: self.search(folder / "search", search_target_ms, say("search")))
        train = self.stage(prefix + "train", lambda: self.train(folder / "train", search, say("train")))
        export = self.stage(prefix + "export", lambda: self.export(folder / "export", search, train, say("export")))
        evaluate = self.stage(prefix + "evaluate", lambda: self.evaluate(export, train, say("evaluate")))
        measured = self.stage(prefix + "measure", lambda: self.measure(export, search, say("measure")))
        return {"name": name or "first", "search_target_ms": search_target_ms, "search": search, "train": train,
                "export": export, "evaluate": evaluate, "measured_ms": measured["latency_ms"], "predicted_ms": search["predicted_ms"],
                "measure": measured}  # fmt: skip

    def search(self, folder: Path, target_ms: float, say: Callable[[int, int, str], None]) -> dict[str, Any]:
        return search_stage(self, folder, target_ms, say)

    def train(self, folder: Path, search: dict[str, Any], say: Callable[[int, int, str], None]) -> dict[str, Any]:
        import torch

        from latkit.profiler.build import build_network
        from latkit.search.supernet.train import accuracy_pct, train_network

        torch.set_num_threads(self.cfg.threads)  # oversubscribed OpenMP threads are many times slower
        data = self.data()
        network = self.network(search["arch"])
        module = build_network(network, seed=self.cfg.seed)
        space_network = self.space.network(self.space.arch_from_native(search["arch"]), self.resolution)
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
        return {"weights": str(weights), "accuracy_pct": acc, "epochs": total, "init": init,
                "final_loss": float(np.mean(losses[-10:])) if losses else None}  # fmt: skip

    def export(self, folder: Path, search: dict[str, Any], train: dict[str, Any],
               say: Callable[[int, int, str], None]) -> dict[str, Any]:  # fmt: skip
        steps = iter(range(1, 20))
        quantized = self.precision != Precision.FP32
        total = 2 + len(self.cfg.formats) + (len(self.cfg.formats) if quantized else 0)
        rep = export_arch(search["arch_path"], train["weights"], formats=self.cfg.formats, out_dir=folder,
                          precision=self.precision, layout=self.cfg.layout,
                          representative=self.representative() if quantized else None,
                          on_progress=lambda msg: say(min(next(steps), total), total, msg))  # fmt: skip
        return rep.to_dict()

    def representative(self) -> Any:
        """Training images the int8 activation ranges are calibrated on (a seeded draw)."""
        x = self.data().x_train
        pick = np.random.default_rng(self.cfg.seed + 29).permutation(len(x))[:REPRESENTATIVE_IMAGES]
        return x[np.sort(pick)].numpy()

    def evaluate(self, export: dict[str, Any], train: dict[str, Any],
                 say: Callable[[int, int, str], None]) -> dict[str, Any]:  # fmt: skip
        """Held-out accuracy of the files at the shipped precision, run in their own runtimes."""
        from latkit.search.deploy.evaluate import file_accuracy_pct

        data = self.data()
        shipped = [f for f in export["files"] if f["variant"] == self.precision.value]
        files = {}
        for i, f in enumerate(shipped):
            say(i, len(shipped), f"{Path(f['path']).name} on {len(data.y_valid)} held-out images")
            files[f["format"]] = file_accuracy_pct(Path(f["path"]), f["format"], f["layout"], data.x_valid,
                                                   data.y_valid)  # fmt: skip
        say(len(shipped), len(shipped), ", ".join(f"{k} {v:.2f}%" for k, v in files.items()))
        fmt_name = self.device.model_format.value
        deployed = files.get(fmt_name, next(iter(files.values()), None))
        fp32 = train["accuracy_pct"]
        return {"precision": self.precision.value, "fp32_accuracy_pct": fp32, "files_accuracy_pct": files,
                "deployed_format": fmt_name, "deployed_accuracy_pct": deployed,
                "accuracy_drop_pct": None if deployed is None else fp32 - deployed,
                "n_images": len(data.y_valid)}  # fmt: skip

    def measure(self, export: dict[str, Any], search: dict[str, Any],
                say: Callable[[int, int, str], None]) -> dict[str, Any]:  # fmt: skip
        from latkit.lut.store import LUT

        f = exported_file(export, self.device.model_format.value, self.precision.value)
        with LUT.open(self.lut_path) as lut:
            keys = [layer.spec.key for layer in self.network(search["arch"]).layers if layer.spec.measurable]
            refs = reference_ops(lut, self.cfg.device, keys, precision=self.precision)
        say(0, 1, f"measuring {f.path.name} on {self.cfg.device} (and {len(refs)} reference operators)")
        if self.device.info().kind == "cpu":
            # a host CPU device runs in a fresh interpreter: after this process trained
            # networks with torch, the same ONNX file measured here read up to 37% slow
            # (0.80 ms fresh, 1.10 ms in-process), enough to fake a miss
            entry = _measure_in_fresh_process(self.cfg.device, self.cfg.threads, export,
                                              self.device.model_format.value, self.precision.value,
                                              self.measure_config(),
                                              self.target_ms, self.cfg.tolerance, refs)  # fmt: skip
        else:
            entry = measure_exported(self.device, f, self.measure_config(),
                                     confirm_target_ms=self.target_ms,
                                     tolerance=self.cfg.tolerance, references=refs)  # fmt: skip
        drift = entry.get("device_drift")
        say(1, 1, f"{entry['latency_ms']:.3f} ms" + (f" (device drift {drift['ratio']:.2f}x)" if drift else ""))
        return {"file": str(f.path), "precision": f.variant, "latency_ms": entry["latency_ms"],
                "rel_ci": entry["rel_ci"], "device": entry["device"], "drift": drift}  # fmt: skip


def _measure_job(uri: str, threads: int, export: dict[str, Any], fmt_name: str, precision: str, protocol: Any,
                 target_ms: float, tolerance: float, refs: list[Reference]) -> dict[str, Any]:  # fmt: skip
    device = open_device(uri, threads=threads)
    try:
        return measure_exported(device, exported_file(export, fmt_name, precision), protocol,
                                confirm_target_ms=target_ms, tolerance=tolerance,
                                references=refs)  # fmt: skip
    finally:
        device.close()


def _measure_in_fresh_process(uri: str, threads: int, export: dict[str, Any], fmt_name: str, precision: str,
                              protocol: Any, target_ms: float, tolerance: float,
                              refs: list[Reference]) -> dict[str, Any]:  # fmt: skip
    """:func:`measure_exported` in a newly spawned interpreter (nothing of this one's state)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure_job, (uri, threads, export, fmt_name, precision, protocol, target_ms, tolerance,
                                                refs))  # fmt: skip


def exported_file(export: dict[str, Any], fmt_name: str, precision: str = "fp32") -> ExportedFile:
    """The file of format ``fmt_name`` at ``precision`` in an export stage's outputs.

    Raises:
        UsageError: no such file was exported.
    """
    for f in export["files"]:
        if f["format"] == fmt_name and f["variant"] == precision:
            return ExportedFile(
                path=Path(f["path"]), sidecar=Path(f["sidecar"]), format=f["format"], variant=f["variant"],
                layout=f["layout"], input_shape=tuple(f["input_shape"]), parity=f["parity"],
                measured=f.get("measured"),
            )  # fmt: skip
    raise UsageError(f"no {precision} {fmt_name} file was exported; add {fmt_name} to the formats")


# --------------------------------------------------------------------------- entry


def run_pipeline(
    device_uri: str,
    space: str,
    target_ms: float | str | tgt.Target,
    out_dir: str | Path,
    data: str | None = None,
    *,
    lut: str | Path | None = None,
    on_progress: ProgressFn | None = None,
    protocol: Any = None,
    search_options: dict[str, Any] | None = None,
    device_options: dict[str, Any] | None = None,
    **settings: Any,
) -> PipelineResult:
    """Profile, calibrate, search, train, export and measure; write ``report.md``.

    Args:
        device_uri: the device (``cpu:onnxruntime``, ``cpu:litert``, ``adb+tcp://...``).
        space: search space name (``proxyless_mobile_w05`` is the quick one).
        target_ms: latency target on the device: ms, a share of the slowest
            network (``"60%"``, resolved after calibration) or a parsed
            :class:`~latkit.search.target.Target`.
        out_dir: run folder (created; a rerun with the same settings resumes).
        data: dataset (default the embedded ``digits``).
        lut: LUT file (default the per-device cache, see :func:`lut_path_for`).
        on_progress: called as ``(stage, done, total, message)`` throughout.
        protocol: measurement protocol for every measurement of the run (default: a
            medium one for profiling, a stricter one for whole networks).
        search_options: extra :class:`~latkit.search.supernet.proxyless_grad.ProxylessConfig` fields.
        device_options: keyword options for :func:`~latkit.devices.base.open_device`
            (e.g. ``key_path`` of an ADB device).
        **settings: any other :class:`PipelineConfig` field.

    Returns:
        The result; ``hit`` is true when the exported model, measured on the
        device, is within the budget (at most ``target_ms * (1 + tolerance)``)
        and the target was inside the space's range; ``met`` when it is within
        the budget at all (the command exits 0 when ``met``).

    Raises:
        UsageError: bad settings, or ``out_dir`` holds a run with other settings.
        LatkitError: a stage failed (device, export, unreachable target...).
    """
    target = target_ms if isinstance(target_ms, tgt.Target) else tgt.parse_target(target_ms)
    cfg = PipelineConfig(device=device_uri, space=space, target_ms=target.ms, target_share=target.fraction,
                         data=data or "digits", **settings)  # fmt: skip
    out = check_output_dir(out_dir, "--out folder")
    p = _Pipeline(cfg, out, Path(lut) if lut else None, on_progress, protocol, search_options or {},
                  device_options or {})
    try:
        p.stage("profile", p.profile)
        calib = p.stage("calibrate", p.calibrate)
        _resolve_target(p, target)
        attempts = _attempts(p)
        p.device_state = _device_state(p.device)  # thermal state for the report, before the device closes
    finally:
        p.device.close()
    best = attempts[tgt.best_attempt([a["measured_ms"] for a in attempts], p.target_ms, cfg.tolerance)]
    judged = _judge(p, best)
    ev = best.get("evaluate") or {}
    summary = _summary(p, calib, attempts, best)
    report_path = rpt.write_report(out, summary)
    write_json(out / SUMMARY_FILE, summary, "run summary", indent=1, default=str, nan_to_null=True)
    p.progress("report", 1, 1, str(report_path))
    return PipelineResult(
        out_dir=out, target_ms=p.target_ms, measured_ms=best["measured_ms"], predicted_ms=best["predicted_ms"],
        hit=judged.kind == tgt.HIT, met=judged.ok, warning=judged.warning,
        verdict=summary["verdict"],
        arch_path=Path(best["search"]["arch_path"]), export=best["export"], report_path=report_path,
        attempts=[{k: a[k] for k in ("name", "search_target_ms", "predicted_ms", "measured_ms")} for a in attempts],
        precision=cfg.precision, fp32_accuracy_pct=ev.get("fp32_accuracy_pct", best["train"]["accuracy_pct"]),
        deployed_accuracy_pct=ev.get("deployed_accuracy_pct"), accuracy_drop_pct=ev.get("accuracy_drop_pct"),
    )  # fmt: skip


def _resolve_target(p: _Pipeline, target: tgt.Target) -> None:
    """The target in ms: a share of the slowest network is resolved on the calibrated tables."""
    if target.relative:
        from latkit.search.pipeline.search_stage import _latency_model

        slowest = _latency_model(p, p.data().n_classes).max_latency()[0]
        p.target_ms, p.target_text = target.resolve(slowest), target.describe(slowest)
    else:
        p.target_text = target.describe()
    p.progress("target", 1, 1, p.target_text)


def _judge(p: _Pipeline, attempt: dict[str, Any]) -> tgt.Verdict:
    return tgt.judge(attempt["measured_ms"], p.target_ms, p.cfg.tolerance, attempt["measure"].get("drift"),
                     _range(attempt))  # fmt: skip


def _attempts(p: _Pipeline) -> list[dict[str, Any]]:
    """The first attempt and, when it is over the budget, one re-search with the target scaled by target / measured.

    A network under the budget is kept, however far under (the verdict warns about
    a large undershoot): a re-search there would spend minutes to use more budget.
    """
    cfg = p.cfg
    attempts = [p.attempt(0, p.target_ms)]
    for i in range(1, cfg.max_retries + 1):
        last = attempts[-1]
        judged = _judge(p, last)
        if judged.ok:
            break
        drift = last["measure"].get("drift")
        if drift and not drift["steady"]:
            # the device is not in the state it was profiled in: a search scaled by this
            # figure would chase the machine's state, not correct the prediction
            log.warning("%s Not searching again.", judged.text)
            break
        scaled = last["search_target_ms"] * p.target_ms / last["measured_ms"]
        log.warning("%s Searching again with target %.3f ms", judged.text, scaled)
        p.progress("retry", 0, 1, f"over budget; re-searching for {scaled:.3f} ms")
        attempts.append(p.attempt(i, scaled))
    return attempts


def _range(attempt: dict[str, Any]) -> tuple[float, float] | None:
    """The (fastest, slowest) predicted latency of the space, from the attempt's search stage."""
    found = attempt.get("search", {}).get("range_ms")
    return (found[0], found[1]) if found else None


def _summary(p: _Pipeline, calib: dict[str, Any], attempts: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
    from latkit.lut.calibration import Calibration
    from latkit.lut.estimate import estimate
    from latkit.lut.store import LUT

    cfg = p.cfg
    cal = Calibration.from_dict(calib["calibration"])
    points = [
        {"predicted_ms": cal.apply(s, n), "measured_ms": e, "kind": "calibration", "label": ""}
        for s, n, e in zip(calib["lut_sums_ms"], calib["n_ops"], calib["e2e_ms"])
    ]
    points += [{"predicted_ms": a["predicted_ms"], "measured_ms": a["measured_ms"], "kind": "final",
                "label": a["name"]} for a in attempts]  # fmt: skip
    with LUT.open(p.lut_path) as lut:
        est = estimate(lut, p.network(best["search"]["arch"]), device=cfg.device, precision=p.precision)
    judged = _judge(p, best)
    verdict = judged.text
    if len(attempts) > 1 and best is not attempts[-1]:
        verdict += " (the first attempt fitted the budget better than the retry and is the one reported)"
    files = [{"file": Path(f["path"]).name, "format": f["format"], "variant": f["variant"],
              "top1_agreement": f["parity"].get("top1_agreement"), "parity_passed": f["parity"].get("passed"),
              "size_bytes": Path(f["path"]).stat().st_size, "max_rel_err": f["parity"]["max_rel_err"],
              "measured_ms": (read_json(f["sidecar"], "model sidecar").get("measured_latency") or {}).get("latency_ms")}
             for f in best["export"]["files"]]  # fmt: skip
    search = best["search"]
    return {
        "device": cfg.device, "space": cfg.space, "resolution": p.resolution, "target_ms": p.target_ms,
        "supernet_resolution": min(p.resolution, SEARCH_RESOLUTION),  # the search's own training images
        "target": p.target_text, "tolerance": cfg.tolerance, "budget_used": judged.budget_used,
        "verdict_kind": judged.kind, "warning": judged.warning,
        "data": f"{cfg.data} ({p.data().n_classes} classes)", "latkit_version": __version__,
        "verdict": verdict, "attempts": attempts, "arch": search["arch"],
        "precision": cfg.precision, "layout": cfg.layout,
        "accuracy": best["train"]["accuracy_pct"], "evaluate": best.get("evaluate"), "files": files, "calibration": calib["calibration"],
        "layers": [asdict(layer) for layer in est.layers], "points": points,
        "history": search.get("history"), "samples": search.get("samples"),
        "chosen": {"latency_ms": search["predicted_ms"], "accuracy": search.get("accuracy")}
        if search.get("accuracy") is not None else None,
        "stages": p.state.seconds(),
        **_report_extras(p, calib, best),
    }  # fmt: skip


def _device_state(device: Any) -> dict[str, Any] | None:
    """Clocks and temperatures of a device that reports them (phones), else None."""
    state = getattr(device, "state", None)
    if state is None:
        return None
    try:
        return state()
    except LatkitError as exc:  # a report line is not worth failing a finished run
        log.warning("could not read the device state for the report: %s", exc)
        return None


def _report_extras(p: _Pipeline, calib: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """What the report compares and cites (owned by search/report.py): baseline, sizes, statistics, command."""
    from latkit.lut.store import LUT
    from latkit.search.pipeline import pareto
    from latkit.lut.tables import TableLatencyModel
    from latkit.search.pipeline.search_stage import _latency_model

    with LUT.open(p.lut_path) as lut:  # the slowest network by LUT sum: the one calibration measured
        slowest = TableLatencyModel.from_lut(p.space, lut, p.cfg.device, p.resolution,
                                             precision=p.precision).max_latency()[1]  # fmt: skip
    slowest_ms = _latency_model(p, p.data().n_classes).latency_ms(slowest)
    native = p.space.arch_to_native(slowest)
    deployed = exported_file(best["export"], p.device.model_format.value, p.precision.value)
    return {
        "best_attempt": best["name"],
        "baseline": pareto.baseline_entry(p.cfg.space, native, p.network(native), calib, slowest_ms),
        "chosen_size": pareto.network_size(p.network(best["search"]["arch"])),
        "measurement": read_json(deployed.sidecar, "model sidecar").get("measured_latency"),
        "command": rpt.reproduce_command(asdict(p.cfg), p.out, p.lut_path),
        "device_state": getattr(p, "device_state", None),
    }


__all__ = ["PipelineConfig", "PipelineResult", "default_lut_dir", "exported_file", "lut_path_for", "run_pipeline"]
