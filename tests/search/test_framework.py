"""The search framework: reward, target checks, query accounting, results, registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latkit.core.errors import LatkitError, UnknownNameError, UsageError
from latkit.profiler.spaces import get_space
from latkit.search.framework.base import (
    SCHEMA,
    BudgetSpent,
    SearchContext,
    SearchError,
    SearchResult,
    get_algorithm,
    list_algorithms,
    register_algorithm,
    reward,
    run_algorithm,
)
from latkit.search.framework.tabular import RidgeLatency

SPACE = get_space("nasbench201")


class CountingAccuracy:
    """A real accuracy model (sum of op indices) that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def accuracy(self, arch):
        self.calls += 1
        return float(sum(arch.indices))


class AdditiveLatency:
    """Latency = 1 + sum of op indices; no min_latency method (generic path)."""

    def latency_ms(self, arch):
        return 1.0 + float(sum(arch.indices))


def test_reward_hard_form_penalises_only_above_target():
    assert reward(80.0, 5.0, 10.0, -0.5) == 80.0
    assert reward(80.0, 10.0, 10.0, -0.5) == 80.0
    assert reward(80.0, 20.0, 10.0, -0.5) == pytest.approx(80.0 * 2**-0.5)
    assert reward(80.0, 40.0, 10.0, -1.0) == pytest.approx(20.0)


def test_reward_two_sided_form():
    assert reward(80.0, 5.0, 10.0, -0.07, two_sided=True) == pytest.approx(80.0 * 0.5**-0.07)
    assert reward(80.0, 5.0, 10.0, -0.07, two_sided=True) > 80.0
    assert reward(80.0, 20.0, 10.0, -0.07, two_sided=True) == pytest.approx(80.0 * 2**-0.07)
    with pytest.raises(UsageError):
        reward(80.0, 0.0, 10.0, -0.07)


def test_unreachable_target_names_table_minimum(nb201):
    lat_min = min(nb201.latency.column.values.values())
    with pytest.raises(SearchError, match=f"{lat_min:.4g} ms") as err:
        SearchContext(SPACE, nb201.accuracy, nb201.latency, lat_min * 0.9, 10,
                      np.random.default_rng(0))
    assert isinstance(err.value, LatkitError)
    assert "\n" not in str(err.value)


def test_unreachable_target_names_additive_minimum():
    # per-choice minimum of an additive ridge model: intercept + cheapest options
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(300)]
    model = RidgeLatency(SPACE, alpha=1e-6).fit(archs, [2.0 + 0.5 * sum(a.indices) for a in archs])
    ms, arch = model.min_latency(SPACE)
    assert ms == pytest.approx(2.0, abs=1e-3)
    assert arch.indices == (0,) * 6
    with pytest.raises(SearchError, match="smallest latency reachable is 2 ms"):
        SearchContext(SPACE, CountingAccuracy(), model, 1.5, 10, rng)


def test_generic_min_latency_by_descent():
    with pytest.raises(SearchError, match="reachable is 1 ms"):
        SearchContext(SPACE, CountingAccuracy(), AdditiveLatency(), 0.5, 10, np.random.default_rng(0))


def test_query_accounting_counts_distinct_archs():
    acc = CountingAccuracy()
    ctx = SearchContext(SPACE, acc, AdditiveLatency(), 10.0, 3, np.random.default_rng(0))
    a, b, c, d = (SPACE.from_index(i) for i in (0, 1, 2, 3))
    assert ctx.query(a) == 0.0 and ctx.query(a) == 0.0 and ctx.query(b) == 1.0
    assert ctx.used == 2 and acc.calls == 2 and ctx.remaining == 1
    ctx.query(c)
    assert ctx.query(b) == 1.0  # repeats stay free after the budget is spent
    with pytest.raises(BudgetSpent):
        ctx.query(d)
    assert [q.best_accuracy for q in ctx.trajectory] == [0.0, 1.0, 2.0]
    assert acc.calls == 3


def test_infeasible_queries_never_become_best():
    ctx = SearchContext(SPACE, CountingAccuracy(), AdditiveLatency(), 3.0, 5, np.random.default_rng(0))
    slow = SPACE.from_options(["avg_pool_3x3"] * 6)  # latency 25 ms
    fast = SPACE.from_index(1)  # latency 2 ms
    ctx.query(slow)
    assert ctx.best_accuracy is None and ctx.trajectory[0].feasible is False
    ctx.query(fast)
    assert ctx.best_accuracy == 1.0 and ctx.trajectory[1].feasible


def test_sample_feasible_is_bounded_and_falls_back():
    # a target only the very fastest corner meets; uniform draws are rejected
    ctx = SearchContext(SPACE, CountingAccuracy(), AdditiveLatency(), 1.5, 5,
                        np.random.default_rng(0), max_tries=5)
    arch = ctx.sample_feasible()
    assert ctx.feasible(arch)
    assert ctx.latency_ms(arch) <= 1.5


def test_result_json_round_trip(tmp_path, nb201, median_target):
    result = run_algorithm("random", SPACE, nb201.accuracy, nb201.latency, median_target,
                        12, np.random.default_rng(3), seed=3)
    path = result.save(tmp_path / "r.json")
    raw = json.loads(path.read_text())
    assert raw["schema"] == SCHEMA and raw["schema_version"] == 1 and raw["latkit_version"]
    assert raw["latency_provenance"]["column"] == "pixel3"
    assert len(raw["trajectory"]) == 12
    back = SearchResult.load(path)
    assert back.best_accuracy == pytest.approx(result.best_accuracy)
    assert back.best_after(12) == pytest.approx(result.best_accuracy)
    assert SPACE.arch_from_native(back.best_arch) == SPACE.arch_from_native(result.best_arch)
    raw["schema_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(SearchError, match="version 99"):
        SearchResult.load(path)


def test_registry():
    assert {"random", "evolution", "reinforce", "ppo", "parsec"} <= set(list_algorithms())
    assert list_algorithms("p*") == ["parsec", "ppo", "proxyless-grad"]
    with pytest.raises(UnknownNameError, match="unknown search algorithm 'nope'"):
        get_algorithm("nope")

    @register_algorithm("test-first-fast")
    def first_fast(ctx):
        ctx.query(ctx.min_arch)
        return {"took": "min"}

    res = run_algorithm("test-first-fast", SPACE, CountingAccuracy(), AdditiveLatency(), 2.0, 4,
                     np.random.default_rng(0))
    assert res.queries_used == 1 and res.best_latency_ms == 1.0 and res.extra == {"took": "min"}


def test_unknown_option_is_a_usage_error(nb201, median_target):
    with pytest.raises(UsageError, match="has no option popsize; options: population_size"):
        run_algorithm("evolution", SPACE, nb201.accuracy, nb201.latency, median_target, 5,
                   np.random.default_rng(0), popsize=3)
