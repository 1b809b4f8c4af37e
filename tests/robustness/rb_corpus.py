"""The bad-input corpus, shared by tests/robustness/ and benchmarks/robustness.py.

Two kinds of cases:

* :class:`CliCase`: argv for ``python -m latkit`` built in a fresh folder (which is
  also the command's working directory), run and classified by
  :func:`rb_cli.classify`. ``expect="ok"`` cases are valid inputs in odd clothing
  (a path with brackets or spaces) that must succeed with the right output. The
  benchmark runs every case in a subprocess; the test suite runs a case in-process
  (:class:`rb_inproc.InProcess`) unless its ``needs_process`` names why it cannot.
* :class:`ReaderCase`: a library reader called in-process on a bad file; a
  ``LatkitError`` with a one-line message is clean, any other exception is a
  traceback, a normal return is silent acceptance.

Named cases are explicit lists; generated families are hypothesis strategies
(:data:`FAMILIES`), drawn by the tests with ``@given`` and by the benchmark through
:func:`draw`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rb_cli import (CLEAN, DEBRIS, FAILED, HANG, MESSY, OK, SILENT, TRACEBACK, Result, Verdict,
                    classify, run_cli)
from rb_inproc import Timeout, alarm
from rb_workspace import W05_ARCH, Workspace

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
Build = Callable[[Path, Workspace], list[str]]
Check = Callable[[Path, Workspace, Result], "tuple[str, str] | None"]
# (argv, folder, timeout, env) -> Result, e.g. rb_inproc.InProcess; run_case falls back to run_cli
Runner = Callable[[list[str], Path, float, dict[str, str]], Result]


# Why a case runs in a subprocess even in the test suite (CliCase.needs_process); every
# other case runs in-process (rb_inproc), where its state is that of a fresh process.
SERVES = ("starts the loopback phone's server (sockets, threads, a SIGTERM handler) once its "
          "input passes the checks")
WAITS = "its subject is the bounded wait for a device that never answers; a hang there must be killable"


@dataclass
class CliCase:
    """One command line with a bad (or oddly dressed valid) input."""

    group: str  # the command, e.g. "lut import"
    name: str  # what is bad about the input
    build: Build
    expect: str = "error"  # "error" | "ok"
    timeout: float = 30.0
    allow_progress: bool = False
    check: Check | None = None  # extra check after the run: (kind, detail) when it fails
    slow: bool = False
    needs_process: str = ""  # why the case must run in a subprocess even in the test suite
    env: Callable[[Path], dict[str, str]] | None = None  # variables set for this case (given its folder)
    stdout: str = ""  # a file standard output goes to instead of a pipe (subprocess only)
    fsize: int = 0  # a file-size limit in bytes (subprocess only)

    @property
    def id(self) -> str:
        return f"{self.group}: {self.name}"


@dataclass
class ReaderCase:
    """A library reader called in-process on one bad input."""

    group: str  # the reader, e.g. "lut.io.import_json"
    name: str
    call: Callable[[Path, Workspace], Any]  # builds the input in the folder and reads it
    expect: str = "error"

    @property
    def id(self) -> str:
        return f"{self.group}: {self.name}"


# ------------------------------------------------------------------ running


def run_case(case: CliCase, folder: Path, ws: Workspace, runner: Runner | None = None) -> Verdict:
    """Build ``case`` in ``folder``, run it, classify it and apply its check.

    ``runner`` (the test suite's in-process one) runs the cases without ``needs_process``;
    without it, or for those, the case runs in a subprocess (what the benchmark does).
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        argv = case.build(folder, ws)
    except Exception as exc:  # a broken corpus entry, not a product failure
        return Verdict("corpus error", f"{type(exc).__name__}: {exc}")
    env = ws.env(folder)
    if case.env is not None:
        env.update(case.env(folder))
    if runner is None or case.needs_process:
        res = run_cli(argv, folder, timeout=case.timeout, env=env, stdout=case.stdout, fsize=case.fsize)
    else:
        res = runner(argv, folder, case.timeout, env)
    verdict = classify(res, case.expect, case.allow_progress)
    if case.check is not None and verdict.kind in (CLEAN, OK, MESSY, SILENT):
        try:
            problem = case.check(folder, ws, res)
        except Exception as exc:
            problem = (FAILED if case.expect == "ok" else SILENT, f"check raised {exc!r}")
        if problem:
            verdict = Verdict(problem[0], problem[1], res)
    return verdict


def run_reader(case: ReaderCase, folder: Path, ws: Workspace, timeout: int = 20) -> Verdict:
    """Call a reader case in-process (SIGALRM catches a hang in the main thread)."""
    from latkit.core.errors import LatkitError

    folder.mkdir(parents=True, exist_ok=True)
    try:
        with alarm(timeout):
            value = case.call(folder, ws)
    except Timeout:
        return Verdict(HANG, f"no return after {timeout} s")
    except LatkitError as exc:
        msg = str(exc)
        if case.expect == "ok":
            return Verdict(FAILED, f"{type(exc).__name__}: {msg[:300]}")
        if not msg.strip() or "\n" in msg.strip():
            return Verdict(MESSY, f"{type(exc).__name__} message of {len(msg.splitlines())} lines: "
                                  f"{msg[:200]!r}")
        return Verdict(CLEAN, f"{type(exc).__name__}: {msg[:300]}")
    except (Exception, RecursionError) as exc:  # anything else would keep its traceback
        return Verdict(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
    if case.expect == "ok":
        return Verdict(OK)
    return Verdict(SILENT, f"returned {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text[:160] + ("..." if len(text) > 160 else "")


# ------------------------------------------------------------------ helpers for builders


def put(folder: Path, name: str, content: bytes | str | Any) -> str:
    """Write ``content`` (bytes, text, or JSON-able object) to folder/name; return the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogateescape")
    else:
        path.write_text(_json_doc(content))
    return str(path)


def lut_copy(folder: Path, ws: Workspace, name: str = "copy.db") -> str:
    path = ws.copy_lut(folder / name)
    os.chmod(path, 0o644)
    return str(path)


RANDOM_BYTES = bytes((i * 7919 + 13) % 256 for i in range(4096))
NOT_UTF8 = b"\xff\xfe\x00garbage \xc3\x28 \xa0\xa1 {\"schema\": \x80}"
DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_OBJ = '{"a":' * 50_000 + "1" + "}" * 50_000
HUGE_LINE = "INFO: " + "9" * 80_000 + "\n"


def sqlite_other(folder: Path, name: str = "other.db") -> str:
    path = folder / name
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE foo (x)")
    con.execute("INSERT INTO foo VALUES (1)")
    con.commit()
    con.close()
    return str(path)


def truncated_lut(folder: Path, ws: Workspace, name: str = "trunc.db") -> str:
    data = ws.lut.read_bytes()
    return put(folder, name, data[: len(data) // 3])


def lut_with_row(folder: Path, ws: Workspace, latency: Any, name: str = "badrow.db") -> str:
    """A copy of the valid LUT whose first measurement holds ``latency``."""
    path = lut_copy(folder, ws, name)
    con = sqlite3.connect(path)
    con.execute("UPDATE measurements SET latency_ms = ? WHERE id = (SELECT min(id) FROM measurements)",
                (latency,))
    con.commit()
    con.close()
    return path


def payload_with(ws: Workspace, section: str, field_: str, value: Any, index: int = 0) -> dict:
    doc = ws.payload()
    doc[section][index][field_] = value
    return doc


def bm_text(avg: str = "1196.42", count: str = "834", extra: str = "") -> str:
    """benchmark_model output with the run phase's numbers replaced."""
    return (
        "INFO: STARTING!\nINFO: Graph: [/data/local/tmp/x.tflite]\n"
        "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
        "INFO: count=412 first=2890 curr=1204 min=1150 max=2890 avg=1213.77 std=96\n\n"
        "INFO: Running benchmark for at least 30 iterations and at least 1 seconds\n"
        f"INFO: count={count} first=1198 curr=1187 min=1141 max=1655 avg={avg} std=38\n\n"
        f"INFO: Inference timings in us: Init: 21470, First inference: 2890, "
        f"Warmup (avg): 1213.77, Inference (avg): {avg}\n{extra}"
    )


def rows_check(expect_rows: int) -> Check:
    """After an import/merge: the LUT holds ``expect_rows`` rows, all finite and > 0."""

    def check(folder: Path, ws: Workspace, res: Result):
        return lut_rows_problem(folder / "dst.db", expect_rows)

    return check


def lut_rows_problem(path: Path, expect_rows: int | None = None):
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = con.execute("SELECT latency_ms FROM measurements").fetchall()
        con.close()
    except sqlite3.Error:
        return None
    bad = [r[0] for r in rows if not isinstance(r[0], (int, float)) or not math.isfinite(r[0])
           or r[0] <= 0 or r[0] > 1e6]
    if bad:
        return SILENT, f"bad latency stored in the LUT: {bad[:3]}"
    if expect_rows is not None and len(rows) != expect_rows:
        return SILENT, f"LUT holds {len(rows)} rows, want {expect_rows} (partial import)"
    return None


def no_debris(*names: str) -> Check:
    """After a failed write: no half-written target or temp file left in the folder."""

    def check(folder: Path, ws: Workspace, res: Result):
        left = [p.name for p in folder.rglob("*") if p.is_file() and any(
            p.name.startswith(n) or (".tmp" in p.name and n.split(".")[0] in p.name) for n in names)]
        if left:
            return DEBRIS, f"left behind after the error: {left[:4]}"
        return None

    return check


def literal_in_output(text_of: Callable[[Path], str]) -> Check:
    """An ok case must print the odd path literally (no markup eaten)."""

    def check(folder: Path, ws: Workspace, res: Result):
        want = text_of(folder)
        if want not in res.stdout + res.stderr:
            return FAILED, f"output does not show {want!r} literally: {(res.stdout + res.stderr)[:200]!r}"
        return None

    return check


# ------------------------------------------------------------------ named CLI cases


def C(group: str, name: str, build: Build, **kw) -> CliCase:
    return CliCase(group, name, build, **kw)


def _show(path_fn):
    return lambda d, ws: ["lut", "show", path_fn(d, ws)]


ODD_NAMES = [
    "with space.db", "a[/x]b.db", "[bold]x[/bold].db", "quote'd.db", 'double"q.db', "ünïcødé-表.db",
    "$(touch pwned).db", "semi;colon.db", "back\\slash.db", "-dash-first.db",
    "emoji-\U0001F680.db", "[red]", "100%.db",
]


def _odd_lut(name: str) -> Build:
    def build(d: Path, ws: Workspace) -> list[str]:
        path = d / name
        ws.copy_lut(path)
        return ["lut", "show", str(path)]

    return build


def _odd_export(name: str) -> Build:
    def build(d: Path, ws: Workspace) -> list[str]:
        return ["lut", "export", str(ws.lut), "-o", str(d / (name + ".json"))]

    return build


def _export_written(name: str) -> Check:
    def check(folder: Path, ws: Workspace, res: Result):
        path = folder / (name + ".json")
        if not path.is_file():
            return FAILED, f"{path.name} was not written (files: {[p.name for p in folder.rglob('*')][:5]})"
        doc = json.loads(path.read_text())
        if len(doc.get("measurements", [])) != 3:
            return FAILED, "export lacks the 3 measurements"
        return None

    return check


def _missing_named(name: str) -> Build:
    return lambda d, ws: ["lut", "show", str(d / name)]


def lut_cases() -> list[CliCase]:
    cases = [
        C("lut show", "missing file", lambda d, ws: ["lut", "show", str(d / "nope.db")]),
        C("lut show", "empty file", lambda d, ws: ["lut", "show", put(d, "e.db", b"")]),
        C("lut show", "text file", lambda d, ws: ["lut", "show", put(d, "t.db", "hello\n" * 50)]),
        C("lut show", "random binary", lambda d, ws: ["lut", "show", put(d, "r.db", RANDOM_BYTES)]),
        C("lut show", "not UTF-8 bytes", lambda d, ws: ["lut", "show", put(d, "n.db", NOT_UTF8)]),
        C("lut show", "a directory", lambda d, ws: ["lut", "show", str(d)]),
        C("lut show", "/dev/null", lambda d, ws: ["lut", "show", "/dev/null"]),
        C("lut show", "SQLite of another schema", lambda d, ws: ["lut", "show", sqlite_other(d)]),
        C("lut show", "truncated LUT", lambda d, ws: ["lut", "show", truncated_lut(d, ws)]),
        C("lut show", "LUT with an infinite latency row", lambda d, ws: ["lut", "show", "--rows",
                                                               lut_with_row(d, ws, float("inf"))]),
        C("lut show", "LUT with a negative latency row", lambda d, ws: ["lut", "show", "--json",
                                                                    lut_with_row(d, ws, -5.0)]),
        C("lut show", "LUT with a text latency row", lambda d, ws: ["lut", "show", "--rows",
                                                                lut_with_row(d, ws, "fast")]),
        C("lut show", "not-UTF-8 path missing", lambda d, ws: ["lut", "show",
                                                            str(d) + "/" + os.fsdecode(b"\xff\xfe.db")]),
    ]
    for name in ODD_NAMES:
        cases.append(C("lut show", f"valid LUT at odd path {name!r}", _odd_lut(name), expect="ok",
                       check=literal_in_output(lambda d, n=name: Path(n).name)))
        cases.append(C("lut show", f"missing odd path {name!r}", _missing_named(name),
                       check=literal_in_output(lambda d, n=name: n)))
    for name in ("with space", "a[/x]b", "[bold]x[/bold]", "ünï 表", "quote'd"):
        cases.append(C("lut export", f"to odd path {name!r}", _odd_export(name), expect="ok",
                       check=_export_written(name)))
    cases += [
        C("lut export", "to a directory", lambda d, ws: ["lut", "export", str(ws.lut), "-o", str(d)]),
        C("lut export", "to /dev/full", lambda d, ws: ["lut", "export", str(ws.lut), "-o", "/dev/full"]),
        C("lut export", "from a corrupt LUT",
          lambda d, ws: ["lut", "export", put(d, "c.db", RANDOM_BYTES), "-o", str(d / "out.json")],
          check=no_debris("out.json")),
        C("lut export", "from a missing LUT",
          lambda d, ws: ["lut", "export", str(d / "none.db"), "-o", str(d / "out.json")],
          check=no_debris("out.json")),
        C("lut export", "over a LUT file (its own input)",
          lambda d, ws: ["lut", "export", lut_copy(d, ws, "self.db"), "-o", str(d / "self.db")]),
    ]
    if not IS_ROOT:
        def ro(d: Path, ws: Workspace) -> list[str]:
            (d / "ro").mkdir()
            os.chmod(d / "ro", 0o555)
            return ["lut", "export", str(ws.lut), "-o", str(d / "ro" / "x.json")]

        cases.append(C("lut export", "into a read-only folder", ro, check=no_debris("x.json")))
    cases += _import_cases() + _merge_cases() + _estimate_cases() + _calibrate_cases()
    return cases


class Raw(str):
    """A JSON value written verbatim (e.g. a 5000-digit number, beyond Python's int-to-text limit)."""


BAD_LATENCIES: list[tuple[str, Any]] = [
    ("NaN", float("nan")), ("Infinity", float("inf")), ("-Infinity", float("-inf")), ("-1", -1.0),
    ("0", 0.0), ("1e308", 1e308), ("text", "fast"), ("list", [1.0]), ("object", {"ms": 1}),
    ("true", True), ("5000-digit int", Raw("9" * 5000)), ("1e999 literal", Raw("1e999")),
]


def _import(doc_fn: Callable[[Workspace], Any], raw: bool = False) -> Build:
    def build(d: Path, ws: Workspace) -> list[str]:
        doc = doc_fn(ws)
        src = put(d, "src.json", doc if raw else json.dumps(doc, allow_nan=True) if not isinstance(doc, (str, bytes)) else doc)
        return ["lut", "import", str(d / "dst.db"), src]

    return build


def _json_doc(doc: Any) -> str:
    raws: list[str] = []

    def swap(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(str(v))
            return f"__RAW{len(raws) - 1}__"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(doc), allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(f'"__RAW{i}__"', raw)
    return text


def _import_cases() -> list[CliCase]:
    g = "lut import"
    chk = rows_check(0)
    cases = [
        C(g, "missing source", lambda d, ws: ["lut", "import", str(d / "dst.db"), str(d / "none.json")]),
        C(g, "empty file", _import(lambda ws: b""), check=chk),
        C(g, "not JSON", _import(lambda ws: "this is { not json"), check=chk),
        C(g, "random binary", _import(lambda ws: RANDOM_BYTES), check=chk),
        C(g, "not UTF-8", _import(lambda ws: NOT_UTF8), check=chk),
        C(g, "100000-deep JSON array", _import(lambda ws: DEEP_JSON), check=chk),
        C(g, "50000-deep JSON object", _import(lambda ws: DEEP_OBJ), check=chk),
        C(g, "20 MB of whitespace", _import(lambda ws: " " * 20_000_000), check=chk, timeout=60),
        C(g, "JSON array at top level", _import(lambda ws: "[1, 2, 3]"), check=chk),
        C(g, "JSON null", _import(lambda ws: "null"), check=chk),
        C(g, "wrong schema", _import(lambda ws: _json_doc({**ws.payload(), "schema": "other"})), check=chk),
        C(g, "schema_version as text", _import(lambda ws: _json_doc({**ws.payload(), "schema_version": "1"})),
          check=chk),
        C(g, "newer schema_version", _import(lambda ws: _json_doc({**ws.payload(), "schema_version": 99})),
          check=chk),
        C(g, "measurements not a list",
          _import(lambda ws: _json_doc({**ws.payload(), "measurements": {"a": 1}})), check=chk),
        C(g, "measurement is a number", _import(lambda ws: _json_doc({**ws.payload(), "measurements": [5]})),
          check=chk),
        C(g, "measurement lacks latency_ms",
          _import(lambda ws: _json_doc(_drop(ws.payload(), "latency_ms"))), check=chk),
        C(g, "unknown op_key in a measurement",
          _import(lambda ws: _json_doc(payload_with(ws, "measurements", "op_key", "nope-op"))), check=chk),
        C(g, "op_key is a number",
          _import(lambda ws: _json_doc(payload_with(ws, "measurements", "op_key", 5))), check=chk),
        C(g, "device_uri empty",
          _import(lambda ws: _json_doc(payload_with(ws, "measurements", "device_uri", ""))), check=chk),
        C(g, "n_samples -3",
          _import(lambda ws: _json_doc(payload_with(ws, "measurements", "n_samples", -3))), check=chk),
        C(g, "created_at is a number",
          _import(lambda ws: _json_doc(payload_with(ws, "measurements", "created_at", 12))), check=chk),
        C(g, "op spec garbage",
          _import(lambda ws: _json_doc(payload_with(ws, "ops", "spec", {"type": "warp_drive"}))), check=chk),
        C(g, "op spec with kernel -3",
          _import(lambda ws: _json_doc(_op_field(ws, "kernel", -3))), check=chk),
        C(g, "device is a string", _import(lambda ws: _json_doc({**ws.payload(), "devices": ["cpu"]})),
          check=chk),
        C(g, "calibration incomplete",
          _import(lambda ws: _json_doc({**ws.payload(), "calibrations": [{"device_uri": "cpu:onnxruntime"}]})),
          check=chk),
        C(g, "calibration params NaN",
          _import(lambda ws: _json_doc({**ws.payload(), "calibrations": [
              {"device_uri": "cpu:onnxruntime", "kind": "linear", "created_at": "2026-01-01T00:00:00+00:00",
               "params": {"a": float("nan"), "b": 0.0}}]})), check=chk),
        C(g, "target LUT is a directory", lambda d, ws: ["lut", "import", str(d), str(ws.export_json)]),
        C(g, "target LUT is corrupt",
          lambda d, ws: ["lut", "import", put(d, "c.db", RANDOM_BYTES), str(ws.export_json)]),
        C(g, "target LUT is /dev/full", lambda d, ws: ["lut", "import", "/dev/full", str(ws.export_json)]),
        C(g, "unknown --family", lambda d, ws: ["lut", "import", str(d / "dst.db"), str(ws.yaml),
                                                "--family", "nosuch"], check=chk),
    ]
    for label, value in BAD_LATENCIES:
        cases.append(C(g, f"latency_ms {label}",
                       _import(lambda ws, v=value: _json_doc(payload_with(ws, "measurements", "latency_ms", v))),
                       check=chk))
    yaml_bad = {
        "empty yaml": "",
        "yaml list": "- 1\n- 2\n",
        "yaml python tag": "!!python/object/apply:os.system ['echo pwned']\n",
        "yaml mean .nan": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: .nan\n  var: 0.1\n",
        "yaml mean -1": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: -1\n  var: 0.1\n",
        "yaml mean 0": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: 0\n  var: 0.1\n",
        "yaml mean .inf": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: .inf\n  var: 0.1\n",
        "yaml mean text": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: fast\n  var: 0.1\n",
        "yaml count -5": "Conv-input:224x224x3-output:112x112x32:\n  count: -5\n  mean: 1.0\n  var: 0.1\n",
        "yaml var -1": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: 1.0\n  var: -1\n",
        "yaml entry is a number": "Conv-input:224x224x3-output:112x112x32: 4\n",
        "yaml unknown op key": "frobnicate-input:1x1x1:\n  count: 5\n  mean: 1.0\n  var: 0.1\n",
        "yaml broken indentation": "a:\n  b: 1\n c: 2\n",
        "yaml alias bomb": "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                           "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                           "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
        "yaml binary": RANDOM_BYTES,
        "yaml not UTF-8": NOT_UTF8,
        "yaml 10000-deep": "a: " + "[" * 10000 + "]" * 10000 + "\n",
    }
    for label, text in yaml_bad.items():
        cases.append(C(g, label, lambda d, ws, t=text: ["lut", "import", str(d / "dst.db"), put(d, "t.yaml", t),
                                                        "--device-uri", "adb:note10"], check=chk))
    return cases


def _drop(doc: dict, key: str) -> dict:
    doc["measurements"][0].pop(key, None)
    return doc


def _op_field(ws: Workspace, key: str, value: Any) -> dict:
    doc = ws.payload()
    spec = doc["ops"][-1]["spec"]
    spec[key] = value
    return doc


def _merge_cases() -> list[CliCase]:
    g = "lut merge"
    return [
        C(g, "missing source", lambda d, ws: ["lut", "merge", str(d / "dst.db"), str(d / "none.db")],
          check=rows_check(0)),
        C(g, "corrupt source", lambda d, ws: ["lut", "merge", str(d / "dst.db"), put(d, "c.db", RANDOM_BYTES)],
          check=rows_check(0)),
        C(g, "empty source", lambda d, ws: ["lut", "merge", str(d / "dst.db"), put(d, "e.db", b"")],
          check=rows_check(0)),
        C(g, "source of another schema", lambda d, ws: ["lut", "merge", str(d / "dst.db"), sqlite_other(d)],
          check=rows_check(0)),
        C(g, "source is a directory", lambda d, ws: ["lut", "merge", str(d / "dst.db"), str(d)],
          check=rows_check(0)),
        C(g, "into itself", lambda d, ws: ["lut", "merge", lut_copy(d, ws, "dst.db"), str(d / "dst.db")],
          check=rows_check(3)),
        C(g, "into itself by another path",
          lambda d, ws: ["lut", "merge", lut_copy(d, ws, "dst.db"), str(d / "." / "dst.db")],
          check=rows_check(3)),
        C(g, "JSON source with NaN latency",
          lambda d, ws: ["lut", "merge", str(d / "dst.db"),
                         put(d, "s.json", _json_doc(payload_with(ws, "measurements", "latency_ms", float("nan"))))],
          check=rows_check(0)),
        C(g, "JSON source garbage", lambda d, ws: ["lut", "merge", str(d / "dst.db"), put(d, "s.json", RANDOM_BYTES)],
          check=rows_check(0)),
        C(g, "source LUT with a negative row",
          lambda d, ws: ["lut", "merge", str(d / "dst.db"), lut_with_row(d, ws, -1.0)], check=rows_check(0)),
        C(g, "source LUT with an infinite row",
          lambda d, ws: ["lut", "merge", str(d / "dst.db"), lut_with_row(d, ws, float("inf"))],
          check=rows_check(0)),
        C(g, "destination is corrupt",
          lambda d, ws: ["lut", "merge", put(d, "dst.db", RANDOM_BYTES), str(ws.lut)]),
        C(g, "destination is a directory", lambda d, ws: ["lut", "merge", str(d), str(ws.lut)]),
        C(g, "destination /dev/full", lambda d, ws: ["lut", "merge", "/dev/full", str(ws.lut)]),
    ]


def _netconfig_with(change: Callable[[dict], None]) -> Callable[[Path, Workspace], str]:
    def make(d: Path, ws: Workspace) -> str:
        cfg = ws.netconfig_dict()
        change(cfg)
        return put(d, "net.config", _json_doc(cfg))

    return make


def _set_block(key: str, value: Any) -> Callable[[dict], None]:
    def change(cfg: dict) -> None:
        cfg["blocks"][1]["mobile_inverted_conv"][key] = value

    return change


NETCONFIG_BAD: dict[str, Callable[[dict], None]] = {
    "kernel_size text": _set_block("kernel_size", "x"),
    "kernel_size -3": _set_block("kernel_size", -3),
    "kernel_size 0": _set_block("kernel_size", 0),
    "stride 0": _set_block("stride", 0),
    "stride NaN": _set_block("stride", float("nan")),
    "out_channels 0": _set_block("out_channels", 0),
    "out_channels -32": _set_block("out_channels", -32),
    "out_channels 1e308": _set_block("out_channels", 1e308),
    "out_channels 10**12": _set_block("out_channels", 10**12),
    "expand_ratio -1": _set_block("expand_ratio", -1),
    "expand_ratio Infinity": _set_block("expand_ratio", float("inf")),
    "block is a string": lambda cfg: cfg["blocks"].__setitem__(1, "MBConv"),
    "blocks missing": lambda cfg: cfg.pop("blocks"),
    "blocks is a dict": lambda cfg: cfg.__setitem__("blocks", {"a": 1}),
    "first_conv missing": lambda cfg: cfg.pop("first_conv"),
    "unknown block layer name": lambda cfg: cfg["blocks"][1]["mobile_inverted_conv"].__setitem__(
        "name", "WarpDriveLayer"),
    "channels that do not chain": _set_block("in_channels", 7),
    "act_func unknown": lambda cfg: cfg["first_conv"].__setitem__("act_func", "sparkle"),
}


def _estimate_cases() -> list[CliCase]:
    g = "lut estimate"

    def est(arch_fn, *extra: str) -> Build:
        return lambda d, ws: ["lut", "estimate", "--lut", str(ws.lut), "--arch", arch_fn(d, ws), *extra]

    cases = [
        C(g, "arch '[[[['", est(lambda d, ws: "[[[[", "--space", "proxyless_mobile")),
        C(g, "arch empty", est(lambda d, ws: "", "--space", "proxyless_mobile")),
        C(g, "arch unknown op", est(lambda d, ws: json.dumps(["3x3_MBConv3"] * 20 + ["9x9_MBConv9"]),
                                    "--space", "proxyless_mobile")),
        C(g, "arch wrong length", est(lambda d, ws: json.dumps(["3x3_MBConv3"] * 3), "--space", "proxyless_mobile")),
        C(g, "arch list of numbers", est(lambda d, ws: json.dumps(list(range(21))), "--space", "proxyless_mobile")),
        C(g, "arch file binary", est(lambda d, ws: put(d, "a.json", RANDOM_BYTES), "--space", "proxyless_mobile")),
        C(g, "arch file not UTF-8", est(lambda d, ws: put(d, "a.config", NOT_UTF8))),
        C(g, "arch file 100000-deep JSON", est(lambda d, ws: put(d, "a.json", DEEP_JSON), "--space",
                                               "proxyless_mobile")),
        C(g, "arch is a directory", est(lambda d, ws: str(d) + "/", "--space", "proxyless_mobile")),
        C(g, "arch.json naming an unknown space",
          est(lambda d, ws: put(d, "a.json", {"space": "nosuch", "arch": W05_ARCH}))),
        C(g, "arch.json resolution -1",
          est(lambda d, ws: put(d, "a.json", {"space": "proxyless_mobile_w05", "resolution": -1, "arch": W05_ARCH}))),
        C(g, "arch.json resolution NaN",
          est(lambda d, ws: put(d, "a.json", {"space": "proxyless_mobile_w05", "resolution": float("nan"),
                                              "arch": W05_ARCH}))),
        C(g, "--resolution -1", est(lambda d, ws: str(ws.netconfig), "--resolution", "-1")),
        C(g, "--resolution 0", est(lambda d, ws: str(ws.netconfig), "--resolution", "0")),
        C(g, "--resolution 7", est(lambda d, ws: str(ws.netconfig), "--resolution", "7")),
        C(g, "--resolution 10**9", est(lambda d, ws: str(ws.netconfig), "--resolution", "1000000000")),
        C(g, "--resolution 1e308", est(lambda d, ws: str(ws.netconfig), "--resolution", "1e308")),
        C(g, "--device unknown", est(lambda d, ws: str(ws.netconfig), "--resolution", "32", "--device", "adb:ghost")),
        C(g, "LUT missing", lambda d, ws: ["lut", "estimate", "--lut", str(d / "no.db"), "--arch", str(ws.netconfig)]),
        C(g, "LUT corrupt", lambda d, ws: ["lut", "estimate", "--lut", put(d, "c.db", RANDOM_BYTES), "--arch",
                                           str(ws.netconfig)]),
        C(g, "operators missing from the LUT", est(lambda d, ws: str(ws.netconfig), "--resolution", "32")),
        C(g, "LUT with an infinite row",
          lambda d, ws: ["lut", "estimate", "--lut", lut_with_row(d, ws, float("inf")), "--space",
                         "proxyless_mobile", "--resolution", "32", "--arch", json.dumps(["3x3_MBConv3"] * 21)]),
    ]
    for label, change in NETCONFIG_BAD.items():
        cases.append(C(g, f"net.config {label}", est(_netconfig_with(change), "--resolution", "32")))
    return cases


def _calibrate_cases() -> list[CliCase]:
    g = "lut calibrate"

    def cal(*extra: str, lut: Callable[[Path, Workspace], str] | None = None) -> Build:
        return lambda d, ws: ["lut", "calibrate", "--lut", (lut or lut_copy)(d, ws), *extra]

    return [
        C(g, "--networks 0", cal("--space", "proxyless_mobile", "--networks", "0")),
        C(g, "--resolution -1", cal("--space", "proxyless_mobile", "--resolution", "-1")),
        C(g, "--resolution 1e308", cal("--space", "proxyless_mobile", "--resolution", "1e308")),
        C(g, "unknown space", cal("--space", "nosuch")),
        C(g, "--clock bogus", cal("--space", "proxyless_mobile", "--clock", "bogus")),
        C(g, "--device bogus", cal("--space", "proxyless_mobile", "--device", "tpu:9")),
        C(g, "--threads 0", cal("--space", "proxyless_mobile", "--threads", "0")),
        C(g, "LUT missing", cal("--space", "proxyless_mobile", lut=lambda d, ws: str(d / "none.db"))),
        C(g, "LUT corrupt", cal("--space", "proxyless_mobile", lut=lambda d, ws: put(d, "c.db", RANDOM_BYTES))),
        C(g, "LUT lacks the space's operators",
          cal("--space", "proxyless_mobile", "--resolution", "32", "--networks", "2", "--quick"),
          timeout=60, allow_progress=True),
    ]


def _profile(*extra: str, lut: str | None = None) -> Build:
    return lambda d, ws: ["profile", "--lut", lut or str(d / "p.db"), *extra]


SPACE32 = ("--space", "proxyless_mobile", "--resolution", "32")


def measure_profile_cases() -> list[CliCase]:
    g = "profile"
    cases = [
        C(g, "unknown device tpu:9", _profile("--device", "tpu:9", *SPACE32)),
        C(g, "device cpu:nope", _profile("--device", "cpu:nope", *SPACE32)),
        C(g, "device cuda:7 (no such GPU)", _profile("--device", "cuda:7", *SPACE32)),
        C(g, "device adb: (no serial)", _profile("--device", "adb:", *SPACE32)),
        C(g, "device adb+tcp port 99999", _profile("--device", "adb+tcp://127.0.0.1:99999", *SPACE32)),
        C(g, "device adb+tcp broken host", _profile("--device", "adb+tcp://[::1", *SPACE32)),
        # nothing answers: the bounded, logged wait for the device (WARNING lines), then one error
        C(g, "device adb+tcp closed port", _profile("--device", "adb+tcp://127.0.0.1:1", *SPACE32),
          timeout=60, allow_progress=True, needs_process=WAITS),
        C(g, "device adb serial with markup", _profile("--device", "adb:[bold]x", *SPACE32), timeout=60),
        C(g, "unknown space", _profile("--space", "nosuch")),
        C(g, "neither --space nor --arch", _profile()),
        C(g, "--resolution 1e308", _profile("--space", "proxyless_mobile", "--resolution", "1e308")),
        C(g, "--resolution -1", _profile("--space", "proxyless_mobile", "--resolution", "-1")),
        C(g, "--resolution 0", _profile("--space", "proxyless_mobile", "--resolution", "0")),
        C(g, "--resolution 33", _profile("--space", "proxyless_mobile", "--resolution", "33")),
        C(g, "--resolution 10**9", _profile("--space", "proxyless_mobile", "--resolution", "1000000000")),
        C(g, "--limit 0", _profile(*SPACE32, "--limit", "0")),
        C(g, "--limit -1", _profile(*SPACE32, "--limit", "-1")),
        C(g, "--target-ci nan", _profile(*SPACE32, "--target-ci", "nan", "--limit", "1"), timeout=45),
        C(g, "--target-ci -1", _profile(*SPACE32, "--target-ci", "-1", "--limit", "1"), timeout=45),
        C(g, "--target-ci 0", _profile(*SPACE32, "--target-ci", "0", "--limit", "1"), timeout=45),
        C(g, "--target-ci inf", _profile(*SPACE32, "--target-ci", "inf", "--limit", "1"), timeout=45),
        C(g, "--max-seconds -1", _profile(*SPACE32, "--max-seconds", "-1", "--limit", "1"),
          timeout=45),
        C(g, "--max-seconds nan", _profile(*SPACE32, "--max-seconds", "nan", "--limit", "1"),
          timeout=45),
        C(g, "--max-seconds 1e308", _profile(*SPACE32, "--max-seconds", "1e308", "--target-ci",
                                                    "0", "--limit", "1"), timeout=45),
        C(g, "--max-seconds 0", _profile(*SPACE32, "--max-seconds", "0", "--limit", "1"),
          timeout=45),
        # --quick keeps its own time cap; the bad one must still be refused, not ignored
        C(g, "--max-seconds -1 with --quick", _profile(*SPACE32, "--quick", "--max-seconds", "-1",
                                                              "--limit", "1"), timeout=45),
        C(g, "--lut is a directory", lambda d, ws: ["profile", *SPACE32, "--limit", "1", "--lut", str(d)]),
        C(g, "--lut /dev/full", lambda d, ws: ["profile", *SPACE32, "--limit", "1", "--lut", "/dev/full"]),
        C(g, "--lut corrupt", lambda d, ws: ["profile", *SPACE32, "--limit", "1", "--lut",
                                             put(d, "c.db", RANDOM_BYTES)]),
        C(g, "--lut of another schema", lambda d, ws: ["profile", *SPACE32, "--limit", "1", "--lut",
                                                       sqlite_other(d)]),
        C(g, "--clock bogus", _profile(*SPACE32, "--clock", "bogus")),
        C(g, "--clock thread on adb", _profile(*SPACE32, "--clock", "thread", "--device", "adb:x")),
        C(g, "--sample 0", _profile(*SPACE32, "--sample", "0")),
        C(g, "--threads 0", _profile(*SPACE32, "--threads", "0")),
        C(g, "--arch garbage", _profile("--arch", "{{{", "--resolution", "32")),
        C(g, "--arch net.config binary", lambda d, ws: ["profile", "--arch", put(d, "n.config", RANDOM_BYTES),
                                                        "--lut", str(d / "p.db")]),
        C(g, "--arch net.config out_channels 0",
          lambda d, ws: ["profile", "--arch", _netconfig_with(_set_block("out_channels", 0))(d, ws),
                         "--resolution", "32", "--lut", str(d / "p.db")]),
    ]
    g = "measure"

    def meas(*extra: str) -> Build:
        return lambda d, ws: ["measure", "--quick", *extra]

    cases += [
        C(g, "arch garbage", meas("--space", "proxyless_mobile", "--arch", "[[[")),
        C(g, "arch unknown op", meas("--space", "proxyless_mobile", "--arch",
                                     json.dumps(["3x3_MBConv3"] * 20 + ["9x9_MBConv9"]))),
        C(g, "arch without space", meas("--arch", json.dumps(["3x3_MBConv3"] * 21))),
        C(g, "unknown space", meas("--space", "nosuch", "--arch", "x")),
        C(g, "--target-ci nan", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--target-ci", "nan",
                                               "--quick"], timeout=45),
        C(g, "--target-ci -1", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--target-ci", "-1"],
          timeout=45),
        C(g, "--max-seconds -1", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--max-seconds", "-1"],
          timeout=45),
        C(g, "--max-seconds nan", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--max-seconds", "nan"],
          timeout=45),
        C(g, "--device bogus", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--device", "tpu:9"]),
        C(g, "--lut corrupt", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--quick", "--lut",
                                             put(d, "c.db", RANDOM_BYTES)], timeout=45),
        C(g, "--resolution -8", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--resolution", "-8"]),
        C(g, "--clock bogus", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--clock", "bogus"]),
        C(g, "--threads 0", lambda d, ws: ["measure", "--arch", str(ws.arch_json), "--threads", "0"]),
        C(g, "arch.json with a huge resolution",
          lambda d, ws: ["measure", "--arch", put(d, "a.json", {"space": "proxyless_mobile_w05",
                                                                "resolution": 10**9, "arch": W05_ARCH})],
          timeout=45),
    ]
    return cases


NAS_TABLES = ("--space", "nasbench201", "--accuracy-table",
              "{shared}/nasbench201_accuracy.csv:cifar10-val", "--latency-table",
              "{shared}/nasbench201_latency_ms.csv:pixel3", "--algorithm", "random", "--queries", "5")


def _tab(d: Path, ws: Workspace) -> list[str]:
    shared = str(ws.csv.parent)
    return [a.format(shared=shared) for a in NAS_TABLES] + ["--out", str(d / "s")]


def search_run_export_cases() -> list[CliCase]:
    g = "search"

    def srch(*extra: str) -> Build:
        return lambda d, ws: ["search", *_tab(d, ws), *extra]

    cases = [C(g, f"--target-ms {v}", srch("--target-ms", v), timeout=60)
             for v in ("nan", "-1", "0", "inf", "-inf", "1e-300")]
    cases += [
        C(g, "unknown space", lambda d, ws: ["search", "--space", "nosuch", "--target-ms", "5"]),
        C(g, "unknown algorithm", srch("--target-ms", "5", "--algorithm", "bogus")),
        C(g, "no latency source", lambda d, ws: ["search", "--space", "proxyless_mobile", "--target-ms", "5",
                                                 "--out", str(d / "s")]),
        C(g, "--lut corrupt", lambda d, ws: ["search", "--space", "proxyless_mobile", "--target-ms", "5", "--lut",
                                             put(d, "c.db", RANDOM_BYTES), "--out", str(d / "s")]),
        C(g, "--lut missing operators", lambda d, ws: ["search", "--space", "proxyless_mobile", "--target-ms", "5",
                                                        "--lut", str(ws.lut), "--resolution", "32", "--out",
                                                        str(d / "s")], timeout=60),
        C(g, "--predictor missing", lambda d, ws: ["search", "--space", "fbnet", "--target-ms", "5", "--predictor",
                                                   str(d / "none"), "--out", str(d / "s")]),
        C(g, "--predictor of another space", lambda d, ws: ["search", "--space", "proxyless_mobile", "--target-ms",
                                                            "5", "--predictor", str(ws.predictor), "--out",
                                                            str(d / "s")], timeout=60),
        C(g, "--accuracy-table missing file",
          lambda d, ws: ["search", "--space", "nasbench201", "--target-ms", "5", "--accuracy-table",
                         str(d / "none.csv") + ":x", "--latency-table",
                         str(ws.csv.parent / "nasbench201_latency_ms.csv") + ":pixel3"]),
        C(g, "--accuracy-table unknown column",
          lambda d, ws: ["search", "--space", "nasbench201", "--target-ms", "5", "--accuracy-table",
                         str(ws.csv.parent / "nasbench201_accuracy.csv") + ":nosuch", "--latency-table",
                         str(ws.csv.parent / "nasbench201_latency_ms.csv") + ":pixel3"]),
        C(g, "--latency-table garbage CSV",
          lambda d, ws: ["search", "--space", "nasbench201", "--target-ms", "5", "--accuracy-table",
                         str(ws.csv.parent / "nasbench201_accuracy.csv") + ":cifar10-val", "--latency-table",
                         put(d, "l.csv", RANDOM_BYTES) + ":pixel3"]),
        C(g, "--latency-table with NaN/negative cells",
          lambda d, ws: ["search", "--space", "nasbench201", "--target-ms", "5", "--algorithm", "random",
                         "--queries", "5", "--accuracy-table",
                         str(ws.csv.parent / "nasbench201_accuracy.csv") + ":cifar10-val", "--latency-table",
                         _bad_nas_latency(d, ws) + ":pixel3", "--out", str(d / "s")], timeout=60),
        C(g, "--data bogus", lambda d, ws: ["search", "--space", "proxyless_mobile_w05", "--target-ms", "5",
                                            "--lut", str(ws.lut), "--data", "bogus:x"]),
        C(g, "--data cifar10 missing folder", lambda d, ws: ["search", "--space", "proxyless_mobile_w05",
                                                             "--target-ms", "5", "--lut", str(ws.lut), "--data",
                                                             "cifar10:" + str(d / "none")]),
        C(g, "--out /dev/full", lambda d, ws: ["search", *_tab(d, ws)[:-2], "--target-ms", "5", "--out",
                                               "/dev/full"], timeout=60),
        C(g, "--out is a file", lambda d, ws: ["search", *_tab(d, ws)[:-2], "--target-ms", "5", "--out",
                                               put(d, "file", "x")], timeout=60),
        C(g, "--resolution -1", lambda d, ws: ["search", "--space", "proxyless_mobile", "--target-ms", "5", "--lut",
                                               str(ws.lut), "--resolution", "-1"]),
        C(g, "--resume without a checkpoint", srch("--target-ms", "5", "--resume"), timeout=60),
        C(g, "--resume with a garbage checkpoint",
          lambda d, ws: [*_garbage_checkpoint(d), "search", *_tab(d, ws), "--target-ms", "5", "--resume"],
          timeout=60),
    ]
    g = "run"

    def run(*extra: str, target: str = "0.5") -> Build:
        return lambda d, ws: ["run", "--target-ms", target, "--out", str(d / "r"), "--resolution", "32", "--quick",
                              "--search-epochs", "2", "--train-epochs", "1", "--max-steps", "1", *extra]

    cases += [C(g, f"--target-ms {v}", run(target=v), timeout=60) for v in ("nan", "-1", "0", "inf")]
    cases += [
        C(g, "--data bogus", run("--data", "bogus:x"), timeout=60),
        C(g, "--data cifar10 missing folder", lambda d, ws: run("--data", "cifar10:" + str(d / "none"))(d, ws),
          timeout=60),
        C(g, "--data cifar10 garbage batches", lambda d, ws: run("--data", "cifar10:" + _garbage_cifar(d))(d, ws),
          timeout=60),
        C(g, "--data folder missing", lambda d, ws: run("--data", "folder:" + str(d / "none"))(d, ws), timeout=60),
        C(g, "--data folder of garbage images", lambda d, ws: run("--data", "folder:" + _garbage_images(d))(d, ws),
          timeout=60),
        C(g, "--resolution -1", lambda d, ws: ["run", "--target-ms", "1", "--resolution", "-1", "--out",
                                               str(d / "r")]),
        C(g, "--device bogus", run("--device", "tpu:9")),
        C(g, "--space bogus", run("--space", "nosuch")),
        C(g, "--lut corrupt", lambda d, ws: run("--lut", put(d, "c.db", RANDOM_BYTES))(d, ws), timeout=60),
        C(g, "--out /dev/full", lambda d, ws: ["run", "--target-ms", "1", "--out", "/dev/full"], timeout=60),
        C(g, "--out is a file", lambda d, ws: ["run", "--target-ms", "1", "--out", put(d, "f", "x")], timeout=60),
        C(g, "--sample 0", run("--sample", "0")),
    ]
    g = "export"

    def exp(arch: Callable[[Path, Workspace], str], *extra: str) -> Build:
        return lambda d, ws: ["export", "--arch", arch(d, ws), "--out", str(d / "e"), *extra]

    cases += [
        C(g, "--arch missing", exp(lambda d, ws: str(d / "none.json"))),
        C(g, "--arch garbage", exp(lambda d, ws: put(d, "a.json", RANDOM_BYTES))),
        C(g, "--arch empty file", exp(lambda d, ws: put(d, "a.json", b""))),
        C(g, "--arch 100000-deep JSON", exp(lambda d, ws: put(d, "a.json", DEEP_JSON))),
        C(g, "--arch without arch", exp(lambda d, ws: put(d, "a.json", {"space": "proxyless_mobile_w05"}))),
        C(g, "--arch with unknown op", exp(lambda d, ws: put(d, "a.json", {"space": "proxyless_mobile_w05",
                                                                           "arch": ["9x9_MBConv9"] * 21}))),
        C(g, "--arch resolution -1", exp(lambda d, ws: put(d, "a.json", {"space": "proxyless_mobile_w05",
                                                                         "resolution": -1, "arch": W05_ARCH}))),
        C(g, "--arch resolution 10**9", exp(lambda d, ws: put(d, "a.json", {"space": "proxyless_mobile_w05",
                                                                            "resolution": 10**9, "arch": W05_ARCH})),
          timeout=45),
        C(g, "--format bogus", exp(lambda d, ws: str(ws.arch_json), "--format", "bogus")),
        C(g, "--format empty", exp(lambda d, ws: str(ws.arch_json), "--format", "")),
        C(g, "--variants bogus", exp(lambda d, ws: str(ws.arch_json), "--format", "tflite", "--variants", "int3")),
        C(g, "--weights missing", exp(lambda d, ws: str(ws.arch_json), "--format", "onnx", "--weights",
                                      "/nonexistent/w.safetensors")),
        C(g, "--weights garbage", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format", "onnx",
                                                 "--weights", put(d, "w.safetensors", RANDOM_BYTES), "--out",
                                                 str(d / "e")], timeout=45),
        C(g, "--weights huge header length", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format",
                                                            "onnx", "--weights",
                                                            put(d, "w.safetensors", struct.pack("<Q", 2**62) + b"{}"),
                                                            "--out", str(d / "e")], timeout=45),
        C(g, "--out /dev/full", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format", "onnx", "--out",
                                               "/dev/full"], timeout=45),
        C(g, "--out is a file", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format", "onnx", "--out",
                                               put(d, "f", "x")], timeout=45),
        C(g, "--resolution -1", exp(lambda d, ws: str(ws.arch_json), "--resolution", "-1")),
        C(g, "--space bogus", exp(lambda d, ws: json.dumps(W05_ARCH), "--space", "nosuch")),
        C(g, "--device bogus", exp(lambda d, ws: str(ws.arch_json), "--format", "onnx", "--device", "tpu:9"),
          timeout=45),
        C(g, "to odd path 'a[/x]b'", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format", "onnx",
                                                    "--random-weights", "--out", str(d / "a[" / "x]b")], expect="ok",
          timeout=60,
          check=lambda d, ws, r: None if list((d / "a[" / "x]b").glob("*.onnx"))
          else (FAILED, "no .onnx written under a[/x]b")),
    ]
    return cases


