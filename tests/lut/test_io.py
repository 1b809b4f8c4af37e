"""JSON export/import, merging, and the public OFA / ProxylessNAS tables."""

from __future__ import annotations

from pathlib import Path

import json
import math

import pytest
import yaml

from latkit._version import __version__
from latkit.core.errors import ParseError, StoreError
from latkit.lut.io import (
    JSON_SCHEMA,
    JSON_SCHEMA_VERSION,
    export_json,
    import_json,
    import_public_yaml,
    merge,
)
from latkit.lut.store import LUT
from latkit.profiler.ops import Act, OpType, parse_key


def _filled(path, specs, device, make_measurement, scale=1.0, seed=0):
    lut = LUT.open(path, create=True)
    for i, spec in enumerate(specs):
        lut.add(spec, make_measurement(spec, scale * (1.0 + i), seed=seed + i), device)
    return lut


def _content(lut: LUT):
    return lut.devices(), lut.ops(), lut.rows(), lut.calibrations()


def test_json_round_trip_is_exact(tmp_path, specs, device, make_measurement, ofa224):
    with _filled(tmp_path / "a.db", specs, device, make_measurement) as a:
        import_public_yaml(a, ofa224)
        a.save_calibration(device["uri"], "e2e_linear", {"a": 1.1, "b": 0.0, "c": 0.2}, {"n": 3})
        n = export_json(a, tmp_path / "a.json")
        original = _content(a)
    assert n == len(specs) + 96
    envelope = json.loads((tmp_path / "a.json").read_text())
    assert envelope["schema"] == JSON_SCHEMA and envelope["schema_version"] == JSON_SCHEMA_VERSION
    assert envelope["latkit_version"] == __version__
    assert {"devices", "ops", "measurements", "calibrations"} <= set(envelope)
    with LUT.open(tmp_path / "b.db", create=True) as b:
        report = import_json(b, tmp_path / "a.json")
        assert report.added == n and not report.conflicts and report.calibrations_added == 1
        assert _content(b) == original
        again = import_json(b, tmp_path / "a.json")  # importing twice changes nothing
        assert again.added == 0 and again.duplicates == n and again.calibrations_added == 0
        assert _content(b) == original


def test_import_json_refuses_other_and_newer_files(tmp_path):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        newer = tmp_path / "newer.json"
        newer.write_text(json.dumps({"schema": JSON_SCHEMA, "schema_version": 99}))
        with pytest.raises(StoreError, match=r"newer latkit \(schema 99\); upgrade latkit"):
            import_json(lut, newer)
        other = tmp_path / "other.json"
        other.write_text(json.dumps({"schema": "something.else", "schema_version": 1}))
        with pytest.raises(StoreError, match="not a latkit LUT export"):
            import_json(lut, other)
        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        with pytest.raises(StoreError, match="not valid JSON"):
            import_json(lut, broken)
        bad_row = tmp_path / "bad_row.json"
        bad_row.write_text(json.dumps({"schema": JSON_SCHEMA, "schema_version": 1,
                                       "measurements": [{"op_key": "x"}]}))  # fmt: skip
        with pytest.raises(StoreError, match="measurement #0 lacks"):
            import_json(lut, bad_row)
        assert len(lut) == 0  # nothing half-imported


def test_merge_conflict_rules(tmp_path, specs, device, make_measurement):
    a = _filled(tmp_path / "a.db", specs[:4], device, make_measurement)
    a.close()
    # b re-measures ops 2..5: ops 2 and 3 conflict (twice as slow, more samples, newer)
    with LUT.open(tmp_path / "b.db", create=True) as b:
        for i, spec in enumerate(specs[2:], start=2):
            b.add(spec, make_measurement(spec, 2.0 * (1.0 + i), n=80, seed=100 + i), device)
    with LUT.open(tmp_path / "keep.db", create=True) as dst:
        r1 = merge(dst, [tmp_path / "a.db", tmp_path / "b.db"])
        assert r1.added == 6 and r1.replaced == 0 and r1.duplicates == 0
        assert [(c.op_key, c.kept) for c in r1.conflicts] == [
            (specs[2].key, "existing"), (specs[3].key, "existing")]  # fmt: skip
        assert r1.conflicts[0].existing_ms == pytest.approx(3.0, rel=0.02)
        assert r1.conflicts[0].incoming_ms == pytest.approx(6.0, rel=0.02)
        assert dst.latency_ms(specs[2].key) == pytest.approx(3.0, rel=0.02)
        assert dst.latency_ms(specs[5].key) == pytest.approx(12.0, rel=0.02)
        assert "2 conflict(s)" in str(r1)
    for prefer in ("newer", "more_samples"):
        with LUT.open(tmp_path / f"{prefer}.db", create=True) as dst:
            r = merge(dst, [tmp_path / "a.db", tmp_path / "b.db"], prefer=prefer)
            assert r.replaced == 2 and all(c.kept == "incoming" for c in r.conflicts)
            assert dst.latency_ms(specs[2].key) == pytest.approx(6.0, rel=0.02)
            assert dst.latency_ms(specs[0].key) == pytest.approx(1.0, rel=0.02)
            assert len(dst) == 6


