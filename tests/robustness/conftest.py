"""Shared fixtures of the robustness suite: the valid inputs the bad ones derive from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rb_inproc import InProcess  # noqa: E402
from rb_workspace import Workspace, build_workspace  # noqa: E402


@pytest.fixture(scope="session")
def ws(tmp_path_factory) -> Workspace:
    """A tiny real LUT, its export, a fitted predictor and the shared data files."""
    return build_workspace(tmp_path_factory.mktemp("rb-workspace"))


@pytest.fixture()
def case_dir(tmp_path) -> Path:
    d = tmp_path / "case"
    d.mkdir()
    return d


@pytest.fixture()
def in_process(capfd) -> InProcess:
    """Runs a corpus case's command inside this process, as a fresh one would (see rb_inproc)."""
    return InProcess(capfd)
