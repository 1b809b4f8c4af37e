"""Regularised (aging) evolution (Real et al., AAAI 2019) under a latency target.

A population of feasible architectures ages: each step picks the best of a random
tournament, mutates one choice, and the child replaces the oldest member.
Infeasible children are re-mutated a bounded number of times, then replaced by a
random feasible sample.
"""

from __future__ import annotations

from collections import deque

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch
from latkit.search.framework.base import SearchContext, register_algorithm


@register_algorithm("evolution")
def regularized_evolution(
    ctx: SearchContext,
    population_size: int = 20,
    tournament_size: int = 5,
    mutation_tries: int = 20,
    max_iterations: int | None = None,
) -> dict[str, object]:
    """Aging evolution with tournament selection and one-choice mutation.

    Args:
        ctx: the search problem.
        population_size: members kept (the oldest dies each step).
        tournament_size: members sampled to pick a parent.
        mutation_tries: mutations tried for a feasible child before a random one.
        max_iterations: bound on steps (default ``20 x budget``).

    Raises:
        UsageError: a tournament larger than the population.
    """
    if not 1 <= tournament_size <= population_size:
        raise UsageError("tournament_size must be in [1, population_size]")
    limit = max_iterations or 20 * ctx.budget
    population: deque[tuple[Arch, float]] = deque()
    steps = 0
    while len(population) < population_size and steps < limit and ctx.remaining > 0:
        steps += 1
        arch = ctx.sample_feasible()
        population.append((arch, ctx.query(arch)))
    while steps < limit and ctx.remaining > 0:
        steps += 1
        picks = ctx.rng.choice(len(population), size=tournament_size, replace=False)
        parent = max((population[int(i)] for i in picks), key=lambda m: m[1])[0]
        child = _feasible_child(ctx, parent, mutation_tries)
        population.append((child, ctx.query(child)))
        population.popleft()
    return {"steps": steps}


def _feasible_child(ctx: SearchContext, parent: Arch, tries: int) -> Arch:
    for _ in range(tries):
        child = ctx.mutate(parent)
        if ctx.feasible(child):
            return child
    return ctx.sample_feasible()
