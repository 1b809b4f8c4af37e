"""A graph-convolutional latency predictor (BRP-NAS style), torch on CPU.

Each architecture is the graph its space gives (``space.graph(arch)`` ->
adjacency [N, N], node features [N, F]). A few graph-convolution layers propagate
node features along the (symmetrised, self-looped, degree-normalised) adjacency,
a readout concatenates the mean over nodes with the output node's state, and an
MLP head regresses the standardised log latency.

``X`` is the space's one-hot encoding, like every network-level predictor; the
predictor turns rows back into architectures and graphs itself. Where a space's
graph has one fixed adjacency and node features that depend linearly on the
one-hot encoding (both true of the chain default and NAS-Bench-201), the graphs
of a whole batch are built with one matrix product, which is what makes batched
prediction fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import UsageError
from latkit.predictors.base import WeightsInfo, check_X, check_Xy, register_predictor
from latkit.predictors.network import (
    TorchRegressor,
    import_torch,
    load_torch_state,
    save_torch_state,
    torch_threads,
)

log = logging.getLogger(__name__)


class GraphEncoder:
    """Turns one-hot encodings of a space into batched graph tensors."""

    def __init__(self, space_name: str):
        from latkit.profiler.spaces import Arch, get_space

        self.space = get_space(space_name)
        self._arch = Arch
        self.sizes = [len(ch.options) for ch in self.space.choices()]
        self.n_features = int(sum(self.sizes))
        zero = Arch(self.space.name, tuple(0 for _ in self.sizes))
        self.adjacency, self.base = self.space.graph(zero)
        self.n_nodes, self.node_dim = self.base.shape
        # delta of the node features when one choice moves off option 0
        self.delta = np.zeros((self.n_features, self.n_nodes * self.node_dim), dtype=np.float32)
        offset = 0
        for c, size in enumerate(self.sizes):
            for o in range(1, size):
                idx = [0] * len(self.sizes)
                idx[c] = o
                _, feats = self.space.graph(Arch(self.space.name, tuple(idx)))
                self.delta[offset + o] = (feats - self.base).ravel()
            offset += size
        self.linear = self._check_linear()

    def _check_linear(self) -> bool:
        rng = np.random.default_rng(0)
        for _ in range(16):
            arch = self.space.sample(rng)
            adj, feats = self.space.graph(arch)
            fast = self._fast(self.space.encode(arch)[None, :])[0]
            if not (np.array_equal(adj, self.adjacency) and np.allclose(feats, fast)):
                log.info("space %s: graphs are not linear in the encoding; slow path", self.space.name)
                return False
        return True

    def _fast(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        flat = self.base.ravel()[None, :] + X.astype(np.float32) @ self.delta
        return flat.reshape(X.shape[0], self.n_nodes, self.node_dim)

    def decode(self, X: np.ndarray) -> list[Any]:  # noqa: N803
        """Architectures from one-hot rows (argmax within each choice's block)."""
        bounds = np.cumsum([0, *self.sizes])
        picks = np.stack([X[:, a:b].argmax(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], 1)
        return [self._arch(self.space.name, tuple(int(i) for i in row)) for row in picks]

    def encode_graphs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """``(adjacency [B, N, N] or [N, N] when shared, features [B, N, F])``."""
        if X.shape[1] != self.n_features:
            raise UsageError(
                f"X has {X.shape[1]} columns; the {self.space.name} encoding has {self.n_features}"
            )
        if self.linear:
            return self.adjacency, self._fast(X)
        graphs = [self.space.graph(a) for a in self.decode(X)]
        return np.stack([g[0] for g in graphs]), np.stack([g[1] for g in graphs])


def normalise_adjacency(adj: Any) -> Any:
    """``D^-1/2 (A + A^T + I) D^-1/2`` (torch, batched or not): messages flow both ways."""
    torch = import_torch()
    eye = torch.eye(adj.shape[-1], dtype=adj.dtype)
    a = ((adj + adj.transpose(-1, -2) + eye) > 0).to(adj.dtype)
    d = a.sum(-1).rsqrt()
    return d.unsqueeze(-1) * a * d.unsqueeze(-2)


def _build_module(n_nodes: int, node_dim: int, hidden: int, layers: int, head: int) -> Any:
    torch = import_torch()
    nn = torch.nn

    class GCN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dims = [node_dim] + [hidden] * layers
            self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
            # a learned embedding per node position: in chain graphs (FBNet) the same op
            # costs differently at each layer, which message passing alone cannot tell
            self.position = nn.Parameter(torch.zeros(n_nodes, hidden))
            self.head = nn.Sequential(nn.Linear(2 * hidden, head), nn.ReLU(), nn.Linear(head, 1))

        def forward(self, adj: Any, feats: Any) -> Any:
            if adj.dim() == 2:
                return self._forward_shared(adj, feats)
            h = feats
            for i, conv in enumerate(self.convs):
                z = conv(h) + self.position if i == 0 else conv(h)
                h = torch.relu(torch.bmm(adj, z))
            readout = torch.cat([h.mean(dim=1), h[:, -1]], dim=-1)
            return self.head(readout).squeeze(-1)

        def _forward_shared(self, adj: Any, feats: Any) -> Any:
            # one adjacency for the whole batch: keep activations node-major
            # [N, B, H] so each propagation is a single [N, N] x [N, B*H] product
            h = feats.transpose(0, 1)
            for i, conv in enumerate(self.convs):
                z = conv(h)
                if i == 0:
                    z = z + self.position.unsqueeze(1)
                h = torch.relu(torch.mm(adj, z.reshape(z.shape[0], -1)).reshape(z.shape))
            readout = torch.cat([h.mean(dim=0), h[-1]], dim=-1)
            return self.head(readout).squeeze(-1)

    return GCN()


@register_predictor("gcn")
class GCNPredictor(TorchRegressor):
    """Graph convolutions over the architecture graph of ``space`` (safetensors weights)."""

    def __init__(
        self,
        space: str = "fbnet",
        hidden: int = 32,
        layers: int = 2,
        head: int = 32,
        epochs: int = 150,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        random_state: int = 0,
        threads: int | None = 1,
    ):
        self.threads = threads
        self.space = space
        self.hidden = hidden
        self.layers = layers
        self.head = head
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def _make(self) -> None:
        torch = import_torch()
        self.encoder_ = GraphEncoder(self.space)
        torch.manual_seed(int(self.random_state))
        self.module_ = _build_module(
            self.encoder_.n_nodes,
            self.encoder_.node_dim, int(self.hidden), int(self.layers), int(self.head)
        )
        self.n_features_in_ = self.encoder_.n_features

    def _tensors(self, X: np.ndarray) -> tuple[Any, Any]:  # noqa: N803
        torch = import_torch()
        adj, feats = self.encoder_.encode_graphs(X)
        adj_t = normalise_adjacency(torch.as_tensor(adj, dtype=torch.float32))
        return adj_t, torch.as_tensor(feats, dtype=torch.float32)

    def fit(self, X: Any, y: Any) -> GCNPredictor:  # noqa: N803
        X, y = check_Xy(X, y)
        self._make()
        z = self._standardise(y)
        adj, feats = self._tensors(X)
        if adj.dim() == 2:  # shared adjacency: index only the features per batch
            module, shared = self.module_, adj

            def forward(f: Any) -> Any:
                return module(shared, f)

            inputs = [feats]
        else:
            forward, inputs = self.module_, [adj, feats]
        self._train(_Wrap(forward, self.module_), inputs, z)
        return self

    def predict(self, X: Any, batch_size: int = 2048) -> np.ndarray:  # noqa: N803
        torch = import_torch()
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        out = []
        with torch_threads(self.threads), torch.inference_mode():
            for start in range(0, X.shape[0], batch_size):
                adj, feats = self._tensors(X[start : start + batch_size])
                out.append(self.module_(adj, feats).numpy())
        return self._unstandardise(np.concatenate(out))

    def _save_weights(self, directory: Path) -> WeightsInfo:
        save_torch_state(self.module_, directory / "weights.safetensors")
        return WeightsInfo(
            "safetensors",
            ["weights.safetensors"],
            self._target_extra(),
        )

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        self._make()
        load_torch_state(self.module_, directory / "weights.safetensors")
        self.module_.eval()
        self._read_target_extra(info)


@register_predictor("gcn-accuracy")
class GCNAccuracyPredictor(GCNPredictor):
    """The same GCN regressing a score such as accuracy (%) itself, not its log.

    After "Fitting the search space of weight-sharing NAS with GCNs" (Chen et al.,
    2020): fitted to supernet-evaluated accuracies, its smooth fit averages out
    their per-architecture noise and answers for every architecture of the space.
    """

    log_target = False


class _Wrap:
    """Adapts a forward function to what :func:`train_regressor` expects of a module."""

    def __init__(self, forward: Any, module: Any):
        self._forward, self._module = forward, module

    def __call__(self, *inputs: Any) -> Any:
        return self._forward(*inputs)

    def parameters(self) -> Any:
        return self._module.parameters()

    def train(self) -> None:
        self._module.train()

    def eval(self) -> None:
        self._module.eval()
