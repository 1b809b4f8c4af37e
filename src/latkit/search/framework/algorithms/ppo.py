"""PPO architecture search after FNAS (2021), with its three sample savers.

The policy is a factorised categorical; each round samples a batch of feasible
architectures and updates it with PPO's clipped surrogate. Three parts, each
switchable so its effect can be measured:

* ``use_critic`` - an :class:`~latkit.search.framework.knowledge.EnsembleCritic` trained on
  the queried (arch, accuracy) pairs answers for an architecture when its members
  agree and the estimate cannot beat the incumbent (no query spent); otherwise
  the architecture is evaluated for real. Once fitted it also screens: each
  batch is the ``batch_size`` best (optimistic estimate) of ``screen`` distinct
  policy samples, so queries go where the critic expects to gain most.
* ``use_replay`` - past rollouts are replayed in every update, each weighted by
  the truncated importance ratio ``min(pi_new / pi_behaviour, clip)``.
* ``use_pool`` - an :class:`~latkit.search.framework.knowledge.ArchPool` of evaluated
  architectures cross-checks the critic: a close neighbour's accuracy is blended
  into the estimate and their disagreement widens its spread. ``pool_init``
  warm-starts it, e.g. with results of a proxy problem. The pool's other use,
  block-level weight inheritance, belongs to the accuracy model: with
  :class:`~latkit.search.supernet.train.TrainedAccuracy` (``latkit search --train-steps``)
  each queried architecture starts from its most similar predecessor's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latkit.profiler.spaces.base import Arch
from latkit.search.framework.base import BudgetSpent, SearchContext, register_algorithm, reward
from latkit.search.framework.knowledge import (
    ArchPool,
    EnsembleCritic,
    ReplayBuffer,
    Rollout,
    off_policy_weight,
    should_query,
)
from latkit.search.framework.policy import CategoricalPolicy, RunningBaseline, zero_grads


def clipped_surrogate_grad(
    policy: CategoricalPolicy, arch: Arch, logp_old: float, adv: float, eps: float
) -> list[np.ndarray]:
    """Gradient of PPO's ``min(rho A, clip(rho, 1-eps, 1+eps) A)`` for one sample.

    Zero where the clip is active (the ratio has already moved far enough in
    the direction the advantage asks for).
    """
    rho = float(np.exp(policy.log_prob(arch) - logp_old))
    if (adv > 0 and rho > 1 + eps) or (adv < 0 and rho < 1 - eps):
        return zero_grads(policy.n_options)
    return [rho * adv * g for g in policy.grad_log_prob(arch)]


@dataclass(frozen=True)
class CriticOptions:
    """How PPO's critic and knowledge pool decide whether to query.

    Attributes:
        critic_members: ensemble size.
        critic_min_samples: queries before the critic may answer.
        critic_max_std: spread (accuracy points) above which it never answers.
        critic_margin: an estimate within ``margin x std`` of the incumbent is queried.
        critic_floor_quantile: see :class:`~latkit.search.framework.knowledge.EnsembleCritic`.
        critic_refit: the critic is refitted once the new queries reach this
            share of those it was fitted on.
        pool_min_similarity: block similarity a pool neighbour needs to count.
        pool_init: ``(native arch, accuracy)`` pairs to warm-start the pool.
    """

    critic_members: int = 5
    critic_min_samples: int = 20
    critic_max_std: float = 1.0
    critic_margin: float = 2.0
    critic_floor_quantile: float = 0.25
    critic_refit: float = 0.02
    pool_min_similarity: float = 0.8
    pool_init: list[tuple[object, float]] | None = None


@dataclass(frozen=True)
class _Update:
    """PPO's update of the policy after a batch."""

    epochs: int
    lr: float
    clip_eps: float
    replay: bool
    replay_size: int
    replay_clip: float


