"""Dataset loaders: embedded digits, CIFAR-10 batches (restricted unpickler), image folders."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from latkit.core.errors import UsageError
from latkit.search.supernet.data import DataError, load_cifar10, load_data, load_digits, load_image_folder


def test_digits_resized_normalised_and_split():
    data = load_digits(resolution=32, valid_fraction=0.25, seed=3)
    assert data.x_train.shape[1:] == (3, 32, 32) and data.x_train.dtype == torch.float32
    assert len(data.y_train) + len(data.y_valid) == 1797
    assert len(data.y_valid) == round(1797 * 0.25) and data.n_classes == 10
    # per-channel standardised on the training split, channels replicated
    assert torch.allclose(data.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(data.x_train[:, 0], data.x_train[:, 2])
    again = load_digits(resolution=32, valid_fraction=0.25, seed=3)
    assert torch.equal(again.y_valid, data.y_valid)
    batches = data.batches("valid", 100, np.random.default_rng(0))
    assert sum(len(b[1]) for b in batches) == len(data.y_valid)


def _write_cifar(folder, n_per_batch=20, batches=2):
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels_all = []
    for b in range(1, batches + 1):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        labels_all += labels
        with open(folder / f"data_batch_{b}", "wb") as fh:  # the format's own encoding
            pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, fh)
    return labels_all


def test_cifar_batches(tmp_path):
    labels = _write_cifar(tmp_path / "cifar")
    data = load_cifar10(tmp_path / "cifar", resolution=32, valid_fraction=0.25, seed=0)
    assert len(data.y_train) + len(data.y_valid) == 40 and len(data.y_valid) == 10
    assert data.x_valid.shape[1:] == (3, 32, 32)
    assert sorted(torch.cat([data.y_train, data.y_valid]).tolist()) == sorted(labels)
    assert load_data(str(tmp_path / "cifar"), 32).provenance["dataset"] == "cifar10"
    with pytest.raises(DataError, match="no CIFAR-10 batches"):
        load_cifar10(tmp_path, 32)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_loader_refuses_globals(tmp_path, monkeypatch):
    folder = tmp_path / "evil"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"labels": [1], b"data": _Exploit()}, fh)
    with pytest.raises(DataError, match="refusing global"):
        load_cifar10(folder, 32)
    assert not (tmp_path / "pwned").exists()
    with open(folder / "data_batch_1", "wb") as fh:  # object arrays are refused too
        pickle.dump({b"labels": [1], b"data": np.array([None] * 3072, dtype=object)[None]}, fh)
    with pytest.raises(DataError, match="object array"):
        load_cifar10(folder, 32)


def test_image_folder(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            image.new("RGB", (12, 10), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    data = load_image_folder(tmp_path / "imgs", resolution=16, valid_fraction=0.2, seed=0)
    assert data.n_classes == 2 and data.x_train.shape[1:] == (3, 16, 16)
    assert len(data.y_train) == 8 and data.provenance["classes"] == ["cat", "dog"]
    # red images differ from blue ones in the red channel, whatever the normalisation
    x = torch.cat([data.x_train, data.x_valid])
    y = torch.cat([data.y_train, data.y_valid])
    assert float(x[y == 0, 0].mean()) > float(x[y == 1, 0].mean())
    assert load_data(f"folder:{tmp_path / 'imgs'}", 16).n_classes == 2
    with pytest.raises(DataError, match="no class folders"):
        load_image_folder(tmp_path / "missing", 16)


def test_unknown_spec():
    with pytest.raises(UsageError, match="unknown dataset"):
        load_data("imagenet-please", 32)


def _write_batch(folder, payload):
    folder.mkdir(exist_ok=True)
    with open(folder / "data_batch_1", "wb") as fh:  # the format's own encoding
        pickle.dump(payload, fh)
    return folder


def _pixels(n):
    return np.zeros((n, 3072), dtype=np.uint8)


@pytest.mark.parametrize(
    "payload, match",
    [({b"labels": ["cat", "dog"], b"data": _pixels(2)}, "label 0 is 'cat'"),
     ({b"labels": [1, 10], b"data": _pixels(2)}, "label 1 is 10"),
     ({b"labels": [1, -1], b"data": _pixels(2)}, "label 1 is -1"),
     ({b"labels": [1, True], b"data": _pixels(2)}, "label 1 is True"),
     ({b"labels": [1.5, 2], b"data": _pixels(2)}, "label 0 is 1.5"),
     ({b"labels": [1], b"data": _pixels(2)}, "list of 2 integers"),
     ({b"labels": "01", b"data": _pixels(2)}, "list of 2 integers"),
     ({b"labels": [1, 2], b"data": np.zeros((2, 3072), dtype=np.float32)}, "float32 array"),
     ({b"labels": [1, 2], b"data": np.zeros((2, 100), dtype=np.uint8)}, r"shape \[2, 100\]"),
     ({b"labels": [], b"data": _pixels(0)}, "shape"),
     ({b"labels": [1], b"data": [[0] * 3072]}, "data is list"),
     ({b"data": _pixels(1)}, "no data/labels"),
     ([1, 2, 3], "no data/labels")],
)
def test_bad_cifar_batches(tmp_path, payload, match):
    folder = _write_batch(tmp_path / "bad", payload)
    with pytest.raises(DataError, match=match) as info:
        load_cifar10(folder, 32)
    assert "\n" not in str(info.value)


def test_cifar_list_bomb_refused_before_expanding(tmp_path):
    row = [0] * 3072
    # a few MB of pickle (memo references to one row) that np.asarray would expand to ~6 GB
    folder = _write_batch(tmp_path / "bomb", {b"labels": [0] * 2_000_000, b"data": [row] * 2_000_000})
    assert (folder / "data_batch_1").stat().st_size < 16 << 20
    with pytest.raises(DataError, match="data is list"):
        load_cifar10(folder, 32)


def test_cifar_oversized_and_truncated_files(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "data_batch_1", "wb") as fh:
        fh.truncate(300 << 20)  # sparse: no disk used
    with pytest.raises(DataError, match="larger than any CIFAR-10 batch"):
        load_cifar10(folder, 32)
    good = pickle.dumps({b"labels": [1], b"data": _pixels(1)})
    (folder / "data_batch_1").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot read CIFAR batch"):
        load_cifar10(folder, 32)


def test_unreadable_image_in_folder(tmp_path):
    image = pytest.importorskip("PIL.Image")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "cat" / "0.png")
    (tmp_path / "imgs" / "cat" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="1.png"):
        load_image_folder(tmp_path / "imgs", 16)
