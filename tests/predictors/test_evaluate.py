"""The functions behind `latkit predictor fit|predict|eval`, on real CSV slices."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from latkit.core.errors import ArchError, ParseError, StoreError, UnknownNameError, UsageError
from latkit.predictors.base import load
from latkit.predictors.data import LatencyDataset, encode_archs, read_latency_csv
from latkit.predictors.evaluate import design_from_csv, evaluate, fit_from_csv, predict_archs

pytestmark = pytest.mark.slow


def _write(path: Path, table: LatencyDataset, columns: list[str], rows: np.ndarray) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch_index", "arch", *columns])
        lat = table.columns(columns, allow_nan=True)
        for i in rows:
            w.writerow([i, table.archs[i], *[repr(float(v)) for v in lat[i]]])
    return path


@pytest.fixture()
def fb_csv(tmp_path: Path, fbnet_table: LatencyDataset) -> Path:
    return _write(tmp_path / "fb.csv", fbnet_table, list(fbnet_table.devices), np.arange(800))


def test_evaluate_with_plot(fb_csv: Path, tmp_path: Path) -> None:
    png = tmp_path / "scatter.png"
    out = evaluate(fb_csv, "fbnet", "gold_6240", 10, seeds=2, plot=png)
    assert out["target"] == "gold_6240" and out["k"] == 10 and "gold_6240" not in out["known"]
    m = out["method"]
    assert m["runs"] == 2 and 0.8 < m["spearman"] <= 1.0 and 0.8 < m["acc10"] <= 1.0
    assert m["acc5"] <= m["acc10"] and m["kendall"] < m["spearman"] and m["mape_pct"] < 10
    assert out["baseline"]["runs"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_strict_and_known_subset(fb_csv: Path) -> None:
    strict = evaluate(fb_csv, "fbnet", "titanx_32", 10, strict=True, seeds=1)
    assert not any(c.startswith("titanx_") for c in strict["known"])
    subset = evaluate(fb_csv, "fbnet", "titanx_32", 10, known=["gold_6240", "pixel3"], seeds=1)
    assert subset["known"] == ["gold_6240", "pixel3"]
    # the same-hardware columns help: the loose variant ranks better than 2 unrelated devices
    loose = evaluate(fb_csv, "fbnet", "titanx_32", 10, seeds=1)
    assert loose["method"]["spearman"] > subset["method"]["spearman"]


def test_evaluate_with_separate_target_csv(
    tmp_path: Path, fbnet_table: LatencyDataset, fb_csv: Path
) -> None:
    others = [c for c in fbnet_table.devices if c != "pixel3"]
    table_csv = _write(tmp_path / "known.csv", fbnet_table, others, np.arange(800))
    # the user's phone measured 500 of the 800 archs, in another order
    mine = _write(tmp_path / "mine.csv", fbnet_table, ["pixel3"], np.arange(799, 299, -1))
    out = evaluate(table_csv, "fbnet", "pixel3", 10, target_csv=mine, seeds=1)
    assert out["method"]["spearman"] > 0.8
    same = evaluate(fb_csv, "fbnet", "pixel3", 10, seeds=1)
    assert same["known"] == out["known"]


def test_fit_and_predict_encoding_predictor(fb_csv: Path, tmp_path: Path) -> None:
    model = fit_from_csv(
        fb_csv, "fbnet", "pixel3", tmp_path / "xgb", predictor="xgboost",
        params={"n_estimators": 50}, k=300,
    )
    table = read_latency_csv(fb_csv)
    archs = list(table.archs[700:720])
    got = predict_archs(tmp_path / "xgb", archs)
    np.testing.assert_allclose(got, model.predict(encode_archs("fbnet", archs)), rtol=1e-6)
    assert np.median(np.abs(got / table.column("pixel3")[700:720] - 1)) < 0.15
    # a JSON list of op names is the same arch as the table's string form
    as_list = '["' + '", "'.join(archs[0].split()) + '"]'
    np.testing.assert_allclose(predict_archs(tmp_path / "xgb", [as_list]), got[:1], rtol=1e-6)
    with pytest.raises(ArchError, match="arch #1"):
        predict_archs(tmp_path / "xgb", ["k3_e1 nonsense"])


def test_fit_and_predict_fewshot_from_own_measurements(
    tmp_path: Path, fbnet_table: LatencyDataset
) -> None:
    others = [c for c in fbnet_table.devices if c != "pixel3"]
    table_csv = _write(tmp_path / "known.csv", fbnet_table, others, np.arange(1000))
    design = design_from_csv(table_csv, 10)
    assert len(set(design)) == 10 and set(design) <= set(fbnet_table.archs[:1000])
    where = {a: i for i, a in enumerate(fbnet_table.archs)}
    mine = _write(tmp_path / "mine.csv", fbnet_table, ["pixel3"], np.array([where[a] for a in design]))
    fit_from_csv(table_csv, "fbnet", "pixel3", tmp_path / "fs", predictor="fewshot", target_csv=mine)
    assert load(tmp_path / "fs").n_features_in_ == len(others)
    pred = predict_archs(tmp_path / "fs", list(fbnet_table.archs[500:1000]))
    meas = fbnet_table.column("pixel3")[500:1000]
    assert np.mean(np.abs(pred / meas - 1) <= 0.1) > 0.7
    with pytest.raises(UsageError, match="not in"):
        predict_archs(tmp_path / "fs", [fbnet_table.archs[4000]])


def test_bad_inputs(fb_csv: Path, tmp_path: Path, fbnet_table: LatencyDataset) -> None:
    with pytest.raises(UnknownNameError, match="unknown device column"):
        evaluate(fb_csv, "fbnet", "iphone", 10)
    with pytest.raises(UnknownNameError, match="'nope'"):
        evaluate(fb_csv, "fbnet", "pixel3", 10, known=["nope"])
    with pytest.raises(UsageError, match="K=900"):
        evaluate(fb_csv, "fbnet", "pixel3", 900)
    with pytest.raises(UnknownNameError, match="search space"):
        evaluate(fb_csv, "mobilenet", "pixel3", 10)
    with pytest.raises(UsageError, match="not found"):
        evaluate(tmp_path / "missing.csv", "fbnet", "pixel3", 10)
    text = fb_csv.read_text().splitlines()
    bad_arch = tmp_path / "bad_arch.csv"
    bad_arch.write_text("\n".join([text[0], text[1].replace("k3_e", "k7_e", 1), *text[2:]]) + "\n")
    with pytest.raises(ArchError, match="arch #1"):
        evaluate(bad_arch, "fbnet", "pixel3", 10)
    missing = tmp_path / "missing.csv"  # an empty cell: not measured, refused where the column is needed
    missing.write_text("\n".join([text[0], text[1].rsplit(",", 1)[0] + ",", *text[2:]]) + "\n")
    with pytest.raises(UsageError, match="NaN latency value.*titanxp_64"):
        evaluate(missing, "fbnet", "pixel3", 10)
    nan = tmp_path / "nan.csv"  # the text "nan" is no measurement: refused when read
    nan.write_text("\n".join([text[0], text[1].rsplit(",", 1)[0] + ",nan", *text[2:]]) + "\n")
    with pytest.raises(ParseError, match="line 2, column 'titanxp_64'.*leave the cell empty"):
        evaluate(nan, "fbnet", "pixel3", 10)
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("\n".join([text[0], text[1].rsplit(",", 1)[0] + ",fast", *text[2:]]) + "\n")
    with pytest.raises(ParseError, match="'fast' is not a number"):
        evaluate(garbage, "fbnet", "pixel3", 10)
    with pytest.raises(StoreError):
        predict_archs(tmp_path, [fbnet_table.archs[0]])


def test_fit_gcn_ensemble_gets_the_space(tmp_path: Path, nb201_table: LatencyDataset) -> None:
    nb = _write(tmp_path / "nb.csv", nb201_table, ["gold_6240", "pixel3"], np.arange(0, 15625, 50))
    params = {"base": "gcn", "n_members": 2, "params": {"epochs": 2, "hidden": 8, "head": 8}}
    model = fit_from_csv(nb, "nasbench201", "gold_6240", tmp_path / "ens", predictor="ensemble", params=params)
    assert all(m.space == "nasbench201" for m in model.members_)
    cell = nb201_table.archs[7]
    got = predict_archs(tmp_path / "ens", [cell])
    assert got.shape == (1,) and got[0] > 0
    np.testing.assert_allclose(got, model.predict(encode_archs("nasbench201", [cell])), rtol=1e-6)
