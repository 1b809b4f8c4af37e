"""Absurd numbers and unusable paths at the command line: one error line, nothing written."""

from __future__ import annotations

import json

import pytest

from cli_checks import one_error_line, run
from latkit.cli import main


@pytest.mark.parametrize("target", ["1e308", "inf", "nan", "-3", "0"])
def test_search_refuses_absurd_targets(capsys, tmp_path, target):
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", target,
                       "--lut", str(tmp_path / "x.db"), "--out", str(tmp_path / "out"))
    one_error_line(code, err, "latency target", "--target-ms")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["1e308", "nan"])
def test_run_refuses_absurd_targets(capsys, tmp_path, target):
    code, _, err = run(capsys, "run", "--target-ms", target, "--out", str(tmp_path / "run"))
    one_error_line(code, err, "latency target")
    assert not (tmp_path / "run").exists()


def test_search_out_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", "20",
                       "--lut", str(tmp_path / "x.db"), "--out", str(blocker))
    one_error_line(code, err, str(blocker), "folder")
    assert blocker.read_text() == "keep me"


def test_search_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", "20",
                       "--lut", str(tmp_path / "x.db"), "--out", str(blocker / "sub"))
    one_error_line(code, err, "sub")


def test_run_out_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "run", "--target-ms", "20", "--out", str(blocker))
    one_error_line(code, err, str(blocker), "folder")
    assert blocker.read_text() == "keep me"


def test_run_out_read_only(capsys, tmp_path):
    # /proc refuses new files even to root
    code, _, err = run(capsys, "run", "--target-ms", "20", "--out", "/proc/latkit-out")
    one_error_line(code, err, "/proc/latkit-out")


def _netconfig_with(tmp_path, **conv):
    import json
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "data" / "luts" / "proxyless_mobile.config"
    cfg = json.loads(src.read_text())
    cfg["blocks"][2][next(k for k in ("mobile_inverted_conv", "conv") if cfg["blocks"][2].get(k))].update(conv)
    path = tmp_path / "net.config"
    path.write_text(json.dumps(cfg))
    return path


def test_netconfig_stride_zero(capsys, tmp_path):
    path = _netconfig_with(tmp_path, stride=0)
    code, _, err = run(capsys, "measure", "--arch", str(path))
    one_error_line(code, err, "stride", "blocks.2")


