"""Bad input at the command line: one clear error line, non-zero exit, no traceback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from latkit.cli import main

SHARED = Path(__file__).resolve().parents[2] / "data"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_unknown_space(capsys):
    code, _, err = run(capsys, "ops", "no_such_space")
    assert_one_error_line(code, err, "no_such_space", "proxyless_mobile")


def test_unknown_device(capsys, tmp_path):
    code, _, err = run(capsys, "profile", "--device", "tpu:9", "--space", "proxyless_mobile",
                       "--resolution", "32", "--lut", str(tmp_path / "x.db"))
    assert_one_error_line(code, err, "tpu:9", "cpu:onnxruntime")


def test_malformed_arch(capsys, tmp_path):
    lut = tmp_path / "x.db"
    sqlite3.connect(lut).close()
    code, _, err = run(capsys, "lut", "estimate", "--lut", str(lut), "--space", "proxyless_mobile",
                       "--arch", '["3x3_MBConv3", "bogus_op"]')
    assert_one_error_line(code, err)


def test_arch_with_unknown_op(capsys, tmp_path):
    ops = ["3x3_MBConv3"] * 20 + ["9x9_MBConv9"]
    code, _, err = run(capsys, "measure", "--space", "proxyless_mobile", "--arch", json.dumps(ops))
    assert_one_error_line(code, err, "9x9_MBConv9")


def test_corrupt_lut_file(capsys, tmp_path):
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    code, _, err = run(capsys, "lut", "show", str(bad))
    assert_one_error_line(code, err, str(bad))


def test_newer_schema_lut(capsys, tmp_path):
    from latkit.lut.store import LUT

    path = tmp_path / "new.db"
    with LUT.open(path, create=True):
        pass
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 999")
    con.execute("UPDATE meta SET value = '999' WHERE name = 'schema_version'")
    con.commit()
    con.close()
    code, _, err = run(capsys, "lut", "show", str(path))
    assert_one_error_line(code, err, "newer")


def test_missing_lut_file(capsys, tmp_path):
    code, _, err = run(capsys, "lut", "show", str(tmp_path / "absent.db"))
    assert_one_error_line(code, err, "absent.db")


# a LUT table that cannot be imported: its name, its text, what the error line names
BAD_YAML = {
    "unreadable": ("table.yaml", "expanded_conv-input:1x1x1: [unclosed\n  - : :\n", "table.yaml"),
    "unknown-op": ("ofa_table.yaml", "Frobnicate-input:7x7x3-output:7x7x3:\n  count: 1\n  mean: 1.0\n  std: 0.0\n",
                   "Frobnicate"),
    "unknown-family": ("table.yaml", "Conv-input:8x8x3-output:4x4x16:\n  count: 1\n  mean: 1.0\n  std: 0.0\n",
                       "family"),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_bad_yaml_is_one_error_line(capsys, tmp_path, case):
    name, text, expected = BAD_YAML[case]
    bad = tmp_path / name
    bad.write_text(text)
    code, _, err = run(capsys, "lut", "import", str(tmp_path / "x.db"), str(bad))
    assert_one_error_line(code, err, expected)


def test_yaml_of_unknown_family_imports_with_family(capsys, tmp_path):
    name, text, _ = BAD_YAML["unknown-family"]
    bad = tmp_path / name
    bad.write_text(text)
    code, _, err = run(capsys, "lut", "import", str(tmp_path / "x.db"), str(bad), "--family", "ofa")
    assert code == 0, err


def test_estimate_missing_ops_lists_keys(capsys, tmp_path):
    lut = tmp_path / "ofa.db"
    code, _, _ = run(capsys, "lut", "import", str(lut), str(SHARED / "luts" / "ofa_note10_224_lookup_table.yaml"))
    assert code == 0
    # a ProxylessNAS network is not in an OFA table: every missing key is named
    code, _, err = run(capsys, "lut", "estimate", "--lut", str(lut),
                       "--arch", str(SHARED / "luts" / "proxyless_mobile.config"))
    assert_one_error_line(code, err, "missing", "expanded_conv-input:112x112x32")


def test_console_script_has_no_traceback(tmp_path):
    # run outside the checkout: its latkit/ folder would shadow the installed package
    proc = subprocess.run([sys.executable, "-m", "latkit", "ops", "nope"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")


@pytest.mark.parametrize("space", ["proxyless_mobile", "ofa_mbv3", "fbnet"])
def test_ops_json_lists_distinct_keys(capsys, space):
    code, out, _ = run(capsys, "ops", space, "--json")
    assert code == 0
    rows = json.loads(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) > 10


@pytest.mark.parametrize("argv, needles", [
    (["ops", "proxyless_mobile", "--resolution", "nan"], ["--resolution", "latkit ops --help"]),
    (["lut", "estimate", "--resolution", "1e308", "--lut", "x.db", "--arch", "a"], ["--resolution"]),
    (["profile", "--threads", "0", "--device", "cpu:onnxruntime", "--space", "fbnet", "--lut", "x.db"],
     ["--threads"]),
    (["no-such-command"], ["no-such-command", "latkit --help"]),
    (["ops"], ["space"]),
])
def test_usage_errors_are_one_line(capsys, argv, needles):
    # click's boxed usage errors would be several lines; latkit prints one
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert_one_error_line(code, err, *needles)


def test_no_arguments_prints_help_and_succeeds(capsys):
    code, out, err = run(capsys)
    assert code == 0 and "Usage" in out and "profile" in out and not err.strip()


def test_profile_that_ends_with_operators_neither_measured_nor_failed_is_an_error(capsys, tmp_path, monkeypatch):
    """A run without --limit must end with every operator measured or failed; one that does not
    (a device that went away unnoticed) exits non-zero naming the device, the rows kept and the remedy."""
    from latkit.lut import claims
    from latkit.profiler.runner import ProfileReport

    def stops_short(device, specs, lut, config=None, limit=None, **kw):
        return ProfileReport(device=device.info().uri, left=5), []

    monkeypatch.setattr(claims, "profile_shared", stops_short)
    lut = tmp_path / "short.db"
    code, _, err = run(capsys, "profile", "--space", "proxyless_mobile_w05", "--resolution", "32", "--quick",
                       "--lut", str(lut))
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: cpu:onnxruntime left 5 operator(s) neither measured nor failed; 0 operator(s) measured since "
        f"this run started are kept in {lut}, 71 are not measured yet: reconnect the device and rerun the same "
        "command to resume")
