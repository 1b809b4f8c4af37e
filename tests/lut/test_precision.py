"""Precision as a LUT dimension: the v1 -> v2 migration, rows per precision that never
mix, calibrations per precision, and precision through JSON export / import."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from latkit._version import __version__
from latkit.core.errors import MissingOpsError, StoreError, UsageError
from latkit.devices.precision import Precision, parse_precision
from latkit.lut.calibration import Calibration, load_calibration, save_calibration
from latkit.lut.claims import Claims
from latkit.lut.drift import reference_ops
from latkit.lut.estimate import PrecisionMismatchError, estimate
from latkit.lut.io import export_json, import_json, merge
from latkit.lut.store import LUT, SCHEMA_VERSION
from latkit.profiler.spaces.base import Layer, Network

# the schema latkit wrote before precisions (SCHEMA_VERSION 1), frozen as it was
V1_DDL = (Path(__file__).parent / "data" / "schema_v1.sql").read_text()

CAL_PARAMS = {"a": 1.1, "b": 0.02, "c": 0.3, "method": "lstsq3", "n_points": 3, "rmse_ms": 0.0, "max_rel_err": 0.0}


def _write_v1(path, specs, device, make_measurement) -> list[tuple]:
    """A v1 LUT file as the old latkit left it (WAL), with rows and a calibration; its
    measurement rows as stored."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_DDL)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema", "latkit.lut"), ("schema_version", "1"), ("latkit_version", "0.9"),
        ("created_at", "2026-01-01T00:00:00+00:00")])  # fmt: skip
    conn.execute("INSERT INTO devices(uri, info_json) VALUES (?, ?)", (device["uri"], json.dumps(device)))
    for i, spec in enumerate(specs):
        m = make_measurement(spec, 1.0 + i, seed=i)
        conn.execute("INSERT INTO ops VALUES (?, ?, ?)", (spec.key, spec.op_type.value, json.dumps(spec.to_dict())))
        conn.execute(
            "INSERT INTO measurements(op_key, device_id, latency_ms, mean_ms, std_ms, n_samples, converged, "
            "samples_json, provenance_json, source, created_at) VALUES (?, 1, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
            (spec.key, m.latency_ms, m.mean_ms, m.std_ms, m.n_samples, json.dumps(m.samples_ms),
             json.dumps(m.provenance), "measured", f"2026-01-01T00:00:0{i}+00:00"),
        )  # fmt: skip
    conn.execute(
        "INSERT INTO calibrations(device_id, kind, params_json, provenance_json, created_at) "
        "VALUES (1, 'e2e_linear', ?, '{}', '2026-01-02T00:00:00+00:00')",
        (json.dumps(CAL_PARAMS),),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    stored = conn.execute("SELECT op_key, latency_ms, mean_ms, std_ms, samples_json FROM measurements "
                          "ORDER BY op_key").fetchall()  # fmt: skip
    conn.close()
    return stored


def test_v1_lut_migrates_with_every_row_fp32(tmp_path, specs, device, make_measurement):
    path = tmp_path / "old.db"
    stored = _write_v1(path, specs, device, make_measurement)
    with pytest.raises(StoreError, match="older schema 1.*to migrate it"):
        LUT.open(path, readonly=True)
    with LUT.open(path) as lut:
        assert lut.meta["schema_version"] == str(SCHEMA_VERSION)
        assert lut.precisions() == ["fp32"]
        rows = lut.rows()
        assert len(rows) == len(specs) and {r["precision"] for r in rows} == {"fp32"}
        got = [(r["op_key"], r["latency_ms"], r["mean_ms"], r["std_ms"], r["samples_ms"]) for r in rows]
        assert got == [(k, lat, mean, std, json.loads(s)) for k, lat, mean, std, s in stored]  # exact numbers
        assert lut.done_keys(device["uri"]) == {s.key for s in specs}
        assert lut.done_keys(device["uri"], precision=Precision.INT8) == set()
        cals = lut.calibrations()
        assert [(c["precision"], c["params"]) for c in cals] == [("fp32", CAL_PARAMS)]
        assert load_calibration(lut, device["uri"]).a == 1.1
        assert load_calibration(lut, device["uri"], precision=Precision.INT8) is None
        # the new identity holds: the same op now also goes in at int8
        lut.add(specs[0], make_measurement(specs[0], 0.4), device, precision=Precision.INT8)
        assert lut.latency_ms(specs[0].key, precision=Precision.INT8) == pytest.approx(0.4, rel=0.02)
        assert lut.latency_ms(specs[0].key) == stored[[s[0] for s in stored].index(specs[0].key)][1]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    with LUT.open(path, readonly=True) as lut:  # migrated once: read-only opens now work
        assert len(lut) == len(specs) + 1 and lut.precisions() == ["fp32", "int8"]


def test_a_failed_migration_leaves_the_v1_file_as_it_was(tmp_path, specs, device, make_measurement):
    path = tmp_path / "old.db"
    _write_v1(path, specs, device, make_measurement)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE measurements_v2 (x)")  # in the way of the rebuild
    conn.commit()
    conn.close()
    with pytest.raises(StoreError):
        LUT.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == len(specs)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(calibrations)")]
    conn.close()
    assert "precision" not in cols


def _net(name, specs) -> Network:
    return Network(name, (16, 16, 24), tuple(Layer(f"l{i}", s) for i, s in enumerate(specs)))


def _two_precisions(lut, specs, device, make_measurement):
    """fp32 rows of every spec; int8 rows (about 0.4x) of every spec."""
    for i, spec in enumerate(specs):
        lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        lut.add(spec, make_measurement(spec, 0.4 * (1.0 + i), seed=i), device, precision=Precision.INT8)


def test_precisions_coexist_and_never_mix(tmp_path, specs, device, make_measurement):
    uri = device["uri"]
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        _two_precisions(lut, specs, device, make_measurement)
        assert len(lut) == 2 * len(specs) and lut.precisions(uri) == ["fp32", "int8"]
        with pytest.raises(StoreError, match="already holds .* at int8"):
            lut.add(specs[0], make_measurement(specs[0], 9.0), device, precision=Precision.INT8)
        fp32 = lut.lookup([s.key for s in specs], uri)
        int8 = lut.lookup([s.key for s in specs], uri, precision=Precision.INT8)
        for k in fp32:
            assert int8[k] == pytest.approx(0.4 * fp32[k], rel=1e-9)
        assert {r["precision"] for r in lut.rows(uri, precision=Precision.INT8)} == {"int8"}
        assert len(lut.rows(uri)) == 2 * len(specs) and len(lut.rows(precision=Precision.FP32)) == len(specs)
        assert lut.measurement(specs[1].key, precision=Precision.INT8).latency_ms == int8[specs[1].key]
        net = _net("n", specs)
        with pytest.raises(UsageError, match=f"has fp32 and int8 rows for {uri}; give --precision"):
            estimate(lut, net)
        e32, e8 = estimate(lut, net, precision=Precision.FP32), estimate(lut, net, precision=Precision.INT8)
        assert e32.lut_sum_ms == pytest.approx(sum(fp32.values()), rel=1e-12) and e32.precision == "fp32"
        assert e8.lut_sum_ms == pytest.approx(sum(int8.values()), rel=1e-12) and e8.precision == "int8"
        assert e8.to_dict()["precision"] == "int8"
        with pytest.raises(MissingOpsError, match="fp16"):
            estimate(lut, net, precision=Precision.FP16)
        with pytest.raises(UsageError, match="unknown precision 'int4'"):  # text is parsed where it enters
            parse_precision("int4")
        summary = lut.summary()
    assert summary["by_precision"] == {"fp32": len(specs), "int8": len(specs)}
    per = {d["precision"]: d for d in summary["devices"]}
    assert per["int8"]["ops"] == len(specs) and per["int8"]["total_ms"] == pytest.approx(e8.lut_sum_ms)
    assert per["fp32"]["total_ms"] == pytest.approx(e32.lut_sum_ms)


def test_a_network_only_partly_at_the_asked_precision_is_refused(tmp_path, specs, device, make_measurement):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        for i, spec in enumerate(specs):  # two ops measured at int8 only
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device, precision=Precision.INT8 if i < 2 else "fp32")
        net = _net("mixed", specs)
        with pytest.raises(PrecisionMismatchError) as info:
            estimate(lut, net, precision=Precision.FP32)
        assert sorted(info.value.missing) == sorted(s.key for s in specs[:2])
        text = str(info.value)
        assert "missing at fp32" in text and "at int8 only" in text and "--precision int8" in text
        assert info.value.elsewhere == {"int8": 2}
        assert "\n" not in text
        assert isinstance(info.value, MissingOpsError)
        with pytest.raises(MissingOpsError) as info8:  # the other way round: 4 ops only at fp32
            estimate(lut, net, precision=Precision.INT8)
        assert len(info8.value.missing) == 4 and "at fp32 only" in str(info8.value)
        # a network whose every op is at fp32 estimates, from fp32 rows alone
        est = estimate(lut, _net("fp32-part", specs[2:]), precision=Precision.FP32)
        assert est.lut_sum_ms == pytest.approx(sum(lut.lookup([s.key for s in specs[2:]]).values()))


