"""The pieces the learners are made of, checked against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latkit.errors import UsageError
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Arch
from latkit.search.base import SearchContext
from latkit.search.knowledge import (
    ArchPool,
    EnsembleCritic,
    block_similarity,
    off_policy_weight,
    shared_blocks,
    should_query,
)
from latkit.search.parsec import empirical_bayes_update, importance_weights
from latkit.search.policy import CategoricalPolicy
from latkit.search.ppo import _Estimator, clipped_surrogate_grad

SPACE = get_space("nasbench201")


def test_importance_weights_hand_computed():
    w = importance_weights(np.array([1.0, 2.0]), temperature=1.0)
    assert w == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    # huge rewards do not overflow (shifted by the max)
    assert importance_weights(np.array([1000.0, 1000.0]), 0.01) == pytest.approx([0.5, 0.5])
    with pytest.raises(UsageError):
        importance_weights(np.array([1.0]), 0.0)


def test_empirical_bayes_update_hand_computed():
    probs = [np.array([0.5, 0.5]), np.array([0.5, 0.5])]
    archs = [Arch("s", (0, 1)), Arch("s", (1, 1))]
    w = np.array([1 / (1 + math.e), math.e / (1 + math.e)])  # 0.2689, 0.7311
    new = empirical_bayes_update(probs, archs, w, step=0.5)
    assert new[0] == pytest.approx([0.25 + 0.5 * 0.268941, 0.25 + 0.5 * 0.731059], abs=1e-6)
    assert new[1] == pytest.approx([0.25, 0.75])
    # a pseudo-count keeps unseen options alive: (0 + 1) / (1 + 2) for option 0
    smoothed = empirical_bayes_update(probs, archs, np.array([0.5, 0.5]), step=1.0, smoothing=1.0)
    assert smoothed[1] == pytest.approx([1 / 3, 2 / 3])


def test_off_policy_weight_is_clipped():
    assert off_policy_weight(math.log(0.5), math.log(0.25), clip=1.5) == pytest.approx(1.5)
    assert off_policy_weight(math.log(0.5), math.log(0.25), clip=3.0) == pytest.approx(2.0)
    assert off_policy_weight(math.log(0.1), math.log(0.2), clip=1.0) == pytest.approx(0.5)
    with pytest.raises(UsageError):
        off_policy_weight(0.0, 0.0, clip=0.0)


def test_ppo_clipped_surrogate_zeroes_moved_ratios():
    policy = CategoricalPolicy("nasbench201", [5] * 6)
    arch = Arch("nasbench201", (0,) * 6)
    logp = policy.log_prob(arch)
    g = clipped_surrogate_grad(policy, arch, logp, adv=1.0, eps=0.2)  # ratio 1: plain PG
    assert g[0] == pytest.approx([0.8, -0.2, -0.2, -0.2, -0.2])
    far = logp - math.log(1.5)  # ratio 1.5 > 1.2, positive advantage: clipped
    assert all(np.all(x == 0) for x in clipped_surrogate_grad(policy, arch, far, 1.0, 0.2))
    # the same ratio with a negative advantage still pushes down
    assert clipped_surrogate_grad(policy, arch, far, -1.0, 0.2)[0][0] == pytest.approx(-1.5 * 0.8)


def test_block_similarity():
    a = Arch("nasbench201", (0, 1, 2, 3, 4, 0))
    b = Arch("nasbench201", (0, 1, 2, 3, 4, 1))
    assert block_similarity(a, a) == 1.0
    assert block_similarity(a, b) == pytest.approx(5 / 6)
    cells = [(0,), (1, 2), (3, 4, 5)]  # NB201 nodes 1, 2, 3
    assert shared_blocks(a, b, cells) == [0, 1]
    assert block_similarity(a, b, cells) == pytest.approx(2 / 3)
    with pytest.raises(UsageError):
        block_similarity(a, Arch("fbnet", (0,) * 6))


def test_pool_estimate_and_donor():
    pool = ArchPool(blocks=[(0,), (1, 2), (3, 4, 5)])
    pool.add(Arch("nasbench201", (0, 1, 2, 3, 4, 0)), 80.0, payload="w-80")
    pool.add(Arch("nasbench201", (1, 1, 2, 0, 0, 0)), 60.0)
    probe = Arch("nasbench201", (0, 1, 2, 3, 4, 1))
    # similarities 2/3 and 1/3: only the first passes 0.5
    assert pool.estimate(probe, min_similarity=0.5) == pytest.approx(80.0)
    assert pool.estimate(probe, min_similarity=0.0) == pytest.approx((2 / 3 * 80 + 1 / 3 * 60) / 1.0)
    entry, blocks = pool.donor(probe)
    assert entry.payload == "w-80" and blocks == [0, 1]
    assert pool.estimate(probe, min_similarity=0.9) is None


def test_should_query_gate():
    assert should_query(70.0, 3.0, incumbent=90.0, max_std=1.0)  # members disagree
    assert not should_query(70.0, 0.2, incumbent=90.0, max_std=1.0)  # confident and poor
    assert should_query(89.9, 0.2, incumbent=90.0, max_std=1.0)  # could beat the incumbent
    assert should_query(10.0, 0.0, incumbent=None, max_std=1.0)  # nothing found yet


class LinearAccuracy:
    """A real, learnable accuracy: additive in the op choices."""

    coef = np.array([0.0, 1.0, 3.0, 4.0, 2.0])

    def accuracy(self, arch):
        return 60.0 + float(sum(self.coef[i] for i in arch.indices))


class Flat:
    def latency_ms(self, arch):
        return 1.0


def _ctx(budget):
    return SearchContext(SPACE, LinearAccuracy(), Flat(), 2.0, budget, np.random.default_rng(0))


def _opts(**kw):
    base = dict(critic_members=5, critic_min_samples=10, critic_max_std=2.0, critic_margin=2.0, critic_floor_quantile=0.0,
                pool_min_similarity=0.8, pool_init=None)
    return {**base, **kw}


def test_critic_spread_low_after_much_data_high_after_little():
    rng = np.random.default_rng(0)
    archs = [SPACE.from_index(int(i)) for i in rng.choice(15625, 400, replace=False)]
    acc = LinearAccuracy()
    critic = EnsembleCritic([5] * 6, rng, alpha=0.1, feature_fraction=1.0, floor_quantile=0.0).fit(archs, [acc.accuracy(a) for a in archs])
    probe = SPACE.from_index(7)
    mean, std = critic.predict([probe])
    assert mean[0] == pytest.approx(acc.accuracy(probe), abs=0.5) and std[0] < 0.5
    few = EnsembleCritic([5] * 6, rng).fit(archs[:6], [acc.accuracy(a) for a in archs[:6]])
    assert few.predict([probe])[1][0] > 2 * std[0]


def test_critic_gating_spends_queries_only_when_unsure():
    ctx = _ctx(budget=400)
    est = _Estimator(ctx, use_critic=True, use_pool=False, opts=_opts(critic_min_samples=100))
    rng = np.random.default_rng(1)
    for i in rng.choice(15625, 300, replace=False):
        est.accuracy(SPACE.from_index(int(i)))
    used = ctx.used
    poor = SPACE.from_options(["none"] * 6)  # accuracy 60, far below the incumbent
    assert not ctx.known(poor)
    value, queried = est.accuracy(poor)
    # trusted: no query, an estimate far below the incumbent
    assert not queried and ctx.used == used and 100 <= used < 300
    assert value < ctx.best_accuracy - 5
    best = SPACE.from_options(["nor_conv_3x3"] * 6)  # could beat the incumbent
    assert not ctx.known(best)
    value, queried = est.accuracy(best)
    assert queried and ctx.used == used + 1 and value == 84.0

    # with 12 samples the members disagree: the same poor arch costs a query
    ctx2 = _ctx(budget=50)
    est2 = _Estimator(ctx2, use_critic=True, use_pool=False, opts=_opts(critic_max_std=0.5))
    for i in range(1, 13):
        est2.accuracy(SPACE.from_index(i * 997))
    assert not ctx2.known(poor)
    value, queried = est2.accuracy(poor)
    assert queried and ctx2.used == 13 and value == 60.0
