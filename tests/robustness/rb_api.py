"""The Python API's every function and argument, each given wrong types and values.

One :class:`ApiCase` calls one ``latkit.<verb>`` with valid arguments but one
(``bad``), built in a fresh folder from the robustness workspace. Every verb's
valid call is cheap or bounded (``limit=1``, ``quick=True``, ``max_steps=1``),
so a bad value that is silently taken shows as a return (or, for the verbs
that would then run long, as the case's time running out).

:func:`run_api_case` classifies the call like a reader case, except that a
``TypeError`` raised by Python's own signature check (an unknown keyword, a
missing argument: nothing of latkit ran) is a clean refusal too. Anything else
escaping (an ``AttributeError`` from deep inside, a ``ValueError`` from numpy)
is a traceback.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rb_cli import CLEAN, HANG, MESSY, OK, SILENT, TRACEBACK, Verdict
from rb_commands import onnx_file
from rb_inproc import Timeout, alarm
from rb_workspace import Workspace, fbnet_arch

Make = Callable[[Path, Workspace], Any]  # builds one argument's value in the case folder


@dataclass(frozen=True)
class ApiCase:
    """``latkit.<verb>(**valid, <arg>=bad)``; ``expect="ok"`` for a valid value in odd clothing."""

    verb: str
    arg: str
    label: str
    bad: Make
    expect: str = "error"
    long: bool = False  # the valid call runs long: a timeout means the bad value was taken
    extra: dict[str, Make] = field(default_factory=dict)  # other arguments changed for this case

    @property
    def id(self) -> str:
        return f"api {self.verb}({self.arg}={self.label})" if self.arg else f"api {self.verb}: {self.label} call"


# ------------------------------------------------------------------ valid arguments


def onnx_model(path: Path, dims: list[Any] | None = None) -> Path:
    """A one-input Relu model (``dims`` may hold a text: a dynamic dimension)."""
    return Path(onnx_file(path, dims or [1, 4]))


def _lut(d: Path, ws: Workspace) -> Path:
    path = ws.copy_lut(d / "lut.db")
    os.chmod(path, 0o644)
    return path


class _Model:
    """A latency model answering ``value`` for every architecture."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def latency_ms(self, arch: Any) -> Any:
        return self.value

    def min_latency(self, space: Any) -> tuple[Any, Any]:
        return self.value, None


W05 = "proxyless_mobile_w05"
VALID: dict[str, dict[str, Make]] = {
    "open_device": {"uri": lambda d, ws: "cpu:onnxruntime"},
    "profile": {"device": lambda d, ws: "cpu:onnxruntime", "space": lambda d, ws: "proxyless_mobile",
                "lut": lambda d, ws: d / "new.db", "resolution": lambda d, ws: 32, "limit": lambda d, ws: 1,
                "quick": lambda d, ws: True},
    "open_lut": {"path": _lut},
    "estimate": {"lut": _lut, "arch": lambda d, ws: ws.arch_json},
    "latency_model": {"space": lambda d, ws: W05, "lut": _lut, "resolution": lambda d, ws: 32},
    "fit_predictor": {"csv": lambda d, ws: ws.csv, "space": lambda d, ws: "fbnet", "target": lambda d, ws: "pixel3",
                      "out_dir": lambda d, ws: d / "p", "predictor": lambda d, ws: "ridge", "k": lambda d, ws: 20},
    "load_predictor": {"directory": lambda d, ws: ws.predictor},
    "predict": {"predictor_dir": lambda d, ws: ws.predictor, "archs": lambda d, ws: [fbnet_arch(ws)]},
    "predict_model": {"model": lambda d, ws: onnx_model(d / "m.onnx", [1, 8, 16, 16]),
                      "predictors": lambda d, ws: ws.kernels},
    "search_arch": {"space": lambda d, ws: "nasbench201", "latency_model": lambda d, ws: _Model(1.0),
                    "target_ms": lambda d, ws: 5.0, "out_dir": lambda d, ws: d / "s",
                    "algorithm": lambda d, ws: "random", "queries": lambda d, ws: 2, "epochs": lambda d, ws: 1,
                    "train_steps": lambda d, ws: 1, "plots": lambda d, ws: False},
    "train": {"arch": lambda d, ws: ws.arch_json, "out_dir": lambda d, ws: d / "t", "epochs": lambda d, ws: 1,
              "max_steps": lambda d, ws: 1},
    "export": {"arch": lambda d, ws: ws.arch_json, "formats": lambda d, ws: ("onnx",),
               "out_dir": lambda d, ws: d / "e", "random_weights": lambda d, ws: True},
    "measure": {"device": lambda d, ws: "cpu:onnxruntime", "model": lambda d, ws: onnx_model(d / "m.onnx"),
                "quick": lambda d, ws: True},
    "run": {"device": lambda d, ws: "cpu:onnxruntime", "space": lambda d, ws: W05, "target_ms": lambda d, ws: 1.0,
            "out_dir": lambda d, ws: d / "run"},
    "sample_latencies": {"device": lambda d, ws: "cpu:onnxruntime", "space": lambda d, ws: W05, "n": lambda d, ws: 1,
                         "out": lambda d, ws: d / "lat.csv", "resolution": lambda d, ws: 32,
                         "quick": lambda d, ws: True},
}
LONG = ("run", "search_arch", "train", "export", "profile", "sample_latencies")


