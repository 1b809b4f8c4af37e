"""The search framework: problem, query accounting, results, reward, registry.

A search space is the list of categorical choices of a
:class:`~latkit.profiler.spaces.SearchSpace`. An algorithm receives everything it
works with as arguments (OFA ``EvolutionFinder``-style injection): an accuracy
model, a latency model, a latency target ``T`` (ms, a hard constraint), a budget of
accuracy queries and a :class:`numpy.random.Generator`. It talks to them only
through a :class:`SearchContext`, which

* counts every *distinct* architecture whose accuracy is looked up as one query
  (repeats are answered from a cache and cost nothing);
* refuses a target below the smallest latency the model can reach, naming it;
* bounds every rejection-sampling loop;
* records the trajectory (arch, accuracy, latency, feasible, best so far).

Latency lookups are free: the latency model (a table, a LUT, a predictor) is the
cheap side of the problem; accuracy is the expensive one.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace
from latkit.core.registry import Registry
from latkit.search.framework.result import SCHEMA, SCHEMA_VERSION, Query, SearchError, SearchResult
from latkit.search.target import check_reachable, check_target_ms

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "AccuracyModel",
    "BudgetSpent",
    "LatencyModel",
    "Query",
    "SearchContext",
    "SearchError",
    "SearchResult",
    "get_algorithm",
    "list_algorithms",
    "min_latency",
    "register_algorithm",
    "reward",
    "run_algorithm",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_TRIES = 1000  # rejection-sampling draws before falling back to a walk
class BudgetSpent(Exception):
    """Internal signal: the query budget is used up (the runner catches it)."""


# --------------------------------------------------------------------------- models


@runtime_checkable
class LatencyModel(Protocol):
    """Anything that gives an architecture's latency in ms.

    Optional extras a search uses when present: ``latency_ms_batch(archs)``,
    ``min_latency(space) -> (ms, arch)`` (the smallest reachable latency) and a
    ``provenance`` dict recorded in the result.
    """

    def latency_ms(self, arch: Arch) -> float:
        """Latency of ``arch`` in milliseconds."""


@runtime_checkable
class AccuracyModel(Protocol):
    """Anything that gives an architecture's accuracy (percent)."""

    def accuracy(self, arch: Arch) -> float:
        """Accuracy of ``arch``; an expensive call, counted as one query."""


# --------------------------------------------------------------------------- reward


def reward(acc: float, lat: float, target: float, w: float, two_sided: bool = False) -> float:
    """MnasNet's latency-aware reward ``ACC * (LAT / T) ** w``.

    Args:
        acc: accuracy (any scale; the reward has the same scale).
        lat: latency in ms.
        target: the target ``T`` in ms.
        w: the exponent, usually negative (e.g. ``-0.07`` soft, ``-1`` hard).
        two_sided: ``False`` (hard form): the factor applies only above ``T``,
            feasible architectures get ``acc``; ``True`` (soft form): it applies on
            both sides, rewarding faster-than-needed architectures a little.

    Raises:
        UsageError: a non-positive latency or target.
    """
    if target <= 0 or lat <= 0:
        raise UsageError(f"reward needs positive latency and target, got {lat} and {target} ms")
    if not two_sided and lat <= target:
        return float(acc)
    return float(acc * (lat / target) ** w)


# --------------------------------------------------------------------------- context


def min_latency(space: SearchSpace, model: Any, rng: np.random.Generator) -> tuple[float, Arch]:
    """The smallest latency ``model`` reaches in ``space`` and an arch that reaches it.

    Exact when the model offers ``min_latency(space)`` (tables: the table's
    minimum; additive models: the per-choice minimum). Otherwise a bounded
    coordinate descent from a few random starts gives an upper bound.
    """
    if callable(getattr(model, "min_latency", None)):
        ms, arch = model.min_latency(space)
        return float(ms), arch
    best: tuple[float, Arch] | None = None
    for _ in range(4):
        arch = space.sample(rng)
        cur = model.latency_ms(arch)
        for _sweep in range(10):
            improved = False
            for c, choice in enumerate(space.choices()):
                for o in range(len(choice.options)):
                    cand = _with_choice(arch, c, o)
                    lat = model.latency_ms(cand)
                    if lat < cur:
                        arch, cur, improved = cand, lat, True
            if not improved:
                break
        if best is None or cur < best[0]:
            best = (float(cur), arch)
    assert best is not None
    return best


