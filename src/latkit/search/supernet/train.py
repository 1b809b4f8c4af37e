"""Weight training and held-out evaluation for supernets and single networks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace
from latkit.search.supernet.data import SearchData
from latkit.search.supernet.supernet import Supernet

if TYPE_CHECKING:
    from latkit.profiler.spaces.base import Network
    from latkit.deploy.export import ArchFile


class PoolWeights(TypedDict):
    """What the knowledge pool keeps of a trained architecture: its layers' operator ids and its tensors."""

    ids: dict[str, str]  # layer name -> operator id
    state: dict[str, torch.Tensor]  # the state dict


class TrainedRecord(TypedDict):
    """One architecture :class:`TrainedAccuracy` trained."""

    arch: object  # the space's native form
    accuracy: float
    inherited_layers: int
    final_loss: float


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> float:
    """One cross-entropy step of ``forward`` on ``(x, y)``; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(forward(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def weight_optimizer(params: Iterable[nn.Parameter], lr: float = 0.01) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, the usual choice for supernet weights."""
    trainable = [p for p in params if p.requires_grad]  # not the stale copies of shared supernet tensors
    return torch.optim.SGD(trainable, lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)


def bn_modules(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer inside ``modules``."""
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    forward: Callable[[torch.Tensor], torch.Tensor],
    modules: Iterable[nn.Module],
    batches: Iterable[torch.Tensor],
) -> None:
    """Reset the BN statistics of ``modules`` and re-estimate them on ``batches``.

    A sub-network of a supernet sees inputs that differ from those its shared
    BN layers were updated on, so its statistics are re-estimated before it is
    evaluated (as Once-for-All does).
    """
    bns = bn_modules(modules)
    saved = [(bn.momentum, bn.training) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
        bn.train()
    for x in batches:
        forward(x)
    for bn, (momentum, training) in zip(bns, saved):
        bn.momentum = momentum
        bn.train(training)


@torch.no_grad()
def accuracy_pct(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch: int = 512
) -> float:
    """Top-1 accuracy (percent) of ``forward`` on ``(x, y)``."""
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((forward(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return 100.0 * correct / max(1, len(y))


class SupernetAccuracy:
    """Held-out accuracy of architectures with the supernet's shared weights.

    The accuracy model of the search framework (``accuracy(arch) -> percent``):
    BN statistics of the sub-network are re-estimated on a few training
    batches, then the held-out split is classified in eval mode.

    Args:
        supernet: the trained supernet.
        data: the dataset (its ``x_valid`` / ``y_valid`` are the held-out split).
        bn_batches: training batches used for BN re-estimation.
        batch_size: batch size of those batches.
        max_valid: cap on held-out images evaluated (all when ``None``).
        seed: which training images are used for BN.
    """

    def __init__(
        self,
        supernet: Supernet,
        data: SearchData,
        bn_batches: int = 4,
        batch_size: int = 128,
        max_valid: int | None = None,
        seed: int = 0,
    ) -> None:
        self.supernet, self.data = supernet, data
        rng = np.random.default_rng(seed)
        n = len(data.y_train)
        picks = [torch.as_tensor(rng.choice(n, min(batch_size, n), replace=False)) for _ in range(bn_batches)]
        self._bn_batches = [data.x_train[p] for p in picks]
        k = len(data.y_valid) if max_valid is None else min(max_valid, len(data.y_valid))
        self._x, self._y = data.x_valid[:k], data.y_valid[:k]
        self.provenance: dict[str, object] = {  # free-form: recorded in arch.json
            "kind": "supernet",
            "metric": "top1_pct_heldout",
            "n_heldout": k,
            "bn_batches": bn_batches,
            "data": data.provenance,
        }

    def accuracy(self, arch: Arch) -> float:
        """Held-out top-1 accuracy (percent) of ``arch``."""
        net = self.supernet
        was_training = net.training

        def forward(x: torch.Tensor) -> torch.Tensor:
            return net(x, arch)

        recalibrate_bn(forward, net.path_modules(arch), self._bn_batches)
        net.eval()
        try:
            return accuracy_pct(forward, self._x, self._y)
        finally:
            net.train(was_training)


def train_network(model: nn.Module, data: SearchData, epochs: int = 1, batch_size: int = 64, lr: float = 0.01,
                  seed: int = 0, max_steps: int | None = None,
                  on_step: Callable[[int, float], None] | None = None) -> list[float]:  # fmt: skip
    """Train a standalone network on the training split; returns the per-step losses.

    ``on_step`` is called as ``(steps_done, loss)`` after every step, for progress displays.
    """
    rng = np.random.default_rng(seed)
    opt = weight_optimizer(model.parameters(), lr)
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        for x, y in data.batches("train", batch_size, rng):
            if max_steps is not None and len(losses) >= max_steps:
                return losses
            losses.append(train_step(model, opt, x, y))
            if on_step is not None:
                on_step(len(losses), losses[-1])
    return losses


class TrainedAccuracy:
    """Held-out accuracy of each architecture trained on its own for a few steps.

    FNAS's per-experiment evaluation, with its architecture knowledge pool: with
    ``inherit``, a new architecture starts from the trained weights of the most
    similar architecture trained before (block similarity, see
    :meth:`~latkit.search.framework.knowledge.ArchPool.donor`). Every layer whose operator
    (:func:`~latkit.search.supernet.supernet.module_id`) matches the donor's layer of the
    same name takes the donor's tensors, BN statistics included; the other
    layers start fresh. The pool keeps the weights of the ``pool_size``
    best-scoring architectures, in memory only: a resumed search replays its
    recorded accuracies, and the architectures trained after it start from an
    empty pool.

    Args:
        space: the search space.
        data: the dataset (training split to train, held-out split to score).
        resolution: input resolution of the networks (the space's default if ``None``).
        steps: SGD steps per architecture.
        inherit: start from the knowledge pool's weights (``False``: from scratch).
        pool_size: architectures whose weights the pool keeps.
        batch_size, lr: of the training steps.
        seed: weight and batch-order seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        data: SearchData,
        resolution: int | None = None,
        steps: int = 50,
        inherit: bool = True,
        pool_size: int = 32,
        batch_size: int = 64,
        lr: float = 0.01,
        seed: int = 0,
        on_step: Callable[[int, str], None] | None = None,
    ) -> None:
        from latkit.search.framework.knowledge import ArchPool

        if steps < 1 or pool_size < 1:
            raise UsageError("steps and pool_size must be at least 1")
        self.space, self.data, self.resolution = space, data, resolution
        self.steps, self.inherit, self.batch_size, self.lr, self.seed = steps, inherit, batch_size, lr, seed
        self.pool = ArchPool(capacity=pool_size)
        self.on_step = on_step  # (steps done over all architectures, message), after every step
        self.history: list[TrainedRecord] = []
        self.provenance: dict[str, object] = {  # free-form: recorded in arch.json
            "kind": "trained", "metric": "top1_pct_heldout", "steps": steps, "inherit": inherit,
            "pool_size": pool_size, "data": data.provenance,
        }  # fmt: skip

    def build(self, arch: Arch) -> tuple[nn.Module, dict[str, str]]:
        """A freshly initialised network of ``arch`` and its layers' operator ids (by layer name)."""
        from latkit.profiler.build import build_network
        from latkit.deploy.export_weights import with_classes
        from latkit.search.supernet.supernet import module_id, reset_bn

        network = with_classes(self.space.network(arch, self.resolution), self.data.n_classes)
        module = build_network(network, seed=self.seed + len(self.history))
        reset_bn(module)
        names = [name for name, _ in module.named_children()]  # build_network's names, in layer order
        return module, {name: module_id(layer.spec) for name, layer in zip(names, network.layers)}

    def accuracy(self, arch: Arch) -> float:
        """Train ``arch`` (from the pool's weights where it can) and return its held-out top-1 (percent)."""
        module, ids = self.build(arch)
        inherited = 0
        if self.inherit and (found := self.pool.donor(arch)) is not None:
            inherited = inherit_layers(module, ids, found[0].payload)
        n_batches = -(-len(self.data.y_train) // self.batch_size)
        losses = train_network(module, self.data, epochs=-(-self.steps // n_batches), batch_size=self.batch_size,
                               lr=self.lr, seed=self.seed + len(self.history), max_steps=self.steps,
                               on_step=self._report)  # fmt: skip
        module.eval()
        acc = accuracy_pct(module, self.data.x_valid, self.data.y_valid)
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.pool.add(arch, acc, PoolWeights(ids=ids, state=state))
        self.history.append({"arch": self.space.arch_to_native(arch), "accuracy": acc,
                             "inherited_layers": inherited, "final_loss": float(np.mean(losses[-5:]))})  # fmt: skip
        return acc


    def _report(self, step: int, loss: float) -> None:
        if self.on_step is not None:
            n = len(self.history)
            self.on_step(n * self.steps + step, f"architecture {n + 1} step {step}/{self.steps} loss {loss:.3f}")


def inherit_layers(module: nn.Module, ids: dict[str, str], donor: PoolWeights) -> int:
    """Copy the donor's tensors into every layer of ``module`` built like the donor's; returns how many layers.

    ``ids`` maps ``module``'s layer names to operator ids; ``donor`` holds the
    donor's ``ids`` and ``state`` (state dict). A layer inherits when the donor
    has a layer of the same name and operator, and then takes all its tensors.
    """
    own = module.state_dict()
    picked: dict[str, torch.Tensor] = {}
    layers = 0
    for name, mid in ids.items():
        if donor["ids"].get(name) != mid:
            continue
        prefix = name + "."
        mine = [k for k in own if k.startswith(prefix)]
        taken = {k: donor["state"][k] for k in mine if k in donor["state"] and donor["state"][k].shape == own[k].shape}
        if mine and len(taken) == len(mine):
            picked.update(taken)
            layers += 1
    module.load_state_dict(picked, strict=False)
    return layers


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
        on_progress: called with ``(epoch, epochs, message)`` after each epoch.

    Raises:
        UsageError / ArchError: bad arguments or architecture.
        StoreError: an unreadable or mismatched checkpoint, an unwritable folder.
    """
    from latkit.core.files import check_output_dir
    from latkit.profiler.spaces.base import get_space
    from latkit.deploy.export import read_arch
    from latkit.search.supernet.data import load_data

    if epochs < 1 or (max_steps is not None and max_steps < 1):
        raise UsageError(f"epochs and max_steps must be at least 1, got {epochs} and {max_steps}")
    info = read_arch(arch, get_space(space) if isinstance(space, str) else space, resolution)
    start = _init_source(init, arch)
    out = check_output_dir(out_dir, "--out folder")
    if threads is not None:
        torch.set_num_threads(threads)
    ds = load_data(data, info.resolution, seed=seed)
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
    from latkit.profiler.build import build_network
    from latkit.deploy.export_weights import with_classes
    from latkit.search.supernet.supernet import reset_bn

    network = with_classes(space_network, classes)
    module = build_network(network, seed=seed)
    reset_bn(module)
    return module, network, "scratch" if start is None else _adopt(module, start, space_network)


def _init_source(init: str | Path, arch: str | Path) -> Path | None:
    """The search checkpoint to start from (None: from scratch)."""
    from latkit.deploy.export_weights import CHECKPOINT_FILE

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
    from latkit.core.errors import StoreError
    from latkit.deploy.export_weights import is_search_checkpoint, read_weights, supernet_path_state

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
    from latkit.core.files import file_sha256, write_json
    from latkit._version import __version__
    from latkit.profiler.export import network_key
    from latkit.deploy.export_weights import TRAINED_FILE, classes_of, save_weights

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