# ------------------------------------------------------------------ bad values


def _fifo(d: Path, ws: Workspace) -> Path:
    path = d / "fifo"
    os.mkfifo(path)
    return path


def _missing(d: Path, ws: Workspace) -> Path:
    """A path in a folder that does not exist (in the case's folder: a call that wrongly creates it stays there)."""
    return d / "no_such_folder" / "x"


def _dir(d: Path, ws: Workspace) -> Path:
    path = d / "a_dir"
    path.mkdir()
    return path


def _garbage(d: Path, ws: Workspace) -> Path:
    path = d / "garbage.bin"
    path.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(2048)))
    return path


def _file(d: Path, ws: Workspace) -> Path:
    path = d / "plain.txt"
    path.write_text("not a folder\n")
    return path


def v(value: Any) -> Make:
    return lambda d, ws: value


NOT_TEXT = {"3": v(3), "b'x'": v(b"x"), "['a']": v(["a"]), "None": v(None)}
BAD_TEXT = {"''": v(""), "'  '": v("  "), "'x\\n'": v("bogus\nline"), "'\\x1b[2J'": v("\x1b[2J"),
            "'nosuch'": v("nosuch")}
BAD_INT = {"'2'": v("2"), "1.5": v(1.5), "True": v(True), "0": v(0), "-1": v(-1), "nan": v(math.nan),
           "10**12": v(10**12), "None": v(None)}
BAD_FLAG = {"'yes'": v("yes"), "1": v(1), "None": v(None)}
BAD_FN = {"'x'": v("x"), "1": v(1)}
BAD_IN_PATH = {"3": v(3), "''": v(""), "'\\0'": v("a\0b"), "missing": _missing,
               "a directory": _dir, "a FIFO": _fifo, "/dev/zero": v(Path("/dev/zero")), "garbage": _garbage}
BAD_OUT_DIR = {"3": v(3), "''": v(""), "a file": _file, "/dev/full": v(Path("/dev/full")),
               "under /proc": v(Path("/proc/latkit-x"))}
BAD_PRECISION = {"'int4'": v("int4"), "3": v(3), "''": v("")}
BAD_CONFIG = {"'quick'": v("quick"), "{}": v({}), "3": v(3)}
BAD_DICT = {"'x'": v("x"), "[1]": v([1]), "{'bogus': 1}": v({"bogus": 1})}
BAD_NUMBER = {"'5'": v("5"), "nan": v(math.nan), "inf": v(math.inf), "-1.0": v(-1.0), "0": v(0), "True": v(True),
              "None": v(None)}


def _only(table: dict[str, Make], *keys: str) -> dict[str, Make]:
    return {k: table[k] for k in keys}


def _without(table: dict[str, Make], *keys: str) -> dict[str, Make]:
    return {k: m for k, m in table.items() if k not in keys}


