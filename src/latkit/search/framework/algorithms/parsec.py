"""PARSEC-style probabilistic search (Casale et al., 2019).

The architecture is a random variable with a factorised categorical prior
``p(alpha | pi)``. Each round draws architectures from it, weights each by an
importance weight proportional to its likelihood - here ``exp(R / tau)``, the
reward standing in for the log-likelihood of the validation data - and refits
``pi`` by Monte-Carlo empirical Bayes: the weighted option frequencies, mixed into
the current ``pi``. ``pi`` can start from a distribution learnt on a proxy problem
(transfer), e.g. the ``policy`` that another PARSEC run returned.
"""

from __future__ import annotations

import numpy as np

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch
from latkit.search.framework.base import SearchContext, register_algorithm, reward


def importance_weights(rewards: np.ndarray, temperature: float) -> np.ndarray:
    """Self-normalised weights ``exp(R_k / tau) / sum_j exp(R_j / tau)``.

    Raises:
        UsageError: a non-positive temperature or no rewards.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if temperature <= 0 or r.size == 0:
        raise UsageError("importance weights need rewards and a positive temperature")
    z = np.exp((r - r.max()) / temperature)  # shift by the max: no overflow
    return z / z.sum()


def empirical_bayes_update(
    probs: list[np.ndarray],
    archs: list[Arch],
    weights: np.ndarray,
    step: float = 1.0,
    smoothing: float = 0.0,
) -> list[np.ndarray]:
    """One Monte-Carlo empirical-Bayes step on a factorised categorical.

    ``pi_c <- (1 - step) pi_c + step * normalise(sum_k w_k onehot(alpha_kc) + smoothing)``.

    Args:
        probs: current probabilities per choice.
        archs: the sampled architectures.
        weights: their importance weights (need not be normalised).
        step: how far to move toward the weighted frequencies (1: all the way).
        smoothing: a pseudo-count added to every option (keeps options alive).
    """
    w = np.asarray(weights, dtype=np.float64)
    new = []
    for c, p in enumerate(probs):
        freq = np.full(len(p), smoothing, dtype=np.float64)
        for arch, wk in zip(archs, w):
            freq[arch.indices[c]] += wk
        freq /= freq.sum()
        new.append((1.0 - step) * np.asarray(p, dtype=np.float64) + step * freq)
    return new


def _sample(probs: list[np.ndarray], space: str, rng: np.random.Generator) -> Arch:
    return Arch(space, tuple(int(rng.choice(len(p), p=p)) for p in probs))


@register_algorithm("parsec")
def parsec(
    ctx: SearchContext,
    samples_per_round: int = 10,
    temperature: float | None = None,
    step: float = 0.5,
    smoothing: float = 0.05,
    w: float = -0.07,
    two_sided: bool = False,
    init_probs: list[list[float]] | None = None,
    max_rounds: int | None = None,
) -> dict[str, object]:
    """Probabilistic search by importance-weighted empirical Bayes.

    Args:
        ctx: the search problem.
        samples_per_round: architectures drawn per update.
        temperature: ``tau`` in reward units; default: half the round's reward spread.
        step: mixing rate of the empirical-Bayes update.
        smoothing: pseudo-count per option in the update.
        w, two_sided: the reward (see :func:`latkit.search.framework.base.reward`).
        init_probs: a starting ``pi`` (transfer from a proxy problem).
        max_rounds: bound on rounds (default ``20 x budget / samples_per_round``).
    """
    if init_probs is None:
        probs = [np.full(n, 1.0 / n) for n in ctx.n_options]
    else:
        if len(init_probs) != len(ctx.n_options):
            raise UsageError("init_probs does not match the space's choices")
        probs = [np.clip(np.asarray(p, float), 1e-6, None) for p in init_probs]
        probs = [p / p.sum() for p in probs]
    limit = max_rounds or max(1, 20 * ctx.budget // samples_per_round)
    for _ in range(limit):
        if ctx.remaining <= 0:
            break
        archs = [
            ctx.sample_feasible(lambda: _sample(probs, ctx.space.name, ctx.rng))
            for _ in range(samples_per_round)
        ]
        evaluated, rewards_list = [], []
        for a in archs:
            if not ctx.can_query(a):  # the budget ended mid-round
                break
            evaluated.append(a)
            rewards_list.append(reward(ctx.query(a), ctx.latency_ms(a), ctx.target_ms, w, two_sided))
        if not evaluated:
            break
        archs, rewards = evaluated, np.array(rewards_list)
        tau = temperature if temperature is not None else max(0.5 * float(rewards.std()), 1e-3)
        probs = empirical_bayes_update(probs, archs, importance_weights(rewards, tau), step, smoothing)
    return {"policy": [p.tolist() for p in probs]}
