"""Meeting a hard latency target: feasibility projection (the target's rules live in :mod:`latkit.search.target`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from latkit.profiler.spaces.base import Arch
from latkit.search.framework.base import SearchError


def project_to_target(
    arch: Arch,
    logp: list[np.ndarray],
    latency_model: Any,
    target_ms: float,
    fallback: Arch | None = None,
    lower_ms: float | None = None,
) -> Arch:
    """The architecture nearest ``arch`` (in summed log-probability) with ``LAT <= T``.

    Greedy, bounded: while too slow, apply the single-choice change that loses
    the least log-probability per ms saved; then, while some change raises the
    log-probability and keeps ``LAT <= T``, apply the one with the best gain
    (undoing overshoot). Falls back to ``fallback`` (the fastest architecture)
    if the greedy descent stalls above ``T``. With ``lower_ms``, an architecture
    faster than it is then slowed down, by the changes that lose the least
    log-probability per ms added and keep ``LAT <= T``, until it reaches
    ``lower_ms`` (spending the unused latency budget) or no change fits.

    Raises:
        SearchError: even ``fallback`` is slower than ``T``.
    """
    lat: Callable[[Arch], float] = latency_model.latency_ms
    idx = list(arch.indices)
    cur = lat(arch)
    n_moves = sum(len(v) for v in logp)
    for _ in range(n_moves):
        if cur <= target_ms:
            break
        best = None
        for c, lp in enumerate(logp):
            for o in range(len(lp)):
                if o == idx[c]:
                    continue
                cand = Arch(arch.space, tuple(idx[:c] + [o] + idx[c + 1 :]))
                saved = cur - lat(cand)
                if saved <= 0:
                    continue
                cost = (lp[idx[c]] - lp[o]) / saved
                if best is None or cost < best[0]:
                    best = (cost, c, o, cur - saved)
        if best is None:
            break
        _, c, o, cur = best
        idx[c] = o
    if cur > target_ms:
        if fallback is None or lat(fallback) > target_ms:
            raise SearchError(f"no architecture within {target_ms:g} ms was found; raise --target-ms")
        idx, cur = list(fallback.indices), lat(fallback)
    for _ in range(n_moves):  # climb back towards the preferred options within the budget
        best = None
        for c, lp in enumerate(logp):
            for o in range(len(lp)):
                gain = lp[o] - lp[idx[c]]
                if gain <= 0:
                    continue
                cand = Arch(arch.space, tuple(idx[:c] + [o] + idx[c + 1 :]))
                new = lat(cand)
                if new <= target_ms and (best is None or gain > best[0]):
                    best = (gain, c, o, new)
        if best is None:
            break
        _, c, o, cur = best
        idx[c] = o
    for _ in range(n_moves if lower_ms is not None else 0):
        if cur >= lower_ms:
            break
        best = None
        for c, lp in enumerate(logp):
            for o in range(len(lp)):
                cand = Arch(arch.space, tuple(idx[:c] + [o] + idx[c + 1 :]))
                new = lat(cand)
                if not cur < new <= target_ms:
                    continue
                cost = (lp[idx[c]] - lp[o]) / (new - cur)
                if best is None or cost < best[0]:
                    best = (cost, c, o, new)
        if best is None:
            break
        _, c, o, cur = best
        idx[c] = o
    return Arch(arch.space, tuple(idx))