OPT_TEXT = {**_without(NOT_TEXT, "None"), **BAD_TEXT}
OPT_INT = _without(BAD_INT, "None")
# verb -> argument -> the bad values it is tried with
ARGS: dict[str, dict[str, dict[str, Make]]] = {
    "open_device": {"uri": {**NOT_TEXT, **BAD_TEXT, "'adb:'": v("adb:"), "'cpu:onnxruntime?x=1'": v("cpu:onnxruntime?x=1")},
                    "threads": _without(BAD_INT, "10**12") | {"257": v(257)},
                    "clock": {"'sundial'": v("sundial"), "3": v(3)}},
    "profile": {"device": {**NOT_TEXT, **BAD_TEXT, "an object": v(object())}, "space": {**NOT_TEXT, **BAD_TEXT},
                "lut": {"3": v(3), "''": v(""), "a directory": _dir, "a FIFO": _fifo, "garbage": _garbage,
                        "/dev/full": v(Path("/dev/full"))},
                "arch": {"3": v(3), "'garbage'": v("garbage"), "missing": _missing,
                         "a FIFO": _fifo},
                "resolution": OPT_INT, "limit": _without(OPT_INT, "10**12"), "precision": BAD_PRECISION, "config": BAD_CONFIG,
                "quick": BAD_FLAG, "passes": {**BAD_INT, "11": v(11)}},
    "open_lut": {"path": BAD_IN_PATH, "create": BAD_FLAG, "readonly": BAD_FLAG},
    "estimate": {"lut": BAD_IN_PATH, "arch": {**BAD_IN_PATH, "'garbage'": v("garbage")}, "space": OPT_TEXT,
                 "resolution": OPT_INT, "device": OPT_TEXT, "precision": BAD_PRECISION, "calibration": BAD_FLAG,
                 "classes": OPT_INT},
    "latency_model": {"space": {**NOT_TEXT, **BAD_TEXT}, "lut": BAD_IN_PATH, "device": OPT_TEXT,
                      "resolution": OPT_INT, "precision": BAD_PRECISION, "classes": OPT_INT,
                      "calibrated": _without(BAD_FLAG, "None")},
    "fit_predictor": {"csv": BAD_IN_PATH, "space": {**NOT_TEXT, **BAD_TEXT}, "target": {**NOT_TEXT, **BAD_TEXT},
                      "out_dir": BAD_OUT_DIR, "predictor": {**NOT_TEXT, **BAD_TEXT}, "k": OPT_INT,
                      "known": {"'pixel3'": v("pixel3"), "[3]": v([3]), "['nosuch']": v(["nosuch"])},
                      "params": BAD_DICT, "random_state": _without(BAD_INT, "0", "10**12")},
    "load_predictor": {"directory": {**BAD_IN_PATH, "an empty folder": _dir}},
    "predict": {"predictor_dir": BAD_IN_PATH, "archs": {"'abc'": v("abc"), "[3]": v([3]), "['garbage']": v(["garbage"]),
                                                        "[]": v([]), "None": v(None)},
                "reference_csv": _without(BAD_IN_PATH, "'\\0'")},
    "predict_model": {"model": {**BAD_IN_PATH, "an object": v(object()),
                                "dynamic": lambda d, ws: onnx_model(d / "dyn.onnx", ["batch", 8, 16, 16])},
                      "predictors": {**BAD_IN_PATH, "an object": v(object()), "an empty folder": _dir},
                      "input_shape": {"'1,3'": v("1,3"), "(0, 3)": v((0, 3)), "(1.5,)": v((1.5,)), "3": v(3),
                                      "(1, 2, 3)": v((1, 2, 3))}},
    "search_arch": {"space": {**NOT_TEXT, **BAD_TEXT}, "latency_model": {"'fast'": v("fast"), "None": v(None),
                                                                          "NaN model": v(_Model(math.nan)),
                                                                          "text model": v(_Model("1.0")),
                                                                          "negative model": v(_Model(-1.0))},
                    "target_ms": BAD_NUMBER, "out_dir": BAD_OUT_DIR, "on_progress": BAD_FN,
                    "seed": {"'1'": v("1"), "-1": v(-1)}, "algorithm": {"'bogus'": v("bogus"), "3": v(3)},
                    "queries": OPT_INT, "plots": BAD_FLAG, "bogus_option": {"1": v(1)}},
    "train": {"arch": {**BAD_IN_PATH, "'garbage'": v("garbage")}, "data": {**NOT_TEXT, **BAD_TEXT},
              "out_dir": BAD_OUT_DIR, "epochs": OPT_INT, "max_steps": _without(OPT_INT, "10**12"), "seed": {"'1'": v("1")},
              "on_progress": BAD_FN, "bogus_option": {"1": v(1)}},
    "export": {"arch": BAD_IN_PATH, "weights": BAD_IN_PATH, "formats": {"7": v(7), "['bogus']": v(["bogus"]),
                                                                        "[]": v([]), "''": v("")},
               "out_dir": BAD_OUT_DIR, "precision": BAD_PRECISION,
               "variants": {"'int4'": v("int4"), "[3]": v([3]), "3": v(3)},
               "layout": {"'nwhc'": v("nwhc"), "3": v(3)}, "nhwc": BAD_FLAG, "random_weights": BAD_FLAG,
               "name": {"'../escaped'": v("../escaped"), "3": v(3), "'a/b'": v("a/b")},
               "resolution": OPT_INT, "on_progress": BAD_FN, "bogus_option": {"1": v(1)}},
    "measure": {"device": {**NOT_TEXT, **BAD_TEXT, "an object": v(object())}, "model": BAD_IN_PATH,
                "config": BAD_CONFIG, "quick": BAD_FLAG},
    "run": {"device": {**NOT_TEXT, **BAD_TEXT}, "space": {**NOT_TEXT, **BAD_TEXT},
            "target_ms": {**_without(BAD_NUMBER, "'5'"), "'fast'": v("fast"), "'200%'": v("200%")},
            "out_dir": BAD_OUT_DIR, "data": OPT_TEXT, "on_progress": BAD_FN, "precision": BAD_PRECISION,
            "layout": {"'nwhc'": v("nwhc"), "3": v(3)}, "lut": BAD_IN_PATH, "protocol": BAD_CONFIG,
            "search_options": BAD_DICT, "device_options": BAD_DICT, "tolerance": {"'x'": v("x"), "nan": v(math.nan)},
            "bogus_option": {"1": v(1)}},
    "sample_latencies": {"device": {**NOT_TEXT, **BAD_TEXT, "an object": v(object())},
                         "space": {**NOT_TEXT, **BAD_TEXT},
                         "n": BAD_INT | {"50001": v(50_001)},
                         "out": {"3": v(3), "''": v(""), "a directory": _dir, "a FIFO": _fifo, "garbage": _garbage,
                                 "/dev/full": v(Path("/dev/full")), "under a file": lambda d, ws: _file(d, ws) / "x"},
                         "resolution": OPT_INT, "seed": {"'1'": v("1"), "-1": v(-1)}, "precision": BAD_PRECISION,
                         "column": _without(OPT_TEXT, "'nosuch'"), "classes": {"'10'": v("10"), "1.5": v(1.5), "-1": v(-1)},
                         "config": BAD_CONFIG, "quick": BAD_FLAG, "on_progress": BAD_FN},
}


