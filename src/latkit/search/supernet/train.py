"""Weight training and held-out evaluation for supernets and single networks.

Training a searched architecture on its own and saving it for export
(``latkit train``) is :mod:`latkit.deploy.train`, built on :func:`train_network`
and :func:`accuracy_pct` here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace, with_classes
from latkit.search.supernet.data import SearchData
from latkit.search.supernet.supernet import Supernet


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
