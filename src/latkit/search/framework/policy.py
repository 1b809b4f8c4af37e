"""A factorised categorical policy over a space's choices (REINFORCE, PPO, PARSEC).

``pi(alpha) = prod_c softmax(theta_c)[alpha_c]``: one independent categorical per
choice. Its log-likelihood gradient is closed-form, ``onehot(alpha_c) -
softmax(theta_c)``, so the learners need no autograd.
"""

from __future__ import annotations

import numpy as np

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch


LOGIT_FLOOR = 20.0  # exp(-20) ~ 2e-9: an option is never impossible
ADV_CLIP = 3.0  # normalised advantages are clipped to +-ADV_CLIP


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


class CategoricalPolicy:
    """Independent softmax categoricals, one per choice.

    Args:
        space_name: the space whose :class:`Arch` objects it samples.
        n_options: the option count of every choice.
        probs: optional initial probabilities per choice (e.g. learnt on a proxy
            problem); uniform when omitted.
    """

    def __init__(
        self, space_name: str, n_options: list[int], probs: list[np.ndarray] | None = None
    ) -> None:
        self.space_name = space_name
        self.n_options = list(n_options)
        self.logits = [np.zeros(n) for n in self.n_options]
        self._probs: list[np.ndarray] | None = None  # softmax of the logits, until they change
        if probs is not None:
            self.set_probs(probs)

    def set_probs(self, probs: list[np.ndarray]) -> None:
        """Set the distribution (each row is clipped away from 0 and renormalised).

        Raises:
            UsageError: shapes that do not match the space's choices.
        """
        if len(probs) != len(self.n_options) or any(
            len(p) != n for p, n in zip(probs, self.n_options)
        ):
            raise UsageError("initial policy probabilities do not match the space's choices")
        for c, p in enumerate(probs):
            q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, None)
            self.logits[c] = np.log(q / q.sum())
        self._probs = None

    def probs(self) -> list[np.ndarray]:
        """The probabilities of every choice (read-only arrays)."""
        if self._probs is None:
            self._probs = [_softmax(t) for t in self.logits]
            for p in self._probs:
                p.flags.writeable = False
        return self._probs

    def sample(self, rng: np.random.Generator) -> Arch:
        """One architecture drawn from the policy."""
        return Arch(
            self.space_name, tuple(int(rng.choice(len(p), p=p)) for p in self.probs())
        )

    def sample_many(self, rng: np.random.Generator, n: int, unique: bool = False) -> list[Arch]:
        """``n`` architectures drawn at once (inverse CDF per choice); with
        ``unique``, repeats are dropped (first-drawn order kept)."""
        cols = []
        for p in self.probs():
            cdf = np.cumsum(p)
            cols.append(np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(p) - 1))
        rows = np.stack(cols, axis=1).tolist() if cols else [[] for _ in range(n)]
        picks = list(dict.fromkeys(map(tuple, rows))) if unique else [tuple(r) for r in rows]
        return [Arch(self.space_name, t) for t in picks]

    def log_prob(self, arch: Arch) -> float:
        """``log pi(arch)``."""
        return float(np.log([p[i] for p, i in zip(self.probs(), arch.indices)]).sum())

    def grad_log_prob(self, arch: Arch) -> list[np.ndarray]:
        """``d log pi(arch) / d theta`` per choice."""
        grads = []
        for p, i in zip(self.probs(), arch.indices):
            g = -p.copy()
            g[i] += 1.0
            grads.append(g)
        return grads

    def entropy(self) -> float:
        """The summed entropy of the choices (nats)."""
        return float(sum(-(p * np.log(p)).sum() for p in self.probs()))

    def step(self, grads: list[np.ndarray], lr: float) -> None:
        """Gradient *ascent* on the logits, kept in a bounded range.

        Logits are shifted to a maximum of 0 and floored at ``-LOGIT_FLOOR`` so
        that no option's probability underflows to 0 (or the softmax to NaN).
        """
        for c, g in enumerate(grads):
            t = self.logits[c] + lr * g
            self.logits[c] = np.maximum(t - t.max(), -LOGIT_FLOOR)
        self._probs = None


def zero_grads(n_options: list[int]) -> list[np.ndarray]:
    """Zero gradients shaped like a policy's logits."""
    return [np.zeros(n) for n in n_options]


class RunningBaseline:
    """An exponential moving average of rewards, plus a running scale for advantages."""

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self.mean: float | None = None
        self.var = 1.0

    def advantage(self, r: float) -> float:
        """``(r - baseline) / scale`` (clipped), then update the baseline with ``r``."""
        if self.mean is None:
            self.mean = r
            return 0.0
        adv = self.normalise(r)
        d = r - self.mean
        self.var = self.decay * self.var + (1 - self.decay) * d * d
        self.mean = self.decay * self.mean + (1 - self.decay) * r
        return adv

    def normalise(self, r: float) -> float:
        """``(r - baseline) / scale`` clipped to ``+-ADV_CLIP``, without updating."""
        if self.mean is None:
            return 0.0
        adv = (r - self.mean) / max(float(np.sqrt(self.var)), 1e-3)
        return float(np.clip(adv, -ADV_CLIP, ADV_CLIP))