QUICK = ("open_device", "open_lut", "estimate", "latency_model", "load_predictor", "predict", "predict_model",
         "measure")  # verbs whose valid call is tried too (it must succeed)


ODD = "a [b] ü $(x) 100%;'q\""  # a folder name a shell or a markup renderer would misread


def _odd(name: str, make: Make) -> Make:
    """``make``'s file, copied into a folder with an odd name."""
    def build(d: Path, ws: Workspace) -> Path:
        import shutil

        src = Path(make(d, ws))
        dst = d / ODD / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst

    return build


# valid values in odd clothing: each call must succeed
ODD_CASES = [("estimate", "lut", "odd path", _odd("l.db", _lut)),
             ("open_lut", "path", "odd path", _odd("l.db", _lut)),
             ("measure", "model", "odd path", _odd("m.onnx", lambda d, ws: onnx_model(d / "m.onnx"))),
             ("measure", "model", "no suffix", _odd("model", lambda d, ws: onnx_model(d / "m.onnx"))),
             ("predict_model", "model", "odd path", _odd("m.onnx", lambda d, ws: onnx_model(d / "m.onnx",
                                                                                       [1, 8, 16, 16]))),
             ("predict_model", "input_shape", "a list", v([1, 8, 16, 16])),
             ("estimate", "arch", "odd path", _odd("arch.json", lambda d, ws: ws.arch_json)),
             ("open_device", "threads", "2", v(2))]


