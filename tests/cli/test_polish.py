"""CLI polish: shell completion, flag types in help, `devices` with loopback phones,
`lut show` per space and resolution, and read-only commands that never import torch."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import latkit
from latkit.cli import main

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "devices" / "fixtures"
SPACE = "proxyless_mobile_w05"
# runs the CLI in a fresh interpreter, then says which heavy modules it imported
RUNNER = ("import sys; from latkit.cli import main; rc = main(sys.argv[1:]); "
          "sys.stderr.write('\\nHEAVY ' + ','.join(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules)); "
          "sys.exit(rc)")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _fresh(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # cwd outside the checkout: there `import latkit` would find the bare source folder
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=tempfile.gettempdir())


@pytest.fixture(scope="module")
def two_res_lut(tmp_path_factory) -> Path:
    """A real LUT holding 3 operators at 32x32 and 2 at 48x48, measured on ONNX Runtime."""
    db = tmp_path_factory.mktemp("lut") / "two.db"
    for res, n in ((32, 3), (48, 2)):
        report = latkit.profile("cpu:onnxruntime", SPACE, db, resolution=res, limit=n, quick=True)
        assert len(report.measured) == n
    return db


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script(capsys, shell: str) -> None:
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0 and "_LATKIT_COMPLETE" in out and "latkit" in out
    assert f"complete_{shell}" in out


def test_completion_answers_with_command_names() -> None:
    env = {"_LATKIT_COMPLETE": "complete_bash", "COMP_WORDS": "latkit l", "COMP_CWORD": "1"}
    got = _fresh(env=env).stdout.split()
    assert {"lut", "loopback-device"} <= set(got) and "profile" not in got
    env = {"_LATKIT_COMPLETE": "complete_bash", "COMP_WORDS": "latkit lut ", "COMP_CWORD": "2"}
    assert {"show", "export", "calibrate"} <= set(_fresh(env=env).stdout.split())


def test_completion_unknown_shell_is_one_error_line(capsys) -> None:
    code, out, err = run(capsys, "completion", "tcsh")
    assert code != 0 and out == "" and err.strip().startswith("error:") and "bash, zsh, fish" in err
    assert len(err.strip().splitlines()) == 1


def test_help_shows_no_type_beside_flags(capsys) -> None:
    code, out, _ = run(capsys, "lut", "show", "--help")
    assert code == 0 and "--json" in out and "--rows" in out
    assert "<bool>" not in out and "<path>" in out  # a flag takes no value; an argument keeps its type
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--verbose" in out and "<int>" not in out and "<bool>" not in out
    code, out, _ = run(capsys, "ops", "--help")
    assert "<int range>" in out and "<bool>" not in out  # --resolution takes a number (1 to 4096)


def test_devices_lists_a_running_loopback_phone(capsys, tmp_path, monkeypatch) -> None:
    server = pytest.importorskip("latkit.devices.loopback.server")
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "cache"))
    with server.LoopbackDevice(port=0, auth="accept") as phone:  # its folder: cache/loopback/port-N
        uri = f"adb+tcp://127.0.0.1:{phone.port}"
        code, out, _ = run(capsys, "devices", "--json")
        code_table, table, _ = run(capsys, "devices")
    assert code == 0 and code_table == 0
    phones = json.loads(out)["android"]
    mine = [p for p in phones if p["uri"] == uri]
    assert len(mine) == 1 and mine[0]["model"] == "Loopback Pixel" and mine[0]["abi"] == "arm64-v8a"
    assert uri in table and "Loopback Pixel" in table
    # stopped: no longer listed
    code, out, _ = run(capsys, "devices", "--json")
    assert uri not in [p["uri"] for p in json.loads(out)["android"]]


def test_lut_show_keeps_each_resolution_apart(capsys, two_res_lut: Path) -> None:
    code, out, err = run(capsys, "lut", "show", str(two_res_lut), "--json")
    assert code == 0, err
    summary = json.loads(out)["summary"]
    with sqlite3.connect(two_res_lut) as con:
        rows = list(con.execute("SELECT op_key, latency_ms FROM measurements"))
    groups = {(g["space"], g["resolution"]): g for g in summary["groups"]}
    assert set(groups) == {(SPACE, 32), (SPACE, 48)}
    for res, n in ((32, 3), (48, 2)):
        mine = [ms for key, ms in rows if _at(key, res)]
        assert groups[(SPACE, res)]["ops"] == n
        assert groups[(SPACE, res)]["total_ms"] == pytest.approx(sum(mine), rel=1e-9)
    assert all("total_ms" not in d for d in summary["devices"])  # no sum across both networks
    code, out, _ = run(capsys, "lut", "show", str(two_res_lut))
    lines = [ln for ln in out.splitlines() if SPACE in ln]
    assert len(lines) == 2 and any(" 32 " in ln for ln in lines) and any(" 48 " in ln for ln in lines)


def _at(key: str, res: int) -> bool:
    """Is ``key`` an operator of the space's network at ``res``?"""
    from latkit.profiler.spaces import get_space

    return key in {s.key for s in get_space(SPACE).operators(res)}


def test_read_only_commands_import_no_torch(tmp_path, two_res_lut: Path) -> None:
    show = _fresh("lut", "show", str(two_res_lut), "--json")
    assert show.returncode == 0, show.stderr
    assert show.stderr.rstrip().endswith("HEAVY")  # nothing listed
    assert len(json.loads(show.stdout)["summary"]["groups"]) == 2
    export = _fresh("lut", "export", str(two_res_lut), "-o", str(tmp_path / "lut.json"))
    assert export.returncode == 0 and export.stderr.rstrip().endswith("HEAVY"), export.stderr
    assert len(json.loads((tmp_path / "lut.json").read_text())["measurements"]) == 5
    parsed = _fresh("parse-benchmark", str(FIXTURES / "bm_current_xnnpack.txt"), "--json")
    assert parsed.returncode == 0 and parsed.stderr.rstrip().endswith("HEAVY"), parsed.stderr
    assert json.loads(parsed.stdout)["inference_avg_us"] > 0
