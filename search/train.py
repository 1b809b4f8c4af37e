"""Weight training and held-out evaluation for supernets and single networks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latkit.profiler.spaces.base import Arch
from latkit.search.data import SearchData
from latkit.search.supernet import Supernet


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
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)


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
        self.provenance: dict[str, Any] = {
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


def train_network(
    model: nn.Module,
    data: SearchData,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    max_steps: int | None = None,
) -> list[float]:
    """Train a standalone network on the training split; returns the per-step losses."""
    rng = np.random.default_rng(seed)
    opt = weight_optimizer(model.parameters(), lr)
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        for x, y in data.batches("train", batch_size, rng):
            if max_steps is not None and len(losses) >= max_steps:
                return losses
            losses.append(train_step(model, opt, x, y))
    return losses
