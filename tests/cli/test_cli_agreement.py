"""The CLI speaks one language across commands (issue 26): one flag name per concept (the old
ones hidden, deprecated aliases), readable help in a pipe, a LUT at another resolution named with
its `-r N`, and no empty output folder left by a command that failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from artefacts import RESOLUTION, SPACE
from cli_checks import one_error_line, run


def _commands():
    """Every leaf command of the CLI as (name, click command)."""
    from latkit.cli import _command

    stack = [("", _command())]
    while stack:
        name, cmd = stack.pop()
        if hasattr(cmd, "commands"):
            stack += [(f"{name} {sub}".strip(), c) for sub, c in cmd.commands.items()]
        else:
            yield name, cmd


def _visible(cmd) -> dict[str, object]:
    return {o: p for p in cmd.params if not getattr(p, "hidden", False) for o in getattr(p, "opts", [])}


def test_one_flag_name_per_concept_across_commands():
    commands = dict(_commands())
    for name, cmd in commands.items():
        shown = _visible(cmd)
        if "-p" in shown:
            assert "--precision" in shown["-p"].opts, name  # -p is --precision, never --predictor or --port
        if "--precision" in shown:
            assert "-p" in shown["--precision"].opts, name
        assert not {"--epochs", "--max-seconds-per-op"} & set(shown), name
    assert {"--search-epochs", "--quick"} <= set(_visible(commands["search"]))
    assert "--train-epochs" in _visible(commands["train"])
    assert {"--search-epochs", "--train-epochs"} <= set(_visible(commands["run"]))
    assert "--max-seconds" in _visible(commands["profile"]) and "--max-seconds" in _visible(commands["measure"])


def test_an_old_flag_still_works_with_a_warning_and_not_beside_its_new_name(capsys, tmp_path):
    lut = tmp_path / "x.db"
    code, _, err = run(capsys, "profile", "--space", SPACE, "--lut", lut, "--max-seconds-per-op", "-1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2
    assert "--max-seconds-per-op is deprecated" in lines[0] and "use --max-seconds" in lines[0]
    assert "--max-seconds must be a positive number of seconds, got -1" in lines[1]  # the value was taken
    code, _, err = run(capsys, "train", "--arch", tmp_path / "a.json", "--epochs", "2", "--train-epochs", "4")
    one_error_line(code, err, "--epochs is the old name of --train-epochs")
    assert not lut.exists()


def test_help_in_a_pipe_cuts_no_option_name(capsys, monkeypatch):
    import typer.rich_utils

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", None)  # restored after the test
    code, out, _ = run(capsys, "search", "--help")
    assert code == 0 and "…" not in out
    assert "--latency-samples" in out and "--smooth-accuracy" in out and "adb:SERIAL[?delegate=D&threads=N]" in out


def test_search_names_the_resolution_the_lut_holds_and_leaves_no_folder(capsys, profiled_lut, tmp_path):
    out = tmp_path / "new" / "s"
    code, _, err = run(capsys, "search", "--space", SPACE, "--lut", profiled_lut, "-T", "5", "-o", out)
    one_error_line(code, err, f"at resolution {RESOLUTION}, not 224", f"`-r {RESOLUTION}`")
    assert list(tmp_path.iterdir()) == []


def test_search_quick_shortens_the_device_profiling(capsys, monkeypatch, tmp_path):
    from latkit.cli import search
    from latkit.core.errors import UsageError

    seen = []

    def device_lut(sp, device, resolution, precision, classes=None, quick=False):
        seen.append(quick)
        raise UsageError("stop here")

    monkeypatch.setattr(search, "_device_lut", device_lut)
    code, _, err = run(capsys, "search", "--space", SPACE, "--device", "cpu:onnxruntime", "-r", "32", "-T", "5",
                       "--quick", "-o", tmp_path / "s")
    one_error_line(code, err, "stop here")
    assert seen == [True] and not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv", [
    ("export", "--arch", "{tmp}/missing.json", "--random-weights"),
    ("search", "--space", SPACE, "--lut", "{tmp}/missing.db", "-T", "5"),
    ("run", "--device", "cpu:nope", "-T", "5"),
    ("train", "--arch", "{tmp}/missing.json"),
])  # fmt: skip
def test_a_failed_command_leaves_no_output_folder(capsys, tmp_path, argv):
    out = tmp_path / "out" / "deeper"
    code, _, err = run(capsys, *(a.format(tmp=tmp_path) for a in argv), "-o", out)
    one_error_line(code, err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verb, source", [("import", "missing.json"), ("merge", "missing.db")])
def test_a_failed_lut_import_or_merge_leaves_no_folder(capsys, tmp_path, verb, source):
    code, _, err = run(capsys, "lut", verb, tmp_path / "new" / "x.db", tmp_path / source)
    one_error_line(code, err, source)
    assert list(tmp_path.iterdir()) == []


def test_lut_estimate_warns_without_a_calibration_and_names_the_lut_resolution(capsys, profiled_lut):
    import json

    from latkit.profiler.spaces import get_space

    ops = ["zero" if "zero" in c.options else "3x3_MBConv3" for c in get_space(SPACE).choices()]
    code, out, err = run(capsys, "lut", "estimate", "--lut", profiled_lut, "--arch", json.dumps(ops), "-s", SPACE,
                         "-r", RESOLUTION, "-p", "fp32")
    assert code == 0 and "sum of operators" in out
    assert "no fp32 calibration for cpu:onnxruntime" in err and "Traceback" not in err
    code, _, err = run(capsys, "lut", "estimate", "--lut", profiled_lut, "--arch", json.dumps(ops), "-s", SPACE)
    one_error_line(code, err, f"holds resolution {RESOLUTION}, not 224", f"`--resolution {RESOLUTION}`")
