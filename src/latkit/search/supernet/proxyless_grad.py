"""ProxylessNAS gradient search (Cai et al., ICLR 2019) with a hard latency target.

Architecture parameters ``alpha_c`` (one logit per option of every choice) define
independent categoricals ``p_c = softmax(alpha_c)``. Each step alternates

* a weight step: one path per mixed layer sampled from ``p``, SGD on the
  training split;
* an architecture step (every ``arch_every`` weight steps): binary gates on a
  held-out batch. For each choice two options are sampled from ``p_c`` without
  replacement and one of them, drawn from their renormalised probabilities, is
  active. With ``g`` the gates and ``p~`` the softmax over the two sampled
  logits, ``dL/dalpha_i = sum_j dL/dg_j * p~_j * (delta_ij - p~_i)`` over the
  two; afterwards the two logits are shifted so that the unsampled options'
  probabilities are unchanged (ProxylessNAS's rescaling).

The loss adds the expected latency ``E[LAT]`` of the latency model, exact and
differentiable for LUT tables (:mod:`latkit.lut.tables`):

* ``"mul"``: ``CE * alpha * (log E[LAT] / log T) ** beta`` (latencies in
  microseconds inside the logs, so that both logs are positive for sub-ms targets);
* ``"add"``: ``CE + lambda * E[LAT]`` (``E[LAT]`` in ms; default ``lambda = 1 / T``).

In hard-target mode (the default) the latency weight ``w`` (``beta`` or
``lambda``) is adapted like a Lagrange multiplier: every ``adapt_every``
architecture steps in which the derived architecture (argmax per choice) lies
outside ``[(1 - tolerance) T, T]``, ``w += adapt_rate * w0 * (LAT - C) / C`` with
``C = (1 - tolerance / 2) T`` and ``w0`` its initial value. ``w`` may become
negative: then the search is pushed to spend the latency it leaves unused. The
returned architecture is finally projected onto the target
(:func:`~latkit.search.target.project_to_target`), so its LUT latency is always ``<= T``;
with ``fill_budget`` an architecture faster than ``(1 - tolerance) T`` is also
moved up into the band by the changes the distribution objects to least.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch
from latkit.search.framework.base import SearchContext, register_algorithm
from latkit.search.supernet.data import SearchData
from latkit.search.target import check_reachable, project_to_target
from latkit.search.supernet.supernet import GateSample, Supernet
from latkit.search.supernet.train import weight_optimizer

if TYPE_CHECKING:
    from latkit.lut.tables import TableLatencyModel
    from latkit.search.framework.latency import PredictorLatencyModel
    from latkit.search.supernet.checkpoint import CheckpointState

log = logging.getLogger(__name__)

LOSS_FORMS = ("mul", "add")


@dataclass
class ProxylessConfig:
    """Hyper-parameters of the gradient search (ProxylessNAS defaults where they apply)."""

    loss_form: str = "add"
    alpha: float = 0.2  # "mul" scale
    beta: float = 0.3  # "mul" exponent (adapted in hard-target mode)
    lam: float | None = None  # "add" weight per ms (default 1 / T; adapted in hard mode)
    hard_target: bool = True
    fill_budget: bool = True  # final projection also slows a too-fast arch into the band
    tolerance: float = 0.1
    adapt_rate: float = 0.5
    adapt_every: int = 1
    weight_lr: float = 0.01
    arch_lr: float = 0.05
    batch_size: int = 64
    arch_every: int = 1
    warmup_epochs: int = 1
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.loss_form not in LOSS_FORMS:
            raise UsageError(f"loss_form must be one of {', '.join(LOSS_FORMS)}, got {self.loss_form!r}")
        if not 0 <= self.tolerance < 1 or self.adapt_rate <= 0 or self.adapt_every < 1:
            raise UsageError("tolerance must be in [0, 1), adapt_rate > 0 and adapt_every >= 1")


class EpochExtra(TypedDict, total=False):
    """What an epoch reports beyond the search's figures."""

    train_loss: float  # mean weight-step loss
    phase: str  # "warmup" | "search"


class ProxylessOutcome(TypedDict):
    """What the ``proxyless-grad`` algorithm returns: the projected architecture and the history."""

    final_arch: object  # the space's native form
    history: list[dict[str, object]]  # one EpochInfo per epoch, as a dict


