"""The latency target's rules, in one place: parsing, reachability, the budget verdict."""

from __future__ import annotations

import math

import pytest

from latkit.core.errors import UsageError
from latkit.search import target as tgt
from latkit.search.framework.result import SearchError


def test_a_target_is_ms_a_share_of_the_slowest_network_or_a_speedup() -> None:
    assert tgt.parse_target("0.4").resolve(None) == pytest.approx(0.4)
    share = tgt.parse_target("60%")
    assert share.relative and share.fraction == pytest.approx(0.6)
    assert share.resolve(0.41) == pytest.approx(0.246)
    assert share.describe(0.41) == "60% of the slowest network (0.410 ms) = 0.246 ms"
    fast = tgt.parse_target(speedup="2x")
    assert fast.resolve(0.41) == pytest.approx(0.205) and fast.describe(0.41).startswith("2x faster")
    assert tgt.parse_target(speedup="4").resolve(1.0) == pytest.approx(0.25)
    with pytest.raises(SearchError, match="latency range"):
        share.resolve(None)  # a share needs the space's range on the device


@pytest.mark.parametrize("target_ms, speedup, says", [
    ("abc%", None, "not a percentage"), ("0%", None, "above 0%"), ("150%", None, "at most 100%"),
    ("-1", None, "positive"), ("nan", None, "positive"), ("inf", None, "positive"), ("abc", None, "number of ms"),
    (None, "-2x", "--speedup must be"), (None, "0.5x", "from 1x"), ("1", "2x", "exactly one"), (None, None, "exactly one"),
])  # fmt: skip
def test_bad_targets_are_usage_errors(target_ms, speedup, says) -> None:
    with pytest.raises(UsageError, match=says):
        tgt.parse_target(target_ms, speedup)


def test_tolerance_is_a_fraction() -> None:
    assert tgt.check_tolerance("0.2") == 0.2
    for bad in ("-0.1", "2", "x", math.nan):
        with pytest.raises(UsageError, match="--tolerance"):
            tgt.check_tolerance(bad)


def test_reachability_below_and_above_the_space() -> None:
    with pytest.raises(SearchError, match="unreachable in s on d: the smallest latency reachable is 0.12 ms"):
        tgt.check_reachable("s", 0.1, 0.12, "d")
    tgt.check_reachable("s", 0.12, 0.12)
    assert tgt.range_warning(0.5, (0.12, 0.6), "s", "d") is None
    text = tgt.range_warning(1.0, (0.12, 0.6), "s", "d")
    assert text.startswith("the 1 ms target is above s on d") and "between 0.120 and 0.600 ms" in text


def test_the_verdict_treats_the_target_as_a_budget() -> None:
    hit = tgt.judge(0.87, 1.0)  # 13% faster than the target: within budget, no warning
    assert hit.kind == tgt.HIT and hit.ok and hit.warning is None and hit.budget_used == pytest.approx(0.87)
    assert hit.text.startswith("HIT: measured 0.870 ms, 87% of the 1 ms budget")
    low = tgt.judge(0.79, 1.0)  # under 1 - 2 * 10%: a warning, still a success
    assert low.ok and low.kind == tgt.HIT and "uses only 79% of the budget" in low.warning
    assert tgt.judge(0.7, 1.0, tolerance=0.2).warning is None  # the rule follows --tolerance (under 60% warns)
    assert tgt.judge(1.1, 1.0).ok and not tgt.judge(1.11, 1.0).ok
    assert tgt.judge(1.11, 1.0).text.startswith("OVER: measured 1.110 ms, 111% of the 1 ms budget")
    drifted = tgt.judge(1.5, 1.0, drift={"steady": False, "ratio": 1.4})
    assert "1.40x their LUT latency" in drifted.text
