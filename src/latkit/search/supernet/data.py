"""Datasets for supernet search: an embedded default, CIFAR-10 batches, image folders.

The default, ``digits``, is scikit-learn's bundled handwritten digits (1797 8x8
grayscale images, 10 classes), upsampled to the search resolution and
replicated to 3 channels. It needs no download and makes a search run end to
end in minutes on a CPU; it demonstrates the pipeline, it says nothing about
ImageNet accuracy.

Every loader returns a :class:`SearchData`: a training split for the weights, a
held-out split for the architecture parameters and for accuracy evaluation,
both NCHW float32 tensors normalised per channel with the training statistics.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from latkit.core.files import one_line
from latkit.core.errors import MissingExtraError, UsageError

CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_CLASSES = 10
CIFAR_PIXELS = 3 * 32 * 32
MAX_BATCH_BYTES = 256 << 20  # a real batch is 31 MB
MAX_BATCH_IMAGES = 60_000  # all of CIFAR-10 in one file
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


class DataError(UsageError):
    """A dataset that cannot be found or read."""


DIGITS_CLASSES = [str(d) for d in range(10)]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Normalization(TypedDict):
    """How images were normalised for training, so an app can feed the trained network the same way.

    Every loader scales pixels to ``pixel_range`` (8-bit images: value / 255; the
    digits: value / 16), resizes bilinearly to the resolution, then computes each
    channel's mean and standard deviation over the training split and feeds the
    network ``(x - mean[c]) / std[c]``.
    """

    mean: list[float]  # per channel (RGB order), over the training split
    std: list[float]
    pixel_range: list[float]  # [0.0, 1.0]: the scale x is in before normalising
    formula: str


class DataProvenance(TypedDict, total=False):
    """Where a dataset came from and how it was split (recorded in arch.json and weights.json)."""

    dataset: str  # "digits" | "cifar10" | "image_folder"
    source: str  # the folder, or the loader of the embedded set
    files: list[str]  # CIFAR-10 batches read
    classes: list[str]  # the class names, by label index
    normalization: Normalization
    resolution: int
    valid_fraction: float
    seed: int
    n_train: int
    n_valid: int


@dataclass
class SearchData:
    """Training and held-out splits (NCHW float32 images, int64 labels)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    n_classes: int
    provenance: DataProvenance = field(default_factory=lambda: DataProvenance())

    @property
    def resolution(self) -> int:
        """Input resolution (square)."""
        return int(self.x_train.shape[-1])

    def batches(
        self, split: str, batch_size: int, rng: np.random.Generator
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass over ``split`` ("train" or "valid") in batches."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_valid, self.y_valid)
        order = torch.as_tensor(rng.permutation(len(y)))
        return [
            (x[order[i : i + batch_size]], y[order[i : i + batch_size]])
            for i in range(0, len(y), batch_size)
        ]


def _prepare(
    images: np.ndarray,
    labels: np.ndarray,
    resolution: int,
    valid_fraction: float,
    seed: int,
    provenance: DataProvenance,
    max_images: int | None = None,
    normalize: bool = True,
) -> SearchData:
    """NHWC or NCHW images in [0, 1] -> resized, split SearchData, normalised per channel with the training
    split's statistics (recorded in the provenance either way; ``normalize=False`` keeps the pixels as they are)."""
    if not 0 < valid_fraction < 1:
        raise UsageError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    if max_images is not None:
        order = order[:max_images]
    x = torch.as_tensor(np.ascontiguousarray(images[order]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels)[order], dtype=torch.int64)
    if x.shape[1] != 3 and x.shape[-1] in (1, 3):  # NHWC -> NCHW
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    n_valid = max(1, int(round(len(y) * valid_fraction)))
    x_tr, x_va = x[n_valid:].contiguous(), x[:n_valid].contiguous()
    mean = x_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = x_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    n_classes = int(y.max()) + 1
    norm: Normalization = {"mean": [float(v) for v in mean.flatten()], "std": [float(v) for v in std.flatten()],
                           "pixel_range": [0.0, 1.0], "formula": "(x - mean[c]) / std[c]"}  # fmt: skip
    prov: DataProvenance = {**provenance, "resolution": resolution, "valid_fraction": valid_fraction,
            "seed": seed, "n_train": len(y) - n_valid, "n_valid": n_valid, "normalization": norm}  # fmt: skip
    if not normalize:
        return SearchData(x_tr, y[n_valid:], x_va, y[:n_valid], n_classes, prov)
    return SearchData((x_tr - mean) / std, y[n_valid:], (x_va - mean) / std, y[:n_valid],
                      n_classes, prov)  # fmt: skip


def load_digits(resolution: int = 32, valid_fraction: float = 0.3, seed: int = 0, normalize: bool = True) -> SearchData:
    """scikit-learn's embedded 8x8 digits, upsampled to ``resolution`` (no download).

    Demonstrates the search pipeline; its accuracies are not ImageNet accuracies.

    Raises:
        MissingExtraError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as exc:
        raise MissingExtraError("the embedded digits dataset", "predictors", exc) from None
    bunch = sk_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]  # N,1,8,8 in [0, 1]
    return _prepare(images, bunch.target, resolution, valid_fraction, seed,
                    {"dataset": "digits", "source": "sklearn.datasets.load_digits", "classes": DIGITS_CLASSES},
                    normalize=normalize)  # fmt: skip


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` refuses every global but plain numpy arrays.

    CIFAR-10's python batches are pickled dicts of bytes, lists and one uint8
    numpy array. No callable named in the file is ever looked up: the only
    names resolved are numpy's array-reconstruction entry points, mapped to
    local functions that create an empty plain ``ndarray`` (never a subclass)
    or a dtype without Python objects; the array's bytes are then filled in by
    ``ndarray.__setstate__``. Anything else raises ``UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) in _ALLOWED_NUMPY:
            return _ALLOWED_NUMPY[(module, name)]
        raise pickle.UnpicklingError(f"refusing global {module}.{name} in a data file")


def _safe_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays may be unpickled")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _safe_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}")
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object array in a data file")
    return dtype


_ALLOWED_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: ``(images uint8 [N, 3, 32, 32], labels [N])``.

    The format is a pickle. It is read with a restricted unpickler whose
    ``find_class`` raises for every global except numpy's plain-array
    reconstruction (mapped to local, side-effect-free functions), so a crafted
    file cannot run code; object arrays are refused.

    Raises:
        DataError: unreadable file or not a CIFAR batch.
    """
    try:
        size = Path(path).stat().st_size
        if size > MAX_BATCH_BYTES:
            raise DataError(f"{path} is {size >> 20} MiB, larger than any CIFAR-10 batch "
                            f"({MAX_BATCH_BYTES >> 20} MiB at most); give the python batches")
        raw = Path(path).read_bytes()
        batch = _NoGlobalsUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError, RecursionError, MemoryError) as exc:  # fmt: skip
        raise DataError(f"cannot read CIFAR batch {path}: {one_line(exc)}; "
                        "give the batches of cifar-10-python.tar.gz") from exc
    return _check_cifar_batch(batch, path)


