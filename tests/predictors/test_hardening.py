"""Bad latency tables and tampered predictor folders: one error line naming the row or file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cli_checks import one_error_line, run
from latkit.core.errors import StoreError
from latkit.predictors.base import load

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def rows() -> list[list[str]]:
    path = DATA / "fbnet_latency_ms.csv"
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        return [next(reader) for _ in range(41)]  # header + 40 archs


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _with_cell(rows, row: int, column: str, value: str) -> list[list[str]]:
    out = [list(r) for r in rows]
    out[row][rows[0].index(column)] = value
    return out


@pytest.mark.parametrize("value", ["0", "-3.5", "inf", "-0"])
def test_fit_refuses_non_positive_latency(capsys, tmp_path, rows, value):
    bad = _write(tmp_path / "lat.csv", _with_cell(rows, 5, "pixel3", value))
    code, _, err = run(capsys, "predictor", "fit", "--csv", str(bad), "--space", "fbnet",
                       "--target", "pixel3", "--out", str(tmp_path / "p"), "--predictor", "ridge")
    one_error_line(code, err, "line 6", "'pixel3'", "positive")
    assert not (tmp_path / "p").exists()


def test_eval_and_design_refuse_non_positive_latency(capsys, tmp_path, rows):
    bad = _write(tmp_path / "lat.csv", _with_cell(rows, 12, "gold_6240", "0.0"))
    code, _, err = run(capsys, "predictor", "eval", "--csv", str(bad), "--space", "fbnet",
                       "--target", "pixel3", "--k", "5")
    one_error_line(code, err, "line 13", "'gold_6240'")
    code, _, err = run(capsys, "predictor", "design", "--csv", str(bad), "--k", "5")
    one_error_line(code, err, "line 13")


def test_conflicting_duplicate_rows(capsys, tmp_path, rows):
    dup = [list(r) for r in rows] + [_with_cell(rows, 3, "pixel3", "99.5")[3]]
    bad = _write(tmp_path / "lat.csv", dup)
    code, _, err = run(capsys, "predictor", "design", "--csv", str(bad), "--k", "5")
    one_error_line(code, err, "lines 4 and 42", "'pixel3'", "99.5")
    # an identical repeat is harmless and accepted
    same = _write(tmp_path / "same.csv", [list(r) for r in rows] + [list(rows[3])])
    code, out, err = run(capsys, "predictor", "design", "--csv", str(same), "--k", "5")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 5


def test_conflicting_duplicate_spelled_differently(capsys, tmp_path, rows):
    other = _with_cell(rows, 3, "pixel3", "99.5")[3]
    other[rows[0].index("arch")] = "  " + other[rows[0].index("arch")].replace(" ", "   ")
    bad = _write(tmp_path / "lat.csv", [list(r) for r in rows] + [other])
    code, _, err = run(capsys, "predictor", "fit", "--csv", str(bad), "--space", "fbnet",
                       "--target", "pixel3", "--out", str(tmp_path / "p"), "--predictor", "ridge")
    one_error_line(code, err, "lines 4 and 42", "same architecture")


@pytest.fixture()
def fitted(capsys, tmp_path, rows) -> tuple[Path, str]:
    good = _write(tmp_path / "lat.csv", rows)
    out = tmp_path / "pred"
    code, _, err = run(capsys, "predictor", "fit", "--csv", str(good), "--space", "fbnet",
                       "--target", "pixel3", "--out", str(out), "--predictor", "ridge")
    assert code == 0, err
    return out, rows[1][rows[0].index("arch")]


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "predictor.json").read_text())
    change(meta)
    (folder / "predictor.json").write_text(json.dumps(meta))


def test_fitted_predictor_predicts(capsys, fitted):
    folder, arch = fitted
    code, out, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["latency_ms"] > 0


@pytest.mark.parametrize("name, needle", [("../lat.csv", "outside"), ("/etc/hostname", "relative"),
                                          ("sub/../../lat.csv", "outside"), (7, "relative")])
def test_weight_file_outside_folder(capsys, fitted, name, needle):
    folder, arch = fitted
    _edit_meta(folder, lambda m: m["weights"]["files"].append(name))
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, needle)


def test_weight_file_symlink_outside_folder(capsys, fitted):
    folder, arch = fitted
    (folder / "link.json").symlink_to(folder.parent / "lat.csv")
    _edit_meta(folder, lambda m: m["weights"]["files"].append("link.json"))
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, "outside")


@pytest.mark.parametrize("params, needle", [
    ({"alpha": "lots"}, "'alpha' is 'lots'"),
    ({"alpha": True}, "'alpha' is True"),
    ({"alpha": None}, "'alpha' is None"),
    ({"alpha": 1e400}, "finite"),
    ({"beta": 1.0}, "no parameter 'beta'"),
    ([1, 2], "'params' must be an object"),
])
def test_mistyped_params(capsys, fitted, params, needle):
    folder, arch = fitted
    _edit_meta(folder, lambda m: m.update(params=params))
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, needle)


def test_mistyped_mlp_width_refused_before_building(tmp_path, fitted):
    folder, _ = fitted
    _edit_meta(folder, lambda m: m.update(predictor="mlp", params={"hidden": [10**9]}))
    with pytest.raises(StoreError, match="'hidden'"):
        load(folder)


@pytest.mark.parametrize("weights, needle", [
    ({"coef": {"dtype": "object", "shape": [1], "data": [1]}}, "dtype 'object'"),
    ({"coef": {"dtype": "float64", "shape": [10**12], "data": [1.0]}}, "shape"),
    ({"coef": {"dtype": "float64", "shape": [3], "data": [1.0]}}, "1 values for shape [3]"),
    ({"coef": {"dtype": "float64", "shape": [1], "data": ["x"]}}, "not numbers"),
    ([1, 2], "not a JSON object"),
])
def test_tampered_weights(capsys, fitted, weights, needle):
    folder, arch = fitted
    (folder / "weights.json").write_text(json.dumps(weights))
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, needle)


def test_deeply_nested_metadata(capsys, fitted):
    folder, arch = fitted
    (folder / "predictor.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, "nested too deeply")


def test_malformed_weights_block(capsys, fitted):
    folder, arch = fitted
    _edit_meta(folder, lambda m: m.update(weights=["json"]))
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, "'weights' must be an object")


def test_binary_archs_file(capsys, fitted, tmp_path):
    folder, _ = fitted
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07\x12\x07pytorch\xff\xfe\x00" * 20)
    code, _, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--archs-file", str(model))
    one_error_line(code, err, "not a text file")


# ---- issue 17: bad tables and damaged predictors are refused, never used

@pytest.mark.parametrize("value", ["nan", "NaN", "na"])
def test_nan_text_cell_refused_empty_cell_is_missing(capsys, tmp_path, rows, value):
    bad = _write(tmp_path / "lat.csv", _with_cell(rows, 5, "pixel3", value))
    code, _, err = run(capsys, "predictor", "fit", "--csv", str(bad), "--space", "fbnet",
                       "--target", "pixel3", "--out", str(tmp_path / "p"), "--predictor", "ridge")
    one_error_line(code, err, "line 6", "'pixel3'", "empty")
    assert not (tmp_path / "p").exists()
    gap = _write(tmp_path / "gap.csv", _with_cell(rows, 5, "pixel3", ""))  # not measured: that row is left out
    code, _, err = run(capsys, "predictor", "fit", "--csv", str(gap), "--space", "fbnet",
                       "--target", "pixel3", "--out", str(tmp_path / "p"), "--predictor", "ridge")
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "predictor.json").read_text())["provenance"]["rows"] == 39


def test_duplicate_column_refused(capsys, tmp_path, rows):
    dup = [list(r) for r in rows]
    dup[0][dup[0].index("gold_6240")] = "pixel3"
    bad = _write(tmp_path / "lat.csv", dup)
    code, _, err = run(capsys, "predictor", "design", "--csv", str(bad), "--k", "3")
    one_error_line(code, err, "'pixel3' appears twice")


def test_design_refuses_an_arch_column_of_garbage(capsys, tmp_path, rows):
    arch = rows[0].index("arch")
    bad = [list(rows[0])] + [[f"bogus{i}" if j == arch else c for j, c in enumerate(r)]
                             for i, r in enumerate(rows[1:])]
    code, out, err = run(capsys, "predictor", "design", "--csv", str(_write(tmp_path / "lat.csv", bad)), "--k", "3")
    one_error_line(code, err, "'bogus0'", "no known space")
    assert out == ""
    one_bad = _with_cell(rows, 7, "arch", "k9_e9 " * 22)  # the space is found, the bad row named
    code, out, err = run(capsys, "predictor", "design", "--csv", str(_write(tmp_path / "one.csv", one_bad)),
                         "--k", "3", "--space", "fbnet")
    one_error_line(code, err, "arch #7")
    assert out == ""


def test_design_of_a_good_table(capsys, tmp_path, rows):
    code, out, err = run(capsys, "predictor", "design", "--csv", str(_write(tmp_path / "lat.csv", rows)), "--k", "4")
    assert code == 0, err
    archs = {r[rows[0].index("arch")] for r in rows[1:]}
    assert len(out.splitlines()) == 4 and set(out.splitlines()) <= archs


@pytest.mark.parametrize("where", ["array", "extra"])
def test_nan_weights_refused_never_printed(capsys, fitted, where):
    folder, arch = fitted
    if where == "array":
        w = json.loads((folder / "weights.json").read_text())
        w["coef"]["data"] = [float("nan")] * len(w["coef"]["data"])
        (folder / "weights.json").write_text(json.dumps(w))
    else:
        _edit_meta(folder, lambda m: m["weights"].setdefault("extra", {}).update(scale=float("inf")))
    code, out, err = run(capsys, "predictor", "predict", "--predictor", str(folder), "--arch", arch)
    one_error_line(code, err, "NaN or infinite", "refit")
    assert "nan" not in out.lower()


def test_non_finite_prediction_never_printed(tmp_path, fitted, monkeypatch):
    from latkit.predictors import evaluate as ev

    folder, arch = fitted
    monkeypatch.setattr(type(load(folder)), "predict", lambda self, X: np.full(len(X), np.nan))
    with pytest.raises(StoreError, match="non-finite latency for arch #1"):
        ev.predict_archs(folder, [arch])


def test_fewshot_default_known_columns_are_named(capsys, tmp_path, rows):
    good = _write(tmp_path / "lat.csv", rows)
    code, _, err = run(capsys, "predictor", "fit", "--csv", str(good), "--space", "fbnet", "--target", "pixel3",
                       "--predictor", "fewshot", "--k", "5", "--out", str(tmp_path / "fs"))
    assert code == 0, err
    known = json.loads((tmp_path / "fs" / "predictor.json").read_text())["provenance"]["known"]
    assert known == [c for c in rows[0] if c not in ("arch_index", "arch", "pixel3")]
    assert f"{len(known)} known device column(s)" in err and known[0] in err
