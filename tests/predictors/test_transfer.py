"""Few-shot transfer to a new device, on the public HW-NAS-Bench tables."""

from __future__ import annotations

import numpy as np
import pytest

from latkit.core.errors import UsageError
from latkit.predictors.data import LatencyDataset
from latkit.predictors.evaluate import few_shot
from latkit.predictors.metrics import score
from latkit.predictors.transfer import (
    FewShotTransfer,
    hardware_of,
    known_columns,
    select_archs,
)

pytestmark = pytest.mark.slow


def test_hardware_grouping(fbnet_table: LatencyDataset) -> None:
    cols = fbnet_table.devices
    assert hardware_of("1080ti_32", cols) == "1080ti"
    assert hardware_of("silver_4114", cols) == "silver_4114"  # a CPU model, not a batch size
    assert hardware_of("essential_ph_1", cols) == "essential_ph_1"
    strict = known_columns(cols, "1080ti_32", strict=True)
    assert not {"1080ti_1", "1080ti_32", "1080ti_64"} & set(strict)
    assert len(strict) == len(cols) - 3
    assert len(known_columns(cols, "1080ti_32")) == len(cols) - 1
    with pytest.raises(UsageError, match="unknown device column 'nope'"):
        known_columns(cols, "nope")


def test_select_archs_spreads_design(fbnet_table: LatencyDataset) -> None:
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
    [
        ("fbnet", ["gold_6240", "pixel3", "titanx_32", "samsung_a50"]),
        ("nasbench201", ["samsung_a50", "silver_4114", "essential_ph_1", "titanx_32"]),
    ],
)
def test_fewshot_beats_trivial_and_reference_baselines(
    space: str, targets: list[str], fbnet_table: LatencyDataset, nb201_table: LatencyDataset
) -> None:
    table = fbnet_table if space == "fbnet" else nb201_table
    table = table.rows(np.arange(0, len(table), 2))  # half the rows keeps the test fast
    ours, ref = [], []
    for target in targets:
        result, pred, meas = few_shot(table, target, 10, strict=True, seeds=2)
        summary = result.summary()
        m, b = summary["method"], summary["baseline"]
        # trivial baseline: the median of the K measured latencies for every arch
        trivial = score(meas, np.full_like(meas, np.median(meas[:10])))
        assert m["mape_pct"] < 0.5 * trivial.mape_pct, (target, m)
        assert m["spearman"] > 0.85, (target, m)
        ours.append([m["spearman"], m["acc10"]])
        ref.append([b["spearman"], b["acc10"]])
    # on average over the targets, at least as good as ridge on 3 reference devices
    ours_mean, ref_mean = np.mean(ours, axis=0), np.mean(ref, axis=0)
    assert ours_mean[0] >= ref_mean[0] and ours_mean[1] >= ref_mean[1] - 0.01, (ours_mean, ref_mean)


def test_meta_tuning_lands_near_the_best_fixed_setting(fbnet_table: LatencyDataset) -> None:
    target = "silver_4210r"
    known = [c for c in fbnet_table.devices if c != target]
    ref, y = fbnet_table.columns(known), fbnet_table.column(target)
    rows = select_archs(ref, 10, random_state=0)
    rest = np.setdiff1d(np.arange(len(y)), rows)

    def err(**params: object) -> float:
        p = FewShotTransfer(**params).fit(ref[rows], y[rows], reference=ref)
        return float(np.mean(np.log(p.predict(ref[rest]) / y[rest]) ** 2))

    fixed = [err(alpha=a, gamma=g) for a in (0.1, 1.0, 10.0, 30.0) for g in (0.0, 2.0)]
    auto = err()
    assert auto <= np.median(fixed) and auto < max(fixed), (auto, fixed)
    tuned = FewShotTransfer().fit(ref[rows], y[rows], reference=ref)
    assert tuned.alpha_ in tuned.alphas and tuned.gamma_ in tuned.gammas


def test_fewshot_predictor_errors() -> None:
    with pytest.raises(UsageError, match="at least 2"):
        FewShotTransfer().fit(np.ones((1, 3)), np.ones(1))
    p = FewShotTransfer(alpha=1.0).fit(np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 5.0]]), [1.0, 2.0, 3.0])
    assert p.alpha_ == 1.0
    with pytest.raises(UsageError, match="fitted on 2"):
        p.predict(np.ones((4, 3)))