def _bad_nas_latency(d: Path, ws: Workspace) -> str:
    src = (ws.csv.parent / "nasbench201_latency_ms.csv").read_text().splitlines()
    header, rows = src[0], src[1:]
    col = header.split(",").index("pixel3")
    out = [header]
    for i, line in enumerate(rows):
        cells = line.split(",")
        cells[col] = ("nan", "-3", "inf")[i % 3] if i % 2 == 0 else cells[col]
        out.append(",".join(cells))
    return put(d, "lat.csv", "\n".join(out) + "\n")


def _fewshot_known_saved(d: Path, ws: Workspace, res: Result):
    """The few-shot predictor records (and the CLI names) the known columns it defaulted to."""
    known = json.loads((d / "p" / "predictor.json").read_text())["provenance"].get("known") or []
    if "pixel3" in known or len(known) < 2:
        return (FAILED, f"known columns {known!r}: the target or too few")
    if "features:" not in res.stderr or known[0] not in res.stderr:
        return (FAILED, "the CLI did not name the known columns it used")
    return None


def _garbage_checkpoint(d: Path) -> list[str]:
    (d / "s").mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.json", "search_state.json", "state.json", "trajectory.json"):
        put(d, f"s/{name}", RANDOM_BYTES)
    return []


def _garbage_cifar(d: Path) -> str:
    folder = d / "cifar"
    folder.mkdir()
    for i in range(1, 6):
        put(d, f"cifar/data_batch_{i}", RANDOM_BYTES)
    put(d, "cifar/test_batch", RANDOM_BYTES)
    return str(folder)


