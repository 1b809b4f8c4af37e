"""The search stage of :func:`latkit.pipeline.runner.run_pipeline`, and its hand-over to training.

The gradient search runs on the per-slot latency tables of the device's
calibrated LUT (with the dataset's classifier) and spends the latency budget
it left unused (:func:`~latkit.search.target.fill_to_target`, inside
:func:`~latkit.search.run.run_search`); :func:`adopt_supernet_weights`
starts the final network from the supernet's weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from latkit.core.files import write_json
from latkit.devices.precision import Precision
from latkit.profiler.spaces.base import Network, SearchSpace, with_classes
from latkit.pipeline.stages import EpochPoint, ScoredArch, SearchStageResult
from latkit.search.target import check_reachable, range_warning

if TYPE_CHECKING:
    import torch

    from latkit.lut.tables import TableLatencyModel
    from latkit.profiler.ops import OpSpec
    from latkit.search.run import SearchOutcome
    from latkit.search.supernet.data import SearchData

log = logging.getLogger(__name__)

SEARCH_RESOLUTION = 32  # the supernet trains at most at this resolution


def classifier_specs(space: SearchSpace, resolution: int, n_classes: int | None) -> list[OpSpec]:
    """The classifier spec of the space at ``resolution`` (with ``n_classes`` outputs if given)."""
    choices = space.choices()
    net = space.network(space.from_options([c.options[0] for c in choices]), resolution)
    return [(with_classes(net, n_classes) if n_classes else net).layers[-1].spec]


def adopt_supernet_weights(module: torch.nn.Module, search: SearchStageResult, space_network: Network) -> str:
    """Start the final network from the supernet's weights (the search checkpoint).

    Supernet tensors are ``net.layers.{i}.candidates.{module_id}.{rest}`` (module
    ids from the space's specs); the standalone names are ``{i}_{layer}.{rest}``.
    """
    from latkit.search.supernet.checkpoint import has_checkpoint, load_checkpoint
    from latkit.search.supernet.supernet import module_id

    folder = Path(search.folder)
    if not has_checkpoint(folder):
        return "scratch"
    tensors, _ = load_checkpoint(folder)
    own = module.state_dict()
    picked = {}
    for i, layer in enumerate(space_network.layers):
        src = f"net.layers.{i}.candidates.{module_id(layer.spec)}."
        dst = f"{i}_{layer.name}".replace(".", "_") + "."
        for k, v in tensors.items():
            name = dst + k[len(src):]
            if k.startswith(src) and name in own and tuple(v.shape) == tuple(own[name].shape):
                picked[name] = v
    module.load_state_dict(picked, strict=False)
    return f"supernet ({len(picked)}/{len(own)} tensors)"


@dataclass(frozen=True)
class SearchInputs:
    """What the search stage needs of a run: the space, its calibrated LUT, the data and the settings.

    Attributes:
        space: the search space.
        lut_path: the run's LUT file (profiled and calibrated).
        device: the device URI the LUT belongs to.
        resolution: the deployed network's input resolution.
        precision: the LUT rows searched (the shipped precision).
        data: the run's dataset at ``resolution``.
        data_spec: its spec (reloaded at the supernet's resolution when smaller).
        target_ms: the user's target, resolved to ms.
        target_text: the target as the report states it.
        tolerance: how far over the target still counts as within the budget.
        epochs, warmup_epochs, max_steps_per_epoch, eval_samples, seed: the search settings.
        options: extra :class:`~latkit.search.supernet.proxyless_grad.ProxylessConfig` fields.
    """

    space: SearchSpace
    lut_path: Path
    device: str
    resolution: int
    precision: Precision
    data: SearchData
    data_spec: str
    target_ms: float
    target_text: str
    tolerance: float
    epochs: int
    warmup_epochs: int
    max_steps_per_epoch: int | None
    eval_samples: int
    seed: int
    options: Mapping[str, object] = field(default_factory=dict)


def latency_model(space: SearchSpace, lut_path: Path, device: str, resolution: int, precision: Precision,
                  n_classes: int) -> TableLatencyModel:  # fmt: skip
    """The space's per-slot latency tables from the calibrated LUT, classifier at ``n_classes`` outputs."""
    from latkit.lut.store import LUT
    from latkit.lut.tables import TableLatencyModel

    with LUT.open(lut_path) as lut:
        return TableLatencyModel.from_lut(space, lut, device, resolution, calibrated=True, classes=n_classes,
                                          precision=precision)  # fmt: skip


def deployed_network(space: SearchSpace, native: object, resolution: int, n_classes: int) -> Network:
    """The network of a native architecture at ``resolution`` with the dataset's classifier."""
    return with_classes(space.network(space.arch_from_native(native), resolution), n_classes)


def _search_target(inp: SearchInputs, target_ms: float, range_ms: tuple[float, float]) -> float:
    """The target the search runs for: ``target_ms``, raised to the fastest network when below it."""
    min_ms, max_ms = range_ms
    warning = range_warning(inp.target_ms, range_ms, inp.space.name, inp.device, inp.tolerance)
    if warning:
        log.warning("%s", warning)
    if target_ms >= min_ms:
        return target_ms
    if target_ms == inp.target_ms:  # the user's own target, not a retry's scaled one
        check_reachable(inp.space.name, target_ms, min_ms, inp.device, max_ms,
                        " (the profiled LUT is kept, so the next run does not profile again)")  # fmt: skip
    log.warning("scaled target %.3f ms is below the fastest architecture (%.3f ms); using that", target_ms, min_ms)
    return min_ms * 1.0001


def _run_search(inp: SearchInputs, lm: TableLatencyModel, folder: Path, target_ms: float,
                say: Callable[[int, int, str], None]) -> SearchOutcome:  # fmt: skip
    from latkit.search.run import SearchConfig, run_search
    from latkit.search.supernet.data import load_data
    from latkit.search.supernet.proxyless_grad import ProxylessConfig

    # the supernet learns the digits as well at 32 px, at a quarter of the cost
    search_data = (inp.data if inp.resolution <= SEARCH_RESOLUTION
                   else load_data(inp.data_spec, SEARCH_RESOLUTION, seed=inp.seed))  # fmt: skip
    options = {"warmup_epochs": inp.warmup_epochs, "max_steps_per_epoch": inp.max_steps_per_epoch, **inp.options}
    return run_search(
        inp.space, lm, SearchConfig(target_ms, "proxyless-grad", inp.epochs, inp.seed, resume=True, threads=1,
                                    proxyless=ProxylessConfig(**options), eval_samples=inp.eval_samples),
        search_data, folder,
        on_progress=lambda pr: say(pr.epoch, pr.epochs, f"E[LAT] {pr.expected_latency_ms:.3f} ms, "
                                   f"derived {pr.best_latency_ms:.3f} ms, acc {pr.best_accuracy:.1f}%"),
    )  # fmt: skip


def search_stage(inp: SearchInputs, folder: Path, target_ms: float,
                 say: Callable[[int, int, str], None]) -> SearchStageResult:  # fmt: skip
    """Search for ``target_ms`` on the calibrated tables, fill the budget left, and write ``arch.json`` beside ``folder``."""
    from latkit.lut.estimate import estimate
    from latkit.lut.store import LUT

    n_classes = inp.data.n_classes
    lm = latency_model(inp.space, inp.lut_path, inp.device, inp.resolution, inp.precision, n_classes)
    range_ms = (lm.min_latency(inp.space)[0], lm.max_latency()[0])
    target_ms = _search_target(inp, target_ms, range_ms)
    outcome = _run_search(inp, lm, folder, target_ms, say)
    arch, native = outcome.arch, outcome.native  # filled to the target by the search (its record: "fill")
    fill = cast(dict[str, Any], outcome.document["search"]["fill"])
    with LUT.open(inp.lut_path) as lut:  # the deployed network's own estimate, as a check on the tables
        est = estimate(lut, deployed_network(inp.space, native, inp.resolution, n_classes), device=inp.device,
                       precision=inp.precision)  # fmt: skip
    if abs(est.total_ms - lm.latency_ms(arch)) > 1e-6 * max(1.0, est.total_ms):
        log.warning("search tables say %.4f ms, the LUT estimate %.4f ms", lm.latency_ms(arch), est.total_ms)
    arch_path = folder.parent / "arch.json"
    doc = {**outcome.document,
           "arch": native, "latency_ms": est.total_ms, "precision": inp.precision.value, "target_ms": inp.target_ms,
           "target": inp.target_text, "search_target_ms": target_ms, "meets_target": est.total_ms <= target_ms,
           "resolution": inp.resolution, "classes": n_classes,
           "fill": fill}
    write_json(arch_path, doc, "arch.json", indent=1, nan_to_null=True)
    rows = outcome.rows
    history: list[EpochPoint] = [
        {"epoch": r["epoch"], "expected_latency_ms": r["expected_latency_ms"], "derived_latency_ms": r["latency_ms"],
         "loss": r["loss"]} for r in rows if r["kind"] == "derived"]  # type: ignore[misc]  # fmt: skip
    samples: list[ScoredArch] = [{"latency_ms": r["latency_ms"], "accuracy": r["accuracy"]}  # type: ignore[misc]
                                 for r in rows if r["kind"] == "sampled"]  # fmt: skip
    return SearchStageResult(folder=str(folder), arch_path=str(arch_path), arch=native,
                             searched_arch=fill["searched_arch"], search_target_ms=target_ms,
                             predicted_ms=est.total_ms, accuracy=outcome.accuracy, history=history, samples=samples,
                             latency_model=lm.provenance, range_ms=list(range_ms))  # fmt: skip


__all__ = ["SEARCH_RESOLUTION", "SearchInputs", "adopt_supernet_weights", "classifier_specs",
           "deployed_network", "latency_model", "search_stage"]
