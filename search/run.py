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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latkit._files import atomic_path, check_output_dir, json_default, read_json, write_json
from latkit._version import __version__
from latkit.errors import StoreError, UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace, get_space
from latkit.search.framework.base import get_algorithm
from latkit.search.target import check_reachable, check_target_ms
from latkit.search.supernet.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
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
    rows: list[Mapping[str, object]] = field(default_factory=list)  # trajectory.json's rows


def run_search(
    space: SearchSpace | str,
    latency_model: Any,
    target_ms: float,
    algorithm: str = "proxyless-grad",
    data: SearchData | str = "digits",
    epochs: int = 10,
    seed: int = 0,
    out_dir: str | Path = "search_out",
    *,
    resolution: int | None = None,
    queries: int = 50,
    config: ProxylessConfig | None = None,
    algorithm_options: dict[str, Any] | None = None,
    eval_samples: int = 2,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    plots: bool = True,
    threads: int | None = 1,
    max_images: int | None = None,
    smooth_samples: int | None = None,
    train_steps: int | None = None,
    inherit: bool = True,
    on_stage: Callable[[str, int, int, str], None] | None = None,
) -> SearchOutcome:
    """Search ``space`` for the best architecture with ``latency_model(arch) <= target_ms``.

    Args:
        space: the space (or its registered name); its layers must be those the
            latency model was built for.
        latency_model: a :mod:`latkit.lut.tables` model (LUT, calibrated
            LUT, or predictor; ``proxyless-grad`` needs ``expected_latency``).
        target_ms: the hard latency target ``T`` (ms).
        algorithm: ``proxyless-grad`` or any registered query-based algorithm
            (``reinforce``, ``ppo``, ``evolution``, ``random``, ``parsec``, a plug-in).
        data: a :class:`SearchData` or a :func:`~latkit.search.supernet.data.load_data` spec
            (``digits``, ``cifar10:PATH``, ``folder:PATH``).
        epochs: training epochs of the supernet (for ``proxyless-grad``, the first
            ``config.warmup_epochs`` train weights only).
        seed: seed of every random draw.
        out_dir: where the artefacts go (created).
        resolution: training resolution of the supernet (default the dataset's);
            may be lower than the LUT's, the supernet is resolution-agnostic.
        queries: accuracy queries of ``reinforce`` / ``evolution`` / ``random``.
        config: ``proxyless-grad`` hyper-parameters.
        algorithm_options: extra keyword options of the framework algorithm
            (e.g. ``{"w": -0.07}`` for reinforce).
        eval_samples: architectures sampled per epoch to evaluate for the
            accuracy-latency plot (``proxyless-grad``).
        resume: continue from the checkpoint in ``out_dir``.
        on_progress: called with a :class:`Progress` after every epoch.
        plots: write the PNG plots (needs matplotlib).
        threads: torch intra-op threads (``None`` leaves torch's setting).
        max_images: cap on images loaded from a dataset path.
        smooth_samples: for the query-based algorithms: score this
            many random sub-networks with the trained supernet, fit a GCN to them
            (:mod:`latkit.search.supernet.accuracy_gcn`) and search its smoothed
            accuracies instead of the supernet's raw ones.
        train_steps: for the query-based algorithms: no supernet; each queried
            architecture is trained on its own for this many steps
            (:class:`~latkit.search.supernet.train.TrainedAccuracy`), ``epochs`` unused.
        inherit: with ``train_steps``, start each architecture from the weights
            of the most similar one trained before (FNAS's knowledge pool).
        on_stage: called as ``(stage, done, total, message)`` inside the stages
            that have no epochs: ``"train"`` after every training step of every
            queried architecture (``train_steps``), ``"smooth"`` after every
            sub-network scored for the smoothed accuracy.

    Raises:
        UsageError: unknown algorithm, bad arguments.
        SearchError: the target is below the smallest reachable latency (the
            message names it).
    """
    get_algorithm(algorithm)  # UnknownNameError listing the registered ones
    if epochs < 1:
        raise UsageError(f"epochs must be >= 1, got {epochs}")
    if smooth_samples is not None and (algorithm == GRADIENT_ALGORITHM or smooth_samples < 4):
        raise UsageError("smoothing needs a query-based algorithm (reinforce, ppo, evolution, random) "
                         f"and at least 4 samples, got {algorithm} with {smooth_samples}")
    if train_steps is not None and (algorithm == GRADIENT_ALGORITHM or smooth_samples is not None or train_steps < 1):
        raise UsageError("per-architecture training needs a query-based algorithm (reinforce, ppo, evolution, "
                         f"random), no smoothing and at least 1 step, got {algorithm} with {train_steps} steps")
    target_ms = check_target_ms(target_ms)
    out = check_output_dir(out_dir, "--out folder")
    space = get_space(space) if isinstance(space, str) else space
    min_ms, _ = latency_model.min_latency(space)
    check_reachable(space.name, float(target_ms), float(min_ms))
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if isinstance(data, str):
        data = load_data(data, resolution or 32, seed=seed, max_images=max_images)
    supernet: Supernet | None = None
    if train_steps is not None:
        stage = on_stage or (lambda *a: None)
        evaluator: Any = TrainedAccuracy(space, data, resolution or data.resolution, steps=train_steps,
                                         inherit=inherit, seed=seed,
                                         on_step=lambda done, msg: stage("train", done, queries * train_steps, msg))
    else:
        supernet = Supernet(space, data.n_classes, resolution or data.resolution, seed=seed)
        evaluator = SupernetAccuracy(supernet, data, seed=seed)
    if algorithm != GRADIENT_ALGORITHM:  # trained mode: "epoch" 0, no supernet
        evaluator = RecordedAccuracy(evaluator, space, out / "queries.json", 0 if supernet is None else epochs, resume)
    if algorithm == GRADIENT_ALGORITHM:
        assert supernet is not None
        arch, rows = _run_proxyless(supernet, latency_model, data, target_ms, epochs, seed, out,
                                    config, evaluator, eval_samples, resume, on_progress)  # fmt: skip
        extra: dict[str, Any] = {"config": _asdict(config or ProxylessConfig())}
    else:
        arch, rows, extra = _run_framework(space, supernet, latency_model, data, target_ms, algorithm, epochs,
                                           seed, out, queries, algorithm_options or {}, evaluator,
                                           resume, on_progress, smooth_samples, on_stage)  # fmt: skip
    latency = float(latency_model.latency_ms(arch))
    accuracy = float(evaluator.accuracy(arch))
    files, document = _write_outputs(out, space, arch, latency, accuracy, target_ms, latency_model, evaluator,
                           algorithm, seed, epochs, rows, extra, plots)  # fmt: skip
    return SearchOutcome(arch, space.arch_to_native(arch), latency, accuracy, float(target_ms), out, files,
                         document, rows)  # fmt: skip