def test_calibration_is_per_precision(tmp_path, specs, device, make_measurement):
    uri = device["uri"]
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        _two_precisions(lut, specs, device, make_measurement)
        net = _net("n", specs)
        int8_cal = Calibration(0.5, 0.0, 2.0, "lstsq2", 3, 0.0, 0.0)
        save_calibration(lut, uri, int8_cal, precision=Precision.INT8)
        assert load_calibration(lut, uri) is None  # fitted at int8: nothing for fp32
        assert load_calibration(lut, uri, precision=Precision.INT8) == int8_cal
        e32 = estimate(lut, net, precision=Precision.FP32)
        assert not e32.calibrated and e32.total_ms == e32.lut_sum_ms
        e8 = estimate(lut, net, precision=Precision.INT8)
        assert e8.calibrated and e8.total_ms == pytest.approx(0.5 * e8.lut_sum_ms + 2.0)
        save_calibration(lut, uri, Calibration(2.0, 0.0, 0.0, "ratio", 1, 0.0, 0.0))
        assert estimate(lut, net, precision=Precision.FP32).total_ms == pytest.approx(2.0 * e32.lut_sum_ms)
        assert estimate(lut, net, precision=Precision.INT8).total_ms == pytest.approx(e8.total_ms)
        cals = lut.calibrations(uri, precision=Precision.INT8)
        assert len(cals) == 1 and cals[0]["provenance"]["precision"] == "int8"


