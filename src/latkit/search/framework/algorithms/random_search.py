"""Random search: uniform feasible samples, each queried once."""

from __future__ import annotations

from latkit.search.framework.base import SearchContext, register_algorithm


@register_algorithm("random")
def random_search(ctx: SearchContext, max_iterations: int | None = None) -> dict[str, object]:
    """Query uniformly random feasible architectures until the budget is spent.

    Args:
        ctx: the search problem.
        max_iterations: bound on draws (default ``20 x budget``; repeats are free
            but still count as iterations).
    """
    limit = max_iterations or 20 * ctx.budget
    for _ in range(limit):
        if ctx.remaining <= 0:
            break
        ctx.query(ctx.sample_feasible())
    return {}
