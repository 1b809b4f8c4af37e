"""A latency predictor as a search latency model (Monte-Carlo expectations, score-function gradient)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latkit._version import __version__
from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace


class PredictorLatencyModel:
    """A latency predictor (``predict(X) -> ms``) as a search latency model.

    Args:
        space: the search space.
        predictor: anything with ``predict(X) -> np.ndarray`` (ms).
        featurize: architectures -> the predictor's feature matrix; default the
            space's one-hot :meth:`~latkit.profiler.spaces.base.SearchSpace.encode`.
        provenance: recorded in ``arch.json`` (e.g. the predictor file).
        mc_samples: architectures sampled per :meth:`expected_latency` call.
        seed: seed of the sampling generator.
    """

    differentiable = False

    def __init__(
        self,
        space: SearchSpace,
        predictor: Any,
        featurize: Callable[[Sequence[Arch]], np.ndarray] | None = None,
        provenance: Mapping[str, object] | None = None,
        mc_samples: int = 16,
        seed: int = 0,
    ) -> None:
        self.space, self.predictor = space, predictor
        self.featurize = featurize or (lambda archs: np.stack([space.encode(a) for a in archs]))
        self.provenance = {
            "kind": "predictor",
            "predictor": getattr(predictor, "name", type(predictor).__name__),
            "latkit_version": __version__,
            **(provenance or {}),
        }
        self.mc_samples = int(mc_samples)
        self.rng = np.random.default_rng(seed)
        self._cache: dict[Arch, float] = {}

    @classmethod
    def from_saved(cls, space: SearchSpace, directory: str | Path, **kwargs: Any) -> PredictorLatencyModel:
        """A predictor saved by ``latkit predictor fit``, checked to read ``space``'s encoding.

        Raises:
            StoreError: unreadable predictor (see :func:`latkit.predictors.base.load`).
            UsageError: a predictor of another space, of the known devices' latencies
                (few-shot), or whose feature count differs from the space's encoding.
        """
        from latkit.predictors.base import load, load_metadata

        meta = load_metadata(directory)
        saved = meta.get("space")
        prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
        refit = f"fit one with `latkit predictor fit --space {space.name}`"
        if prov.get("features") == "known_devices":
            raise UsageError(f"predictor {directory} reads other devices' latencies (few-shot), not "
                             f"architectures of {space.name!r}; {refit}")
        if isinstance(saved, str) and saved != space.name:
            raise UsageError(f"predictor {directory} was fitted on space {saved!r} but the search is on "
                             f"{space.name!r}; search --space {saved} or {refit}")
        predictor = load(directory)
        width = len(space.encode(space.sample(np.random.default_rng(0))))
        fitted = getattr(predictor, "n_features_in_", None)
        if isinstance(fitted, int) and fitted != width:
            raise UsageError(f"predictor {directory} reads {fitted} features but the encoding of "
                             f"{space.name!r} has {width}; {refit}")
        return cls(space, predictor, provenance={"predictor_dir": str(directory)}, **kwargs)

    def latency_ms_batch(self, archs: Sequence[Arch]) -> list[float]:
        """Predicted latencies (ms), cached per architecture."""
        todo = [a for a in dict.fromkeys(archs) if a not in self._cache]
        if todo:
            pred = np.asarray(self.predictor.predict(self.featurize(todo)), dtype=np.float64)
            self._cache.update(zip(todo, (float(v) for v in pred.reshape(-1))))
        return [self._cache[a] for a in archs]

    def latency_ms(self, arch: Arch) -> float:
        """Predicted latency of ``arch`` (ms)."""
        return self.latency_ms_batch([self.space.check(arch)])[0]

    def expected_latency(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """A Monte-Carlo ``E[LAT]`` over archs sampled from ``probs``.

        Its value is the mean predicted latency of the samples; its gradient is
        the score-function estimate ``mean_k (LAT_k - mean) * grad log p(arch_k)``.
        """
        with torch.no_grad():
            p_np = [p.detach().double().clamp_min(0).numpy() for p in probs]
        archs = [
            Arch(self.space.name, tuple(int(self.rng.choice(len(p), p=p / p.sum())) for p in p_np))
            for _ in range(self.mc_samples)
        ]
        lat = torch.tensor(self.latency_ms_batch(archs), dtype=probs[0].dtype)
        mean = lat.mean()
        logp = torch.stack(
            [sum(torch.log(probs[c][o]) for c, o in enumerate(a.indices)) for a in archs]
        )
        surrogate = ((lat - mean) * logp).mean()
        return mean + surrogate - surrogate.detach()

    def min_latency(self, space: SearchSpace | None = None) -> tuple[float, Arch]:
        """Smallest predicted latency found by bounded coordinate descent (an upper bound)."""
        from types import SimpleNamespace

        from latkit.search.framework.base import min_latency

        # a view without min_latency, so the framework runs its coordinate descent
        return min_latency(self.space, SimpleNamespace(latency_ms=self.latency_ms), np.random.default_rng(0))

    def min_latency_ms(self) -> float:
        """See :meth:`min_latency`."""
        return self.min_latency()[0]