def _asdict(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(obj)


def _run_proxyless(
    supernet: Supernet, latency_model: Any, data: SearchData, target_ms: float, epochs: int, seed: int,
    out: Path, config: ProxylessConfig | None, evaluator: SupernetAccuracy, eval_samples: int,
    resume: bool, on_progress: Callable[[Progress], None] | None,
) -> tuple[Arch, list[dict[str, Any]]]:  # fmt: skip
    search = ProxylessGradSearch(supernet, latency_model, data, target_ms, config, seed)
    rows: list[dict[str, Any]] = []
    if resume and has_checkpoint(out):
        tensors, state = load_checkpoint(out)
        search.load_state(tensors, state)
        rows = state.get("trajectory", [])
        log.info("resumed %s at epoch %d", out, search.epoch)
    space = supernet.space
    while search.epoch < epochs:
        info = search.run_epoch()
        derived = search.derived()
        acc = evaluator.accuracy(derived)
        rows.append(_row(info.epoch, "derived", space.arch_to_native(derived), acc,
                         info.derived_latency_ms, info.expected_latency_ms, info.loss, target_ms))  # fmt: skip
        for _ in range(eval_samples):
            arch = search.sample_arch()
            lat = latency_model.latency_ms(arch)
            rows.append(_row(info.epoch, "sampled", space.arch_to_native(arch), evaluator.accuracy(arch),
                             lat, info.expected_latency_ms, info.loss, target_ms))  # fmt: skip
        tensors, state = search.state()
        save_checkpoint(out, tensors, {**state, "algorithm": "proxyless-grad", "trajectory": rows})
        if on_progress is not None:
            on_progress(Progress(info.epoch, epochs, info.loss, info.expected_latency_ms,
                                 info.derived_arch, info.derived_latency_ms, acc))  # fmt: skip
    final = search.final_arch()
    return final, rows


def _run_framework(
    space: SearchSpace, supernet: Supernet | None, latency_model: Any, data: SearchData, target_ms: float,
    algorithm: str,
    epochs: int, seed: int, out: Path, queries: int, options: dict[str, Any],
    evaluator: Any, resume: bool, on_progress: Callable[[Progress], None] | None,
    smooth_samples: int | None = None,
    on_stage: Callable[[str, int, int, str], None] | None = None,
) -> tuple[Arch, list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    from latkit.search.framework.base import run_algorithm
    from latkit.search.supernet.checkpoint import optimizer_state, restore_optimizer

    rng = np.random.default_rng(seed)
    start, rows = 0, []
    if supernet is None:  # per-architecture training: nothing to train up front
        start = epochs
    else:
        opt = weight_optimizer(supernet.parameters())
    if supernet is not None and resume and has_checkpoint(out):
        tensors, state = load_checkpoint(out)
        supernet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        restore_optimizer(opt, "opt_w", tensors, state["weight_opt"])
        rng.bit_generator.state = state["numpy_rng"]
        start, rows = int(state["epoch"]), state.get("trajectory", [])
    for epoch in range(start, epochs):  # uniform single-path training (one-shot supernet)
        assert supernet is not None
        supernet.train()
        losses = []
        for x, y in data.batches("train", 64, rng):
            arch = space.sample(rng)
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(supernet(x, arch), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        tensors = {f"net.{k}": v for k, v in supernet.state_dict().items()}
        ot, oj = optimizer_state(opt, "opt_w")
        tensors.update(ot)
        save_checkpoint(out, tensors, {"algorithm": algorithm, "epoch": epoch + 1, "weight_opt": oj,
                                       "numpy_rng": rng.bit_generator.state, "trajectory": rows})  # fmt: skip
        if on_progress is not None:
            on_progress(Progress(epoch + 1, epochs, float(np.mean(losses)), None, None, None, None))
    accuracy_model: Any = evaluator
    smoothing: dict[str, Any] = {}
    if smooth_samples:
        from latkit.search.supernet.accuracy_gcn import SmoothedAccuracy

        accuracy_model, archs, scores = SmoothedAccuracy.from_evaluator(
            space, _Counted(evaluator, "smooth", smooth_samples, on_stage), smooth_samples,
            np.random.default_rng([seed, 2]), random_state=seed,
        )
        accuracy_model.save(out / "accuracy_gcn")
        for a, acc in zip(archs, scores):
            rows.append(_row(epochs, "supernet-sample", space.arch_to_native(a), float(acc), float(latency_model.latency_ms(a)),
                             None, None, target_ms))  # fmt: skip
        smoothing = {"smoothed_accuracy": {"samples": len(archs), "model": str(out / "accuracy_gcn")}}
    result = run_algorithm(algorithm, space, accuracy_model, latency_model, float(target_ms), queries,
                              np.random.default_rng(seed), seed=seed, **options)  # fmt: skip
    for i, q in enumerate(result.trajectory):
        rows.append(_row(epochs, "query", q.arch, q.accuracy, q.latency_ms, None, None, target_ms))
        rows[-1]["query"] = i + 1
    best = space.arch_from_native(result.best_arch)
    extra = {"queries_used": result.queries_used, "search_wall_s": result.wall_s, **smoothing, **result.extra}
    trained = getattr(evaluator, "inner", evaluator)
    if isinstance(trained, TrainedAccuracy):  # what the knowledge pool gave each trained architecture
        extra["trained"] = trained.history
    return best, rows, extra


class _Counted:
    """An accuracy model that reports each architecture it scores as one step of a stage."""

    def __init__(self, inner: Any, stage: str, total: int, on_stage: Callable[[str, int, int, str], None] | None):
        self.inner, self.stage, self.total, self.on_stage, self.done = inner, stage, total, on_stage, 0

    def accuracy(self, arch: Arch) -> float:
        """The inner model's accuracy of ``arch``, reported to ``on_stage``."""
        acc = self.inner.accuracy(arch)
        self.done += 1
        if self.on_stage is not None:
            self.on_stage(self.stage, self.done, self.total, f"accuracy {acc:.1f}%")
        return acc

    @property
    def provenance(self) -> dict[str, Any]:
        """The inner model's provenance (what the smoothed model records it was fitted on)."""
        return getattr(self.inner, "provenance", {})


def _row(epoch: int, kind: str, native: Any, acc: float, lat: float, expected: float | None,
         loss: float | None, target_ms: float) -> dict[str, Any]:  # fmt: skip
    return {"epoch": epoch, "kind": kind, "arch": native, "accuracy": float(acc),
            "latency_ms": float(lat), "expected_latency_ms": expected, "loss": loss,
            "feasible": bool(lat <= target_ms)}  # fmt: skip


def _write_outputs(
    out: Path, space: SearchSpace, arch: Arch, latency: float, accuracy: float, target_ms: float,
    latency_model: Any, evaluator: SupernetAccuracy, algorithm: str, seed: int, epochs: int,
    rows: list[dict[str, Any]], extra: dict[str, Any], plots: bool,
) -> tuple[dict[str, Path], dict[str, object]]:  # fmt: skip
    resolution = (getattr(latency_model, "provenance", {}) or {}).get("resolution")
    doc = {
        "schema": ARCH_SCHEMA, "schema_version": ARCH_SCHEMA_VERSION, "latkit_version": __version__,
        "space": space.name, "arch": space.arch_to_native(arch), "resolution": resolution,
        "target_ms": float(target_ms), "latency_ms": latency, "meets_target": latency <= target_ms,
        "latency_model": dict(getattr(latency_model, "provenance", {}) or {}),
        "accuracy": {"top1_pct": accuracy, **evaluator.provenance},
        "search": {"algorithm": algorithm, "seed": seed, "epochs": epochs, **extra},
    }  # fmt: skip
    files = {"arch": out / "arch.json", "trajectory_json": out / "trajectory.json",
             "trajectory_csv": out / "trajectory.csv"}  # fmt: skip
    write_json(files["arch"], doc, "arch.json", indent=1, nan_to_null=True)
    write_json(files["trajectory_json"],
               {"schema": "latkit.search.trajectory", "schema_version": 1, "latkit_version": __version__,
                "space": space.name, "target_ms": float(target_ms), "algorithm": algorithm, "rows": rows},
               "trajectory", indent=1, nan_to_null=True)  # fmt: skip
    with atomic_path(files["trajectory_csv"], "trajectory") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*TRAJECTORY_FIELDS, "query"], extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "arch": json.dumps(r["arch"], default=json_default)})
    if plots:
        from latkit.search.pipeline.plots import plot_trajectory

        files.update(plot_trajectory(out, rows, float(target_ms), (accuracy, latency)))
    return files, doc