def _garbage_images(d: Path) -> str:
    for cls in ("a", "b"):
        for i in range(3):
            put(d, f"img/{cls}/{i}.png", RANDOM_BYTES)
    return str(d / "img")


def predictor_ops_misc_cases() -> list[CliCase]:
    cases: list[CliCase] = []
    csv_bad = {
        "missing csv": None,
        "empty csv": "",
        "binary csv": RANDOM_BYTES,
        "header only": "arch_index,arch,pixel3,gold_6240\n",
        "not UTF-8": NOT_UTF8,
        "NaN and negative latencies": "arch_index,arch,pixel3,gold_6240\n" + "".join(
            f"{i},{a},{v},{1.0 + i}\n" for i, (a, v) in enumerate(
                [("k3_e1 " * 22, "nan"), ("k5_e6 " * 22, "-4"), ("k3_e3 " * 22, "inf")] * 6)),
        "arch column garbage": "arch_index,arch,pixel3,gold_6240\n" + "".join(
            f"{i},bogus{i},{1.0 + i},{2.0 + i}\n" for i in range(20)),
        "80 kB line": "arch_index,arch,pixel3\n0," + "x" * 80_000 + ",1.0\n",
    }

    def csv_arg(d: Path, ws: Workspace, content) -> str:
        return str(d / "none.csv") if content is None else put(d, "l.csv", content)

    for label, content in csv_bad.items():
        cases.append(C("predictor eval", label, lambda d, ws, c=content: [
            "predictor", "eval", "--csv", csv_arg(d, ws, c), "--space", "fbnet", "--target", "pixel3", "--k", "5",
            "--known", "gold_6240", "--seeds", "1"], timeout=60))
        cases.append(C("predictor fit", label, lambda d, ws, c=content: [
            "predictor", "fit", "--csv", csv_arg(d, ws, c), "--space", "fbnet", "--target", "pixel3",
            "--predictor", "ridge", "--out", str(d / "p")], timeout=60))
        cases.append(C("predictor design", label, lambda d, ws, c=content: [
            "predictor", "design", "--csv", csv_arg(d, ws, c), "--k", "3", "--known", "pixel3,gold_6240"],
            timeout=60))

    def ev(*extra: str) -> Build:
        return lambda d, ws: ["predictor", "eval", "--csv", str(ws.csv), "--space", "fbnet", "--seeds", "1", *extra]

    cases += [
        C("predictor eval", "unknown target column", ev("--target", "nosuch")),
        C("predictor eval", "unknown space", ev("--target", "pixel3", "--space", "nosuch")),
        C("predictor eval", "--k 100000", ev("--target", "pixel3", "--k", "100000"), timeout=60),
        C("predictor eval", "--k 1", ev("--target", "pixel3", "--k", "1")),
        C("predictor eval", "--known unknown column", ev("--target", "pixel3", "--known", "nosuch")),
        C("predictor eval", "--known is the target", ev("--target", "pixel3", "--known", "pixel3"), timeout=60),
        C("predictor eval", "--seeds 0", ev("--target", "pixel3", "--seeds", "0")),
        C("predictor eval", "--target-csv missing", ev("--target", "pixel3", "--target-csv", "/nonexistent.csv")),
        C("predictor eval", "--plot /dev/full", ev("--target", "pixel3", "--k", "5", "--plot", "/dev/full"),
          timeout=60),
        C("predictor eval", "--plot a directory", lambda d, ws: ev("--target", "pixel3", "--k", "5", "--plot",
                                                                   str(d))(d, ws), timeout=60),
    ]

    def fit(*extra: str) -> Build:
        return lambda d, ws: ["predictor", "fit", "--csv", str(ws.csv), "--space", "fbnet", "--target", "pixel3",
                              *extra]

    cases += [
        C("predictor fit", "unknown predictor", lambda d, ws: fit("--predictor", "bogus", "--out", str(d / "p"))(d, ws)),
        C("predictor fit", "unknown target", lambda d, ws: ["predictor", "fit", "--csv", str(ws.csv), "--space",
                                                            "fbnet", "--target", "nosuch", "--out", str(d / "p")]),
        C("predictor fit", "--out /dev/full", fit("--predictor", "ridge", "--k", "20", "--out", "/dev/full"),
          timeout=60),
        C("predictor fit", "--out is a file", lambda d, ws: fit("--predictor", "ridge", "--k", "20", "--out",
                                                                put(d, "f", "x"))(d, ws), timeout=60),
        C("predictor fit", "--k 100000", lambda d, ws: fit("--predictor", "ridge", "--k", "100000", "--out",
                                                           str(d / "p"))(d, ws), timeout=60),
        # valid: --known defaults to every other column (documented; the CLI names them on stderr)
        C("predictor fit", "fewshot without --known", lambda d, ws: fit("--predictor", "fewshot", "--k", "5", "--out",
                                                                        str(d / "p"))(d, ws), timeout=60,
          expect="ok", check=_fewshot_known_saved),
    ]

    def pred_dir(mutate: Callable[[Path], None]) -> Callable[[Path, Workspace], str]:
        def make(d: Path, ws: Workspace) -> str:
            import shutil

            dst = d / "pred"
            shutil.copytree(ws.predictor, dst)
            mutate(dst)
            return str(dst)

        return make

    def rewrite(name: str, fn: Callable[[dict], Any]) -> Callable[[Path], None]:
        def mutate(folder: Path) -> None:
            doc = json.loads((folder / name).read_text())
            new = fn(doc)
            (folder / name).write_text(json.dumps(doc if new is None else new, allow_nan=True))

        return mutate

    ARCH = "k3_e1 " * 22
    pred_bad = {
        "missing folder": lambda d, ws: str(d / "none"),
        "empty folder": lambda d, ws: (d / "empty").mkdir() or str(d / "empty"),
        "predictor.json garbage": pred_dir(lambda f: (f / "predictor.json").write_bytes(RANDOM_BYTES)),
        "predictor.json empty": pred_dir(lambda f: (f / "predictor.json").write_bytes(b"")),
        "predictor.json a list": pred_dir(lambda f: (f / "predictor.json").write_text("[]")),
        "predictor.json wrong schema": pred_dir(rewrite("predictor.json", lambda d: d.update(schema="x"))),
        "predictor.json newer schema_version": pred_dir(rewrite("predictor.json",
                                                                lambda d: d.update(schema_version=999))),
        "predictor.json unknown predictor": pred_dir(rewrite("predictor.json", lambda d: d.update(predictor="bogus"))),
        "predictor.json params wrong type": pred_dir(rewrite("predictor.json", lambda d: d.update(params=[1, 2]))),
        "predictor.json unknown space": pred_dir(rewrite("predictor.json", lambda d: d.update(space="nosuch"))),
        "weights file missing": pred_dir(lambda f: _weights(f).unlink()),
        "weights file truncated": pred_dir(lambda f: _weights(f).write_text(_weights(f).read_text()[:100])),
        "weights file garbage": pred_dir(lambda f: _weights(f).write_bytes(RANDOM_BYTES)),
        "weights file NaN weights": pred_dir(lambda f: _weights(f).write_text(
            json.dumps(_nan_all(json.loads(_weights(f).read_text())), allow_nan=True))),
        "weights file 100000-deep": pred_dir(lambda f: _weights(f).write_text(DEEP_JSON)),
    }
    for label, make in pred_bad.items():
        cases.append(C("predictor predict", label, lambda d, ws, m=make: [
            "predictor", "predict", "--predictor", m(d, ws), "--arch", ARCH], timeout=45))
    cases += [
        C("predictor predict", "arch garbage", lambda d, ws: ["predictor", "predict", "--predictor",
                                                              str(ws.predictor), "--arch", "[[["]),
        C("predictor predict", "arch of another space", lambda d, ws: [
            "predictor", "predict", "--predictor", str(ws.predictor), "--arch", json.dumps(W05_ARCH)]),
        C("predictor predict", "--archs-file binary", lambda d, ws: [
            "predictor", "predict", "--predictor", str(ws.predictor), "--archs-file", put(d, "a.txt", RANDOM_BYTES)]),
        C("predictor predict", "--archs-file empty", lambda d, ws: [
            "predictor", "predict", "--predictor", str(ws.predictor), "--archs-file", put(d, "a.txt", b"")]),
        C("predictor predict", "--archs-file missing", lambda d, ws: [
            "predictor", "predict", "--predictor", str(ws.predictor), "--archs-file", str(d / "none.txt")]),
        C("predictor predict", "no arch at all", lambda d, ws: ["predictor", "predict", "--predictor",
                                                                str(ws.predictor)]),
        C("predictor design", "--k 1000000", lambda d, ws: ["predictor", "design", "--csv", str(ws.csv), "--k",
                                                            "1000000", "--known", "pixel3,gold_6240"], timeout=60),
        C("predictor design", "--known unknown", lambda d, ws: ["predictor", "design", "--csv", str(ws.csv),
                                                                "--known", "nosuch"]),
    ]
    g = "ops"
    cases += [
        C(g, "unknown space", lambda d, ws: ["ops", "nosuch"]),
        C(g, "empty space name", lambda d, ws: ["ops", ""]),
        C(g, "space name with markup", lambda d, ws: ["ops", "[bold]x[/bold]"],
          check=literal_in_output(lambda d: "[bold]x[/bold]")),
        C(g, "space name unicode", lambda d, ws: ["ops", "прокси"]),
        C(g, "--resolution -1", lambda d, ws: ["ops", "proxyless_mobile", "-r", "-1"]),
        C(g, "--resolution 0", lambda d, ws: ["ops", "proxyless_mobile", "-r", "0"]),
        C(g, "--resolution 13", lambda d, ws: ["ops", "proxyless_mobile", "-r", "13"]),
        C(g, "--resolution 10**9", lambda d, ws: ["ops", "proxyless_mobile", "-r", "1000000000"]),
        C(g, "--resolution 10**30", lambda d, ws: ["ops", "proxyless_mobile", "-r", str(10**30)]),
        C(g, "--resolution nan", lambda d, ws: ["ops", "proxyless_mobile", "-r", "nan"]),
    ]
    g = "parse-benchmark"

    def pb(content) -> Build:
        return lambda d, ws: ["parse-benchmark", put(d, "bm.txt", content)]

    cases += [
        C(g, "missing file", lambda d, ws: ["parse-benchmark", str(d / "none.txt")]),
        C(g, "a directory", lambda d, ws: ["parse-benchmark", str(d)]),
        C(g, "/dev/null", lambda d, ws: ["parse-benchmark", "/dev/null"]),
        C(g, "empty", pb(b"")),
        C(g, "binary", pb(RANDOM_BYTES)),
        C(g, "not UTF-8", pb(NOT_UTF8)),
        C(g, "80 kB line only", pb(HUGE_LINE)),
        C(g, "garbage fixture", lambda d, ws: ["parse-benchmark", str(ws.bm_output.parent / "bm_garbage.txt")]),
        C(g, "truncated fixture", lambda d, ws: ["parse-benchmark", str(ws.bm_output.parent / "bm_truncated.txt")]),
        C(g, "avg negative", pb(bm_text(avg="-1196.42"))),
        C(g, "avg NaN", pb(bm_text(avg="nan"))),
        C(g, "avg inf", pb(bm_text(avg="inf"))),
        C(g, "avg 0", pb(bm_text(avg="0"))),
        C(g, "avg 5000 digits", pb(bm_text(avg="9" * 5000))),
        C(g, "count 5000 digits", pb(bm_text(count="9" * 5000))),
        C(g, "count negative", pb(bm_text(count="-834"))),
        C(g, "count 0", pb(bm_text(count="0"))),
        C(g, "avg 1e308", pb(bm_text(avg="1e308"))),
        C(g, "valid output with an 80 kB garbage line", pb(bm_text(extra=HUGE_LINE)), expect="ok"),
        C(g, "valid output at odd path 'a[/x]b.txt'",
          lambda d, ws: ["parse-benchmark", put(d, "a[/x]b.txt", ws.bm_output.read_text())], expect="ok",
          check=lambda d, ws, r: None if "1196" in r.stdout or "1.196" in r.stdout
          else (FAILED, f"run-phase avg missing from output: {r.stdout[:200]!r}")),
    ]
    g = "loopback-device"

    def lb(*extra: str) -> Build:
        return lambda d, ws: ["loopback-device", "--root", str(d / "dev"), *extra]

    def srv(name: str, build: Build) -> CliCase:
        return C(g, name, build, timeout=15, needs_process=SERVES)

    cases += [
        srv("--port -1", lb("--port", "-1")),
        srv("--port 70000", lb("--port", "70000")),
        srv("--port 10**30", lb("--port", str(10**30))),
        srv("--auth bogus", lb("--port", "0", "--auth", "bogus")),
        srv("--scenario bogus", lb("--port", "0", "--scenario", "bogus")),
        srv("--root /dev/full", lambda d, ws: ["loopback-device", "--root", "/dev/full", "--port", "0"]),
        srv("--root is a file", lambda d, ws: ["loopback-device", "--root", put(d, "f", "x"), "--port", "0"]),
        srv("--port in use", _busy_port),
    ]
    g = "cli"
    cases += [
        C(g, "unknown command", lambda d, ws: ["frobnicate"]),
        C(g, "unknown option", lambda d, ws: ["ops", "proxyless_mobile", "--frob"]),
        C(g, "--verbose text", lambda d, ws: ["--verbose", "lots", "spaces"]),
    ]
    return cases