def test_json_round_trip_keeps_precision(tmp_path, specs, device, make_measurement):
    uri = device["uri"]
    with LUT.open(tmp_path / "a.db", create=True) as a:
        _two_precisions(a, specs, device, make_measurement)
        save_calibration(a, uri, Calibration(0.5, 0.0, 2.0, "lstsq2", 3, 0.0, 0.0), precision=Precision.INT8)
        export_json(a, tmp_path / "a.json")
        want_rows, want_cals = a.rows(), a.calibrations()
    payload = json.loads((tmp_path / "a.json").read_text())
    assert payload["schema_version"] == 2
    assert sorted({m["precision"] for m in payload["measurements"]}) == ["fp32", "int8"]
    with LUT.open(tmp_path / "b.db", create=True) as b:
        report = import_json(b, tmp_path / "a.json")
        assert report.added == 2 * len(specs) and not report.conflicts
        assert b.rows() == want_rows and b.calibrations() == want_cals
        again = import_json(b, tmp_path / "a.json")  # nothing new, nothing conflicting
        assert again.added == 0 and again.duplicates == 2 * len(specs)
    # merging a LUT whose int8 rows differ: conflicts name the precision, fp32 rows agree
    with LUT.open(tmp_path / "c.db", create=True) as c:
        for i, spec in enumerate(specs):
            c.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
            c.add(spec, make_measurement(spec, 0.3 * (1.0 + i), seed=i), device, precision=Precision.INT8)
    with LUT.open(tmp_path / "b.db") as b:
        report = merge(b, [tmp_path / "c.db"])
        assert len(report.conflicts) == len(specs) and {x.precision for x in report.conflicts} == {"int8"}
        assert report.duplicates == len(specs)


def test_old_json_without_precision_imports_as_fp32(tmp_path, specs, device, make_measurement):
    with LUT.open(tmp_path / "a.db", create=True) as a:
        for i, spec in enumerate(specs):
            a.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        save_calibration(a, device["uri"], Calibration(1.2, 0.0, 0.0, "ratio", 1, 0.0, 0.0))
        export_json(a, tmp_path / "new.json")
    payload = json.loads((tmp_path / "new.json").read_text())
    payload["schema_version"] = 1  # what latkit wrote before precisions: no such field anywhere
    for section in ("measurements", "calibrations"):
        for entry in payload[section]:
            del entry["precision"]
    (tmp_path / "old.json").write_text(json.dumps(payload))
    with LUT.open(tmp_path / "b.db", create=True) as b:
        report = import_json(b, tmp_path / "old.json")
        assert report.added == len(specs) and report.calibrations_added == 1
        assert b.precisions() == ["fp32"]
        assert [r["latency_ms"] for r in b.rows()] == [m["latency_ms"] for m in payload["measurements"]]
        assert load_calibration(b, device["uri"]).a == 1.2