@dataclass
class EpochInfo:
    """What the search reports after each epoch (for progress displays)."""

    epoch: int
    loss: float
    expected_latency_ms: float
    derived_arch: list[object]
    derived_latency_ms: float
    latency_weight: float
    entropy: float
    extra: EpochExtra = field(default_factory=lambda: EpochExtra())


def latency_loss(
    ce: torch.Tensor, expected_ms: torch.Tensor, target_ms: float, cfg: ProxylessConfig, weight: float
) -> torch.Tensor:
    """The published latency-aware losses; ``weight`` is beta ("mul") or lambda ("add")."""
    if cfg.loss_form == "mul":
        ratio = torch.log(expected_ms * 1000.0) / math.log(target_ms * 1000.0)
        return ce * cfg.alpha * ratio**weight
    return ce + weight * expected_ms


class ProxylessGradSearch:
    """State and steps of one gradient search (see the module docstring).

    Args:
        supernet: a supernet whose every choice drives one layer (proxyless, fbnet).
        latency_model: a model with ``latency_ms(arch)`` and ``expected_latency(probs)``.
        data: training and held-out splits.
        target_ms: the latency target ``T``.
        config: hyper-parameters.
        seed: seed of every random draw.

    Raises:
        UsageError: the space's layers depend on several choices (OFA).
        SearchError: ``T`` is below the smallest latency the model reaches.
    """

    def __init__(
        self,
        supernet: Supernet,
        latency_model: TableLatencyModel | PredictorLatencyModel,
        data: SearchData,
        target_ms: float,
        config: ProxylessConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.cfg = config or ProxylessConfig()
        self.net, self.lat, self.data = supernet, latency_model, data
        self.space = supernet.space
        self.target_ms = float(target_ms)
        self.min_ms, self.min_arch = latency_model.min_latency(self.space)
        check_reachable(self.space.name, self.target_ms, self.min_ms)
        self.owners = {c: slot.index for c, slot in supernet.layout.single_choice_slots().items()}
        self.n_options = supernet.layout.n_options
        self.alphas = [torch.zeros(n, dtype=torch.float64, requires_grad=True) for n in self.n_options]
        self.weight_opt = weight_optimizer(supernet.parameters(), self.cfg.weight_lr)
        self.arch_opt = torch.optim.Adam(self.alphas, lr=self.cfg.arch_lr, betas=(0.0, 0.999))
        if self.cfg.loss_form == "mul":
            self.latency_weight = self.cfg.beta
        else:
            self.latency_weight = self.cfg.lam if self.cfg.lam is not None else 1.0 / self.target_ms
        self.initial_weight = self.latency_weight
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.arch_steps = 0
        self.history: list[dict[str, object]] = []  # EpochInfo as a dict, per epoch (JSON-ready)

    # ---- distributions ----

    def probs(self) -> list[torch.Tensor]:
        """``softmax(alpha_c)`` per choice (differentiable)."""
        return [torch.softmax(a, 0) for a in self.alphas]

    def derived(self) -> Arch:
        """The argmax architecture."""
        return Arch(self.space.name, tuple(int(a.argmax()) for a in self.alphas))

    def sample_arch(self) -> Arch:
        """One architecture drawn from the current distribution."""
        with torch.no_grad():
            idx = [int(torch.multinomial(p.float(), 1, generator=self.gen)) for p in self.probs()]
        return Arch(self.space.name, tuple(idx))

    def entropy(self) -> float:
        """Summed entropy of the choices (nats)."""
        with torch.no_grad():
            return float(sum(-(p * torch.log(p.clamp_min(1e-12))).sum() for p in self.probs()))

    # ---- steps ----

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, arch: Arch | None = None) -> float:
        """One SGD step on ``arch`` (default: sampled from the current distribution)."""
        arch = arch or self.sample_arch()
        self.weight_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.net(x, arch), y)
        loss.backward()
        self.weight_opt.step()
        # freed now, not at the next step: the architecture step that follows
        # then never holds a path's weight gradients beside its own activations
        self.weight_opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _sample_gates(
        self, active_arch: Arch | None = None
    ) -> tuple[Arch, dict[int, GateSample], dict[int, list[int]]]:
        samples, pairs, active = {}, {}, []
        with torch.no_grad():
            for c, p in enumerate(self.probs()):
                if self.n_options[c] == 1 or c not in self.owners:
                    active.append(0)
                    continue
                two = [int(v) for v in torch.multinomial(p.float(), 2, replacement=False, generator=self.gen)]
                pt = torch.softmax(self.alphas[c][two].float(), 0)
                k = int(torch.multinomial(pt, 1, generator=self.gen))
                if active_arch is not None:  # forced active path (benchmarks, tests)
                    want = active_arch.indices[c]
                    two = [want, two[0] if two[0] != want else two[1]]
                    k = 0
                samples[c] = GateSample(active=two[k], other=two[1 - k])
                pairs[c] = two
                active.append(two[k])
        return Arch(self.space.name, tuple(active)), samples, pairs

    def arch_step(
        self, x: torch.Tensor, y: torch.Tensor, active: Arch | None = None
    ) -> tuple[float, float]:
        """One binary-gate step on the architecture parameters; returns (loss, E[LAT] ms).

        ``active`` forces the active paths (the second path stays sampled).
        """
        base, samples, pairs = self._sample_gates(active)
        self.arch_opt.zero_grad(set_to_none=True)
        self.net.zero_grad(set_to_none=True)
        with frozen(self.net):  # no weight gradients here: weights move in weight steps only
            ce = F.cross_entropy(self.net.forward_gated(x, base, self.owners, samples), y)
            expected = self.lat.expected_latency(self.probs())
            loss = latency_loss(ce.double(), expected, self.target_ms, self.cfg, self.latency_weight)
            loss.backward()
        old = {c: self.alphas[c].detach()[two].clone() for c, two in pairs.items()}
        with torch.no_grad():
            for c, two in pairs.items():
                s = samples[c]
                g = {s.active: s.active_grad, s.other: s.other_grad}
                pt = [float(v) for v in torch.softmax(self.alphas[c][two], 0)]
                grad = self.alphas[c].grad if self.alphas[c].grad is not None else torch.zeros_like(self.alphas[c])
                for i in range(2):
                    grad[two[i]] += sum(g[two[j]] * pt[j] * (float(i == j) - pt[i]) for j in range(2))
                self.alphas[c].grad = grad
        self.arch_opt.step()
        with torch.no_grad():  # keep the unsampled options' probabilities unchanged
            for c, two in pairs.items():
                new = self.alphas[c][two]
                offset = torch.logsumexp(new, 0) - torch.logsumexp(old[c], 0)
                self.alphas[c][two] -= offset
        self.arch_steps += 1
        if self.cfg.hard_target and self.arch_steps % self.cfg.adapt_every == 0:
            self._adapt()
        return float(loss.detach()), float(expected.detach())

    def _adapt(self) -> None:
        lat = self.lat.latency_ms(self.derived())
        t, tol = self.target_ms, self.cfg.tolerance
        if (1 - tol) * t <= lat <= t:
            return
        center = (1 - tol / 2) * t
        self.latency_weight += self.cfg.adapt_rate * abs(self.initial_weight) * (lat - center) / center

    def run_epoch(self) -> EpochInfo:
        """One pass over the training split (weights), with architecture steps after warm-up."""
        train = self.data.batches("train", self.cfg.batch_size, self.rng)
        valid = self.data.batches("valid", self.cfg.batch_size, self.rng)
        if self.cfg.max_steps_per_epoch is not None:
            train = train[: self.cfg.max_steps_per_epoch]
        search_arch = self.epoch >= self.cfg.warmup_epochs
        self.net.train()
        losses, arch_losses, expected = [], [], float("nan")
        for step, (x, y) in enumerate(train):
            losses.append(self.weight_step(x, y))
            if search_arch and step % self.cfg.arch_every == 0:
                xv, yv = valid[(step // self.cfg.arch_every) % len(valid)]
                loss, expected = self.arch_step(xv, yv)
                arch_losses.append(loss)
        if math.isnan(expected):
            with torch.no_grad():
                expected = float(self.lat.expected_latency(self.probs()))
        self.epoch += 1
        derived = self.derived()
        info = EpochInfo(
            epoch=self.epoch,
            loss=float(np.mean(arch_losses or losses)),
            expected_latency_ms=expected,
            derived_arch=self.space.arch_to_native(derived),
            derived_latency_ms=self.lat.latency_ms(derived),
            latency_weight=self.latency_weight,
            entropy=self.entropy(),
            extra={"train_loss": float(np.mean(losses)), "phase": "search" if search_arch else "warmup"},
        )
        self.history.append(asdict(info))
        return info

    def log_probs(self) -> list[np.ndarray]:
        """``log softmax(alpha_c)`` per choice, as arrays: how strongly the search prefers each option."""
        with torch.no_grad():
            return [torch.log_softmax(a, 0).numpy() for a in self.alphas]

    def final_arch(self) -> Arch:
        """The derived architecture projected onto ``LAT <= T`` (see :func:`~latkit.search.target.project_to_target`)."""
        lower = (1 - self.cfg.tolerance) * self.target_ms if self.cfg.fill_budget else None
        return project_to_target(self.derived(), self.log_probs(), self.lat, self.target_ms, self.min_arch, lower)

    # ---- checkpoint state ----

    def state(self) -> tuple[dict[str, torch.Tensor], CheckpointState]:
        """Tensors and JSON state of the search (see :mod:`latkit.search.supernet.checkpoint`)."""
        from latkit.search.supernet.checkpoint import optimizer_state

        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"alpha.{c}": a.detach().clone() for c, a in enumerate(self.alphas)})
        tensors["torch_generator"] = self.gen.get_state()
        wt, wj = optimizer_state(self.weight_opt, "opt_w")
        at, aj = optimizer_state(self.arch_opt, "opt_a")
        tensors.update(wt)
        tensors.update(at)
        plain: CheckpointState = {
            "epoch": self.epoch, "arch_steps": self.arch_steps, "latency_weight": self.latency_weight,
            "numpy_rng": self.rng.bit_generator.state, "history": self.history,
            "weight_opt": wj, "arch_opt": aj, "config": asdict(self.cfg), "target_ms": self.target_ms,
        }  # fmt: skip
        return tensors, plain

    def load_state(self, tensors: dict[str, torch.Tensor], plain: CheckpointState) -> None:
        """Restore :meth:`state` output (same space, supernet and config)."""
        from latkit.search.supernet.checkpoint import restore_optimizer

        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        with torch.no_grad():
            for c, a in enumerate(self.alphas):
                a.copy_(tensors[f"alpha.{c}"])
        self.gen.set_state(tensors["torch_generator"])
        restore_optimizer(self.weight_opt, "opt_w", tensors, plain["weight_opt"])
        restore_optimizer(self.arch_opt, "opt_a", tensors, plain["arch_opt"])
        self.epoch, self.arch_steps = int(plain["epoch"]), int(plain["arch_steps"])
        self.latency_weight = float(plain["latency_weight"])
        self.rng.bit_generator.state = plain["numpy_rng"]
        self.history = list(plain["history"])


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of ``module``'s parameters for the block (restored after)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@register_algorithm("proxyless-grad")
def proxyless_grad(
    ctx: SearchContext, search: ProxylessGradSearch | None = None, epochs: int = 10
) -> ProxylessOutcome:
    """ProxylessNAS gradient search as a framework algorithm.

    Each epoch's derived architecture is queried (one query each, recorded in
    the trajectory), then the projected final architecture. Most callers use
    :func:`latkit.search.run.run_search`, which builds ``search`` and adds
    checkpoints and plots.

    Args:
        ctx: the search problem (its target must be the search's).
        search: a :class:`ProxylessGradSearch` (supernet, latency model, data).
        epochs: total epochs (bounded loop; a resumed search continues).

    Raises:
        UsageError: no ``search`` given, or its target differs from ``ctx``'s.
    """
    if search is None:
        raise UsageError("proxyless-grad needs a supernet and data; use latkit.search.run.run_search")
    if not math.isclose(search.target_ms, ctx.target_ms):
        raise UsageError(f"the search targets {search.target_ms} ms but the problem {ctx.target_ms} ms")
    while search.epoch < epochs:
        search.run_epoch()
        ctx.query(search.derived())
    final = search.final_arch()
    ctx.query(final)
    return {"final_arch": ctx.space.arch_to_native(final), "history": search.history}
