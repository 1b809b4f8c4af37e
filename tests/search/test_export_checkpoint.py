"""From a search to a deployable file: export from a search checkpoint, `latkit train`, --random-weights.

Real files throughout: a supernet checkpoint written by the search's own
``save_checkpoint`` (keys as ProxylessGradSearch.state() names them), the CLI
run in-process, the ONNX file run in ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_checks import one_error_line, run
from deploy_helpers import ARCH, CLASSES, RESOLUTION, SPACE
from latkit.profiler.spaces import get_space
from latkit.search.supernet.checkpoint import save_checkpoint
from latkit.search.supernet.supernet import Supernet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Supernet]:
    """A search folder: arch.json beside a checkpoint of a supernet with non-default weights and BN statistics."""
    folder = tmp_path_factory.mktemp("search")
    space = get_space(SPACE)
    net = Supernet(space, CLASSES, RESOLUTION, seed=0)
    arch = space.parse_arch(json.dumps(ARCH))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        net.train()
        for _ in range(3):  # moves the path's BN statistics off identity
            net(torch.randn(8, 3, RESOLUTION, RESOLUTION, generator=gen), arch)
    net.eval()
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"alpha.{c}": torch.zeros(len(ch.options)) for c, ch in enumerate(space.choices())})
    save_checkpoint(folder, tensors, {"algorithm": "proxyless-grad", "epoch": 1})
    (folder / "arch.json").write_text(json.dumps({"space": SPACE, "arch": ARCH, "resolution": RESOLUTION,
                                                  "target_ms": 2.0, "latency_ms": 1.5}))  # fmt: skip
    return folder, net


def _onnx_outputs(path: str, xs: list[torch.Tensor]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] for x in xs]


def _inputs(n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(77)
    return [torch.randn(1, 3, RESOLUTION, RESOLUTION, generator=gen) for _ in range(n)]


def test_export_from_search_checkpoint_matches_the_supernet_path(capsys, searched, tmp_path: Path) -> None:
    folder, net = searched
    code, out, err = run(capsys, "export", "--arch", folder / "arch.json", "--weights",
                         folder / "checkpoint.safetensors", "--format", "onnx", "--out", tmp_path / "e", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["classes"] == CLASSES
    (onnx_file,) = report["files"]
    arch = get_space(SPACE).parse_arch(json.dumps(ARCH))
    for x, got in zip(_inputs(), _onnx_outputs(onnx_file["path"], _inputs())):
        with torch.no_grad():
            want = net(x, arch).numpy()
        assert got.shape == (1, CLASSES)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    weights = json.loads(Path(onnx_file["sidecar"]).read_text())["weights"]
    assert weights["source"] == "search-checkpoint" and weights["trained"] is True
    # the search folder itself is taken too
    code, out, err = run(capsys, "export", "--arch", folder / "arch.json", "--weights", folder,
                         "--format", "onnx", "--out", tmp_path / "f", "--json")
    assert code == 0, err
    again = _onnx_outputs(json.loads(out)["files"][0]["path"], _inputs(1))[0]
    np.testing.assert_array_equal(again, _onnx_outputs(onnx_file["path"], _inputs(1))[0])


def test_checkpoint_of_another_space_is_one_error_line(capsys, searched, tmp_path: Path) -> None:
    folder, _ = searched
    other = tmp_path / "arch.json"
    other.write_text(json.dumps({"space": "proxyless_mobile", "arch": ARCH, "resolution": RESOLUTION}))
    code, _, err = run(capsys, "export", "--arch", other, "--weights", folder / "checkpoint.safetensors",
                       "--format", "onnx", "--out", tmp_path / "e")
    one_error_line(code, err, "search checkpoint has no weights for layer", "another space")
    assert not list((tmp_path / "e").glob("*.onnx"))


def test_export_without_weights_is_refused(capsys, searched, tmp_path: Path) -> None:
    folder, _ = searched
    code, out, err = run(capsys, "export", "--arch", folder / "arch.json", "--format", "onnx", "--out", tmp_path / "e")
    line = one_error_line(code, err, "no --weights given", "--random-weights", "checkpoint.safetensors")
    assert str(folder / "checkpoint.safetensors") in line  # points at the search's own weights
    assert not list((tmp_path / "e").glob("*.onnx")) and out == ""


def test_random_weights_are_marked(capsys, searched, tmp_path: Path) -> None:
    folder, _ = searched
    arch = tmp_path / "arch.json"  # a run's arch.json records the dataset's classes
    arch.write_text(json.dumps({"space": SPACE, "arch": ARCH, "resolution": RESOLUTION, "classes": CLASSES}))
    code, out, err = run(capsys, "export", "--arch", arch, "--format", "onnx", "--random-weights",
                         "--out", tmp_path / "e")
    assert code == 0, err
    assert "RANDOM" in err
    sidecar = json.loads((tmp_path / "e" / "model.onnx.json").read_text())
    assert sidecar["weights"] == {"source": "random", "trained": False, "seed": 0}
    assert sidecar["architecture"]["classes"] == CLASSES  # not the space's 1000
    assert json.loads((tmp_path / "e" / "export.json").read_text())["weights"] == "random"


def test_train_writes_weights_and_sidecar_that_export_takes(capsys, searched, tmp_path: Path) -> None:
    from latkit.profiler.build import build_network
    from latkit.deploy.export import read_arch, standalone_module

    folder, _ = searched
    code, out, err = run(capsys, "train", "--arch", folder / "arch.json", "--data", "digits", "--train-epochs", "2",
                         "--max-steps", "3", "--out", tmp_path / "t", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["steps"] == 6 and result["classes"] == CLASSES and result["resolution"] == RESOLUTION
    assert result["init"].startswith("supernet ")  # started from the checkpoint beside arch.json
    sidecar = json.loads((tmp_path / "t" / "weights.json").read_text())
    assert sidecar["schema"] == "latkit.trained" and sidecar["dataset"]["spec"] == "digits"
    assert sidecar["steps"] == 6 and sidecar["classes"] == CLASSES and sidecar["resolution"] == RESOLUTION
    assert sidecar["accuracy"]["top1_pct"] == pytest.approx(result["accuracy_pct"])
    assert 0 <= sidecar["accuracy"]["top1_pct"] <= 100 and sidecar["accuracy"]["n_images"] > 0
    assert sidecar["architecture"]["arch"] == ARCH
    weights = tmp_path / "t" / "weights.safetensors"
    module, network = standalone_module(read_arch(folder / "arch.json").network, weights)
    fresh = build_network(network, seed=0).eval()
    with torch.no_grad():
        x = _inputs(1)[0]
        assert not torch.allclose(module(x), fresh(x))  # trained, not a fresh build
    code, out, err = run(capsys, "export", "--arch", folder / "arch.json", "--weights", weights, "--format", "onnx",
                         "--out", tmp_path / "e", "--json")
    assert code == 0, err
    got = _onnx_outputs(json.loads(out)["files"][0]["path"], [x])[0]
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_train_bad_init_is_one_error_line(capsys, searched, tmp_path: Path) -> None:
    folder, _ = searched
    code, _, err = run(capsys, "train", "--arch", folder / "arch.json", "--init", tmp_path / "none",
                       "--out", tmp_path / "t")
    one_error_line(code, err, "no search checkpoint at")
    assert not (tmp_path / "t" / "weights.safetensors").exists()
