"""One call for the CLI: run a supernet search and write its artefacts.

:func:`run_search` trains a weight-sharing supernet on a dataset and searches it
for an architecture that meets a latency target, with either

* ``proxyless-grad``: ProxylessNAS gradient search (:mod:`latkit.search.supernet.proxyless_grad`);
* ``reinforce`` / ``ppo`` / ``evolution`` / ``random``: the framework's algorithms
  (:mod:`latkit.search.framework.base`) after ``epochs`` of supernet training with
  uniformly sampled paths, each architecture's accuracy measured with the shared
  weights on the held-out split (:class:`~latkit.search.supernet.train.SupernetAccuracy`)
  and its reward ``ACC * (LAT/T)^w`` using the latency model. With
  ``train_steps`` they skip the supernet: each queried architecture is trained
  on its own, starting from its most similar predecessor's weights
  (:class:`~latkit.search.supernet.train.TrainedAccuracy`, FNAS's knowledge pool).

Every mode is one frozen :class:`SearchConfig`, checked once when it is built.
It writes into ``out_dir``: ``arch.json`` (schema ``latkit.arch``),
``trajectory.csv`` and ``trajectory.json``, ``expected_latency.png`` and
``accuracy_latency.png``, and a resumable checkpoint (``checkpoint.safetensors``
+ ``checkpoint.json``, updated every epoch; ``resume=True`` continues from it).
The query-based algorithms also record every supernet accuracy they measure in
``queries.json``; a resumed run replays them instead of measuring again, so a
search stopped mid-way continues where it stopped (same seed, same trajectory).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import numpy as np
import torch

from latkit.core.reprs import short_repr
from latkit.core.files import atomic_path, check_output_dir, json_default, read_json, write_json
from latkit._version import __version__
from latkit.core.errors import StoreError, UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace, get_space
from latkit.search.framework.base import AccuracyModel, get_algorithm, run_algorithm
from latkit.search.target import check_reachable, check_target_ms, fill_to_target
from latkit.search.supernet.checkpoint import (
    CheckpointState, has_checkpoint, load_checkpoint, optimizer_state, restore_optimizer, save_checkpoint,
)  # fmt: skip
from latkit.search.supernet.data import SearchData, load_data
from latkit.search.supernet.proxyless_grad import ProxylessConfig, ProxylessGradSearch
from latkit.search.supernet.supernet import Supernet
from latkit.search.supernet.train import SupernetAccuracy, TrainedAccuracy, weight_optimizer

log = logging.getLogger(__name__)

ARCH_SCHEMA = "latkit.arch"
ARCH_SCHEMA_VERSION = 1
# the gradient algorithm trains its own architecture parameters; every other registered
# algorithm (built-in or from the ``latkit.algorithms`` entry-point group) queries a supernet
GRADIENT_ALGORITHM = "proxyless-grad"
TRAJECTORY_FIELDS = ("epoch", "kind", "arch", "accuracy", "latency_ms", "expected_latency_ms",
                     "loss", "feasible")  # fmt: skip

ProgressHook = Callable[["Progress"], None]
StageHook = Callable[[str, int, int, str], None]  # (stage, done, total, message)


class TrajectoryRow(TypedDict):
    """One row of ``trajectory.json`` / ``trajectory.csv``."""

    epoch: int
    kind: str  # derived, sampled, supernet-sample or query
    arch: object  # the space's native form
    accuracy: float
    latency_ms: float
    expected_latency_ms: float | None
    loss: float | None
    feasible: bool
    query: NotRequired[int]  # 1-based, on query rows


class ArchDocument(TypedDict):
    """``arch.json`` (schema ``latkit.arch``)."""

    schema: str
    schema_version: int
    latkit_version: str
    space: str
    arch: object
    resolution: int | None
    target_ms: float
    latency_ms: float
    meets_target: bool
    latency_model: dict[str, object]  # the latency model's provenance
    accuracy: dict[str, object]  # top1_pct and the accuracy model's provenance
    search: dict[str, object]  # algorithm, seed, epochs and what the algorithm reports


@dataclass(frozen=True)
class SearchConfig:
    """How :func:`run_search` searches; the modes are checked against each other once, here.

    Attributes:
        target_ms: the hard latency target ``T`` (ms).
        algorithm: ``proxyless-grad`` or any registered query-based algorithm
            (``reinforce``, ``ppo``, ``evolution``, ``random``, ``parsec``, a plug-in).
        epochs: training epochs of the supernet (for ``proxyless-grad``, the first
            ``proxyless.warmup_epochs`` train weights only).
        seed: seed of every random draw.
        resolution: training resolution of the supernet (default the dataset's);
            may be lower than the LUT's, the supernet is resolution-agnostic.
        queries: accuracy queries of the query-based algorithms.
        proxyless: ``proxyless-grad`` hyper-parameters.
        algorithm_options: extra keyword options of the query-based algorithm
            (e.g. ``{"w": -0.07}`` for reinforce).
        eval_samples: architectures sampled per epoch to evaluate for the
            accuracy-latency plot (``proxyless-grad``).
        resume: continue from the checkpoint in the output folder.
        plots: write the PNG plots (needs matplotlib).
        threads: torch intra-op threads (``None`` leaves torch's setting).
        max_images: cap on images loaded from a dataset path.
        smooth_samples: for the query-based algorithms: score this many random
            sub-networks with the trained supernet, fit a GCN to them
            (:mod:`latkit.search.supernet.accuracy_gcn`) and search its smoothed
            accuracies instead of the supernet's raw ones.
        train_steps: for the query-based algorithms: no supernet; each queried
            architecture is trained on its own for this many steps
            (:class:`~latkit.search.supernet.train.TrainedAccuracy`), ``epochs`` unused.
        inherit: with ``train_steps``, start each architecture from the weights
            of the most similar one trained before (FNAS's knowledge pool).

    Raises:
        UnknownNameError: unknown algorithm.
        UsageError: bad values, or modes that do not go together.
    """

    target_ms: float
    algorithm: str = GRADIENT_ALGORITHM
    epochs: int = 10
    seed: int = 0
    resolution: int | None = None
    queries: int = 50
    proxyless: ProxylessConfig | None = None
    algorithm_options: Mapping[str, object] | None = field(default_factory=dict)
    eval_samples: int = 2
    resume: bool = False
    plots: bool = True
    threads: int | None = 1
    max_images: int | None = None
    smooth_samples: int | None = None
    train_steps: int | None = None
    inherit: bool = True

    def __post_init__(self) -> None:
        get_algorithm(self.algorithm)  # UnknownNameError listing the registered ones
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        smooth, steps = self.smooth_samples, self.train_steps
        if smooth is not None and (self.gradient or smooth < 4):
            raise UsageError("smoothing needs a query-based algorithm (reinforce, ppo, evolution, random) "
                             f"and at least 4 samples, got {self.algorithm} with {smooth}")  # fmt: skip
        if steps is not None and (self.gradient or smooth is not None or steps < 1):
            raise UsageError("per-architecture training needs a query-based algorithm (reinforce, ppo, evolution, "
                             f"random), no smoothing and at least 1 step, got {self.algorithm} with {steps} steps")
        object.__setattr__(self, "target_ms", check_target_ms(self.target_ms))
        object.__setattr__(self, "algorithm_options", dict(self.algorithm_options or {}))

    @property
    def gradient(self) -> bool:
        """Whether the algorithm is the gradient search (it trains its own supernet and gates)."""
        return self.algorithm == GRADIENT_ALGORITHM


QUERIES_SCHEMA = "latkit.search-queries"


class RecordedAccuracy:
    """Supernet accuracies written to ``path`` as they are measured.

    The file names the supernet training epoch its accuracies belong to; with
    ``resume`` and the same epoch, they are answered from the file. Measured
    values are never lost: each is saved (atomically) before it is returned.
    """

    def __init__(self, inner: Any, space: SearchSpace, path: Path, epoch: int, resume: bool) -> None:
        self.inner, self.space, self.path, self.epoch = inner, space, path, epoch
        self.provenance = getattr(inner, "provenance", {})
        self._values: dict[Arch, float] = {}
        if resume and path.is_file():
            try:
                doc = read_json(path, "accuracy record")
                if doc.get("schema") == QUERIES_SCHEMA and doc.get("supernet_epoch") == epoch:
                    for row in doc["queries"]:
                        self._values[space.arch_from_native(row["arch"])] = float(row["accuracy"])
            except (StoreError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("ignoring unreadable %s (%s); measuring again", path, exc)
                self._values = {}

    def accuracy(self, arch: Arch) -> float:
        """The recorded accuracy of ``arch``, else measured and recorded."""
        if arch in self._values:
            return self._values[arch]
        value = float(self.inner.accuracy(arch))
        self._values[arch] = value
        write_json(self.path, {"schema": QUERIES_SCHEMA, "schema_version": 1, "supernet_epoch": self.epoch,
                               "queries": [{"arch": self.space.arch_to_native(a), "accuracy": v}
                                           for a, v in self._values.items()]},
                   "accuracy record", indent=1, nan_to_null=True)  # fmt: skip
        return value


@dataclass
class Progress:
    """Passed to the progress callback after every epoch."""

    epoch: int
    epochs: int
    loss: float
    expected_latency_ms: float | None
    best_arch: Any
    best_latency_ms: float | None
    best_accuracy: float | None


@dataclass
class SearchOutcome:
    """What :func:`run_search` returns (and wrote to ``out_dir``)."""

    arch: Arch
    native: Any
    latency_ms: float
    accuracy: float
    target_ms: float
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    document: Mapping[str, object] = field(default_factory=dict)  # arch.json, as written
    rows: list[TrajectoryRow] = field(default_factory=list)  # trajectory.json's rows

    def __repr__(self) -> str:
        return short_repr(self, 'latency_ms', 'target_ms', 'accuracy', 'native', 'out_dir')


@dataclass(frozen=True)
class _Run:
    """What every step of one :func:`run_search` call shares."""

    space: SearchSpace
    latency_model: Any  # a latkit.lut.tables model (proxyless-grad also needs expected_latency)
    config: SearchConfig
    data: SearchData
    out: Path
    on_progress: ProgressHook | None
    on_stage: StageHook | None

    def row(self, epoch: int, kind: str, arch: Arch, acc: float, lat: float, expected: float | None = None,
            loss: float | None = None) -> TrajectoryRow:  # fmt: skip
        """A trajectory row for ``arch``."""
        return _row(epoch, kind, self.space.arch_to_native(arch), acc, lat, expected, loss, self.config.target_ms)


def run_search(
    space: SearchSpace | str,
    latency_model: Any,
    config: SearchConfig,
    data: SearchData | str = "digits",
    out_dir: str | Path = "search_out",
    *,
    on_progress: ProgressHook | None = None,
    on_stage: StageHook | None = None,
) -> SearchOutcome:
    """Search ``space`` for the best architecture with ``latency_model(arch) <= config.target_ms``.

    Args:
        space: the space (or its registered name); its layers must be those the
            latency model was built for.
        latency_model: a :mod:`latkit.lut.tables` model (LUT, calibrated
            LUT, or predictor; ``proxyless-grad`` needs ``expected_latency``).
        config: the target, the algorithm and its modes (:class:`SearchConfig`).
        data: a :class:`SearchData` or a :func:`~latkit.search.supernet.data.load_data` spec
            (``digits``, ``cifar10:PATH``, ``folder:PATH``).
        out_dir: where the artefacts go (created).
        on_progress: called with a :class:`Progress` after every epoch.
        on_stage: called as ``(stage, done, total, message)`` inside the stages
            that have no epochs: ``"train"`` after every training step of every
            queried architecture (``train_steps``), ``"smooth"`` after every
            sub-network scored for the smoothed accuracy.

    Raises:
        UsageError: a bad output folder.
        SearchError: the target is below the smallest reachable latency (the
            message names it).
    """
    out = check_output_dir(out_dir, "--out folder")
    space = get_space(space) if isinstance(space, str) else space
    min_ms, _ = latency_model.min_latency(space)
    check_reachable(space.name, config.target_ms, float(min_ms))
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if isinstance(data, str):
        data = load_data(data, config.resolution or 32, seed=config.seed, max_images=config.max_images)
    run = _Run(space, latency_model, config, data, out, on_progress, on_stage)
    supernet, evaluator = _evaluator(run)
    if config.gradient:
        assert supernet is not None
        arch, rows, fill = _run_proxyless(run, supernet, evaluator)
        extra: dict[str, object] = {"config": asdict(config.proxyless or ProxylessConfig()), "fill": fill}
    else:
        arch, rows, extra = _run_framework(run, supernet, evaluator)
    latency = float(latency_model.latency_ms(arch))
    accuracy = float(evaluator.accuracy(arch))
    files, document = _write_outputs(run, arch, latency, accuracy, evaluator, rows, extra)
    return SearchOutcome(arch, space.arch_to_native(arch), latency, accuracy, config.target_ms, out, files,
                         document, rows)  # fmt: skip


def _evaluator(run: _Run) -> tuple[Supernet | None, Any]:
    """The supernet (None when each architecture trains on its own) and the accuracy model the search asks."""
    cfg, data = run.config, run.data
    resolution = cfg.resolution or data.resolution
    supernet: Supernet | None = None
    evaluator: Any
    if cfg.train_steps is not None:
        stage, steps = run.on_stage or (lambda *a: None), cfg.train_steps
        evaluator = TrainedAccuracy(run.space, data, resolution, steps=steps, inherit=cfg.inherit, seed=cfg.seed,
                                    on_step=lambda done, msg: stage("train", done, cfg.queries * steps, msg))
    else:
        supernet = Supernet(run.space, data.n_classes, resolution, seed=cfg.seed)
        evaluator = SupernetAccuracy(supernet, data, seed=cfg.seed)
    if not cfg.gradient:  # trained mode: "epoch" 0, no supernet
        epoch = 0 if supernet is None else cfg.epochs
        evaluator = RecordedAccuracy(evaluator, run.space, run.out / "queries.json", epoch, cfg.resume)
    return supernet, evaluator


def _run_proxyless(run: _Run, supernet: Supernet,
                   evaluator: SupernetAccuracy) -> tuple[Arch, list[TrajectoryRow], dict[str, object]]:  # fmt: skip
    """ProxylessNAS gradient search, one checkpoint per epoch: the final architecture, the trajectory, the fill.

    The searched architecture is then grown towards the target from below
    (:func:`~latkit.search.target.fill_to_target`), so ``latkit search`` and
    ``latkit run`` use a budget alike; the fill record names what was searched.
    """
    cfg = run.config
    search = ProxylessGradSearch(supernet, run.latency_model, run.data, cfg.target_ms, cfg.proxyless, cfg.seed)
    rows: list[TrajectoryRow] = []
    if cfg.resume and has_checkpoint(run.out):
        tensors, state = load_checkpoint(run.out)
        search.load_state(tensors, state)
        rows = cast(list[TrajectoryRow], state.get("trajectory", []))
        log.info("resumed %s at epoch %d", run.out, search.epoch)
    while search.epoch < cfg.epochs:
        info = search.run_epoch()
        derived = search.derived()
        acc = evaluator.accuracy(derived)
        expected, loss = info.expected_latency_ms, info.loss
        rows.append(run.row(info.epoch, "derived", derived, acc, info.derived_latency_ms, expected, loss))
        for _ in range(cfg.eval_samples):
            arch = search.sample_arch()
            lat = run.latency_model.latency_ms(arch)
            rows.append(run.row(info.epoch, "sampled", arch, evaluator.accuracy(arch), lat, expected, loss))
        tensors, state = search.state()
        save_checkpoint(run.out, tensors, {**state, "algorithm": GRADIENT_ALGORITHM,
                                           "trajectory": cast(list[dict[str, object]], rows)})  # fmt: skip
        if run.on_progress is not None:
            run.on_progress(Progress(info.epoch, cfg.epochs, info.loss, expected, info.derived_arch,
                                     info.derived_latency_ms, acc))  # fmt: skip
    searched = search.final_arch()
    arch = fill_to_target(searched, search.log_probs(), run.latency_model.latency_ms, cfg.target_ms)
    fill = {"method": "fill-to-target", "searched_arch": run.space.arch_to_native(searched),
            "searched_latency_ms": float(run.latency_model.latency_ms(searched)),
            "changed_choices": sum(1 for a, b in zip(searched.indices, arch.indices) if a != b)}  # fmt: skip
    return arch, rows, fill


def _train_supernet(run: _Run, supernet: Supernet, rng: np.random.Generator) -> list[TrajectoryRow]:
    """Uniform single-path training of the one-shot supernet up to ``epochs`` (resumed from a checkpoint)."""
    cfg = run.config
    start, rows = 0, []
    opt = weight_optimizer(supernet.parameters())
    if cfg.resume and has_checkpoint(run.out):
        tensors, state = load_checkpoint(run.out)
        supernet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        restore_optimizer(opt, "opt_w", tensors, state["weight_opt"])
        rng.bit_generator.state = state["numpy_rng"]
        start, rows = int(state["epoch"]), cast(list[TrajectoryRow], state.get("trajectory", []))
    for epoch in range(start, cfg.epochs):
        supernet.train()
        losses = []
        for x, y in run.data.batches("train", 64, rng):
            arch = run.space.sample(rng)
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(supernet(x, arch), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        tensors = {f"net.{k}": v for k, v in supernet.state_dict().items()}
        ot, oj = optimizer_state(opt, "opt_w")
        tensors.update(ot)
        state: CheckpointState = {"algorithm": cfg.algorithm, "epoch": epoch + 1, "weight_opt": oj,
                                  "numpy_rng": rng.bit_generator.state,
                                  "trajectory": cast(list[dict[str, object]], rows)}  # fmt: skip
        save_checkpoint(run.out, tensors, state)
        if run.on_progress is not None:
            run.on_progress(Progress(epoch + 1, cfg.epochs, float(np.mean(losses)), None, None, None, None))
    return rows


def _smooth(run: _Run, evaluator: AccuracyModel, rows: list[TrajectoryRow]) -> tuple[AccuracyModel, dict[str, object]]:
    """The GCN-smoothed accuracy model fitted on ``smooth_samples`` supernet scores (rows added for them)."""
    from latkit.search.supernet.accuracy_gcn import SmoothedAccuracy

    cfg, out = run.config, run.out
    assert cfg.smooth_samples is not None
    model, archs, scores = SmoothedAccuracy.from_evaluator(
        run.space, _Counted(evaluator, "smooth", cfg.smooth_samples, run.on_stage), cfg.smooth_samples,
        np.random.default_rng([cfg.seed, 2]), random_state=cfg.seed,
    )
    model.save(out / "accuracy_gcn")
    for a, acc in zip(archs, scores):
        rows.append(run.row(cfg.epochs, "supernet-sample", a, float(acc), float(run.latency_model.latency_ms(a))))
    return model, {"smoothed_accuracy": {"samples": len(archs), "model": str(out / "accuracy_gcn")}}


def _run_framework(
    run: _Run, supernet: Supernet | None, evaluator: AccuracyModel
) -> tuple[Arch, list[TrajectoryRow], dict[str, object]]:
    """A query-based algorithm after supernet training (and smoothing): best architecture, trajectory, extras."""
    cfg, space = run.config, run.space
    rows: list[TrajectoryRow] = []
    if supernet is not None:  # per-architecture training has nothing to train up front
        rows = _train_supernet(run, supernet, np.random.default_rng(cfg.seed))
    accuracy_model, smoothing = evaluator, {}
    if cfg.smooth_samples:
        accuracy_model, smoothing = _smooth(run, evaluator, rows)
    result = run_algorithm(cfg.algorithm, space, accuracy_model, run.latency_model, cfg.target_ms, cfg.queries,
                           np.random.default_rng(cfg.seed), seed=cfg.seed, **cfg.algorithm_options)  # fmt: skip
    for i, q in enumerate(result.trajectory):
        rows.append(_row(cfg.epochs, "query", q.arch, q.accuracy, q.latency_ms, None, None, cfg.target_ms))
        rows[-1]["query"] = i + 1
    extra: dict[str, object] = {"queries_used": result.queries_used, "search_wall_s": result.wall_s,
                                **smoothing, **result.extra}  # fmt: skip
    trained = getattr(evaluator, "inner", evaluator)
    if isinstance(trained, TrainedAccuracy):  # what the knowledge pool gave each trained architecture
        extra["trained"] = trained.history
    return space.arch_from_native(result.best_arch), rows, extra


class _Counted:
    """An accuracy model that reports each architecture it scores as one step of a stage."""

    def __init__(self, inner: AccuracyModel, stage: str, total: int, on_stage: StageHook | None):
        self.inner, self.stage, self.total, self.on_stage, self.done = inner, stage, total, on_stage, 0

    def accuracy(self, arch: Arch) -> float:
        """The inner model's accuracy of ``arch``, reported to ``on_stage``."""
        acc = self.inner.accuracy(arch)
        self.done += 1
        if self.on_stage is not None:
            self.on_stage(self.stage, self.done, self.total, f"accuracy {acc:.1f}%")
        return acc

    @property
    def provenance(self) -> Mapping[str, object]:
        """The inner model's provenance (what the smoothed model records it was fitted on)."""
        return getattr(self.inner, "provenance", {})


def _row(epoch: int, kind: str, native: object, acc: float, lat: float, expected: float | None,
         loss: float | None, target_ms: float) -> TrajectoryRow:  # fmt: skip
    return {"epoch": epoch, "kind": kind, "arch": native, "accuracy": float(acc),
            "latency_ms": float(lat), "expected_latency_ms": expected, "loss": loss,
            "feasible": bool(lat <= target_ms)}  # fmt: skip


def _write_outputs(
    run: _Run, arch: Arch, latency: float, accuracy: float, evaluator: AccuracyModel,
    rows: list[TrajectoryRow], extra: Mapping[str, object],
) -> tuple[dict[str, Path], ArchDocument]:  # fmt: skip
    cfg, space, out, target_ms = run.config, run.space, run.out, run.config.target_ms
    provenance = dict(getattr(run.latency_model, "provenance", {}) or {})
    doc: ArchDocument = {
        "schema": ARCH_SCHEMA, "schema_version": ARCH_SCHEMA_VERSION, "latkit_version": __version__,
        "space": space.name, "arch": space.arch_to_native(arch), "resolution": provenance.get("resolution"),
        "target_ms": target_ms, "latency_ms": latency, "meets_target": latency <= target_ms,
        "latency_model": provenance,
        "accuracy": {"top1_pct": accuracy, **getattr(evaluator, "provenance", {})},
        "search": {"algorithm": cfg.algorithm, "seed": cfg.seed, "epochs": cfg.epochs, **extra},
    }  # fmt: skip
    files = {"arch": out / "arch.json", "trajectory_json": out / "trajectory.json",
             "trajectory_csv": out / "trajectory.csv"}  # fmt: skip
    write_json(files["arch"], doc, "arch.json", indent=1, nan_to_null=True)
    write_json(files["trajectory_json"],
               {"schema": "latkit.search.trajectory", "schema_version": 1, "latkit_version": __version__,
                "space": space.name, "target_ms": target_ms, "algorithm": cfg.algorithm, "rows": rows},
               "trajectory", indent=1, nan_to_null=True)  # fmt: skip
    with atomic_path(files["trajectory_csv"], "trajectory") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*TRAJECTORY_FIELDS, "query"], extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "arch": json.dumps(r["arch"], default=json_default)})
    if cfg.plots:
        from latkit.search.plots import plot_trajectory

        files.update(plot_trajectory(out, rows, target_ms, (accuracy, latency)))
    return files, doc