def _with_choice(arch: Arch, c: int, option: int) -> Arch:
    idx = list(arch.indices)
    idx[c] = option
    return Arch(arch.space, tuple(idx))


class SearchContext:
    """The problem as one algorithm sees it: evaluation, budget, feasibility.

    Args:
        space: the search space.
        accuracy: an :class:`AccuracyModel`.
        latency: a :class:`LatencyModel`.
        target_ms: the hard latency target ``T``.
        budget: the number of distinct architectures whose accuracy may be looked up.
        rng: the generator every random decision draws from.
        max_tries: rejection-sampling draws before :meth:`sample_feasible` falls back.

    Raises:
        UsageError: a non-positive budget or target.
        SearchError: ``target_ms`` is below the smallest reachable latency.
    """

    def __init__(
        self,
        space: SearchSpace,
        accuracy: AccuracyModel,
        latency: LatencyModel,
        target_ms: float,
        budget: int,
        rng: np.random.Generator,
        max_tries: int = DEFAULT_MAX_TRIES,
    ) -> None:
        if budget < 1:
            raise UsageError(f"the query budget must be >= 1, got {budget}")
        target_ms = check_target_ms(target_ms)
        self.space, self.accuracy_model, self.latency_model = space, accuracy, latency
        self.target_ms, self.budget, self.rng, self.max_tries = target_ms, budget, rng, max_tries
        self.choices = space.choices()
        self.n_options = [len(c.options) for c in self.choices]
        self.min_latency_ms, self.min_arch = min_latency(space, latency, rng)
        check_reachable(space.name, target_ms, self.min_latency_ms)
        self._acc: dict[Arch, float] = {}
        self._lat: dict[Arch, float] = {}
        self.trajectory: list[Query] = []
        self.best: tuple[float, Arch] | None = None

    # ---- free lookups ----

    def latency_ms(self, arch: Arch) -> float:
        """Latency from the model (free, cached)."""
        lat = self._lat.get(arch)
        if lat is None:
            lat = float(self.latency_model.latency_ms(arch))
            self._lat[arch] = lat
        return lat

    def feasible(self, arch: Arch) -> bool:
        """Whether ``arch`` meets the target under the latency model."""
        return self.latency_ms(arch) <= self.target_ms

    def known(self, arch: Arch) -> bool:
        """Whether ``arch``'s accuracy is cached (looking it up again is free)."""
        return arch in self._acc

    def can_query(self, arch: Arch) -> bool:
        """Whether :meth:`query` would answer (cached, or budget left)."""
        return arch in self._acc or self.remaining > 0

    @property
    def used(self) -> int:
        """Queries spent so far."""
        return len(self._acc)

    @property
    def remaining(self) -> int:
        """Queries left."""
        return self.budget - len(self._acc)

    @property
    def best_accuracy(self) -> float | None:
        """Best feasible accuracy found so far."""
        return None if self.best is None else self.best[0]

    # ---- the expensive lookup ----

    def query(self, arch: Arch) -> float:
        """The accuracy of ``arch``; a new architecture spends one query.

        Raises:
            BudgetSpent: ``arch`` is new and the budget is used up.
        """
        acc = self._acc.get(arch)
        if acc is not None:
            return acc
        if self.remaining <= 0:
            raise BudgetSpent
        acc = float(self.accuracy_model.accuracy(arch))
        self._acc[arch] = acc
        lat = self.latency_ms(arch)
        ok = lat <= self.target_ms
        if ok and (self.best is None or acc > self.best[0]):
            self.best = (acc, arch)
        self.trajectory.append(
            Query(self.space.arch_to_native(arch), acc, lat, ok, self.best_accuracy)
        )
        return acc

    # ---- bounded sampling ----

    def sample_feasible(self, draw: Callable[[], Arch] | None = None) -> Arch:
        """A feasible architecture from ``draw`` (default: uniform), bounded.

        After ``max_tries`` infeasible draws it falls back to a random walk from
        the fastest architecture, which is feasible because the target was
        checked to be reachable.
        """
        draw = draw or (lambda: self.space.sample(self.rng))
        for _ in range(self.max_tries):
            arch = draw()
            if self.feasible(arch):
                return arch
        return self.random_feasible_walk(self.min_arch, steps=len(self.choices))

    def sample_feasible_many(self, draw_many: Callable[[int], list[Arch]], n: int) -> list[Arch]:
        """Up to ``n`` feasible architectures from a batch sampler, in at most
        ``max_tries`` rounds of ``n`` draws; at least one (the fallback walk of
        :meth:`sample_feasible` when no draw is feasible)."""
        out: list[Arch] = []
        for _ in range(self.max_tries):
            out.extend(a for a in draw_many(n) if self.feasible(a))
            if out:
                return out[:n]
        return [self.random_feasible_walk(self.min_arch, steps=len(self.choices))]

    def random_feasible_walk(self, start: Arch, steps: int) -> Arch:
        """Up to ``steps`` random one-choice mutations of ``start`` that stay feasible."""
        arch = start
        for _ in range(steps):
            for _try in range(20):
                cand = self.mutate(arch)
                if self.feasible(cand):
                    arch = cand
                    break
        return arch

    def mutate(self, arch: Arch) -> Arch:
        """``arch`` with one choice changed to another option at random."""
        movable = [c for c, n in enumerate(self.n_options) if n > 1]
        c = int(self.rng.choice(movable))
        other = int(self.rng.integers(self.n_options[c] - 1))
        return _with_choice(arch, c, other + (other >= arch.indices[c]))


