"""A JSON export or yaml table that would poison a LUT is refused, whole, with the row named.

Each case edits one field of a real export, imports it with the real CLI into
a real LUT, and checks: one error line naming the entry, a non-zero exit, the
LUT unchanged, and `lut show` / `lut estimate` still working on it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from cli_checks import one_error_line, run
from latkit.lut.io import export_json
from latkit.lut.store import LUT


@pytest.fixture
def export(tmp_path, specs, device, make_measurement) -> dict:
    """A real export of a LUT with three measured ops and a calibration."""
    src = tmp_path / "src.db"
    with LUT.open(src, create=True) as lut:
        for i, spec in enumerate(specs[:3]):
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        lut.save_calibration(device["uri"], "e2e_linear", {"a": 1.1, "b": 0.0, "c": 0.2}, {"n": 3})
        export_json(lut, tmp_path / "good.json")
    return json.loads((tmp_path / "good.json").read_text())


@pytest.fixture
def dst(tmp_path, specs, device, make_measurement) -> Path:
    """The destination LUT, holding one measurement already (an op the export lacks)."""
    path = tmp_path / "dst.db"
    with LUT.open(path, create=True) as lut:
        lut.add(specs[-1], make_measurement(specs[-1], 0.5), device)
    return path


def _rows(path: Path) -> list[tuple[str, float]]:
    with LUT.open(path, readonly=True) as lut:
        return [(r["op_key"], r["latency_ms"]) for r in lut.rows()]


def _poisoned(export: dict, edit) -> dict:
    bad = copy.deepcopy(export)
    edit(bad)
    return bad


def _set(section: str, i: int, field: str, value):
    def edit(payload: dict) -> None:
        payload[section][i][field] = value
    return edit


CASES = {
    "string latency": (_set("measurements", 1, "latency_ms", "fast"), "measurement #1", "latency_ms"),
    "negative latency": (_set("measurements", 0, "latency_ms", -2.5), "measurement #0", "latency_ms"),
    "zero latency": (_set("measurements", 2, "latency_ms", 0), "measurement #2", "> 0"),
    "absurd latency": (_set("measurements", 2, "latency_ms", 1e308), "measurement #2", "latency_ms"),
    "boolean latency": (_set("measurements", 0, "latency_ms", True), "measurement #0", "latency_ms"),
    "string std": (_set("measurements", 0, "std_ms", "wide"), "measurement #0", "std_ms"),
    "negative std": (_set("measurements", 1, "std_ms", -1.0), "measurement #1", "std_ms"),
    "NaN std": (_set("measurements", 1, "std_ms", math.nan), "measurement #1", "std_ms is nan"),
    "infinite CI": (_set("measurements", 2, "ci_high_ms", math.inf), "measurement #2", "ci_high_ms"),
    "fractional count": (_set("measurements", 0, "n_samples", 2.5), "measurement #0", "n_samples"),
    "samples not a list": (_set("measurements", 2, "samples_ms", "1,2,3"), "measurement #2", "samples_ms"),
    "negative sample": (_set("measurements", 0, "samples_ms", [1.0, -1.0]), "measurement #0", "samples_ms[1]"),
    "string sample": (_set("measurements", 0, "samples_ms", [1.0, "x"]), "measurement #0", "samples_ms[1]"),
    "provenance a list": (_set("measurements", 1, "provenance", [1, 2]), "measurement #1", "provenance"),
    "numeric op key": (_set("measurements", 0, "op_key", 7), "measurement #0", "op_key"),
    "unknown op": (_set("measurements", 0, "op_key", "conv-nowhere"), "measurement #0", "ops section"),
    "converged text": (_set("measurements", 0, "converged", "yes"), "measurement #0", "converged"),
    "info a list": (_set("devices", 0, "info", ["cpu"]), "device #0", "info"),
    "info a string": (_set("devices", 0, "info", "cpu"), "device #0", "info"),
    "device uri a number": (_set("devices", 0, "uri", 3), "device #0", "uri"),
    "op spec a string": (_set("ops", 1, "spec", "mbconv"), "op #1", "spec"),
    "op spec of a bad shape": (lambda p: p["ops"][0]["spec"].update(input_shape=[0, 0, 24]), "op #0", "spec"),
    "calibration coefficient": (lambda p: p["calibrations"][0]["params"].update(a="big"),
                                "calibration #0", "coefficient a"),
    "calibration params a list": (_set("calibrations", 0, "params", [1.1]), "calibration #0", "params"),
    "calibration of another kind with NaN": (
        lambda p: p["calibrations"].append({**p["calibrations"][0], "kind": "linear",
                                            "params": {"a": math.nan, "b": [0.0, math.inf]}}),
        "calibration #1", "params.a"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_poisoned_export_is_refused_and_changes_nothing(case, export, dst, tmp_path, capsys):
    edit, *needles = CASES[case]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_poisoned(export, edit)))
    before = _rows(dst)
    code, _, err = run(capsys, "lut", "import", dst, bad)
    one_error_line(code, err, "bad.json", *needles)
    assert _rows(dst) == before
    code, out, err = run(capsys, "lut", "show", dst, "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["total"] == 1


def test_non_finite_latency_in_raw_json_is_refused(export, dst, tmp_path, capsys):
    text = json.dumps(export).replace(
        f'"latency_ms": {export["measurements"][0]["latency_ms"]!r}', '"latency_ms": NaN', 1
    )
    assert "NaN" in text
    bad = tmp_path / "nan.json"
    bad.write_text(text)
    code, _, err = run(capsys, "lut", "import", dst, bad)
    one_error_line(code, err, "measurement #0", "latency_ms")
    assert len(_rows(dst)) == 1


def test_new_lut_is_not_created_by_a_refused_import(export, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_poisoned(export, _set("measurements", 2, "latency_ms", -1))))
    target = tmp_path / "fresh.db"
    code, _, err = run(capsys, "lut", "import", target, bad)
    one_error_line(code, err, "measurement #2")
    assert not target.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".fresh.db")]


def test_conflicting_row_is_reported_not_crashed(export, dst, tmp_path, capsys):
    good = tmp_path / "good.json"
    code, _, err = run(capsys, "lut", "import", dst, good)
    assert code == 0, err
    changed = _poisoned(export, _set("measurements", 0, "latency_ms", 9.75))
    (tmp_path / "other.json").write_text(json.dumps(changed))
    code, _, err = run(capsys, "lut", "import", dst, tmp_path / "other.json")
    assert code == 0, err
    assert "1 conflict(s) (1 kept existing)" in err
    latencies = dict(_rows(dst))
    key = export["measurements"][0]["op_key"]
    assert math.isclose(latencies[key], export["measurements"][0]["latency_ms"])
    assert len(latencies) == 4


def test_import_of_several_files_is_all_or_nothing(export, dst, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_poisoned(export, _set("measurements", 1, "latency_ms", "slow"))))
    code, _, err = run(capsys, "lut", "import", dst, tmp_path / "good.json", bad)
    one_error_line(code, err, "bad.json", "measurement #1")
    assert len(_rows(dst)) == 1  # good.json's rows did not go in either


def test_estimates_stay_positive_after_imports(export, dst, tmp_path, capsys):
    code, _, err = run(capsys, "lut", "import", dst, tmp_path / "good.json")
    assert code == 0, err
    assert all(ms > 0 for _, ms in _rows(dst))


# ------------------------------------------------------------------ yaml


YAML_CASES = {
    "zero shape": ("Conv-input:0x0x3-output:112x112x32:\n  count: 1\n  mean: 1.0\n  std: 0.0\n",
                   "Conv-input:0x0x3"),
    "negative mean": ("Conv-input:224x224x3-output:112x112x32:\n  count: 1\n  mean: -1.0\n  std: 0.0\n",
                      "negative mean"),
    "zero mean": ("Conv-input:224x224x3-output:112x112x32:\n  mean: 0\n", "non-positive mean"),
    "inf mean": ("Conv-input:224x224x3-output:112x112x32:\n  mean: .inf\n", "non-finite mean"),
    "nan mean": ("Conv-input:224x224x3-output:112x112x32:\n  mean: .nan\n", "non-finite mean"),
    "negative std": ("Conv-input:224x224x3-output:112x112x32:\n  mean: 1.0\n  std: -0.5\n", "negative std"),
    "negative var": ("Conv-input:224x224x3-output:112x112x32:\n  mean: 1.0\n  var: -0.5\n", "negative var"),
    "fractional count": ("Conv-input:224x224x3-output:112x112x32:\n  count: 2.5\n  mean: 1.0\n", "count"),
    "text count": ("Conv-input:224x224x3-output:112x112x32:\n  count: many\n  mean: 1.0\n", "count"),
    "numeric key": ("12:\n  mean: 1.0\n", "12"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_entry_is_refused_in_one_line(case, dst, tmp_path, capsys):
    text, needle = YAML_CASES[case]
    table = tmp_path / "ofa_bad.yaml"
    table.write_text(text)
    code, _, err = run(capsys, "lut", "import", dst, table, "--family", "ofa")
    one_error_line(code, err, "ofa_bad.yaml", needle)
    assert len(_rows(dst)) == 1


def test_yaml_that_is_not_utf8_is_refused(dst, tmp_path, capsys):
    table = tmp_path / "ofa_latin1.yaml"
    table.write_bytes("Conv-input:224x224x3-output:112x112x32:\n  mean: 1.0  # caf\xe9\n".encode("latin-1"))
    code, _, err = run(capsys, "lut", "import", dst, table)
    one_error_line(code, err, "ofa_latin1.yaml", "UTF-8")


@pytest.mark.parametrize("poison", ["'fast'", "-3.0", "0"])
def test_lut_poisoned_by_an_older_latkit_is_refused_by_show_and_estimate(poison, tmp_path, capsys, device):
    # a proxyless_mobile network's ops, one of them holding what older imports let in
    from latkit.cli.profile import load_arch

    net, _ = load_arch("proxyless_mobile", json.dumps(["3x3_MBConv3"] * 21), 32)
    path = tmp_path / "old.db"
    with LUT.open(path, create=True) as lut, lut.transaction():
        lut.ensure_device(device["uri"], device)
        for layer in net.layers:
            if layer.spec.measurable and layer.spec.key not in {r["op_key"] for r in lut.rows()}:
                lut.ensure_op(layer.spec)
                lut.put_row({"op_key": layer.spec.key, "device_uri": device["uri"], "latency_ms": 0.5,
                             "source": "measured"})  # fmt: skip
        key = next(layer.spec.key for layer in net.layers if layer.spec.measurable)
        lut._q(f"UPDATE measurements SET latency_ms = {poison} WHERE op_key = ?", (key,))
    code, out, err = run(capsys, "lut", "show", path, "--json")
    one_error_line(code, err, "1 invalid latency", key)
    with LUT.open(path, readonly=True) as lut:
        summary = lut.summary()  # the library still summarises what is valid
    assert summary["invalid"] == 1 and summary["min_latency_ms"] == 0.5
    code, _, err = run(capsys, "lut", "estimate", "--lut", path, "--space", "proxyless_mobile",
                       "--resolution", "32", "--arch", json.dumps(["3x3_MBConv3"] * 21))
    one_error_line(code, err, "invalid latency", key)


@pytest.mark.slow
@pytest.mark.parametrize("poison", ["'fast'", "9e999", "-5.0"])  # 9e999 is SQLite's inf
def test_lut_poisoned_by_an_older_latkit_is_listed_marked_then_refused(poison, tmp_path, capsys, specs, device,
                                                                       make_measurement):
    from latkit.core.errors import StoreError

    path = tmp_path / "old.db"
    with LUT.open(path, create=True) as lut:
        for i, spec in enumerate(specs[:3]):
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        with lut.transaction():
            lut._q(f"UPDATE measurements SET latency_ms = {poison} WHERE op_key = ?", (specs[1].key,))
    # the library refuses to hand out the rows unless asked to keep or skip the invalid one
    with LUT.open(path, readonly=True) as lut:
        with pytest.raises(StoreError, match="1 invalid latency") as info:
            lut.rows()
        assert specs[1].key in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(StoreError, match="invalid latency"):
            lut.measurement(specs[1].key)
        assert lut.measurement(specs[0].key).latency_ms == pytest.approx(1.0, rel=0.2)
        assert [r["op_key"] for r in lut.rows(invalid="skip")] == sorted([specs[0].key, specs[2].key])
        kept = {r["op_key"]: r["latency_ms"] for r in lut.rows(invalid="keep")}
        assert len(kept) == 3 and kept[specs[0].key] > 0
    # show lists what it can, marks the bad row, then fails in one line
    code, out, err = run(capsys, "lut", "show", path, "--rows")
    one_error_line(code, err, "1 invalid latency", specs[1].key, "re-profile")
    assert "INVALID" in out and specs[0].key in out and specs[2].key in out
    code, out, err = run(capsys, "lut", "show", path, "--rows", "--json")
    one_error_line(code, err, "1 invalid latency", specs[1].key)
    doc = json.loads(out)
    assert doc["summary"]["invalid"] == 1
    bad_rows = [r for r in doc["rows"] if "invalid_latency" in r]
    assert [r["op_key"] for r in bad_rows] == [specs[1].key] and bad_rows[0]["latency_ms"] is None
    # export refuses too (an import would refuse that file), leaving nothing behind
    code, _, err = run(capsys, "lut", "export", path, "-o", tmp_path / "out.json")
    one_error_line(code, err, "1 invalid latency", specs[1].key)
    assert not (tmp_path / "out.json").exists()


def test_reprofiling_repairs_an_invalid_row(tmp_path, capsys, specs, device, make_measurement):
    from latkit.core.errors import StoreError

    # what the error line tells the user to do must work: the profiler asks done_keys
    # what to skip and add()s the new row
    path = tmp_path / "old.db"
    with LUT.open(path, create=True) as lut:
        for i, spec in enumerate(specs[:2]):
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        with lut.transaction():
            lut._q("UPDATE measurements SET latency_ms = 'fast' WHERE op_key = ?", (specs[0].key,))
        assert lut.done_keys(device["uri"]) == {specs[1].key}
        lut.add(specs[0], make_measurement(specs[0], 3.0, seed=7), device)
        with pytest.raises(StoreError, match="already holds"):  # a valid row is kept
            lut.add(specs[1], make_measurement(specs[1], 9.0, seed=7), device)
        assert lut.invalid_rows() == []
        assert lut.latency_ms(specs[0].key) == pytest.approx(3.0, rel=0.2)
    code, out, err = run(capsys, "lut", "show", path, "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["invalid"] == 0


def test_non_finite_provenance_is_stored_as_null_and_exports(tmp_path, specs, device, make_measurement):
    m = make_measurement(specs[0], 1.0)
    m.provenance = {"ci": float("nan"), "rates": [float("inf"), 2.0]}
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        lut.add(specs[0], m, device)
        lut.save_calibration(device["uri"], "linear", {"a": float("nan")}, {})
        assert export_json(lut, tmp_path / "a.json") == 1
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["measurements"][0]["provenance"] == {"ci": None, "rates": [None, 2.0]}
    assert doc["calibrations"][0]["params"] == {"a": None}