def test_merge_matches_devices_by_uri(tmp_path, specs, device, make_measurement):
    _filled(tmp_path / "a.db", specs[:2], device, make_measurement).close()
    other = {**device, "uri": "cpu:other-host"}
    _filled(tmp_path / "b.db", specs[:2], other, make_measurement, scale=3.0).close()
    with LUT.open(tmp_path / "all.db", create=True) as dst:
        r = merge(dst, [tmp_path / "a.db", tmp_path / "b.db"])
        assert r.added == 4 and not r.conflicts
        assert [d["uri"] for d in dst.devices()] == [device["uri"], "cpu:other-host"]
        assert dst.latency_ms(specs[1].key, "cpu:other-host") == pytest.approx(6.0, rel=0.02)
        r2 = merge(dst, [tmp_path / "b.db"])
        assert r2.added == 0 and r2.duplicates == 2


def test_import_ofa_table(tmp_path, ofa224):
    table = yaml.safe_load(ofa224.read_text())
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        report = import_public_yaml(lut, ofa224)
        assert report.added == len(table) == 96
        rows = {r["op_key"]: r for r in lut.rows()}
        assert set(rows) == set(table)
        for key, entry in table.items():
            row = rows[key]
            assert parse_key(key, default_act=Act.H_SWISH).key == key
            assert row["device_uri"] == "note10:ofa-lut"
            assert row["latency_ms"] == entry["mean"] and row["mean_ms"] == entry["mean"]
            assert row["std_ms"] == entry["std"] and row["n_samples"] == entry["count"]
            assert row["source"] == "imported:ofa_note10_224_lookup_table"
            assert row["provenance"]["public_source"].startswith("Once-for-All (Cai et al., ICLR 2020)")
        stem = lut.spec("Conv-input:224x224x3-output:112x112x24")
        assert stem.op_type is OpType.STEM and stem.act is Act.H_SWISH and stem.stride == 2
        info = lut.devices()[0]["info"]
        assert info["model"] == "Samsung Galaxy Note10"
        again = import_public_yaml(lut, ofa224)
        assert again.added == 0 and again.duplicates == 96 and len(lut) == 96


def test_ofa_tables_share_head_keys_as_reported_conflicts(tmp_path):
    first = tmp_path.parent  # silence unused warnings in some linters
    del first
    paths = [p for r in (160, 224) if (p := (
        (Path(__file__).resolve().parents[2] / "data" / "luts") / f"ofa_note10_{r}_lookup_table.yaml"
    )).exists()]  # fmt: skip
    if len(paths) < 2:
        pytest.skip("OFA public tables are not available")
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        import_public_yaml(lut, paths[0])
        r = import_public_yaml(lut, paths[1])
        shared = {c.op_key for c in r.conflicts}
        assert shared == {"Logits-input:1x1x1536-output:1000", "Conv_2-input:1x1x1152-output:1x1x1536"}
        assert r.added == 94 and len(lut) == 96 + 94
        first_logits = yaml.safe_load(paths[0].read_text())["Logits-input:1x1x1536-output:1000"]
        assert lut.latency_ms("Logits-input:1x1x1536-output:1000") == first_logits["mean"]


def test_import_proxylessnas_table(tmp_path, proxyless_yaml):
    table = yaml.safe_load(proxyless_yaml.read_text())
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        report = import_public_yaml(lut, proxyless_yaml, name="pnas")
        assert report.added == len(table) == 72
        for row in lut.rows():
            entry = table[row["op_key"]]
            assert row["device_uri"] == "mobile:proxylessnas-lut" and row["source"] == "imported:pnas"
            assert row["latency_ms"] == entry["mean"] and row["n_samples"] == entry["count"]
            assert math.isclose(row["std_ms"], math.sqrt(entry["var"]), rel_tol=1e-12)
            assert "ProxylessNAS (Cai et al., ICLR 2019)" in row["provenance"]["public_source"]
        head = lut.spec("Conv_1-input:7x7x320-output:7x7x1280")
        assert head.act is Act.RELU6


def test_import_with_custom_device_and_family(tmp_path, proxyless_yaml):
    renamed = tmp_path / "table.yaml"  # a name that says nothing: family comes from the keys
    renamed.write_text(proxyless_yaml.read_text())
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        import_public_yaml(lut, renamed, device_uri="pixel1:mine")
        assert lut.devices()[0]["uri"] == "pixel1:mine"
        assert lut.rows()[0]["provenance"]["family"] == "proxylessnas"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- just\n- a list\n", "not a mapping"),
        ("Conv-input:224x224x3-output:112x112x32:\n  count: 3\n", "entry 'Conv-input:224x224x3-output"),
        ("Conv-input:224x224x3-output:112x112x32:\n  mean: fast\n", "non-numeric mean"),
        ("Widget-input:1x1x1-output:1x1x1:\n  mean: 1.0\n", "entry 'Widget-input:1x1x1-output:1x1x1'"),
        ("Conv-input:224x224x3-output:112x112x32:\n  mean: [1, 2\n", "not valid YAML"),
    ],
)
def test_malformed_yaml_names_file_and_entry(tmp_path, content, message):
    path = tmp_path / "proxyless_bad.yaml"
    path.write_text(content)
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        with pytest.raises(ParseError) as err:
            import_public_yaml(lut, path)
        assert message in str(err.value) and "proxyless_bad.yaml" in str(err.value)
        assert len(lut) == 0


def test_missing_yaml_is_a_store_error(tmp_path):
    with LUT.open(tmp_path / "a.db", create=True) as lut:
        with pytest.raises(StoreError, match="cannot read"):
            import_public_yaml(lut, tmp_path / "absent_ofa.yaml")
