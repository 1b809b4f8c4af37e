"""Search outputs on disk: checkpoints, results and reports are whole or absent, and bad ones are refused."""

from __future__ import annotations

import json

import pytest
import torch

from latkit.core.errors import StoreError
from latkit.search.supernet.checkpoint import STATE_FILE, TENSORS_FILE, load_checkpoint, save_checkpoint
from latkit.search.framework.result import SearchError, SearchResult


def test_checkpoint_round_trip_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.arange(6.0).reshape(2, 3)}, {"epoch": 3, "loss": float("nan")})
    tensors, state = load_checkpoint(tmp_path)
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    assert state["epoch"] == 3 and state["loss"] is None  # NaN stored as null, the file is strict JSON
    json.loads((tmp_path / STATE_FILE).read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_FILE, TENSORS_FILE])


def test_checkpoint_halves_of_two_epochs_are_refused(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"epoch": 1})
    old_state = (tmp_path / STATE_FILE).read_bytes()
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, {"epoch": 2})
    (tmp_path / STATE_FILE).write_bytes(old_state)  # a run killed between the two moves
    with pytest.raises(StoreError, match="different epochs"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("state", ["[" * 100_000, "[1, 2]", "\xff"])
def test_checkpoint_with_broken_state(tmp_path, state):
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"epoch": 1})
    (tmp_path / STATE_FILE).write_text(state, errors="surrogateescape")
    with pytest.raises(StoreError) as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_checkpoint_with_garbage_tensors(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"epoch": 1})
    (tmp_path / TENSORS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(StoreError, match="cannot read the search checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_into_a_file(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("keep")
    with pytest.raises(StoreError):
        save_checkpoint(blocker, {"w": torch.zeros(2)}, {"epoch": 1})
    assert blocker.read_text() == "keep"


@pytest.mark.parametrize("content, match", [
    ("[" * 100_000, "nested too deeply"),
    ("[1]", "not a latkit search result"),
    ('{"schema": "latkit.search", "schema_version": 1, "latkit_version": "x", "bogus": 1}', "damaged"),
])
def test_bad_search_results(tmp_path, content, match):
    path = tmp_path / "search.json"
    path.write_text(content)
    with pytest.raises(SearchError, match=match):
        SearchResult.load(path)


def test_report_folder_is_a_file(tmp_path):
    from latkit.pipeline.report import write_report

    blocker = tmp_path / "report"
    blocker.write_text("keep")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        write_report(blocker, {"target_ms": 5.0})
    assert blocker.read_text() == "keep"


def test_plot_written_whole(tmp_path):
    from latkit.pipeline.report import plot_layers

    pytest.importorskip("matplotlib")
    path = plot_layers([{"name": "a", "latency_ms": 1.0}, {"name": "b", "latency_ms": 2.0}], tmp_path / "l.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["l.png"]
    (tmp_path / "d.png").mkdir()
    with pytest.raises(StoreError, match="folder"):
        plot_layers([{"name": "a", "latency_ms": 1.0}], tmp_path / "d.png")


def test_check_resumable_says_what_is_missing(tmp_path):
    from latkit.core.errors import UsageError
    from latkit.search.supernet.checkpoint import check_resumable

    with pytest.raises(UsageError, match="nothing to resume.*drop --resume"):
        check_resumable(tmp_path / "none")
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"algorithm": "proxyless-grad", "epoch": 2})
    assert check_resumable(tmp_path, "proxyless-grad")["epoch"] == 2
    with pytest.raises(UsageError, match="proxyless-grad search, not random.*--algorithm proxyless-grad"):
        check_resumable(tmp_path, "random")
    (tmp_path / TENSORS_FILE).unlink()
    with pytest.raises(StoreError, match="incomplete"):
        check_resumable(tmp_path)

