"""`latkit cache`: lists the cache areas with real sizes and clears them (LUTs only when named, with --yes)."""

from __future__ import annotations

import json

import pytest

from cli_checks import one_error_line, run
from latkit.core import cache

MODEL = "Conv-0123456789abcdef0123.onnx"


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    root, luts = tmp_path / "cache", tmp_path / "luts"
    monkeypatch.setenv("LATKIT_CACHE", str(root))
    monkeypatch.setenv("LATKIT_LUT_DIR", str(luts))
    cache.prepare(root / "loopback" / "port-6001")  # latkit marks the areas it creates
    cache.prepare(luts)
    (root / "loopback" / "port-6001").mkdir(parents=True)
    (root / f"{MODEL}").write_bytes(b"x" * 1000)
    (root / f"{MODEL}.json").write_text("{}")
    (root / "notes.txt").write_text("not latkit's")  # a file latkit did not make stays
    (root / "loopback" / "port-6001" / "model.tflite").write_bytes(b"y" * 500)
    (luts / "cpu.db").write_bytes(b"z" * 2000)
    return root, luts


def test_lists_each_area_with_its_files_and_bytes(caches, capsys):
    root, luts = caches
    code, out, _ = run(capsys, "cache", "--json")
    assert code == 0
    rows = {r["area"]: r for r in json.loads(out)}
    assert rows["models"] == {**rows["models"], "path": str(root), "files": 2, "bytes": 1002}
    assert rows["loopback"]["files"] == 1 and rows["loopback"]["bytes"] == 500
    assert rows["luts"]["path"] == str(luts) and rows["luts"]["bytes"] == 2000


def test_clear_removes_models_only_by_default(caches, capsys):
    root, luts = caches
    code, _, err = run(capsys, "cache", "clear")
    assert code == 0 and "cleared models: 2 files" in err
    assert sorted(p.name for p in root.iterdir()) == [cache.MARKER, "loopback", "notes.txt"]
    assert (luts / "cpu.db").exists() and (root / "loopback" / "port-6001" / "model.tflite").exists()


def test_luts_hold_measurements_and_need_yes(caches, capsys):
    _, luts = caches
    code, _, err = run(capsys, "cache", "clear", "luts")
    one_error_line(code, err, "1 files", "--yes")
    assert (luts / "cpu.db").exists()
    code, _, err = run(capsys, "cache", "clear", "luts", "loopback", "--yes")
    assert code == 0 and not luts.exists()
    assert "cleared luts: 1 files" in err and "cleared loopback: 1 files" in err


def test_unknown_area_is_one_line(caches, capsys):
    code, _, err = run(capsys, "cache", "clear", "everything")
    one_error_line(code, err, "models, loopback, luts")
