"""Train a searched architecture on its own and save its weights for export (``latkit train``).

:func:`train_arch` reads an ``arch.json``, builds the architecture as a standalone
network (optionally starting from the supernet weights of its search checkpoint),
trains it with :func:`latkit.search.supernet.train.train_network` and writes
``weights.safetensors`` (the naming :func:`latkit.deploy.export.export_arch` reads)
with a ``weights.json`` sidecar (schema ``latkit.trained``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import nn

from latkit.core.reprs import short_repr
from latkit._version import __version__
from latkit.core.errors import StoreError, UsageError
from latkit.core.files import check_output_dir, file_sha256, write_json
from latkit.profiler.build import build_network
from latkit.profiler.export import network_key
from latkit.profiler.spaces.base import Network, SearchSpace, classes_of, get_space, with_classes
from latkit.search.supernet.data import SearchData, load_data
from latkit.search.supernet.supernet import reset_bn
from latkit.search.supernet.train import accuracy_pct, train_network
from latkit.deploy.export import ArchFile, read_arch
from latkit.deploy.export_weights import (
    CHECKPOINT_FILE,
    TRAINED_FILE,
    is_search_checkpoint,
    read_weights,
    save_weights,
    supernet_path_state,
)

TRAINED_SCHEMA = "latkit.trained"
TRAINED_SCHEMA_VERSION = 1


class TrainedSidecar(TypedDict):
    """``weights.json`` (schema ``latkit.trained``): what the weights are and how they were trained."""

    schema: str
    schema_version: int
    latkit_version: str
    weights: dict[str, str]  # file, sha256
    architecture: dict[str, object]  # space, arch, network_key, arch_file, arch_sha256
    dataset: dict[str, object]  # spec, provenance
    classes: int
    resolution: int
    accuracy: dict[str, object]  # top1_pct, split, n_images
    epochs: int
    steps: int
    init: str
    seed: int
    final_loss: float | None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_arch` wrote: the weights, their sidecar, and the figures in it."""

    weights_path: Path
    sidecar_path: Path
    accuracy_pct: float
    steps: int
    epochs: int
    classes: int
    resolution: int
    dataset: str
    init: str

    def __repr__(self) -> str:
        return short_repr(self, 'accuracy_pct', 'steps', 'classes', 'resolution', 'weights_path')

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``latkit train --json``): the fields by name, paths as text."""
        d = asdict(self)
        d.update(weights_path=str(self.weights_path), sidecar_path=str(self.sidecar_path))
        return d


def train_arch(
    arch: str | Path,
    data: str = "digits",
    out_dir: str | Path = "train",
    *,
    space: SearchSpace | str | None = None,
    resolution: int | None = None,
    epochs: int = 3,
    max_steps: int | None = None,
    init: str | Path = "auto",
    seed: int = 0,
    threads: int | None = 1,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> TrainResult:
    """Train a searched architecture on its own, as ``latkit run`` does, and save it for export.

    Writes ``out_dir/weights.safetensors`` (the standalone naming that
    :func:`latkit.deploy.export.export_arch` reads) and ``out_dir/weights.json``
    (schema ``latkit.trained``: architecture, dataset, classes, resolution,
    held-out accuracy, steps, where the weights started), each atomically.

    Args:
        arch: an arch.json (``latkit search`` / ``latkit run``) or another architecture form.
        data: ``digits``, ``cifar10:PATH`` or ``folder:PATH``.
        out_dir: the folder to write (created).
        space: the search space when ``arch`` does not name it.
        resolution: input resolution (default: the arch's own).
        epochs: passes over the training split.
        max_steps: cap on SGD steps per epoch (None: the whole split).
        init: ``auto`` starts from the supernet weights of the search checkpoint
            beside an arch.json when there is one (as ``latkit run`` does), else
            from scratch; ``scratch``; or a search checkpoint (file or folder).
        seed: weight and batch-order seed.
        threads: torch intra-op threads (None leaves torch's setting).
        on_progress: called with ``(0, epochs, what)`` once the arguments are
            checked and the data loaded, then ``(epoch, epochs, message)`` after each epoch.

    Raises:
        UsageError / ArchError: bad arguments or architecture.
        StoreError: an unreadable or mismatched checkpoint, an unwritable folder.
    """
    if epochs < 1 or (max_steps is not None and max_steps < 1):
        raise UsageError(f"epochs and max_steps must be at least 1, got {epochs} and {max_steps}")
    info = read_arch(arch, get_space(space) if isinstance(space, str) else space, resolution)
    start = _init_source(init, arch)
    out = check_output_dir(out_dir, "--out folder")
    if threads is not None:
        torch.set_num_threads(threads)
    ds = load_data(data, info.resolution, seed=seed)
    if on_progress is not None:  # announced with its total once the arguments and the data hold
        on_progress(0, epochs, f"{epochs} epoch(s) on {data}")
    module, network, init_text = _initial_module(info.network, ds.n_classes, start, seed)
    losses = _train_epochs(module, ds, epochs, max_steps, seed, on_progress)
    module.eval()
    acc = accuracy_pct(module, ds.x_valid, ds.y_valid)
    return _save_trained(module, out, info, network, ds, data, acc, losses, epochs, init_text, seed)


def _train_epochs(module: nn.Module, ds: SearchData, epochs: int, max_steps: int | None, seed: int,
                  on_progress: Callable[[int, int, str], None] | None) -> list[float]:  # fmt: skip
    """Train ``module`` for ``epochs`` passes (each its own batch order), reporting each; the step losses."""
    losses: list[float] = []
    for epoch in range(epochs):
        losses += train_network(module, ds, epochs=1, seed=seed + epoch, max_steps=max_steps)
        if on_progress is not None:
            on_progress(epoch + 1, epochs, f"epoch {epoch + 1}: loss {np.mean(losses[-10:]):.3f}")
    return losses


def _initial_module(space_network: Network, classes: int, start: Path | None,
                    seed: int) -> tuple[nn.Module, Network, str]:  # fmt: skip
    """The module to train (identity BN, the supernet's weights where ``start`` gives them), its network, its origin."""
    network = with_classes(space_network, classes)
    module = build_network(network, seed=seed)
    reset_bn(module)
    return module, network, "scratch" if start is None else _adopt(module, start, space_network)


def _init_source(init: str | Path, arch: str | Path) -> Path | None:
    """The search checkpoint to start from (None: from scratch)."""
    if str(init) == "scratch":
        return None
    if str(init) == "auto":
        try:  # only beside an arch.json file (an inline architecture has no folder)
            beside = Path(arch).expanduser().parent / CHECKPOINT_FILE
            return beside if Path(arch).expanduser().is_file() and beside.is_file() else None
        except (OSError, ValueError):
            return None
    path = Path(init).expanduser()
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    if not path.is_file():
        raise UsageError(f"no search checkpoint at {path}; give --init auto, scratch, or a checkpoint.safetensors")
    return path


def _adopt(module: nn.Module, checkpoint: Path, space_network: Network) -> str:
    """Load the supernet weights of the path into ``module``; a description of what was taken."""
    tensors, _ = read_weights(checkpoint)
    if not is_search_checkpoint(tensors.keys()):
        raise StoreError(f"{checkpoint} is not a search checkpoint (no supernet weights); give the "
                         "checkpoint.safetensors that latkit search wrote, or --init scratch")
    state = supernet_path_state(tensors, space_network)
    own = module.state_dict()
    picked = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    module.load_state_dict(picked, strict=False)
    return f"supernet {checkpoint} ({len(picked)}/{len(own)} tensors)"


def _save_trained(module: nn.Module, out: Path, info: ArchFile, network: Network, ds: SearchData, data: str,
                  acc: float, losses: list[float], epochs: int, init: str, seed: int) -> TrainResult:  # fmt: skip
    """Write the weights and their sidecar (each atomically); the result."""
    classes = classes_of(network)
    weights = save_weights(module, out / TRAINED_FILE, network,
                           {"dataset": data, "epochs": str(epochs), "steps": str(len(losses)),
                            "accuracy_pct": f"{acc:.2f}", "trained_by": "latkit train"})  # fmt: skip
    sidecar: TrainedSidecar = {
        "schema": TRAINED_SCHEMA, "schema_version": TRAINED_SCHEMA_VERSION, "latkit_version": __version__,
        "weights": {"file": weights.name, "sha256": file_sha256(weights)},
        "architecture": {"space": info.space, "arch": info.arch, "network_key": network_key(network),
                         "arch_file": info.source, "arch_sha256": info.sha256},
        "dataset": {"spec": data, "provenance": ds.provenance}, "classes": classes,
        "resolution": info.resolution,
        "accuracy": {"top1_pct": acc, "split": "held-out", "n_images": len(ds.y_valid)},
        "epochs": epochs, "steps": len(losses), "init": init, "seed": seed,
        "final_loss": float(np.mean(losses[-10:])) if losses else None,
    }  # fmt: skip
    path = write_json(out / "weights.json", sidecar, "training sidecar", indent=1, nan_to_null=True)
    return TrainResult(weights, path, acc, len(losses), epochs, classes, info.resolution, data, init)
