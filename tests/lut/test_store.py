"""The SQLite LUT store: schema, writes, queries and refusals, on real files."""

from __future__ import annotations

import math
import sqlite3

import pytest

from latkit._version import __version__
from latkit.core.errors import MissingOpsError, StoreError, UsageError
from latkit.lut.store import LUT, SCHEMA_NAME, SCHEMA_VERSION, migrate


def test_create_writes_schema_and_meta(tmp_path):
    path = tmp_path / "sub" / "a.db"
    with LUT.open(path, create=True) as lut:
        meta = lut.meta
    assert meta["schema"] == SCHEMA_NAME and meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["latkit_version"] == __version__ and meta["created_at"].endswith("+00:00")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "devices", "ops", "measurements", "calibrations"} <= tables
    conn.close()


def test_add_then_query(tmp_path, specs, device, make_measurement):
    path = tmp_path / "a.db"
    with LUT.open(path, create=True) as lut:
        for i, spec in enumerate(specs):
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
    # a fresh connection sees every add: each one was committed
    with LUT.open(path) as lut:
        assert len(lut) == len(specs)
        assert lut.done_keys(device["uri"]) == {s.key for s in specs}
        assert lut.done_keys("cpu:other") == set()
        m0 = make_measurement(specs[0], 1.0, seed=0)
        assert lut.latency_ms(specs[0].key) == pytest.approx(m0.latency_ms, rel=1e-12)
        table = lut.lookup([s.key for s in specs[:3]], device["uri"])
        assert list(table) == [s.key for s in specs[:3]]
        assert table[specs[2].key] == pytest.approx(3.0, rel=0.02)
        assert lut.spec(specs[1].key) == specs[1]
        back = lut.measurement(specs[0].key)
        assert back == m0  # every field, samples and provenance included
        dev = lut.devices()
        assert dev == [{"uri": device["uri"], "info": device, "n_measurements": len(specs)}]
        row = lut.rows()[0]
        assert row["source"] == "measured" and row["converged"] is True
        assert row["n_samples"] == 40 and len(row["samples_ms"]) == 40


def test_summary_counts(tmp_path, specs, device, make_measurement):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        for i, spec in enumerate(specs):
            lut.add(spec, make_measurement(spec, 1.0 + i, seed=i), device)
        s = lut.summary()
    assert s["total"] == 6 and s["n_ops"] == 6 and s["by_type"] == {"mbconv": 6}
    assert s["sources"] == {"measured": 6} and s["unconverged"] == 0
    assert s["min_latency_ms"] == pytest.approx(1.0, rel=0.02)
    assert s["max_latency_ms"] == pytest.approx(6.0, rel=0.02)
    assert s["median_latency_ms"] == pytest.approx(3.5, rel=0.02)
    (dev,) = s["devices"]
    assert dev["uri"] == device["uri"] and dev["ops"] == 6 and dev["runtime"] == "onnxruntime"
    assert dev["total_ms"] == pytest.approx(21.0, rel=0.02) and dev["sources"] == ["measured"]


def test_duplicate_add_is_refused_unless_replace(tmp_path, specs, device, make_measurement):
    spec = specs[0]
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        lut.add(spec, make_measurement(spec, 1.0), device)
        with pytest.raises(StoreError, match="already holds"):
            lut.add(spec, make_measurement(spec, 2.0), device)
        assert lut.latency_ms(spec.key) == pytest.approx(1.0, rel=0.02)
        lut.add(spec, make_measurement(spec, 2.0), device, replace=True)
        assert lut.latency_ms(spec.key) == pytest.approx(2.0, rel=0.02)
        assert len(lut) == 1


def test_add_checks_key_and_device(tmp_path, specs, device, make_measurement):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        with pytest.raises(UsageError, match="not the spec"):
            lut.add(specs[0], make_measurement(specs[1], 1.0), device)
        with pytest.raises(UsageError, match="uri"):
            lut.add(specs[0], make_measurement(specs[0], 1.0), {"kind": "cpu"})