def _check_cifar_batch(batch: Any, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Validate a loaded batch's keys, types, shapes and labels before converting anything.

    ``data`` must already be a uint8 array: a list is refused rather than
    converted, since a small pickle can hold a list of millions of references
    to one row that would expand into gigabytes.
    """
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 python batch (no data/labels)")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = f"a {data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: data is {kind}, expected a uint8 array [N, {CIFAR_PIXELS}]")
    if data.ndim != 2 or data.shape[1] != CIFAR_PIXELS or not 1 <= data.shape[0] <= MAX_BATCH_IMAGES:
        raise DataError(f"{path}: data has shape {list(data.shape)}, expected [N, {CIFAR_PIXELS}] "
                        f"with 1 <= N <= {MAX_BATCH_IMAGES}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist() if labels.ndim == 1 and labels.dtype.kind in "iu" else None
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"{path}: labels must be a list of {len(data)} integers (one per image)")
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < CIFAR_CLASSES:
            raise DataError(f"{path}: label {i} is {label!r}; CIFAR-10 labels are integers 0..{CIFAR_CLASSES - 1}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load_cifar10(folder: str | Path, resolution: int = 32, valid_fraction: float = 0.2, seed: int = 0,
                 max_images: int | None = None, normalize: bool = True) -> SearchData:  # fmt: skip
    """The CIFAR-10 python batches in ``folder`` (data_batch_1..5, test_batch).

    The training batches present are used (the test batch is left out of the
    search); a fraction of them is held out for architecture updates.

    Raises:
        DataError: no batch files in ``folder``.
    """
    root = Path(folder)
    files = [root / f for f in CIFAR_FILES[:5] if (root / f).is_file()]
    if not files:
        raise DataError(
            f"no CIFAR-10 batches (data_batch_1..5) in {root}; download and extract "
            "cifar-10-python.tar.gz there"
        )
    parts = [read_cifar_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    labels = np.concatenate([p[1] for p in parts])
    return _prepare(images, labels, resolution, valid_fraction, seed,
                    {"dataset": "cifar10", "source": str(root), "files": [f.name for f in files],
                     "classes": CIFAR_NAMES}, max_images, normalize)  # fmt: skip


def load_image_folder(folder: str | Path, resolution: int = 32, valid_fraction: float = 0.2, seed: int = 0,
                      max_images: int | None = None, normalize: bool = True) -> SearchData:  # fmt: skip
    """An ImageFolder tree: ``folder/<class name>/<image>`` (classes sorted by name).

    Raises:
        MissingExtraError: Pillow is not installed.
        DataError: no class folders or no images.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError("reading an image folder (Pillow)", "search", exc) from None
    root = Path(folder)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise DataError(f"no class folders in {root}; expected {root}/<class>/<image files>")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                    images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(f"cannot read image {path}: {one_line(exc)}; remove it or fix it") from exc
            labels.append(label)
    if not images:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    prov: DataProvenance = {"dataset": "image_folder", "source": str(root), "classes": classes}
    return _prepare(np.stack(images), np.asarray(labels), resolution, valid_fraction, seed, prov,
                    max_images, normalize)  # fmt: skip


KNOWN_CLASSES = {"digits": 10, "cifar10": 10}


def data_classes(spec: str) -> int:
    """How many classes the dataset ``spec`` (as :func:`load_data` takes it) has: the deployed classifier's outputs.

    Raises:
        DataError: an unknown form or an unreadable dataset.
    """
    kind = spec.partition(":")[0]
    if kind in KNOWN_CLASSES and (spec == kind or ":" in spec):
        return KNOWN_CLASSES[kind]
    return load_data(spec, 8, max_images=4096).n_classes


def load_data(spec: str, resolution: int, seed: int = 0, max_images: int | None = None,
              normalize: bool = True) -> SearchData:  # fmt: skip
    """The dataset named by ``spec``: ``digits``, ``cifar10:PATH``, ``folder:PATH`` or a path.

    A bare path is read as CIFAR-10 batches when it holds ``data_batch_1``, else
    as an image folder. ``normalize=False`` gives the same split with the pixels
    as an app reads them (in [0, 1]); the statistics are in the provenance either way.

    Raises:
        DataError: an unknown form or an unreadable dataset.
    """
    if spec == "digits":
        return load_digits(resolution, seed=seed, normalize=normalize)
    kind, sep, path = spec.partition(":")
    if sep and kind == "cifar10":
        return load_cifar10(path, resolution, seed=seed, max_images=max_images, normalize=normalize)
    if sep and kind == "folder":
        return load_image_folder(path, resolution, seed=seed, max_images=max_images, normalize=normalize)
    root = Path(spec)
    if (root / "data_batch_1").is_file():
        return load_cifar10(root, resolution, seed=seed, max_images=max_images, normalize=normalize)
    if root.is_dir():
        return load_image_folder(root, resolution, seed=seed, max_images=max_images, normalize=normalize)
    raise DataError(f"unknown dataset {spec!r}; use digits, cifar10:PATH or folder:PATH")
