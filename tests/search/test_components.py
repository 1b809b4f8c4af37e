"""The pieces the learners are made of, checked against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latkit.core.errors import UsageError
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Arch
from latkit.search.framework.base import SearchContext
from latkit.search.framework.knowledge import (
    ArchPool,
    EnsembleCritic,
    block_similarity,
    off_policy_weight,
    pair_feature_matrix,
    pair_features,
    shared_blocks,
    should_query,
)
from latkit.search.framework.algorithms.parsec import empirical_bayes_update, importance_weights
from latkit.search.framework.policy import CategoricalPolicy
from latkit.search.framework.algorithms.ppo import CriticOptions, _draw_batch, _Estimator, clipped_surrogate_grad

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
                critic_refit=0.1, pool_min_similarity=0.8, pool_init=None)
    return CriticOptions(**{**base, **kw})


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


def test_sample_many_follows_the_policy():
    policy = CategoricalPolicy("nasbench201", [5] * 6)
    policy.set_probs([np.array([0.7, 0.1, 0.1, 0.05, 0.05])] + [np.full(5, 0.2)] * 5)
    draws = policy.sample_many(np.random.default_rng(0), 20000)
    assert len(draws) == 20000 and all(len(a.indices) == 6 for a in draws)
    first = np.bincount([a.indices[0] for a in draws], minlength=5) / 20000
    assert first == pytest.approx([0.7, 0.1, 0.1, 0.05, 0.05], abs=0.015)
    other = np.bincount([a.indices[3] for a in draws], minlength=5) / 20000
    assert other == pytest.approx([0.2] * 5, abs=0.015)
    unique = policy.sample_many(np.random.default_rng(0), 20000, unique=True)
    assert len(set(unique)) == len(unique) < 20000
    # a collapsed policy yields its one architecture once
    policy.set_probs([np.array([1.0, 0, 0, 0, 0])] * 6)
    assert policy.sample_many(np.random.default_rng(1), 100, unique=True) == [Arch("nasbench201", (0,) * 6)]


def test_sample_feasible_many_keeps_only_feasible():
    class ByConv:  # latency = number of 3x3 convolutions
        def latency_ms(self, arch):
            return float(sum(i == 3 for i in arch.indices))

    ctx = SearchContext(SPACE, LinearAccuracy(), ByConv(), 1.0, 10, np.random.default_rng(0))
    policy = CategoricalPolicy("nasbench201", [5] * 6)
    got = ctx.sample_feasible_many(lambda n: policy.sample_many(ctx.rng, n), 50)
    assert 0 < len(got) <= 50 and all(ctx.feasible(a) for a in got)
    # a policy that only draws infeasible archs: the fallback walk, still feasible
    policy.set_probs([np.array([0, 0, 0, 1.0, 0])] * 6)
    got = ctx.sample_feasible_many(lambda n: policy.sample_many(ctx.rng, n), 50)
    assert len(got) == 1 and ctx.feasible(got[0])


def test_screened_batch_is_the_critics_best_unqueried():
    ctx = _ctx(budget=400)
    est = _Estimator(ctx, use_critic=True, use_pool=False, opts=_opts(critic_refit=0.1))
    policy = CategoricalPolicy("nasbench201", [5] * 6)
    assert len(_draw_batch(ctx, policy, est, screen=500, k=4)) == 4  # critic not fitted: plain draws
    for i in np.random.default_rng(2).choice(15625, 150, replace=False):
        arch = SPACE.from_index(int(i))
        est.seen.append((arch, ctx.query(arch)))
    est.refit()
    batch = _draw_batch(ctx, policy, est, screen=2000, k=4)
    assert len(set(batch)) == 4 and not any(ctx.known(a) for a in batch)
    truth = LinearAccuracy()
    plain = [truth.accuracy(a) for a in policy.sample_many(np.random.default_rng(3), 400)]
    # screened picks are near the top of the space (max 84), far above plain draws
    assert min(truth.accuracy(a) for a in batch) >= np.percentile(plain, 99) >= 78.0
    assert np.mean([truth.accuracy(a) for a in batch]) > 81.0


def test_critic_refit_share():
    ctx = _ctx(budget=400)
    est = _Estimator(ctx, use_critic=True, use_pool=False, opts=_opts(critic_refit=0.5))
    archs = [SPACE.from_index(int(i)) for i in np.random.default_rng(4).choice(15625, 40, replace=False)]
    est.seen = [(a, LinearAccuracy().accuracy(a)) for a in archs[:20]]
    est.refit()  # the first fit
    assert est.critic.n_train == 20
    for a in archs[20:29]:  # 9 new < 0.5 x 29
        est.seen.append((a, 0.0))
    est.refit()
    assert est.critic.n_train == 20
    for a in archs[29:40]:  # 20 new >= 0.5 x 40
        est.seen.append((a, 0.0))
    est.refit()
    assert est.critic.n_train == 40


def test_pair_features_by_hand():
    # choices of 2, 3 and 2 options; arch (1, 2, 0)
    v = pair_features((1, 2, 0), [2, 3, 2], pair_weight=0.5)
    singles = [0, 1, 0, 0, 1, 1, 0]
    ab = np.zeros(6)
    ab[1 * 3 + 2] = 0.5
    ac = np.zeros(4)
    ac[1 * 2 + 0] = 0.5
    bc = np.zeros(6)
    bc[2 * 2 + 0] = 0.5
    np.testing.assert_array_equal(v, np.concatenate([singles, ab, ac, bc]))
    rows = np.random.default_rng(0).integers(0, [2, 3, 2], size=(50, 3))
    batch = pair_feature_matrix(rows, [2, 3, 2], 0.5)
    np.testing.assert_array_equal(batch, np.stack([pair_features(r, [2, 3, 2], 0.5) for r in rows]))
    critic = EnsembleCritic([2, 3, 2], np.random.default_rng(0))
    assert critic.n_features == batch.shape[1] == 7 + 6 + 4 + 6
