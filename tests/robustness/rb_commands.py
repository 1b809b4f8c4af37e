"""Bad input for the newer commands and for every command's output, as CLI corpus cases.

* ``latkit predict`` on garbage, truncated, empty, dynamic-shape and enormous
  models, special files and odd names, and on bad predictor folders;
* ``latkit kernels build | detect-fusion | calibrate`` with bad budgets, counts,
  devices and LUTs;
* ``latkit cache`` pointed at folders that hold the user's own files (nothing of
  theirs may go);
* ``latkit farm`` with bad addresses, phones and files (refused before a cluster
  starts);
* ``latkit train`` and ``latkit predictor sample`` with bad inputs;
* outputs that cannot be written: a FIFO (opening it would block), a folder, a
  file-size limit (``RLIMIT_FSIZE``) and standard output on ``/dev/full``.

The cases run like :mod:`rb_corpus`'s (``run_case``); those that must own the
process (a file-size limit, standard output) run in a subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

from rb_cli import DATA_LOSS, DEBRIS, Result
from rb_corpus import RANDOM_BYTES, C, CliCase, put
from rb_workspace import Workspace

DEV = ("--device", "cpu:onnxruntime")
OWN = "its input passes the checks only to change the process (a file-size limit, its standard output)"
RAY = "a farm command whose input passes the checks starts an embedded Ray cluster"


def onnx_file(path: Path, dims: list | None = None, op: str = "Relu") -> str:
    """A one-input model (``dims`` may hold a text: a dynamic dimension)."""
    import onnx
    from onnx import TensorProto, helper

    dims = dims or [1, 8, 16, 16]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    model = helper.make_model(helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return str(path)


def fifo(d: Path, name: str = "fifo") -> str:
    path = d / name
    os.mkfifo(path)
    return str(path)


def folder(d: Path, name: str = "a_dir") -> str:
    path = d / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _predict(model, *extra: str):
    return lambda d, ws: ["predict", model(d, ws), *DEV, "--predictors", str(ws.kernels), *extra]


def _truncated(d: Path, ws: Workspace) -> str:
    data = Path(onnx_file(d / "whole.onnx")).read_bytes()
    return put(d, "half.onnx", data[: len(data) // 2])


def predict_cases() -> list[CliCase]:
    g = "predict"
    dyn = lambda d, ws: onnx_file(d / "dyn.onnx", ["batch", 8, 16, 16])  # noqa: E731
    good = lambda d, ws: onnx_file(d / "m.onnx")  # noqa: E731
    return [
        C(g, "garbage .onnx", _predict(lambda d, ws: put(d, "g.onnx", RANDOM_BYTES))),
        C(g, "truncated .onnx", _predict(_truncated)),
        C(g, "empty .onnx", _predict(lambda d, ws: put(d, "e.onnx", b""))),
        C(g, "garbage .tflite", _predict(lambda d, ws: put(d, "g.tflite", RANDOM_BYTES))),
        C(g, "text file", _predict(lambda d, ws: put(d, "t.onnx", "hello\n" * 40))),
        C(g, "missing file", _predict(lambda d, ws: str(d / "none.onnx"))),
        C(g, "a directory", _predict(lambda d, ws: folder(d, "m.onnx"))),
        C(g, "a FIFO", _predict(lambda d, ws: fifo(d, "m.onnx"))),
        C(g, "/dev/zero", _predict(lambda d, ws: "/dev/zero")),
        C(g, "dynamic shape without --input-shape", _predict(dyn)),
        C(g, "dynamic shape fixed by --input-shape", _predict(dyn, "--input-shape", "1x8x16x16"), expect="ok"),
        C(g, "--input-shape letters", _predict(dyn, "--input-shape", "axbxc")),
        C(g, "--input-shape zero", _predict(dyn, "--input-shape", "0x8x16x16")),
        C(g, "--input-shape negative", _predict(dyn, "--input-shape", "1x-8x16x16")),
        C(g, "--input-shape wrong rank", _predict(dyn, "--input-shape", "1x8")),
        C(g, "--input-shape empty", _predict(dyn, "--input-shape", "")),
        C(g, "--input-shape enormous", _predict(dyn, "--input-shape", "1x8x99999999x99999999")),
        C(g, "--input-shape unicode digits", _predict(dyn, "--input-shape", "1x\u0668x16x16")),
        C(g, "int32-overflowing dims", _predict(lambda d, ws: onnx_file(d / "huge.onnx", [1, 3, 2**31, 2**31]))),
        C(g, "a zero dim", _predict(lambda d, ws: onnx_file(d / "zero.onnx", [1, 0, 16, 16]))),
        C(g, "an operator no predictor knows", _predict(lambda d, ws: onnx_file(d / "u.onnx", op="Erf")),
          expect="ok"),
        C(g, "odd characters in the name", _predict(lambda d, ws: onnx_file(d / "a [b] ü $(x) 100%.onnx")),
          expect="ok"),
        C(g, "an ONNX file named .tflite", _predict(lambda d, ws: onnx_file(d / "m.tflite")), expect="ok"),
        C(g, "--predictors missing", lambda d, ws: ["predict", good(d, ws), *DEV, "--predictors", str(d / "no")]),
        C(g, "--predictors empty folder", lambda d, ws: ["predict", good(d, ws), *DEV, "--predictors",
                                                         folder(d, "kp")]),
        C(g, "--predictors a file", lambda d, ws: ["predict", good(d, ws), *DEV, "--predictors",
                                                   put(d, "kp", "x")]),
        C(g, "--predictors garbage json", lambda d, ws: ["predict", good(d, ws), *DEV, "--predictors",
                                                         str(Path(put(d, "kp/predictors.json", RANDOM_BYTES)).parent)]),
        C(g, "--predictors json a list", lambda d, ws: ["predict", good(d, ws), *DEV, "--predictors",
                                                        str(Path(put(d, "kp/predictors.json", "[]")).parent)]),
        C(g, "unknown device", lambda d, ws: ["predict", good(d, ws), "--device", "tpu:9", "--predictors",
                                              str(ws.kernels)]),
        C(g, "--precision int4", _predict(good, "--precision", "int4")),
        C(g, "--lut garbage, no --predictors", lambda d, ws: ["predict", good(d, ws), *DEV, "--lut",
                                                              put(d, "k.db", RANDOM_BYTES)]),
        C(g, "--lut a FIFO, no --predictors", lambda d, ws: ["predict", good(d, ws), *DEV, "--lut", fifo(d)]),
    ]


def _kernels(sub: str, *extra: str):
    return lambda d, ws: ["kernels", sub, *DEV, "--lut", str(d / "k.db"), *extra]


def _transfer(*extra: str, source=lambda d, ws: str(ws.kernels)):
    return lambda d, ws: ["kernels", "transfer", *DEV, "--from", source(d, ws), "--lut", str(d / "k.db"), *extra]


def transfer_cases() -> list[CliCase]:
    g = "kernels transfer"
    quick = ("--budget", "1s", "--samples", "1", "--quick")
    return [
        C(g, "--from missing", _transfer(source=lambda d, ws: str(d / "no_such_folder"))),
        C(g, "--from a file", _transfer(source=lambda d, ws: put(d, "kp", "x"))),
        C(g, "--from garbage json", _transfer(source=lambda d, ws: str(Path(put(d, "kp/predictors.json",
                                                                                 RANDOM_BYTES)).parent))),
        C(g, "--samples 0", _transfer("--samples", "0")),
        C(g, "--samples 10**12", _transfer("--samples", str(10**12), "--budget", "1s", "--quick")),
        C(g, "--threads 100000", _transfer("--threads", "100000", *quick)),
        C(g, "--budget 'abc'", _transfer("--budget", "abc")),
        C(g, "--budget 'inf'", _transfer("--budget", "inf")),
        C(g, "unknown device", lambda d, ws: ["kernels", "transfer", "--device", "tpu:9", "--from", str(ws.kernels)]),
        C(g, "--lut a FIFO", lambda d, ws: ["kernels", "transfer", *DEV, "--from", str(ws.kernels), "--lut", fifo(d)]),
        C(g, "--lut garbage", lambda d, ws: ["kernels", "transfer", *DEV, "--from", str(ws.kernels), "--lut",
                                             put(d, "g.db", RANDOM_BYTES)]),
        C(g, "--out a file", lambda d, ws: _transfer(*quick, "--out", put(d, "f", "x"))(d, ws), timeout=90, slow=True),
        C(g, "--out a FIFO", lambda d, ws: _transfer(*quick, "--out", fifo(d))(d, ws), timeout=90, slow=True),
    ]


def kernels_cases() -> list[CliCase]:
    g = "kernels"
    build = [C(f"{g} build", f"--budget {b!r}", _kernels("build", "--budget", b))
             for b in ("abc", "0", "-5m", "nan", "inf", "1e400", "", "5x", "\u0665m")]
    return build + [
        C(f"{g} build", "--per-type 0", _kernels("build", "--per-type", "0")),
        C(f"{g} build", "--per-type 10**12", _kernels("build", "--per-type", str(10**12), "--budget", "1s")),
        C(f"{g} build", "--rounds -1", _kernels("build", "--rounds", "-1")),
        C(f"{g} build", "unknown device", lambda d, ws: ["kernels", "build", "--device", "tpu:9", "--lut",
                                                         str(d / "k.db")]),
        C(f"{g} build", "--lut a directory", lambda d, ws: ["kernels", "build", *DEV, "--lut", folder(d)]),
        C(f"{g} build", "--lut a FIFO", lambda d, ws: ["kernels", "build", *DEV, "--lut", fifo(d)]),
        C(f"{g} build", "--lut garbage", lambda d, ws: ["kernels", "build", *DEV, "--lut",
                                                        put(d, "g.db", RANDOM_BYTES)]),
        C(f"{g} build", "--lut /dev/full", lambda d, ws: ["kernels", "build", *DEV, "--lut", "/dev/full"]),
        C(f"{g} build", "--out a file", lambda d, ws: _kernels("build", "--budget", "1s", "--per-type", "1",
                                                               "--rounds", "0", "--quick", "--out",
                                                               put(d, "f", "x"))(d, ws), timeout=90, slow=True),
        C(f"{g} detect-fusion", "unknown device", lambda d, ws: ["kernels", "detect-fusion", "--device", "bogus"]),
        C(f"{g} detect-fusion", "--lut a directory", lambda d, ws: ["kernels", "detect-fusion", *DEV, "--lut",
                                                                    folder(d)]),
        C(f"{g} detect-fusion", "--lut a FIFO", lambda d, ws: ["kernels", "detect-fusion", *DEV, "--lut", fifo(d)]),
        C(f"{g} detect-fusion", "--lut garbage", lambda d, ws: ["kernels", "detect-fusion", *DEV, "--lut",
                                                                put(d, "g.db", RANDOM_BYTES)]),
        C(f"{g} calibrate", "--networks 1", _kernels("calibrate", "--networks", "1")),
        C(f"{g} calibrate", "--resolution 100000", lambda d, ws: _kernels(
            "calibrate", "--resolution", "100000", "--predictors", str(ws.kernels))(d, ws)),
        C(f"{g} calibrate", "--resolution 7", _kernels("calibrate", "--resolution", "7")),
        C(f"{g} calibrate", "--precision int4", _kernels("calibrate", "--precision", "int4")),
        C(f"{g} calibrate", "unknown space", lambda d, ws: ["kernels", "calibrate", *DEV, "--space", "nosuch",
                                                            "--predictors", str(ws.kernels)]),
        C(f"{g} calibrate", "--predictors missing", lambda d, ws: _kernels(
            "calibrate", "--predictors", str(d / "no_such_folder" / "kp"))(d, ws)),
        C(f"{g} calibrate", "--predictors garbage", lambda d, ws: [
            "kernels", "calibrate", *DEV, "--predictors", str(Path(put(d, "kp/predictors.json", "{")).parent)]),
    ]


# ------------------------------------------------------------------ the user's own files


def _users_folder(d: Path) -> Path:
    """A folder of the user's own files that latkit did not create (one is named like latkit's)."""
    mine = d / "mine"
    mine.mkdir(exist_ok=True)
    (mine / "thesis.tex").write_text("my thesis\n")
    (mine / "results.db").write_bytes(b"SQLite format 3\x00 my own results")
    (mine / "model.onnx").write_bytes(b"my own model")
    (mine / "sub").mkdir(exist_ok=True)
    (mine / "sub" / "notes.json").write_text("{}")
    return mine


def _still_there(folder: Path, ws: Workspace, res: Result):
    mine = folder / "mine"
    gone = [p for p in ("thesis.tex", "results.db", "model.onnx", "sub/notes.json") if not (mine / p).exists()]
    return (DATA_LOSS, f"deleted the user's {', '.join(gone)}") if gone else None


def cache_cases() -> list[CliCase]:
    g = "cache"

    def in_mine(var: str, *argv: str, expect: str = "ok") -> CliCase:
        return C(g, f"{' '.join(argv)} with {var} on the user's folder",
                 lambda d, ws: (_users_folder(d), list(argv))[1], expect=expect, check=_still_there,
                 env=lambda d: {var: str(d / "mine")})

    return [  # latkit cannot prove it made the folder: it refuses, and deletes nothing
        in_mine("LATKIT_CACHE", "cache", "clear", expect="error"),
        in_mine("LATKIT_CACHE", "cache", "clear", "models", "loopback", expect="error"),
        in_mine("LATKIT_LUT_DIR", "cache", "clear", "luts", "--yes", expect="error"),
        in_mine("LATKIT_CACHE", "cache", "--json"),
        C(g, "clear luts without --yes", lambda d, ws: ["cache", "clear", "luts"]),
        C(g, "clear an unknown cache", lambda d, ws: ["cache", "clear", "bogus"]),
        C(g, "LATKIT_CACHE is a file", lambda d, ws: ["cache", "clear"], env=lambda d: {
            "LATKIT_CACHE": put(d, "cachefile", "x")}),
        C(g, "LATKIT_CACHE is /", lambda d, ws: ["cache", "clear"], env=lambda d: {"LATKIT_CACHE": "/"},
          check=lambda f, ws, r: None if Path("/etc/hostname").exists() or not Path("/etc").exists() else
          (DATA_LOSS, "/etc/hostname went")),
        C(g, "LATKIT_LUT_DIR holds a control character", lambda d, ws: ["cache", "--json"], expect="ok",
          env=lambda d: {"LATKIT_LUT_DIR": str(d / "a\x1b[2Jb")}),
    ]


# ------------------------------------------------------------------ farm and train


def _farm(*argv: str, **kw) -> CliCase:
    name = " ".join(a for a in argv if a).replace("\n", "\\n")[:60]
    return C("farm", name, lambda d, ws: ["farm", *argv], needs_process=RAY,
             timeout=90, slow=True, **kw)


def farm_cases() -> list[CliCase]:
    prof = ("profile", "--space", "proxyless_mobile_w05", "-r", "32", "--devices", "adb*", "--lut")
    cases = [_farm("devices", "--address", a) for a in ("x", "127.0.0.1:", "127.0.0.1:abc", "[::1",
                                                        "127.0.0.1:1:2", " ", "http://127.0.0.1:6379")]
    cases += [_farm("devices", "--adb", a) for a in ("adb+tcp://127.0.0.1:0", "adb:SERIAL",
                                                     "adb+tcp://127.0.0.1:6555?threads=x", "adb+tcp://:6555",
                                                     "adb+tcp://127.0.0.1:6555\n")]
    cases += [
        C("farm", "profile unknown space", lambda d, ws: ["farm", "profile", "--space", "nosuch", "--devices", "x",
                                                          "--lut", str(d / "f.db")], needs_process=RAY, slow=True),
        C("farm", "profile --lut a directory", lambda d, ws: ["farm", *prof, folder(d)], needs_process=RAY,
          slow=True, timeout=90),
        C("farm", "profile --lut a FIFO", lambda d, ws: ["farm", *prof, fifo(d)], needs_process=RAY, slow=True,
          timeout=90),
        C("farm", "profile --lut garbage", lambda d, ws: ["farm", *prof, put(d, "g.db", RANDOM_BYTES)],
          needs_process=RAY, slow=True, timeout=90),
        C("farm", "profile --stand-in-model a FIFO", lambda d, ws: ["farm", *prof, str(d / "f.db"),
                                                                    "--stand-in-model", fifo(d)],
          needs_process=RAY, slow=True, timeout=90),
        C("farm", "profile --stand-in-model missing", lambda d, ws: ["farm", *prof, str(d / "f.db"),
                                                                     "--stand-in-model", str(d / "none")],
          needs_process=RAY, slow=True, timeout=90),
        C("farm", "profile --key missing", lambda d, ws: ["farm", *prof, str(d / "f.db"), "--key", str(d / "k")],
          needs_process=RAY, slow=True, timeout=90),
        C("farm", "profile --devices empty", lambda d, ws: ["farm", "profile", "--space", "proxyless_mobile_w05",
                                                            "--devices", "", "--lut", str(d / "f.db")],
          needs_process=RAY, slow=True, timeout=90),
        C("farm", "profile --precision int4", lambda d, ws: ["farm", *prof, str(d / "f.db"), "--precision", "int4"],
          needs_process=RAY, slow=True, timeout=90),
    ]
    return cases


def train_cases() -> list[CliCase]:
    g = "train"

    def tr(arch, *extra: str):
        return lambda d, ws: ["train", "--arch", arch(d, ws), "--out", str(d / "t"), *extra]

    arch = lambda d, ws: str(ws.arch_json)  # noqa: E731
    return [
        C(g, "--arch garbage", tr(lambda d, ws: put(d, "a.json", RANDOM_BYTES))),
        C(g, "--arch a FIFO", tr(lambda d, ws: fifo(d, "a.json"))),
        C(g, "--arch a directory", tr(lambda d, ws: folder(d, "a.json"))),
        C(g, "--arch /dev/zero", tr(lambda d, ws: "/dev/zero")),
        C(g, "--data bogus", tr(arch, "--data", "bogus")),
        C(g, "--data cifar10 missing", lambda d, ws: tr(arch, "--data", f"cifar10:{d / 'no_such_folder'}")(d, ws)),
        C(g, "--data folder a FIFO", lambda d, ws: ["train", "--arch", str(ws.arch_json), "--data",
                                                    f"folder:{fifo(d)}", "--out", str(d / "t")]),
        C(g, "--init bogus", tr(arch, "--init", "bogus")),
        C(g, "--init a FIFO", lambda d, ws: ["train", "--arch", str(ws.arch_json), "--init", fifo(d),
                                             "--out", str(d / "t")]),
        C(g, "--out a file", lambda d, ws: ["train", "--arch", str(ws.arch_json), "--out", put(d, "f", "x"),
                                            "--max-steps", "1", "--train-epochs", "1"], timeout=60),
        C(g, "--out /dev/full", lambda d, ws: ["train", "--arch", str(ws.arch_json), "--out", "/dev/full",
                                               "--max-steps", "1", "--train-epochs", "1"], timeout=60),
        C(g, "--seed text", tr(arch, "--seed", "x")),
    ]


def sample_cases() -> list[CliCase]:
    g = "predictor sample"

    def sample(*extra: str, out=lambda d, ws: str(d / "lat.csv")):
        return lambda d, ws: ["predictor", "sample", *DEV, "--space", "proxyless_mobile_w05", "-r", "32", "--quick",
                              "--out", out(d, ws), *extra]

    return [
        C(g, "--archs 0", sample("--archs", "0")),
        C(g, "--archs 10**12", sample("--archs", str(10**12))),
        C(g, "--archs unicode digits", sample("--archs", "٥")),
        C(g, "unknown space", lambda d, ws: ["predictor", "sample", *DEV, "--space", "nosuch", "--archs", "1",
                                             "--out", str(d / "lat.csv")]),
        C(g, "--resolution 100000", sample("--archs", "1", "--resolution", "100000")),
        C(g, "--classes -1", sample("--archs", "1", "--classes", "-1")),
        C(g, "--column with a newline", sample("--archs", "1", "--column", "a\nb")),
        C(g, "--out a FIFO", sample("--archs", "1", out=lambda d, ws: fifo(d, "lat.csv"))),
        C(g, "--out a directory", sample("--archs", "1", out=lambda d, ws: folder(d, "lat.csv"))),
        C(g, "--out garbage", sample("--archs", "1", out=lambda d, ws: put(d, "lat.csv", RANDOM_BYTES))),
        C(g, "--out under a file", sample("--archs", "1", out=lambda d, ws: str(Path(put(d, "f", "x")) / "lat.csv"))),
        C(g, "--from-csv missing", sample("--archs", "1", "--from-csv", "no_such.csv")),
        C(g, "--from-csv a FIFO", lambda d, ws: sample("--archs", "1", "--from-csv", fifo(d, "from.csv"))(d, ws)),
        C(g, "--from-csv of another space", lambda d, ws: sample("--archs", "1", "--from-csv", str(ws.csv))(d, ws)),
    ]


# ------------------------------------------------------------------ outputs that cannot be written


def output_cases() -> list[CliCase]:
    g = "output"
    arch = ("--arch",)
    cases = [
        C(g, "lut export -o a FIFO", lambda d, ws: ["lut", "export", str(ws.lut), "-o", fifo(d, "o.json")]),
        C(g, "lut export -o a directory", lambda d, ws: ["lut", "export", str(ws.lut), "-o", folder(d)]),
        C(g, "lut merge into a FIFO", lambda d, ws: ["lut", "merge", fifo(d, "o.db"), str(ws.lut)]),
        C(g, "lut import into a FIFO", lambda d, ws: ["lut", "import", fifo(d, "o.db"), str(ws.export_json)]),
        C(g, "profile --lut a FIFO", lambda d, ws: ["profile", *DEV, "--space", "proxyless_mobile", "-r", "32",
                                                    "--limit", "1", "--quick", "--lut", fifo(d, "o.db")]),
        C(g, "predictor fit --out a FIFO", lambda d, ws: ["predictor", "fit", "--csv", str(ws.csv), "--space",
                                                          "fbnet", "--target", "pixel3", "--predictor", "ridge",
                                                          "--k", "20", "--out", fifo(d)], timeout=60),
        C(g, "export --out a FIFO", lambda d, ws: ["export", *arch, str(ws.arch_json), "--format", "onnx",
                                                   "--random-weights", "--out", fifo(d)], timeout=60),
        C(g, "search --out a FIFO", lambda d, ws: ["search", "--space", "nasbench201", "--target-ms", "5",
                                                   "--out", fifo(d)], timeout=60),
        C(g, "kernels build --out a FIFO", lambda d, ws: ["kernels", "build", *DEV, "--lut", str(d / "k.db"),
                                                          "--budget", "1s", "--per-type", "1", "--rounds", "0",
                                                          "--quick", "--out", fifo(d)], timeout=90, slow=True),
        C(g, "predict --json with stdout on /dev/full", lambda d, ws: [
            "predict", onnx_file(d / "m.onnx"), *DEV, "--predictors", str(ws.kernels), "--json"],
          needs_process=OWN, stdout="/dev/full"),
    ]
    for argv in (["ops", "proxyless_mobile_w05", "--json"], ["spaces"], ["devices", "--json"], ["cache"],
                 ["lut", "show", "LUT", "--json"], ["lut", "export", "LUT"], ["--version"],
                 ["parse-benchmark", "BM"], ["predictor", "predict", "--predictor", "PRED", "--arch", "FBNET"]):
        cases.append(C(g, f"{' '.join(argv)} with stdout on /dev/full", _stdout_argv(argv), needs_process=OWN,
                       stdout="/dev/full"))
    for label, build in (
        ("lut export -o", lambda d, ws: ["lut", "export", str(ws.lut), "-o", str(d / "o.json")]),
        ("lut merge", lambda d, ws: ["lut", "merge", str(d / "o.db"), str(ws.lut)]),
        ("predictor fit --out", lambda d, ws: ["predictor", "fit", "--csv", str(ws.csv), "--space", "fbnet",
                                               "--target", "pixel3", "--predictor", "ridge", "--k", "20",
                                               "--out", str(d / "p")]),
        ("export --out", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format", "onnx",
                                        "--random-weights", "--out", str(d / "e")]),
        ("profile --lut", lambda d, ws: ["profile", *DEV, "--space", "proxyless_mobile", "-r", "32", "--limit",
                                         "2", "--quick", "--lut", str(d / "p.db")]),
    ):
        # profile and export find the limit only when they write, after work their progress lines showed
        cases.append(C(g, f"{label} past a 2 KiB file-size limit", build, needs_process=OWN, fsize=2048,
                       timeout=90, check=_no_debris, allow_progress=label.startswith(("profile", "export"))))
    return cases + _under_a_file_cases()


def _under_a_file_cases() -> list[CliCase]:
    """Outputs whose folder is a plain file: refused with one line, before any work where there is some."""
    def under(d: Path, name: str) -> str:
        return str(Path(put(d, "plain_file", "x")) / name)

    g = "output"
    fit = ["predictor", "fit", "--space", "fbnet", "--target", "pixel3", "--predictor", "ridge", "--k", "20"]
    return [
        C(g, "lut export -o under a file", lambda d, ws: ["lut", "export", str(ws.lut), "-o", under(d, "o.json")]),
        C(g, "lut merge into a LUT under a file", lambda d, ws: ["lut", "merge", under(d, "o.db"), str(ws.lut)]),
        C(g, "lut import into a LUT under a file", lambda d, ws: ["lut", "import", under(d, "o.db"),
                                                                  str(ws.export_json)]),
        C(g, "profile --lut under a file", lambda d, ws: ["profile", *DEV, "--space", "proxyless_mobile", "-r",
                                                          "32", "--limit", "1", "--quick", "--lut", under(d, "o.db")]),
        C(g, "predictor fit --out under a file", lambda d, ws: [*fit, "--csv", str(ws.csv), "--out", under(d, "p")],
          timeout=60),
        C(g, "export --out under a file", lambda d, ws: ["export", "--arch", str(ws.arch_json), "--format", "onnx",
                                                         "--random-weights", "--out", under(d, "e")], timeout=60),
        C(g, "search --out under a file", lambda d, ws: ["search", "--space", "nasbench201", "--target-ms", "5",
                                                         "--out", under(d, "s")], timeout=60),
        C(g, "kernels build --out under a file", lambda d, ws: [
            "kernels", "build", *DEV, "--lut", str(d / "k.db"), "--budget", "1s", "--per-type", "1", "--rounds",
            "0", "--quick", "--out", under(d, "kp")], timeout=90, slow=True),
        C(g, "kernels detect-fusion --lut under a file", lambda d, ws: [
            "kernels", "detect-fusion", *DEV, "--lut", under(d, "k.db")], timeout=90, slow=True),
        C(g, "train --out under a file", lambda d, ws: ["train", "--arch", str(ws.arch_json), "--out",
                                                        under(d, "t"), "--max-steps", "1", "--train-epochs", "1"],
          timeout=60),
        C(g, "run --out under a file", lambda d, ws: ["run", *DEV, "--space", "proxyless_mobile", "--target-ms",
                                                      "1", "--out", under(d, "r")], timeout=90, slow=True),
    ]


def _stdout_argv(argv: list[str]):
    def build(d: Path, ws: Workspace) -> list[str]:
        from rb_workspace import fbnet_arch

        names = {"LUT": str(ws.lut), "BM": str(ws.bm_output), "PRED": str(ws.predictor), "FBNET": fbnet_arch(ws)}
        return [names.get(a, a) for a in argv]

    return build


def _no_debris(folder: Path, ws: Workspace, res: Result):
    """A write stopped by the file-size limit leaves no half-written file behind."""
    left = [p.name for p in folder.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("."))]
    return (DEBRIS, f"left {left[:4]}") if left else None


def command_cases() -> list[CliCase]:
    """Every case of this module (the benchmark runs them all)."""
    return (predict_cases() + kernels_cases() + transfer_cases() + cache_cases() + farm_cases() + train_cases() + sample_cases()
            + output_cases())


# the subprocess cases the test suite keeps, one per kind: each costs a fresh interpreter
SUITE_PROCESS_CASES = ("farm: devices --address 127.0.0.1:abc", "output: spaces with stdout on /dev/full",
                       "output: lut export -o past a 2 KiB file-size limit")


def suite_cases() -> list[CliCase]:
    """The cases the test suite runs: those that run in-process, and one subprocess case per kind."""
    return [c for c in command_cases() if not c.needs_process or c.id in SUITE_PROCESS_CASES]


if __name__ == "__main__":  # python rb_commands.py [FILTER]: run the cases in subprocesses, print the failing ones
    import sys
    import tempfile
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from rb_cli import CLEAN, OK
    from rb_corpus import run_case
    from rb_workspace import build_workspace

    base = Path(tempfile.mkdtemp(prefix="rb-commands-"))
    ws = build_workspace(base / "ws")
    cases = [c for c in command_cases() if (sys.argv[1] if len(sys.argv) > 1 else "") in c.id]

    def one(item: tuple[int, CliCase]) -> tuple[str, str, str]:
        i, case = item
        verdict = run_case(case, base / f"{i:04d}", ws)
        print(f"{i} {case.id}: {verdict.kind}", file=sys.stderr, flush=True)
        return case.id, verdict.kind, verdict.detail

    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(one, enumerate(cases)))
    print(Counter(kind for _, kind, _ in rows))
    for rid, kind, detail in rows:
        if kind not in (CLEAN, OK):
            print(f"[{kind}] {rid} -- {detail}")