class _Estimator:
    """Query-or-estimate, with the critic and pool of one PPO run."""

    def __init__(self, ctx: SearchContext, use_critic: bool, use_pool: bool, opts: CriticOptions):
        self.ctx, self.use_critic, self.use_pool, self.o = ctx, use_critic, use_pool, opts
        self.critic = EnsembleCritic(ctx.n_options, ctx.rng, members=opts.critic_members,
                                     floor_quantile=opts.critic_floor_quantile)  # fmt: skip
        self.pool = ArchPool(capacity=max(1000, ctx.budget))
        for native, acc in opts.pool_init or []:
            self.pool.add(ctx.space.arch_from_native(native), acc)
        self.seen: list[tuple[Arch, float]] = []
        self._fitted_at = 0
        self.saved = 0

    def accuracy(self, arch: Arch) -> tuple[float, bool]:
        """``(accuracy, queried)``; raises BudgetSpent when a query is due and none is left."""
        ctx = self.ctx
        if ctx.known(arch):
            return ctx.query(arch), False
        if self.use_critic and len(self.seen) >= self.o.critic_min_samples:
            self.refit()
            mean, std = (float(v[0]) for v in self.critic.predict([arch]))
            if self.use_pool:
                prior = self.pool.estimate(arch, min_similarity=self.o.pool_min_similarity)
                if prior is not None:
                    std = max(std, abs(mean - prior) / 2)
                    mean = 0.5 * (mean + prior)
            if not should_query(mean, std, ctx.best_accuracy, self.o.critic_max_std, self.o.critic_margin):
                self.saved += 1
                return mean, False
        acc = ctx.query(arch)
        self.seen.append((arch, acc))
        self.pool.add(arch, acc)
        return acc, True

    @property
    def ready(self) -> bool:
        """Whether the critic has been fitted and may be consulted."""
        return self.use_critic and self.critic.n_train > 0

    def refit(self) -> None:
        """Refit the critic when enough new queries have arrived since the last fit."""
        n = len(self.seen)
        if n - self._fitted_at >= max(1, int(n * self.o.critic_refit)) or self._fitted_at == 0:
            self.critic.fit([a for a, _ in self.seen], [v for _, v in self.seen])
            self._fitted_at = n


def _draw_batch(
    ctx: SearchContext, policy: CategoricalPolicy, est: _Estimator, screen: int, k: int
) -> list[Arch]:
    """``k`` feasible architectures for one PPO batch.

    Without screening (or before the critic is fitted) they are ``k`` policy
    samples. With screening, ``screen`` policy samples are drawn once for the
    batch and the ``k`` distinct ones with the highest optimistic critic estimate
    (``mean + critic_margin x std``) are kept, unqueried ones first.
    """
    if screen <= 1 or not est.ready:
        return [ctx.sample_feasible(lambda: policy.sample(ctx.rng)) for _ in range(k)]
    est.refit()
    pool = ctx.sample_feasible_many(lambda n: policy.sample_many(ctx.rng, n, unique=True), screen)
    mean, std = est.critic.predict(pool)
    score = mean + est.o.critic_margin * std
    order = sorted(range(len(pool)), key=lambda i: (ctx.known(pool[i]), -score[i]))
    picks = [pool[i] for i in order[:k]]
    return (picks * k)[:k]  # a policy that has collapsed to fewer than k archs repeats them


def _rollouts(ctx: SearchContext, policy: CategoricalPolicy, est: _Estimator, screen: int, batch_size: int,
              w: float, two_sided: bool) -> tuple[list[Rollout], int]:  # fmt: skip
    """One batch of rewarded rollouts, and how many architectures were drawn for it.

    A query due with no budget left ends the batch early (the policy is kept).
    """
    batch: list[Rollout] = []
    drawn = 0
    for arch in _draw_batch(ctx, policy, est, screen, batch_size):
        drawn += 1
        logp = policy.log_prob(arch)
        try:
            acc, queried = est.accuracy(arch)
        except BudgetSpent:  # finish with the batch so far; keep the policy
            break
        batch.append(Rollout(arch, logp, reward(acc, ctx.latency_ms(arch), ctx.target_ms, w, two_sided), queried))
    return batch, drawn