_HELD_SOCKETS: list = []


def _busy_port(d: Path, ws: Workspace) -> list[str]:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    _HELD_SOCKETS.append(s)  # closed by release_sockets() after the run
    return ["loopback-device", "--root", str(d / "dev"), "--port", str(s.getsockname()[1])]


def release_sockets() -> None:
    while _HELD_SOCKETS:
        _HELD_SOCKETS.pop().close()


def _weights(folder: Path) -> Path:
    """The saved predictor's weights file (model.json or weights.json, whatever this latkit writes)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "predictor.json")
    if not files:
        raise FileNotFoundError(f"no weights file in {folder}")
    return files[0]


def _nan_all(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _nan_all(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_nan_all(v) for v in doc]
    if isinstance(doc, float):
        return float("nan")
    return doc


def cli_cases() -> list[CliCase]:
    """Every named CLI case."""
    return lut_cases() + measure_profile_cases() + search_run_export_cases() + predictor_ops_misc_cases()


# ------------------------------------------------------------------ named library-reader cases


def _fresh_lut(folder: Path):
    from latkit.lut.store import LUT

    return LUT.open(folder / "dst.db", create=True)


def _import_json(content) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.lut import io

        src = put(folder, "src.json", content(ws) if callable(content) else content)
        with _fresh_lut(folder) as lut:
            report = io.import_json(lut, src)
            bad = lut_rows_problem(folder / "dst.db")
            if bad:
                return f"stored: {bad[1]}"
            return report

    return call


def _import_yaml(text) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.lut import io

        src = put(folder, "t.yaml", text)
        with _fresh_lut(folder) as lut:
            return io.import_public_yaml(lut, src, device_uri="adb:note10")

    return call


def _open_lut(make) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.lut.store import LUT

        with LUT.open(make(folder, ws)) as lut:
            return lut.rows()

    return call


def _netconfig_reader(make) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.profiler.spaces.load import load_network

        return load_network(None, make(folder, ws), 32)

    return call


def _arch_reader(space: str, text: str) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.profiler.spaces import get_space
        from latkit.profiler.spaces.load import load_arch

        return load_arch(get_space(space), text)

    return call


def _cifar(content) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.search.supernet.data import read_cifar_batch

        marker = folder / "pwned"
        out = read_cifar_batch(put(folder, "data_batch_1", content(folder) if callable(content) else content))
        if marker.exists():
            return "pickle code ran!"
        return out

    return call


def _csv_reader(content) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.predictors.data import read_latency_csv

        return read_latency_csv(put(folder, "l.csv", content))

    return call


def _bm(text: str) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.devices.benchmark_parser import parse_benchmark_output

        return parse_benchmark_output(text)

    return call


def _predictor(mutate) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        import shutil

        from latkit.predictors.base import load

        dst = folder / "pred"
        shutil.copytree(ws.predictor, dst)
        mutate(dst)
        return load(dst)

    return call


def _search_result(content) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.search.framework.result import SearchResult

        return SearchResult.load(put(folder, "r.json", content))

    return call


def _read_arch_file(content) -> Callable[[Path, Workspace], Any]:
    def call(folder: Path, ws: Workspace):
        from latkit.deploy.export import read_arch

        return read_arch(put(folder, "arch.json", content))

    return call


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _pickle(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=2)


def reader_cases() -> list[ReaderCase]:
    R = ReaderCase
    cases: list[ReaderCase] = []
    g = "lut.io.import_json"
    for label, value in BAD_LATENCIES:
        cases.append(R(g, f"latency_ms {label}", _import_json(
            lambda ws, v=value: _json_doc(payload_with(ws, "measurements", "latency_ms", v)))))
    cases += [
        R(g, "empty", _import_json(b"")), R(g, "binary", _import_json(RANDOM_BYTES)),
        R(g, "not UTF-8", _import_json(NOT_UTF8)), R(g, "100000-deep", _import_json(DEEP_JSON)),
        R(g, "top-level list", _import_json("[]")),
        R(g, "ops entry a string", _import_json(lambda ws: _json_doc({**ws.payload(), "ops": ["x"]}))),
        R(g, "devices a number", _import_json(lambda ws: _json_doc({**ws.payload(), "devices": 7}))),
        R(g, "device info a list", _import_json(lambda ws: _json_doc(payload_with(ws, "devices", "info", [1])))),
        R(g, "n_samples -3", _import_json(lambda ws: _json_doc(payload_with(ws, "measurements", "n_samples", -3)))),
        R(g, "std_ms NaN", _import_json(lambda ws: _json_doc(payload_with(ws, "measurements", "std_ms",
                                                                          float("nan"))))),
    ]
    g = "lut.io.import_public_yaml"
    for label, text in {
        "mean .nan": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: .nan\n  var: 0.1\n",
        "mean -1": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: -1\n  var: 0.1\n",
        "mean text": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: x\n  var: 0.1\n",
        "count 1.5": "Conv-input:224x224x3-output:112x112x32:\n  count: 1.5\n  mean: 1\n  var: 0.1\n",
        "var .inf": "Conv-input:224x224x3-output:112x112x32:\n  count: 5\n  mean: 1\n  var: .inf\n",
        "python tag": "!!python/object/apply:os.system ['touch pwned']\n",
        "empty": "", "binary": RANDOM_BYTES, "list": "- a\n",
        "key with spaces": "not a key at all:\n  count: 5\n  mean: 1\n",
        "entry null": "Conv-input:224x224x3-output:112x112x32:\n",
        "10000-deep": "a: " + "[" * 10000 + "]" * 10000 + "\n",
    }.items():
        cases.append(R(g, label, _import_yaml(text)))
    g = "lut.store.LUT.open"
    cases += [
        R(g, "empty", _open_lut(lambda f, ws: put(f, "e.db", b""))),
        R(g, "binary", _open_lut(lambda f, ws: put(f, "b.db", RANDOM_BYTES))),
        R(g, "truncated", _open_lut(truncated_lut)),
        R(g, "other schema", _open_lut(lambda f, ws: sqlite_other(f))),
        R(g, "directory", _open_lut(lambda f, ws: str(f))),
        R(g, "rows with infinite latency", _open_lut(lambda f, ws: lut_with_row(f, ws, float("inf")))),
        R(g, "rows with text latency", _open_lut(lambda f, ws: lut_with_row(f, ws, "fast"))),
    ]
    g = "profiler.spaces.load.load_network (net.config)"
    for label, change in NETCONFIG_BAD.items():
        cases.append(R(g, label, _netconfig_reader(_netconfig_with(change))))
    cases += [
        R(g, "binary", _netconfig_reader(lambda f, ws: put(f, "n.config", RANDOM_BYTES))),
        R(g, "not UTF-8", _netconfig_reader(lambda f, ws: put(f, "n.config", NOT_UTF8))),
        R(g, "100000-deep", _netconfig_reader(lambda f, ws: put(f, "n.config", DEEP_JSON))),
        R(g, "empty object", _netconfig_reader(lambda f, ws: put(f, "n.config", "{}"))),
    ]
    g = "profiler.spaces.load.load_arch"
    for label, (space, text) in {
        "garbage": ("proxyless_mobile", "[[["), "unknown op": ("proxyless_mobile", '["9x9_MBConv9"]'),
        "numbers": ("fbnet", "[1,2,3]"), "nested": ("nasbench201", DEEP_JSON),
        "null": ("proxyless_mobile", "null"), "dict": ("proxyless_mobile", '{"arch": 5}'),
        "fbnet unknown op": ("fbnet", "k9_e9 " * 22), "nasbench201 garbage": ("nasbench201", "|nope~0|"),
        "ofa bad": ("ofa_mbv3", "ks=99"), "huge text": ("fbnet", "k3_e1 " * 200_000),
    }.items():
        cases.append(R(g, label, _arch_reader(space, text)))
    g = "search.data.read_cifar_batch"
    import numpy as np

    cases += [
        R(g, "empty", _cifar(b"")), R(g, "binary", _cifar(RANDOM_BYTES)),
        R(g, "malicious pickle (os.system)", _cifar(_pickle(_Evil()))),
        R(g, "pickle of a list", _cifar(_pickle([1, 2, 3]))),
        R(g, "dict without data", _cifar(_pickle({b"labels": [1]}))),
        R(g, "data of the wrong shape", _cifar(_pickle({b"data": np.zeros((3, 5), np.uint8), b"labels": [0, 1, 2]}))),
        R(g, "labels out of range", _cifar(_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 99]}))),
        R(g, "label count mismatch", _cifar(_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))),
        R(g, "data as float NaN", _cifar(_pickle({b"data": np.full((2, 3072), np.nan), b"labels": [0, 1]}))),
    ]
    g = "predictors.data.read_latency_csv"
    for label, content in {
        "empty": "", "binary": RANDOM_BYTES, "not UTF-8": NOT_UTF8, "header only": "arch,pixel3\n",
        "NaN cell": "arch,pixel3\n" + "k3_e1 " * 22 + ",nan\n",
        "negative cell": "arch,pixel3\n" + "k3_e1 " * 22 + ",-1\n",
        "inf cell": "arch,pixel3\n" + "k3_e1 " * 22 + ",inf\n",
        "ragged rows": "arch,pixel3,x\nk3,1\nk5,1,2,3,4\n",
        "5000-digit cell": "arch,pixel3\nk3," + "9" * 5000 + "\n",
        "duplicate columns": "arch,pixel3,pixel3\nk3,1,2\n",
    }.items():
        cases.append(R(g, label, _csv_reader(content)))
    g = "devices.benchmark_parser.parse_benchmark_output"
    for label, text in {
        "empty": "", "binary as text": RANDOM_BYTES.decode("latin-1"), "80 kB line": HUGE_LINE,
        "avg negative": bm_text(avg="-5"), "avg NaN": bm_text(avg="nan"), "avg inf": bm_text(avg="inf"),
        "avg -inf": bm_text(avg="-inf"), "avg 5000 digits": bm_text(avg="9" * 5000),
        "count 5000 digits": bm_text(count="9" * 5000), "count -1": bm_text(count="-1"),
        "avg 0": bm_text(avg="0"), "avg 1e308": bm_text(avg="1e308"),
        "only the warm-up phase": bm_text().split("INFO: Running benchmark for at least 30")[0],
        "NUL bytes": bm_text().replace("avg=1196.42", "avg=\x00\x00"),
    }.items():
        cases.append(R(g, label, _bm(text)))
    g = "predictors.base.load"

    def write(name: str, content) -> Callable[[Path], None]:
        return lambda f: (f / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    cases += [
        R(g, "predictor.json garbage", _predictor(write("predictor.json", RANDOM_BYTES))),
        R(g, "predictor.json empty", _predictor(write("predictor.json", b""))),
        R(g, "predictor.json deep", _predictor(write("predictor.json", DEEP_JSON))),
        R(g, "weights file garbage", _predictor(lambda f: _weights(f).write_bytes(RANDOM_BYTES))),
        R(g, "weights file missing", _predictor(lambda f: _weights(f).unlink())),
        R(g, "predictor.json not UTF-8", _predictor(write("predictor.json", NOT_UTF8))),
    ]
    g = "search.result.SearchResult.load"
    cases += [
        R(g, "empty", _search_result(b"")), R(g, "binary", _search_result(RANDOM_BYTES)),
        R(g, "list", _search_result("[]")), R(g, "not UTF-8", _search_result(NOT_UTF8)),
        R(g, "deep", _search_result(DEEP_JSON)),
    ]
    g = "search.export.read_arch"
    cases += [
        R(g, "empty", _read_arch_file(b"")), R(g, "binary", _read_arch_file(RANDOM_BYTES)),
        R(g, "list of numbers", _read_arch_file("[1, 2]")),
        R(g, "target_ms NaN", _read_arch_file(_json_doc({"space": "proxyless_mobile_w05", "arch": W05_ARCH,
                                                         "target_ms": float("nan")}))),
        R(g, "latency_ms -1", _read_arch_file(_json_doc({"space": "proxyless_mobile_w05", "arch": W05_ARCH,
                                                         "latency_ms": -1}))),
        R(g, "resolution text", _read_arch_file(_json_doc({"space": "proxyless_mobile_w05", "arch": W05_ARCH,
                                                           "resolution": "big"}))),
    ]
    return cases


# ------------------------------------------------------------------ generated families (hypothesis)

_BAD_NUMBERS = st.sampled_from(["nan", "-nan", "inf", "-inf", "-1", "0", "-0", "1e308", "-1e308", "1e999",
                                str(10**30), "-" + str(10**30), "0x10", "", " ", "½", "NaN"])
_HARMLESS = {  # values that are legitimately accepted by some options
    "loopback-device --port": {"0", "-0"},
    "measure --max-seconds": {"1e308", str(10**30), "1e999", "inf"},
    "profile --max-seconds": {"1e308", str(10**30), "1e999", "inf"},
}
# Absurd values for numeric options: (command builder, option)
_NUMERIC_OPTIONS: list[tuple[str, Callable[[Path, Workspace, str], list[str]]]] = [
    ("ops --resolution", lambda d, ws, v: ["ops", "proxyless_mobile", "--resolution", v]),
    ("profile --resolution", lambda d, ws, v: ["profile", "--space", "proxyless_mobile", "--lut", str(d / "p.db"),
                                               "--limit", "1", "--quick", "--resolution", v]),
    ("profile --limit", lambda d, ws, v: ["profile", *SPACE32, "--lut", str(d / "p.db"), "--quick", "--limit", v]),
    ("profile --target-ci", lambda d, ws, v: ["profile", *SPACE32, "--lut", str(d / "p.db"), "--limit", "1",
                                              "--quick", "--target-ci", v]),
    ("profile --max-seconds", lambda d, ws, v: ["profile", *SPACE32, "--lut", str(d / "p.db"), "--limit",
                                                       "1", "--quick", "--max-seconds", v]),
    ("lut estimate --resolution", lambda d, ws, v: ["lut", "estimate", "--lut", str(ws.lut), "--arch",
                                                    str(ws.netconfig), "--resolution", v]),
    ("search --target-ms", lambda d, ws, v: ["search", *_tab(d, ws), "--target-ms", v]),
    ("search --queries", lambda d, ws, v: ["search", *_tab(d, ws)[:-4], "--target-ms", "5", "--queries", v,
                                           "--out", str(d / "s")]),
    ("measure --max-seconds", lambda d, ws, v: ["measure", "--arch", str(ws.arch_json), "--quick",
                                                "--max-seconds", v]),
    ("predictor eval --k", lambda d, ws, v: ["predictor", "eval", "--csv", str(ws.csv), "--space", "fbnet",
                                             "--target", "pixel3", "--seeds", "1", "--k", v]),
    ("loopback-device --port", lambda d, ws, v: ["loopback-device", "--root", str(d / "dev"), "--port", v]),
    ("run --target-ms", lambda d, ws, v: ["run", "--target-ms", v, "--out", str(d / "r"), "--resolution", "32",
                                          "--quick", "--search-epochs", "2", "--train-epochs", "1",
                                          "--max-steps", "1"]),
]


@dataclass(frozen=True)
class Family:
    """A generated family: a strategy of inputs and how one input becomes a CLI case."""

    name: str
    strategy: Any
    to_case: Callable[[Any], CliCase]
    bench_examples: int  # how many the benchmark draws
    test_examples: int  # how many the test suite draws


def _numeric_case(pair: tuple[int, str]) -> CliCase:
    i, value = pair
    label, make = _NUMERIC_OPTIONS[i]
    return CliCase(label, f"absurd value {value!r}", lambda d, ws: make(d, ws, value), timeout=45,
                   needs_process=SERVES if label.startswith("loopback-device") else "")


_FIELDS = {
    "latency_ms": st.sampled_from([v for _, v in BAD_LATENCIES]) | st.floats(max_value=0.0) |
    st.floats(min_value=1e7, allow_infinity=True) | st.text(max_size=5) | st.none(),
    "op_key": st.integers() | st.none() | st.text(alphabet="[]/:x-", max_size=12) | st.lists(st.integers(), max_size=2),
    "device_uri": st.integers() | st.just("") | st.none() | st.booleans(),
    "n_samples": st.integers(max_value=-1) | st.floats(allow_nan=True).filter(lambda x: x != int(x) if
                                                                              math.isfinite(x) else True),
}


def _import_field_case(pair: tuple[str, Any]) -> CliCase:
    field_, value = pair
    return CliCase("lut import", f"generated {field_}={_short(value)[:60]}",
                   _import(lambda ws: _json_doc(payload_with(ws, "measurements", field_, value))),
                   check=rows_check(0))


_YAML_VALUE = st.sampled_from([".nan", ".inf", "-.inf", "-1", "0", "-0.0", "x", "[]", "{}", "null", "1e400",
                               "9" * 400, "~", "'1'", "!!binary aGVsbG8="])


def _yaml_case(pair: tuple[str, str]) -> CliCase:
    field_, value = pair
    text = {"mean": f"  count: 5\n  mean: {value}\n  var: 0.1\n",
            "count": f"  count: {value}\n  mean: 1.0\n  var: 0.1\n",
            "var": f"  count: 5\n  mean: 1.0\n  var: {value}\n"}[field_]
    yaml = "Conv-input:224x224x3-output:112x112x32:\n" + text
    return CliCase("lut import", f"generated yaml {field_}: {value[:40]}",
                   lambda d, ws: ["lut", "import", str(d / "dst.db"), put(d, "t.yaml", yaml), "--device-uri",
                                  "adb:note10"], check=rows_check(0))


_BM_NUM = st.sampled_from(["-1", "nan", "inf", "-inf", "0", "1e308", "9" * 5000, "", "--", "1.2.3", "0x1F",
                           "-0", "NaN"]) | st.floats(max_value=0.0).map(repr) | st.integers(max_value=-1).map(str)


def _bm_case(pair: tuple[str, str]) -> CliCase:
    where, value = pair
    text = bm_text(avg=value) if where == "avg" else bm_text(count=value)
    return CliCase("parse-benchmark", f"generated {where}={value[:40]}",
                   lambda d, ws: ["parse-benchmark", put(d, "bm.txt", text)])


_NAME = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("[]/\\'\" $;"),
                min_size=1, max_size=24).filter(lambda s: not s.startswith("-") and s.strip() == s and s
                                                and "\x00" not in s)
_NAME_COMMANDS: list[tuple[str, Callable[[Path, Workspace, str], list[str]]]] = [
    ("ops", lambda d, ws, n: ["ops", n]),
    ("search --space", lambda d, ws, n: ["search", "--space", n, "--target-ms", "5"]),
    ("search --algorithm", lambda d, ws, n: ["search", *_tab(d, ws)[:-6], "--target-ms", "5", "--algorithm", n]),
    ("profile --device", lambda d, ws, n: ["profile", "--device", n, *SPACE32, "--lut", str(d / "p.db")]),
    ("predictor fit --predictor", lambda d, ws, n: ["predictor", "fit", "--csv", str(ws.csv), "--space", "fbnet",
                                                    "--target", "pixel3", "--predictor", n, "--out", str(d / "p")]),
    ("predictor eval --target", lambda d, ws, n: ["predictor", "eval", "--csv", str(ws.csv), "--space", "fbnet",
                                                  "--target", n]),
    ("export --format", lambda d, ws, n: ["export", "--arch", str(ws.arch_json), "--format", n,
                                          "--out", str(d / "e")]),
]
_VALID_NAMES = {"proxyless_mobile", "proxyless_mobile_w05", "ofa_mbv3", "ofa_mbv3_w10", "fbnet", "nasbench201",
                "random", "ppo", "reinforce", "evolution", "parsec", "proxyless-grad", "onnx", "tflite", "pixel3",
                "xgboost", "ridge", "mlp", "gcn", "lutsum", "ensemble", "fewshot"}


def _name_case(pair: tuple[int, str]) -> CliCase:
    i, name = pair
    label, make = _NAME_COMMANDS[i]
    return CliCase(label, f"generated unknown name {name!r}", lambda d, ws: make(d, ws, name), timeout=45)


def _bytes_case(pair: tuple[int, bytes]) -> CliCase:
    i, data = pair
    label, make = _BYTES_READERS[i]
    return CliCase(label, f"generated {len(data)} random bytes", lambda d, ws: make(d, ws, data), timeout=45)


_BYTES_READERS: list[tuple[str, Callable[[Path, Workspace, bytes], list[str]]]] = [
    ("lut show", lambda d, ws, b: ["lut", "show", put(d, "x.db", b)]),
    ("lut import", lambda d, ws, b: ["lut", "import", str(d / "dst.db"), put(d, "x.json", b)]),
    ("lut import", lambda d, ws, b: ["lut", "import", str(d / "dst.db"), put(d, "x.yaml", b), "--device-uri",
                                     "adb:x"]),
    ("lut merge", lambda d, ws, b: ["lut", "merge", str(d / "dst.db"), put(d, "x.db", b)]),
    ("lut estimate", lambda d, ws, b: ["lut", "estimate", "--lut", str(ws.lut), "--arch", put(d, "x.config", b)]),
    ("parse-benchmark", lambda d, ws, b: ["parse-benchmark", put(d, "x.txt", b)]),
    ("predictor eval", lambda d, ws, b: ["predictor", "eval", "--csv", put(d, "x.csv", b), "--space", "fbnet",
                                         "--target", "pixel3"]),
    ("export", lambda d, ws, b: ["export", "--arch", put(d, "arch.json", b), "--out", str(d / "e")]),
]


def _odd_path_case(name: str) -> CliCase:
    return CliCase("lut show", f"generated odd path {name!r}", _odd_lut(name), expect="ok",
                   check=literal_in_output(lambda d, n=name: Path(n).name))


_PATH_NAME = st.text(alphabet=st.sampled_from("ab []/()'\"$;&|*?!#%^~`{}<>=,@+") | st.characters(
    min_codepoint=0xA0, max_codepoint=0x2FFF, blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
    min_size=1, max_size=16).map(lambda s: s.strip("/ ").replace("//", "/") + ".db").filter(
    lambda s: s != ".db" and not s.startswith("-") and ".." not in s.split("/") and
    all(part and part.strip() == part and part not in (".", "..") for part in s.split("/")))

FAMILIES: list[Family] = [
    Family("absurd numeric options", st.tuples(st.integers(0, len(_NUMERIC_OPTIONS) - 1), _BAD_NUMBERS).filter(
        lambda p: p[1] not in _HARMLESS.get(_NUMERIC_OPTIONS[p[0]][0], ())), _numeric_case, 40, 6),
    Family("bad fields in a LUT export", st.sampled_from(sorted(_FIELDS)).flatmap(
        lambda f: st.tuples(st.just(f), _FIELDS[f])), _import_field_case, 20, 4),
    Family("bad fields in a public yaml table", st.tuples(st.sampled_from(["mean", "count", "var"]), _YAML_VALUE),
           _yaml_case, 12, 3),
    Family("garbage benchmark_model numbers", st.tuples(st.sampled_from(["avg", "count"]), _BM_NUM), _bm_case,
           12, 3),
    Family("unknown names", st.tuples(st.integers(0, len(_NAME_COMMANDS) - 1), _NAME).filter(
        lambda p: p[1] not in _VALID_NAMES), _name_case, 21, 4),
    Family("random bytes as input files", st.tuples(st.integers(0, len(_BYTES_READERS) - 1),
                                                    st.binary(min_size=0, max_size=3000)), _bytes_case, 16, 4),
    Family("odd characters in paths", _PATH_NAME, _odd_path_case, 10, 3),
]


def draw(family: Family, n: int, seed: int = 0) -> list[Any]:
    """``n`` distinct examples of ``family.strategy``, reproducibly (hypothesis, derandomized)."""
    seen: list[Any] = []

    @settings(max_examples=n * 3, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(family.strategy)
    def collect(value):
        key = repr(value)
        if len(seen) < n and key not in {repr(v) for v in seen}:
            seen.append(value)

    collect()
    return seen
