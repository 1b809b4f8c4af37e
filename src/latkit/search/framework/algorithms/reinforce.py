"""REINFORCE (Williams, 1992) with a factorised categorical policy, as in MnasNet.

Each step samples an architecture from the policy (rejection-sampled, bounded, to
meet the target under the free latency model), queries its accuracy, turns it into
the reward ``ACC * (LAT/T)^w`` and moves the logits along ``(R - b) grad log pi``,
``b`` a moving-average baseline.
"""

from __future__ import annotations

from latkit.search.framework.base import SearchContext, register_algorithm, reward
from latkit.search.framework.policy import CategoricalPolicy, RunningBaseline


@register_algorithm("reinforce")
def reinforce(
    ctx: SearchContext,
    lr: float = 0.2,
    w: float = -0.07,
    two_sided: bool = False,
    baseline_decay: float = 0.9,
    max_iterations: int | None = None,
) -> dict[str, object]:
    """Policy-gradient search.

    Args:
        ctx: the search problem.
        lr: step size on the logits (advantages are scale-normalised).
        w: reward exponent (see :func:`latkit.search.framework.base.reward`).
        two_sided: soft (two-sided) reward instead of the hard form.
        baseline_decay: moving-average decay of the baseline.
        max_iterations: bound on policy samples (default ``20 x budget``).
    """
    policy = CategoricalPolicy(ctx.space.name, ctx.n_options)
    baseline = RunningBaseline(baseline_decay)
    limit = max_iterations or 20 * ctx.budget
    for _ in range(limit):
        if ctx.remaining <= 0:
            break
        arch = ctx.sample_feasible(lambda: policy.sample(ctx.rng))
        r = reward(ctx.query(arch), ctx.latency_ms(arch), ctx.target_ms, w, two_sided)
        adv = baseline.advantage(r)
        policy.step([adv * g for g in policy.grad_log_prob(arch)], lr)
    return {"policy": [p.tolist() for p in policy.probs()]}