# --------------------------------------------------------------------------- registry

Algorithm = Callable[..., Mapping[str, object] | None]

def _check_algorithm(obj: object) -> str | None:
    return None if callable(obj) else f"{obj!r} is not callable as fn(ctx, **options)"


# the built-in modules import this one to register, so the registry imports them by
# name on first lookup rather than this module importing them (no import cycle)
ALGORITHMS: Registry[Algorithm] = Registry(
    "search algorithm",
    "latkit.algorithms",
    builtins=(
        "latkit.search.framework.algorithms.evolution",
        "latkit.search.framework.algorithms.parsec",
        "latkit.search.framework.algorithms.ppo",
        "latkit.search.framework.algorithms.random_search",
        "latkit.search.framework.algorithms.reinforce",
        "latkit.search.supernet.proxyless_grad",
    ),
    check=_check_algorithm,
)


def register_algorithm(name: str) -> Callable[[Algorithm], Algorithm]:
    """Decorator: register ``fn(ctx, **options) -> extra dict | None`` under ``name``.

    The function spends queries through ``ctx`` until it stops or
    :class:`BudgetSpent` is raised; every loop in it must be bounded.
    """
    return ALGORITHMS.register(name)


# list_algorithms(pattern="*"): registered names matching a glob; get_algorithm(name): the
# algorithm registered under it (UnknownNameError listing the valid names)
list_algorithms = ALGORITHMS.names
get_algorithm = ALGORITHMS.get


def _check_options(name: str, fn: Algorithm, options: Mapping[str, object]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [p for p in params if p != "ctx"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(
            f"search algorithm {name!r} has no option {', '.join(unknown)}; "
            f"options: {', '.join(known) or 'none'}"
        )


def run_algorithm(
    algorithm: str,
    space: SearchSpace,
    accuracy: AccuracyModel,
    latency: LatencyModel,
    target_ms: float,
    queries: int,
    rng: np.random.Generator,
    seed: int | None = None,
    **options: Any,
) -> SearchResult:
    """Run a registered algorithm on one problem and package its result.

    Raises:
        UnknownNameError: unknown algorithm.
        SearchError: unreachable target, or no feasible architecture queried.
    """
    fn = get_algorithm(algorithm)
    _check_options(algorithm, fn, options)
    start = time.perf_counter()
    ctx = SearchContext(space, accuracy, latency, target_ms, queries, rng)
    extra: Mapping[str, object] | None = None
    try:
        extra = fn(ctx, **options)
    except BudgetSpent:
        pass
    wall_s = time.perf_counter() - start
    if ctx.best is None:
        raise SearchError(
            f"{algorithm} found no architecture within {target_ms:g} ms in {ctx.used} "
            "queries; raise --queries or --target-ms"
        )
    acc, arch = ctx.best
    log.info("%s: best %.3f at %.3f ms after %d queries", algorithm, acc, ctx.latency_ms(arch), ctx.used)
    return SearchResult(
        algorithm=algorithm,
        space=space.name,
        target_ms=float(target_ms),
        budget=int(queries),
        seed=seed,
        best_arch=space.arch_to_native(arch),
        best_accuracy=acc,
        best_latency_ms=ctx.latency_ms(arch),
        queries_used=ctx.used,
        wall_s=wall_s,
        trajectory=ctx.trajectory,
        latency_provenance=dict(getattr(latency, "provenance", {}) or {}),
        accuracy_provenance=dict(getattr(accuracy, "provenance", {}) or {}),
        extra=extra or {},
    )
