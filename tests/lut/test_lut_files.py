"""`latkit lut ...` and the files around it: odd paths, bad files, export targets,
all-or-nothing merges, damaged and read-only LUTs. Real SQLite files, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from cli_checks import one_error_line, run
from latkit.core.errors import StoreError
from latkit.lut.store import LUT

ODD_NAMES = ["with space.db", "a[x]b.db", "[/bold]tag.db", "quote's \"q\".db", "é ünï 表.db",
             "what?#frag%20.db", "-dash.db"]  # fmt: skip


def _fill(path: Path, specs, device, make_measurement, base: float = 1.0) -> Path:
    with LUT.open(path, create=True) as lut:
        for i, spec in enumerate(specs):
            lut.add(spec, make_measurement(spec, base + i, seed=i), device)
    return path


def _latencies(path: Path) -> dict[str, float]:
    with LUT.open(path, readonly=True) as lut:
        return {r["op_key"]: r["latency_ms"] for r in lut.rows()}


def _damage(path: Path) -> None:
    """Zero the cell count of the measurements index: the file opens, its counts lie."""
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_measurements_1'"
    ).fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page + 3 : (root - 1) * page + 5] = b"\0\0"
    path.write_bytes(bytes(data))


# ------------------------------------------------------------ odd paths


@pytest.mark.slow
@pytest.mark.parametrize("name", ODD_NAMES)
def test_every_lut_command_takes_an_odd_path(name, tmp_path, capsys, specs, device, make_measurement):
    src = _fill(tmp_path / ("src " + name), specs[:3], device, make_measurement)
    code, out, err = run(capsys, "lut", "show", src, "--rows")
    assert code == 0, err
    assert src.name in out and specs[0].key in out
    exported = tmp_path / ("out " + name + ".json")
    code, _, err = run(capsys, "lut", "export", src, "-o", exported)
    assert code == 0, err
    assert len(json.loads(exported.read_text())["measurements"]) == 3
    merged = tmp_path / ("all " + name)
    code, _, err = run(capsys, "lut", "merge", merged, src)
    assert code == 0, err
    imported = tmp_path / ("imp " + name)
    code, _, err = run(capsys, "lut", "import", imported, exported)
    assert code == 0, err
    assert _latencies(merged) == _latencies(imported) == _latencies(src)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


@pytest.mark.parametrize("command", ["show", "export", "estimate", "merge-src", "merge-dst", "import-dst"])
@pytest.mark.parametrize("kind", ["missing", "empty", "directory", "text", "sqlite-other"])
def test_bad_lut_files_give_one_line(command, kind, tmp_path, capsys):
    bad = tmp_path / "bad file [x].db"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "directory":
        bad.mkdir()
    elif kind == "text":
        bad.write_text("not sqlite\n" * 100)
    elif kind == "sqlite-other":
        conn = sqlite3.connect(bad)
        conn.execute("CREATE TABLE songs (title TEXT)")
        conn.commit()
        conn.close()
    before = bad.read_bytes() if bad.is_file() else None
    export = tmp_path / "e.json"
    export.write_text(json.dumps({"schema": "latkit.lut.json", "schema_version": 1}))
    argv = {
        "show": ["lut", "show", bad],
        "export": ["lut", "export", bad, "-o", tmp_path / "x.json"],
        "estimate": ["lut", "estimate", "--lut", bad, "--space", "proxyless_mobile", "--arch",
                     json.dumps(["3x3_MBConv3"] * 21)],
        "merge-src": ["lut", "merge", tmp_path / "all.db", bad],
        "merge-dst": ["lut", "merge", bad, export],
        "import-dst": ["lut", "import", bad, export],
    }[command]  # fmt: skip
    code, _, err = run(capsys, *argv)
    if kind in ("missing", "empty") and command in ("merge-dst", "import-dst"):
        assert code == 0, err  # a missing or empty destination is created
        return
    one_error_line(code, err)
    assert not (tmp_path / "all.db").exists() and not (tmp_path / "x.json").exists()
    if before is not None:
        assert bad.read_bytes() == before


# ---------------------------------------------------------- export targets


def test_export_refuses_non_regular_targets(tmp_path, capsys, specs, device, make_measurement):
    src = _fill(tmp_path / "a.db", specs[:2], device, make_measurement)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "lut", "export", src, "-o", fifo)
    one_error_line(code, err, "pipe", "not a regular file")
    assert fifo.is_fifo()
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run(capsys, "lut", "export", src, "-o", folder)
    one_error_line(code, err, "folder")
    assert folder.is_dir() and not list(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "folder", "pipe"]


def test_export_never_replaces_a_lut(tmp_path, capsys, specs, device, make_measurement):
    src = _fill(tmp_path / "a.db", specs[:2], device, make_measurement)
    other = _fill(tmp_path / "b.db", specs[2:4], device, make_measurement)
    for target in (src, other):
        before = target.read_bytes()
        code, _, err = run(capsys, "lut", "export", src, "-o", target)
        one_error_line(code, err, target.name, "SQLite")
        assert target.read_bytes() == before


def test_export_replaces_an_old_file_whole(tmp_path, capsys, specs, device, make_measurement):
    src = _fill(tmp_path / "a.db", specs[:4], device, make_measurement)
    out = tmp_path / "a.json"
    out.write_text("old content")
    code, _, err = run(capsys, "lut", "export", src, "-o", out)
    assert code == 0, err
    assert len(json.loads(out.read_text())["measurements"]) == 4
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.part"))


# ------------------------------------------------------------------ merge


def test_merge_with_a_missing_source_leaves_the_destination_as_it_was(
    tmp_path, capsys, specs, device, make_measurement
):
    all_db = _fill(tmp_path / "all.db", specs[:2], device, make_measurement)
    cpu = _fill(tmp_path / "cpu.db", specs[2:5], device, make_measurement, base=3.0)
    before = _latencies(all_db)
    code, _, err = run(capsys, "lut", "merge", all_db, cpu, tmp_path / "missing.db")
    one_error_line(code, err, "missing.db")
    assert _latencies(all_db) == before  # cpu.db's rows did not go in
    code, _, err = run(capsys, "lut", "merge", all_db, cpu)
    assert code == 0, err
    assert len(_latencies(all_db)) == 5


def test_failed_merge_into_a_new_file_leaves_nothing(tmp_path, capsys, specs, device, make_measurement):
    cpu = _fill(tmp_path / "cpu.db", specs[:3], device, make_measurement)
    code, _, err = run(capsys, "lut", "merge", tmp_path / "all.db", cpu, tmp_path / "missing.db")
    one_error_line(code, err, "missing.db")
    # (cpu.db's -wal / -shm are SQLite's own companions of a file read in WAL mode)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["cpu.db"]


def test_merge_refuses_a_damaged_source(tmp_path, capsys, specs, device, make_measurement):
    good = _fill(tmp_path / "good.db", specs[:2], device, make_measurement)
    bad = _fill(tmp_path / "bad.db", specs, device, make_measurement)
    _damage(bad)
    before = _latencies(good)
    code, _, err = run(capsys, "lut", "merge", good, bad)
    one_error_line(code, err, "bad.db", "damaged", "JSON export")
    assert _latencies(good) == before


@pytest.mark.parametrize("command", ["show", "export", "estimate"])
def test_damaged_lut_is_not_used(command, tmp_path, capsys, specs, device, make_measurement):
    bad = _fill(tmp_path / "bad.db", specs, device, make_measurement)
    _damage(bad)
    argv = {
        "show": ["lut", "show", bad],
        "export": ["lut", "export", bad, "-o", tmp_path / "x.json"],
        "estimate": ["lut", "estimate", "--lut", bad, "--space", "proxyless_mobile", "--arch",
                     json.dumps(["3x3_MBConv3"] * 21)],
    }[command]  # fmt: skip
    code, _, err = run(capsys, *argv)
    one_error_line(code, err, "bad.db", "damaged")
    assert not (tmp_path / "x.json").exists()


def test_merge_into_itself_is_refused(tmp_path, capsys, specs, device, make_measurement):
    a = _fill(tmp_path / "a.db", specs[:2], device, make_measurement)
    code, _, err = run(capsys, "lut", "merge", a, a)
    one_error_line(code, err, "itself")


# -------------------------------------------------------------- read-only


def test_readonly_open_reads_and_refuses_writes(tmp_path, specs, device, make_measurement):
    path = _fill(tmp_path / "ro.db", specs[:2], device, make_measurement)
    with LUT.open(path, readonly=True) as lut:
        assert len(lut) == 2
        with pytest.raises(StoreError, match="read-only"):
            lut.add(specs[3], make_measurement(specs[3], 1.0), device)
    assert len(_latencies(path)) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway")
def test_readonly_file_is_shown_and_writes_say_read_only(tmp_path, capsys, specs, device, make_measurement):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _fill(folder / "lut.db", specs[:2], device, make_measurement)
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        code, out, err = run(capsys, "lut", "show", path, "--json")
        assert code == 0, err
        assert json.loads(out)["summary"]["total"] == 2
        code, _, err = run(capsys, "lut", "merge", path, tmp_path / "x.json")
        one_error_line(code, err)
        export = tmp_path / "e.json"
        code, _, err = run(capsys, "lut", "export", path, "-o", export)
        assert code == 0, err
        code, _, err = run(capsys, "lut", "import", path, export)
        one_error_line(code, err, "read-only")
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


def test_readonly_commands_do_not_change_the_file(tmp_path, capsys, specs, device, make_measurement):
    path = _fill(tmp_path / "a.db", specs[:3], device, make_measurement)
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    for argv in (["lut", "show", path], ["lut", "export", path, "-o", tmp_path / "a.json"]):
        code, _, err = run(capsys, *argv)
        assert code == 0, err
    assert path.read_bytes() == copy.read_bytes()
