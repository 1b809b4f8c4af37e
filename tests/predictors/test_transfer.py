"""Few-shot transfer to a new device, on the public HW-NAS-Bench tables."""

from __future__ import annotations

import numpy as np
import pytest

from latkit.errors import UsageError
from latkit.predictors.data import LatencyTable
from latkit.predictors.evaluate import few_shot
from latkit.predictors.metrics import score
from latkit.predictors.transfer import (
    FewShotTransfer,
    hardware_of,
    known_columns,
    meta_tune_alpha,
    select_archs,
)


def test_hardware_grouping(fbnet_table: LatencyTable) -> None:
    cols = fbnet_table.devices
    assert hardware_of("1080ti_32", cols) == "1080ti"
    assert hardware_of("silver_4114", cols) == "silver_4114"  # a CPU model, not a batch size
    assert hardware_of("essential_ph_1", cols) == "essential_ph_1"
    strict = known_columns(cols, "1080ti_32", strict=True)
    assert not {"1080ti_1", "1080ti_32", "1080ti_64"} & set(strict)
    assert len(strict) == len(cols) - 3
    assert len(known_columns(cols, "1080ti_32")) == len(cols) - 1
    with pytest.raises(UsageError, match="target column 'nope'"):
        known_columns(cols, "nope")


def test_select_archs_spreads_design(fbnet_table: LatencyTable) -> None:
    known = fbnet_table.columns([c for c in fbnet_table.devices if c != "pixel3"])
    a = select_archs(known, 10, random_state=1)
    assert len(set(a.tolist())) == 10
    np.testing.assert_array_equal(a, select_archs(known, 10, random_state=1))
    # the design covers a wider latency range than random picks of the same size
    logs = np.log(known)
    spread = lambda rows: float(np.mean(np.ptp(logs[rows], axis=0)))  # noqa: E731
    rng = np.random.default_rng(0)
    random_spread = np.mean([spread(rng.choice(len(known), 10, replace=False)) for _ in range(20)])
    assert spread(a) > 1.2 * random_spread
    with pytest.raises(UsageError, match="K must be"):
        select_archs(known[:5], 10)


@pytest.mark.parametrize(
    ("space", "targets"),
    [("fbnet", ["gold_6240", "pixel3", "titanx_32"]), ("nasbench201", ["samsung_a50", "silver_4114"])],
)
def test_fewshot_beats_trivial_and_reference_baselines(
    space: str, targets: list[str], fbnet_table: LatencyTable, nb201_table: LatencyTable
) -> None:
    table = fbnet_table if space == "fbnet" else nb201_table
    table = table.rows(np.arange(0, len(table), 2))  # half the rows keeps the test fast
    for target in targets:
        result, pred, meas = few_shot(table, target, 10, strict=True, seeds=2)
        summary = result.summary()
        m, b = summary["method"], summary["baseline"]
        # trivial baseline: the median of the K measured latencies for every arch
        trivial = score(meas, np.full_like(meas, np.median(meas[:10])))
        assert m["mape_pct"] < 0.5 * trivial.mape_pct, (target, m)
        assert m["spearman"] > 0.85, (target, m)
        assert m["spearman"] >= b["spearman"] - 0.02, (target, m, b)
        assert m["acc10"] >= b["acc10"] - 0.02, (target, m, b)


def test_meta_tuning_picks_stronger_ridge_for_fewer_rows(fbnet_table: LatencyTable) -> None:
    z = np.log(fbnet_table.columns(list(fbnet_table.devices)))
    z = (z - z.mean(0)) / z.std(0)
    rows = np.arange(5)
    alpha_few = meta_tune_alpha(z, rows)
    alpha_many = meta_tune_alpha(z, np.arange(2000))
    assert alpha_few >= alpha_many


def test_fewshot_predictor_errors() -> None:
    with pytest.raises(UsageError, match="at least 2"):
        FewShotTransfer().fit(np.ones((1, 3)), np.ones(1))
    p = FewShotTransfer(alpha=1.0).fit(np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 5.0]]), [1.0, 2.0, 3.0])
    assert p.alpha_ == 1.0
    with pytest.raises(UsageError, match="fitted on 2"):
        p.predict(np.ones((4, 3)))
