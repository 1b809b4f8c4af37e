"""`latkit cache clear` deletes only what latkit made: its own file names, in an area it marked.

``LATKIT_CACHE`` and ``LATKIT_LUT_DIR`` may point at a folder that also holds the
user's files; clearing must never delete those (issue 28, data loss).
"""

from __future__ import annotations

import pytest

from cli_checks import one_error_line, run
from latkit.core import cache

MODEL = "Conv2d_k3-0123456789abcdef0123.onnx"


@pytest.fixture()
def user_folder(tmp_path, monkeypatch):
    """A folder of the user's own files, named as latkit's cache and LUT folder."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.onnx").write_bytes(b"mine")
    (home / "results.db").write_bytes(b"mine too")
    (home / "notes.json").write_text("{}")
    monkeypatch.setenv("LATKIT_CACHE", str(home))
    monkeypatch.setenv("LATKIT_LUT_DIR", str(home))
    return home


def test_clear_refuses_a_folder_latkit_did_not_make(user_folder, capsys):
    (user_folder / MODEL).write_bytes(b"x")  # even latkit-named files: the folder is not provably latkit's
    code, _, err = run(capsys, "cache", "clear")
    one_error_line(code, err, str(user_folder), cache.MARKER, "LATKIT_CACHE")
    code, _, err = run(capsys, "cache", "clear", "luts", "--yes")
    one_error_line(code, err, cache.MARKER, "LATKIT_LUT_DIR")
    assert sorted(p.name for p in user_folder.iterdir()) == [MODEL, "notes.json", "results.db", "thesis.onnx"]


def test_prepare_never_marks_a_folder_holding_other_files(user_folder):
    cache.prepare(user_folder)
    assert not (user_folder / cache.MARKER).exists()
    with pytest.raises(Exception, match="deletes nothing"):
        cache.clear(cache.area("models"))


def test_a_marked_area_loses_only_latkit_named_files(tmp_path, monkeypatch, capsys):
    root, luts = tmp_path / "cache", tmp_path / "luts"
    monkeypatch.setenv("LATKIT_CACHE", str(root))
    monkeypatch.setenv("LATKIT_LUT_DIR", str(luts))
    cache.prepare(root / "loopback" / "port-6001")  # what latkit does before it first writes
    cache.prepare(luts)
    assert (root / cache.MARKER).is_file() and (root / "loopback" / cache.MARKER).is_file()
    (root / MODEL).write_bytes(b"x" * 10)
    (root / f"{MODEL}.json").write_text("{}")
    (root / "mine.onnx").write_bytes(b"user")  # put there later by the user
    (luts / "cpu-mbv2-224.db").write_bytes(b"z" * 5)
    (luts / "mine.sqlite").write_bytes(b"user")
    code, _, err = run(capsys, "cache", "clear", "models", "luts", "--yes")
    assert code == 0 and "cleared models: 2 files" in err and "cleared luts: 1 files" in err
    assert (root / "mine.onnx").read_bytes() == b"user" and not (root / MODEL).exists()
    assert sorted(p.name for p in luts.iterdir()) == [cache.MARKER, "mine.sqlite"]


def test_a_written_model_marks_the_cache_it_creates(tmp_path, monkeypatch):
    from latkit.profiler.export import BuiltModel
    from latkit.profiler.ops import Act, OpSpec, OpType

    root = tmp_path / "fresh"
    monkeypatch.setenv("LATKIT_CACHE", str(root))
    path = BuiltModel(OpSpec(OpType.HEAD_CONV, (4, 4, 8), (4, 4, 16), act=Act.RELU)).file("onnx")
    assert (root / cache.MARKER).is_file()
    assert cache.clear(cache.area("models"))[0] == 2 and not path.exists() and not root.exists()