def test_binary_arch_file(capsys, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.5.0\xff\xfe\x00" * 50)
    code, _, err = run(capsys, "measure", "--space", "proxyless_mobile", "--arch", str(model))
    # a model file given as --arch: the line says to pass it as FILE
    one_error_line(code, err, str(model), "is an ONNX model file", f"latkit measure {model}")
    notes = tmp_path / "notes.bin"
    notes.write_bytes(b"\xff\xfe\x00 not text" * 50)
    code, _, err = run(capsys, "measure", "--space", "proxyless_mobile", "--arch", str(notes))
    one_error_line(code, err, str(notes), "not a text file")


def test_deeply_nested_arch(capsys, tmp_path):
    deep = tmp_path / "arch.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run(capsys, "measure", "--space", "proxyless_mobile", "--arch", str(deep))
    one_error_line(code, err, "nested too deeply")
    code, _, err = run(capsys, "measure", "--space", "proxyless_mobile", "--arch", "[" * 100_000)
    one_error_line(code, err, "nested too deeply")


def test_export_out_is_a_file(capsys, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text('{"space": "proxyless_mobile", "arch": ' + json.dumps(["3x3_MBConv3"] * 21) + "}")
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    code, _, err = run(capsys, "export", "--arch", str(arch), "--format", "onnx", "--out", str(blocker))
    one_error_line(code, err, str(blocker), "folder")
    assert blocker.read_text() == "keep me"


# ---- search / run / export / measure: bad inputs stop before any work (issue 17)

DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def fbnet_predictor(tmp_path_factory):
    """A ridge predictor fitted on 40 FBNet rows (its space: fbnet)."""
    src = DATA / "fbnet_latency_ms.csv"
    folder = tmp_path_factory.mktemp("pred")
    csv = folder / "lat.csv"
    csv.write_text("\n".join(src.read_text().splitlines()[:41]) + "\n")
    assert main(["predictor", "fit", "--csv", str(csv), "--space", "fbnet", "--target", "pixel3",
                 "--predictor", "ridge", "--out", str(folder / "p")]) == 0
    return folder / "p"


def test_search_predictor_of_another_space_names_both(capsys, tmp_path, fbnet_predictor):
    code, _, err = run(capsys, "search", "--space", "proxyless_mobile", "--target-ms", "5",
                       "--predictor", str(fbnet_predictor), "--out", str(tmp_path / "s"))
    one_error_line(code, err, "'fbnet'", "'proxyless_mobile'", "--space")
    assert "searching" not in err  # refused before the progress bar


def _search(tmp_path, *extra: str) -> list[str]:
    return ["search", "--space", "proxyless_mobile", "--target-ms", "5", "--lut", str(tmp_path / "x.db"),
            "--out", str(tmp_path / "s"), *extra]


def test_search_resume_without_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, *_search(tmp_path, "--resume"))
    one_error_line(code, err, "nothing to resume", "drop --resume")
    assert not (tmp_path / "s").exists()  # no empty --out folder left behind
    (tmp_path / "s").mkdir()
    code, _, err = run(capsys, *_search(tmp_path, "--resume"))
    one_error_line(code, err, "nothing to resume", "holds no search checkpoint")


@pytest.mark.parametrize("files, needle", [
    (("checkpoint.json", "checkpoint.safetensors"), "cannot read the search checkpoint"),
    (("checkpoint.json",), "incomplete"),
])
def test_search_resume_with_garbage_checkpoint(capsys, tmp_path, files, needle):
    (tmp_path / "s").mkdir()
    for name in files:
        (tmp_path / "s" / name).write_bytes(b"\x00\xffgarbage{" * 40)
    code, _, err = run(capsys, *_search(tmp_path, "--resume"))
    one_error_line(code, err, needle)


def test_search_resume_of_another_algorithm(capsys, tmp_path):
    import torch

    from latkit.search.supernet.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "s", {"x": torch.zeros(1)}, {"algorithm": "evolution", "epoch": 1})
    code, _, err = run(capsys, *_search(tmp_path, "--resume"))
    one_error_line(code, err, "evolution", "--algorithm evolution")


def test_search_resume_in_tabular_mode(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--space", "nasbench201", "--target-ms", "5", "--accuracy-table",
                       f"{DATA}/nasbench201_accuracy.csv:cifar10-val", "--latency-table",
                       f"{DATA}/nasbench201_latency_ms.csv:pixel3", "--out", str(tmp_path / "s"), "--resume")
    one_error_line(code, err, "tabular", "drop --resume")


@pytest.mark.slow
@pytest.mark.parametrize("value, needle", [("-1", "positive integer"), ("0", "positive integer"),
                                           ("33", "multiple of 8"), ("1000000000", "up to 4096")])
def test_resolution_checked_up_front(capsys, tmp_path, value, needle):
    code, _, err = run(capsys, *_search(tmp_path, "--resolution", value))
    one_error_line(code, err, needle)
    code, _, err = run(capsys, "run", "--target-ms", "1", "--resolution", value, "--out", str(tmp_path / "r"))
    one_error_line(code, err, needle)
    assert not (tmp_path / "r").exists()
    arch = tmp_path / "arch.json"
    arch.write_text('{"space": "proxyless_mobile", "arch": ' + json.dumps(["3x3_MBConv3"] * 21) + "}")
    code, _, err = run(capsys, "export", "--arch", str(arch), "--space", "proxyless_mobile", "--format", "onnx",
                       "--resolution", value, "--out", str(tmp_path / "e"))
    one_error_line(code, err, needle)


def test_export_unknown_space(capsys, tmp_path):
    code, _, err = run(capsys, "export", "--arch", json.dumps(["3x3_MBConv3"] * 21), "--space", "nosuch",
                       "--out", str(tmp_path / "e"))
    one_error_line(code, err, "unknown search space 'nosuch'", "proxyless_mobile")


@pytest.mark.parametrize("value", [str(-10**30), "-1", "0", "nan", "inf"])
def test_measure_max_seconds_checked_even_with_quick(capsys, value):
    code, _, err = run(capsys, "measure", "--space", "proxyless_mobile", "--arch", json.dumps(["3x3_MBConv3"] * 21),
                       "--quick", f"--max-seconds={value}")
    one_error_line(code, err, "--max-seconds", "positive")