def api_cases() -> list[ApiCase]:
    """One case per verb, argument and bad value, and the valid calls (the quick verbs', odd clothing)."""
    valid = [ApiCase(verb, "", "valid", v(None), expect="ok") for verb in QUICK]
    valid += [ApiCase(verb, arg, label, make, expect="ok") for verb, arg, label, make in ODD_CASES]
    return valid + [ApiCase(verb, arg, label, make, long=verb in LONG)
                    for verb, args in ARGS.items() for arg, bad in args.items() for label, make in bad.items()]


# ------------------------------------------------------------------ running


def _call(case: ApiCase, folder: Path, ws: Workspace) -> Any:
    import latkit

    kwargs = {k: make(folder, ws) for k, make in {**VALID[case.verb], **case.extra}.items()}
    if case.arg:
        kwargs[case.arg] = case.bad(folder, ws)
    fn = getattr(latkit, case.verb)
    result = fn(**kwargs)
    if hasattr(result, "close") and case.verb in ("open_device", "open_lut"):
        result.close()
    return result


def _raised_by_python(exc: BaseException) -> bool:
    """A TypeError from the call's own signature check: no frame of latkit ran."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return isinstance(exc, TypeError) and not any(f"{os.sep}latkit{os.sep}" in f for f in frames)


@contextmanager
def memory_cap(extra_bytes: int = 3 << 30) -> Iterator[None]:
    """Address space capped at what this process maps now plus ``extra_bytes``: a call that
    reads an endless file into memory fails with ``MemoryError`` instead of filling the host."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    cap = mapped + extra_bytes if hard == resource.RLIM_INFINITY else min(hard, mapped + extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_api_case(case: ApiCase, folder: Path, ws: Workspace, timeout: float = 30.0) -> Verdict:
    """Call ``case`` in-process (SIGALRM stops a run past ``timeout``; memory is capped) and classify it."""
    from latkit.core.errors import LatkitError

    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)  # a relative default folder (``search_out``...) lands in the case's folder
    try:
        with alarm(timeout), memory_cap():
            value = _call(case, folder, ws)
    except Timeout:
        return Verdict(SILENT if case.long else HANG, f"still running after {timeout:.0f} s")
    except LatkitError as exc:
        msg = str(exc)
        if not msg.strip() or "\n" in msg.strip():
            return Verdict(MESSY, f"{type(exc).__name__} of {len(msg.splitlines())} lines: {msg[:200]!r}")
        return Verdict(OK if case.expect == "ok" else CLEAN, f"{type(exc).__name__}: {msg[:300]}")
    except (Exception, RecursionError) as exc:
        if _raised_by_python(exc):
            return Verdict(CLEAN, f"{type(exc).__name__}: {str(exc)[:300]}")
        return Verdict(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]} (at {_where(exc)})")
    finally:
        os.chdir(cwd)
    return Verdict(OK if case.expect == "ok" else SILENT, f"returned {repr(value)[:160]}")


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"


if __name__ == "__main__":  # python rb_api.py [FILTER]: run the API cases and print the failing ones
    import tempfile
    from collections import Counter

    from rb_workspace import build_workspace

    base = Path(tempfile.mkdtemp(prefix="rb-api-"))
    ws = build_workspace(base / "ws")
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    rows = []
    for i, c in enumerate(c for c in api_cases() if wanted in c.id):
        rows.append((c.id, run_api_case(c, base / f"{i:04d}", ws)))
        print(f"{i} {c.id}: {rows[-1][1].kind}", file=sys.stderr, flush=True)
    print(Counter(v.kind for _, v in rows))
    for rid, verdict in rows:
        if verdict.kind not in (CLEAN, OK):
            print(f"[{verdict.kind}] {rid} -- {verdict.detail}")