def test_missing_keys_and_devices(tmp_path, specs, device, make_measurement):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        with pytest.raises(StoreError, match="no measurements"):
            lut.latency_ms(specs[0].key)
        lut.add(specs[0], make_measurement(specs[0], 1.0), device)
        with pytest.raises(MissingOpsError) as err:
            lut.lookup([specs[0].key, specs[1].key, specs[2].key])
        assert err.value.missing == [specs[1].key, specs[2].key]
        assert list(lut.lookup([specs[0].key, specs[1].key], strict=False)) == [specs[0].key]
        with pytest.raises(StoreError, match="no device"):
            lut.latency_ms(specs[0].key, device="cpu:nowhere")
        lut.add(specs[0], make_measurement(specs[0], 3.0), {**device, "uri": "cpu:second"})
        with pytest.raises(UsageError, match="2 devices"):
            lut.latency_ms(specs[0].key)
        assert lut.latency_ms(specs[0].key, "cpu:second") == pytest.approx(3.0, rel=0.02)


def test_non_finite_statistics_are_stored_as_null(tmp_path, specs, device, make_measurement):
    m = make_measurement(specs[0], 1.0)
    m.rel_ci = float("inf")
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        lut.add(specs[0], m, device)
        assert lut.rows()[0]["rel_ci"] is None
        assert math.isnan(lut.measurement(specs[0].key).rel_ci)


def test_missing_file_without_create(tmp_path):
    with pytest.raises(StoreError, match="no LUT at"):
        LUT.open(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


def test_non_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is a text file, not a database\n" * 200)
    with pytest.raises(StoreError, match="not a latkit LUT"):
        LUT.open(path)


def test_corrupt_file_is_refused(tmp_path, specs, device, make_measurement):
    path = tmp_path / "a.db"
    with LUT.open(path, create=True) as lut:
        lut.add(specs[0], make_measurement(specs[0], 1.0), device)
    data = bytearray(path.read_bytes())
    data[16:100] = b"\xff" * 84  # trash the header after the magic string
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        LUT.open(path)


def test_empty_file_needs_create(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with pytest.raises(StoreError, match="empty"):
        LUT.open(path)
    with LUT.open(path, create=True) as lut:
        assert lut.meta["schema"] == SCHEMA_NAME


def test_other_sqlite_schema_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another schema"):
        LUT.open(path, create=True)


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    path = tmp_path / "a.db"
    LUT.open(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as err:
        LUT.open(path)
    msg = str(err.value)
    assert f"newer latkit (schema {SCHEMA_VERSION + 1}); upgrade latkit" in msg
    assert "\n" not in msg


def test_migrate_hook(tmp_path):
    path = tmp_path / "a.db"
    LUT.open(path, create=True).close()
    conn = sqlite3.connect(path)
    migrate(conn, SCHEMA_VERSION)  # current version: nothing to do
    with pytest.raises(StoreError, match="no migration from LUT schema 0"):
        migrate(conn, 0)
    conn.execute("PRAGMA user_version = 0")  # pretend an older file: the hook is consulted
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="no migration"):
        LUT.open(path)


def test_calibrations_are_kept_in_order(tmp_path):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        lut.save_calibration("cpu:x", "e2e_linear", {"a": 1.0}, {"n": 1})
        lut.save_calibration("cpu:x", "e2e_linear", {"a": 2.0}, {"n": 2})
        rows = lut.calibrations("cpu:x")
    assert [r["params"]["a"] for r in rows] == [1.0, 2.0]
    assert rows[0]["device_uri"] == "cpu:x" and rows[1]["provenance"] == {"n": 2}


def test_closed_lut_says_so(tmp_path):
    lut = LUT.open(tmp_path / "a.db", create=True)
    lut.close()
    lut.close()
    with pytest.raises(StoreError, match="closed"):
        lut.done_keys("cpu:x")