def _update(policy: CategoricalPolicy, batch: list[Rollout], baseline: RunningBaseline, buffer: ReplayBuffer,
            up: _Update, rng: np.random.Generator) -> None:  # fmt: skip
    """PPO's clipped-surrogate passes over ``batch``, plus importance-weighted replay of older rollouts."""
    advs = [baseline.advantage(ro.reward) for ro in batch]
    replay = buffer.sample(up.replay_size, rng) if up.replay else []
    for _ in range(up.epochs):
        grads = zero_grads(policy.n_options)
        for ro, adv in zip(batch, advs):
            for g, d in zip(grads, clipped_surrogate_grad(policy, ro.arch, ro.logp_behaviour, adv, up.clip_eps)):
                g += d
        for ro in replay:  # old rollouts, advantage against today's baseline
            adv = baseline.normalise(ro.reward)
            rho = off_policy_weight(policy.log_prob(ro.arch), ro.logp_behaviour, up.replay_clip)
            for g, d in zip(grads, policy.grad_log_prob(ro.arch)):
                g += rho * adv * d
        policy.step([g / (len(batch) + len(replay)) for g in grads], up.lr)


@register_algorithm("ppo")
def ppo(
    ctx: SearchContext, use_critic: bool = True, use_replay: bool = True, use_pool: bool = True,
    batch_size: int = 8, epochs: int = 4, lr: float = 0.1, clip_eps: float = 0.2, w: float = -0.07,
    two_sided: bool = False, replay_size: int = 16, replay_clip: float = 1.0, critic_members: int = 5,
    critic_min_samples: int = 20, critic_max_std: float = 1.0, critic_margin: float = 2.0,
    critic_floor_quantile: float = 0.25, critic_refit: float = 0.02, pool_min_similarity: float = 0.8,
    pool_init: list[tuple[object, float]] | None = None, screen: int = 5000, max_rollouts: int | None = None,
) -> dict[str, object]:  # fmt: skip
    """PPO search with a gated ensemble critic, off-policy replay and a knowledge pool.

    Args:
        ctx: the search problem.
        use_critic, use_replay, use_pool: switch the three parts on or off.
        batch_size: rollouts per policy update; ``epochs``: PPO passes over each batch.
        lr: step size on the logits (advantages are scale-normalised); ``clip_eps``: PPO's ratio clip.
        w, two_sided: the reward (see :func:`latkit.search.framework.base.reward`).
        replay_size: past rollouts replayed per pass; ``replay_clip``: truncation of their importance ratio.
        critic_*, pool_*: the critic and the knowledge pool (see :class:`CriticOptions`).
        screen: with the critic on, draw this many distinct feasible
            architectures per batch and keep the ``batch_size`` with the highest
            optimistic estimate (``mean + critic_margin x std``); 1 disables screening.
        max_rollouts: bound on sampled architectures (default ``20 x budget``).
    """
    critic = CriticOptions(critic_members, critic_min_samples, critic_max_std, critic_margin,
                           critic_floor_quantile, critic_refit, pool_min_similarity, pool_init)  # fmt: skip
    est = _Estimator(ctx, use_critic, use_pool, critic)
    policy = CategoricalPolicy(ctx.space.name, ctx.n_options)
    baseline, buffer = RunningBaseline(0.9), ReplayBuffer()
    update = _Update(epochs, lr, clip_eps, use_replay, replay_size, replay_clip)
    rollouts, limit = 0, max_rollouts or 20 * ctx.budget
    while rollouts < limit and ctx.remaining > 0:
        batch, drawn = _rollouts(ctx, policy, est, screen if use_critic else 1, batch_size, w, two_sided)
        rollouts += drawn
        if not batch:
            break
        _update(policy, batch, baseline, buffer, update, ctx.rng)
        buffer.extend(batch)
    return {
        "policy": [p.tolist() for p in policy.probs()],
        "rollouts": rollouts,
        "queries_saved_by_critic": est.saved,
    }