@pytest.mark.parametrize("section", ["measurements", "calibrations"])
def test_bad_precision_in_an_import_is_one_store_error(tmp_path, specs, device, make_measurement, section):
    with LUT.open(tmp_path / "a.db", create=True) as a:
        for i, spec in enumerate(specs):
            a.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        save_calibration(a, device["uri"], Calibration(1.2, 0.0, 0.0, "ratio", 1, 0.0, 0.0))
        export_json(a, tmp_path / "a.json")
    payload = json.loads((tmp_path / "a.json").read_text())
    payload[section][-1]["precision"] = "int4"
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    with LUT.open(tmp_path / "b.db", create=True) as b:
        with pytest.raises(StoreError) as info:
            import_json(b, tmp_path / "bad.json")
        assert len(b) == 0 and b.calibrations() == []  # nothing was stored
    text = str(info.value)
    assert "\n" not in text and "bad.json" in text and "'int4'" in text and "fp32, fp16, int8" in text
    assert ("measurement #5" if section == "measurements" else "calibration #0") in text


def test_claims_and_drift_references_are_per_precision(tmp_path, specs, device, make_measurement):
    uri = device["uri"]
    keys = [s.key for s in specs]
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        for i, spec in enumerate(specs[:3]):
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        lut.add(specs[5], make_measurement(specs[5], 0.5), device, precision=Precision.INT8)
        fp32, int8 = Claims(lut, uri), Claims(lut, uri, precision=Precision.INT8)
        assert fp32.claim(keys, 10) == keys[3:]  # fp32 rows of the first three exist
        assert int8.claim(keys, 10) == keys[:5]  # fp32 claims do not block int8 ones
        assert Claims(lut, uri, precision=Precision.INT8).claim(keys, 10) == []  # taken by int8 or stored
        fp32.release()
        int8.release()
        refs = reference_ops(lut, uri, keys, n=2, precision=Precision.INT8)
        assert [(r.spec.key, r.precision) for r in refs] == [(specs[5].key, "int8")]
        assert refs[0].lut_ms == pytest.approx(0.5, rel=0.02)
        assert [r.precision for r in reference_ops(lut, uri, keys, n=2)] == ["fp32", "fp32"]


def test_put_row_carries_precision_and_refuses_a_bad_one(tmp_path, specs, device):
    with LUT.open(tmp_path / "a.db", create=True) as lut, lut.transaction():
        lut.ensure_device(device["uri"], device)
        lut.ensure_op(specs[0])
        row = {"op_key": specs[0].key, "device_uri": device["uri"], "latency_ms": 2.0, "source": "measured"}
        assert lut.put_row(row)  # no precision: fp32
        assert lut.put_row({**row, "precision": "FP16", "latency_ms": 1.0})
        with pytest.raises(StoreError, match="precision is 'half'"):
            lut.put_row({**row, "precision": "half"})
        assert {r["precision"]: r["latency_ms"] for r in lut.rows()} == {"fp32": 2.0, "fp16": 1.0}
        assert lut.meta["latkit_version"] == __version__



def test_a_second_opener_that_read_schema_1_before_the_migration_does_not_migrate_again(
    tmp_path, specs, device, make_measurement, monkeypatch
):
    # two processes open one v1 file at once: both read schema 1, one migrates under the
    # write lock; the other, once it has the lock, must find the work done
    path = tmp_path / "old.db"
    _write_v1(path, specs, device, make_measurement)
    LUT.open(path).close()  # the first process's migration
    real = LUT._schema_state
    monkeypatch.setattr(LUT, "_schema_state", staticmethod(lambda conn: (1, real(conn)[1])))
    with LUT.open(path) as lut:  # the second, with what it read before
        assert len(lut) == len(specs) and lut.precisions() == ["fp32"]
        assert len(lut.calibrations()) == 1
