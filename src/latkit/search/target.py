"""The latency target: what a user may ask for, whether a space can give it, and the verdict.

One home for every rule about a target, used by ``latkit search``, ``latkit run``,
the report and the measurement check:

* **validation**: a target is a positive number of milliseconds, or a share of
  the slowest network's latency on the device (``60%``), or a speed-up over it
  (``2x``); :func:`parse_target` reads what the user typed, and
  :meth:`Target.resolve` turns a relative one into milliseconds once the
  space's range on the device is known (after calibration).
* **reachability**: a target below the space's fastest network is refused
  (:func:`check_reachable`); one above its slowest is warned about
  (:func:`range_warning`), since every network then fits and nothing is traded.
* **the verdict**: a target is a budget. A measured latency at most
  ``target * (1 + tolerance)`` is within it (HIT), whatever the undershoot; a
  network that uses less than ``1 - 2 * tolerance`` of the budget gets a
  warning (a larger, more accurate one would have fitted), never a failure.
  Above the budget is OVER: the pipeline searches again and exits 1. A target
  above the space's range that the largest network fits is MET. A network over
  the budget on a host too contended to judge it is CONTENDED
  (:func:`contended`): neither a success nor a miss, and no reason to search
  again.
* **projection and fill**: greedy, bounded single-choice changes that bring an
  architecture under the target (:func:`project_to_target`) or grow it towards
  the target from below (:func:`fill_to_target`), ranked by the log-probability
  the search gave each option.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from latkit.core.errors import UsageError
from latkit.profiler.spaces.base import Arch
from latkit.search.framework.result import SearchError

DEFAULT_TOLERANCE = 0.10  # measured may exceed the target by this fraction and still be within budget
MAX_TOLERANCE = 0.5
MAX_TARGET_MS = 1e6  # a latency target beyond 1000 s is a typo, not a deployment target

HIT, MET, OVER, CONTENDED = "HIT", "MET", "OVER", "CONTENDED"


def check_target_ms(ms: Any) -> float:
    """``ms`` as a float, or UsageError unless it is a finite, positive, sane number of milliseconds."""
    try:
        value = float(ms)
    except (TypeError, ValueError):
        raise UsageError(f"the latency target must be a number of ms, got {ms!r}") from None
    if isinstance(ms, bool) or not (0 < value <= MAX_TARGET_MS):
        raise UsageError(f"the latency target must be a positive number of ms up to {MAX_TARGET_MS:g}, "
                         f"got {ms!r}; give --target-ms in milliseconds")  # fmt: skip
    return value


def check_tolerance(tolerance: Any) -> float:
    """``tolerance`` as a float in [0, 0.5], or UsageError."""
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise UsageError(f"--tolerance must be a fraction such as 0.1, got {tolerance!r}") from None
    if isinstance(tolerance, bool) or not (0 <= value <= MAX_TOLERANCE):
        raise UsageError(f"--tolerance must be between 0 and {MAX_TOLERANCE:g} (0.1 = 10%), got {tolerance!r}")
    return value


class TargetDict(TypedDict):
    """A :class:`Target` as JSON (``latkit search --json``'s ``target``)."""

    ms: float | None
    fraction: float | None
    text: str


@dataclass(frozen=True)
class Target:
    """A latency target: absolute (``ms``) or a share of the slowest network (``fraction``)."""

    ms: float | None = None
    fraction: float | None = None  # of the slowest network's predicted latency on the device
    text: str = ""  # what the user typed

    @property
    def relative(self) -> bool:
        return self.fraction is not None

    def resolve(self, slowest_ms: float | None) -> float:
        """The target in ms; a relative one needs the slowest network's latency on the device."""
        if self.ms is not None:
            return self.ms
        if slowest_ms is None or not math.isfinite(slowest_ms) or slowest_ms <= 0:
            raise SearchError("a relative target needs the space's latency range on the device, which is unknown")
        return check_target_ms(self.fraction * slowest_ms)

    def describe(self, slowest_ms: float | None = None) -> str:
        """``0.4 ms``, ``60% of the slowest network (0.412 ms) = 0.247 ms`` or ``2x faster than ...``."""
        if self.ms is not None:
            return f"{self.ms:g} ms"
        head = (f"{self.text} faster than the slowest network" if self.text.endswith("x")
                else f"{100 * self.fraction:.4g}% of the slowest network")  # fmt: skip
        if slowest_ms is None:
            return head
        return f"{head} ({slowest_ms:.3f} ms) = {self.resolve(slowest_ms):.3f} ms"

    def to_dict(self) -> TargetDict:
        return {"ms": self.ms, "fraction": self.fraction, "text": self.text}


_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")
_SPEEDUP = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*[xX]?\s*$")


def parse_target(text: Any = None, speedup: Any = None) -> Target:
    """What the user asked for: ``--target-ms 0.4``, ``--target-ms 60%`` or ``--speedup 2x``.

    The CLI and :func:`latkit.api.run` call it once, on what they were given
    (``text`` is ``--target-ms``: a number of ms or a percentage); everything
    below them receives the :class:`Target`.

    Raises:
        UsageError: neither or both given, or a value that is not one of those forms.
    """
    if (text is None) == (speedup is None):
        raise UsageError("give exactly one of --target-ms (ms, or a % of the slowest network) and --speedup")
    if speedup is not None:
        found = _SPEEDUP.match(str(speedup))
        value = float(found.group(1)) if found else 0.0
        if not found or not 1.0 <= value <= 1000:
            raise UsageError(f"--speedup must be a factor over the slowest network from 1x to 1000x, such as 2x; "
                             f"got {speedup!r}")  # fmt: skip
        return Target(fraction=1.0 / value, text=f"{value:g}x")
    if isinstance(text, str):
        found = _PERCENT.match(text)
        if found:
            share = float(found.group(1))
            if not 0 < share <= 100:
                raise UsageError(f"--target-ms {text!r}: a share of the slowest network must be above 0% "
                                 "and at most 100%")  # fmt: skip
            return Target(fraction=share / 100, text=f"{share:g}%")
        if text.strip().endswith("%"):
            raise UsageError(f"--target-ms {text!r} is not a percentage such as 60%")
    return Target(ms=check_target_ms(text), text=str(text))


def resolve_on_model(target: Target, latency_model: Any) -> tuple[float, str]:
    """The target in ms and in words, a share resolved on ``latency_model``'s slowest network.

    The one place a relative target becomes milliseconds: ``latkit search``,
    ``latkit run`` and the Python API all resolve it here, on the latency model
    they search with (:func:`latkit.lut.tables.TableLatencyModel.from_lut` with
    the device's calibration when it has one, and the deployed classifier), so
    ``60%`` means the same milliseconds in each. A share resolved on an
    uncalibrated LUT sum says so in its text.

    Raises:
        SearchError: a relative target on a model that does not know its slowest network.
    """
    if not target.relative:
        return target.resolve(None), target.describe()
    slowest = latency_model.max_latency()[0] if hasattr(latency_model, "max_latency") else None
    ms = target.resolve(slowest)
    text = target.describe(slowest)
    if getattr(latency_model, "provenance", {}).get("kind") == "lut":
        text += " (on the uncalibrated LUT sum)"
    return ms, text


# --------------------------------------------------------------------------- reachability


def check_reachable(space: str, target_ms: float, min_ms: float, device: str | None = None,
                    max_ms: float | None = None, hint: str = "") -> None:
    """SearchError unless the fastest architecture (``min_ms``) fits ``target_ms``.

    ``max_ms`` (the slowest architecture, when known) and ``hint`` (what is kept
    for the next try) are added to the message.
    """
    target_ms = check_target_ms(target_ms)
    if min_ms > target_ms:
        where = f"{space} on {device}" if device else space
        slowest = f" (the slowest at {max_ms:.4g} ms)" if max_ms is not None else ""
        raise SearchError(
            f"latency target {target_ms:.4g} ms is unreachable in {where}: the smallest latency reachable is "
            f"{min_ms:.4g} ms{slowest}; raise --target-ms{hint}"
        )


def above_range(target_ms: float, range_ms: tuple[float, float] | None, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether even the space's slowest architecture is more than ``tolerance`` under the target.

    ``range_ms`` is the (fastest, slowest) predicted latency of the space on the
    device; None (not known) counts as in range.
    """
    return range_ms is not None and range_ms[1] < (1 - tolerance) * target_ms


def range_warning(target_ms: float, range_ms: tuple[float, float] | None, space: str, device: str,
                  tolerance: float = DEFAULT_TOLERANCE) -> str | None:
    """The warning for a target above the space's range (every network fits), or None."""
    if not above_range(target_ms, range_ms, tolerance):
        return None
    assert range_ms is not None
    return (f"the {target_ms:.4g} ms target is above {space} on {device}: its slowest architecture is predicted "
            f"at {range_ms[1]:.3f} ms, so every architecture fits and the search keeps the most accurate; give "
            f"a target between {range_ms[0]:.3f} and {range_ms[1]:.3f} ms (or --target-ms 60%) to trade speed "
            "for accuracy")  # fmt: skip


# --------------------------------------------------------------------------- verdict


def within_budget(measured_ms: float, target_ms: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether ``measured_ms`` is at most ``target_ms * (1 + tolerance)``."""
    return measured_ms <= (1 + tolerance) * target_ms


def undershoot(measured_ms: float, target_ms: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether a network uses less than ``1 - 2 * tolerance`` of the budget (a larger one would fit)."""
    return measured_ms < (1 - 2 * tolerance) * target_ms


@dataclass(frozen=True)
class Verdict:
    """How a measured latency compares with the target."""

    kind: str  # HIT, MET, OVER or CONTENDED
    text: str
    budget_used: float  # measured / target
    warning: str | None = None

    @property
    def ok(self) -> bool:
        """Within the budget (HIT or MET)."""
        return self.kind in (HIT, MET)


def judge(
    measured_ms: float,
    target_ms: float,
    tolerance: float = DEFAULT_TOLERANCE,
    drift: Mapping[str, Any] | None = None,
    range_ms: tuple[float, float] | None = None,
    figure: str = "measured",
) -> Verdict:
    """The verdict on a measured network (see the module docstring for the rules).

    ``drift`` is the measurement's ``device_drift`` entry: an OVER measured on a
    drifted device says so, since the figure then tells about the machine's
    state. ``range_ms`` is the (fastest, slowest) predicted latency of the space.
    ``figure`` names what ``measured_ms`` is in the text (``corrected``: the
    measured figure corrected for the host's state).
    """
    used = measured_ms / target_ms
    head = f"{figure} {measured_ms:.3f} ms, {used:.0%} of the {target_ms:.4g} ms budget"
    if not within_budget(measured_ms, target_ms, tolerance):
        text = f"OVER: {head} (more than {tolerance:.0%} over)."
        if drift and not drift.get("steady", True):
            text += " But " + drift_sentence(drift["ratio"])
        return Verdict(OVER, text, used)
    if above_range(target_ms, range_ms, tolerance):
        assert range_ms is not None
        text = (f"MET: {head}. The target is above this space on this device (its slowest architecture is "
                f"predicted at {range_ms[1]:.3f} ms), so the largest network was chosen. For a search that trades "
                f"speed for accuracy, give a target between {range_ms[0]:.3f} and {range_ms[1]:.3f} ms "
                "(or --target-ms 60%).")  # fmt: skip
        return Verdict(MET, text, used)
    warning = None
    if undershoot(measured_ms, target_ms, tolerance):
        warning = (f"the network uses only {used:.0%} of the budget: the prediction was pessimistic or the "
                   "device ran faster than profiled; a larger, more accurate network would fit")  # fmt: skip
    text = f"HIT: {head} (within budget, tolerance {tolerance:.0%})."
    return Verdict(HIT, text + (f" Warning: {warning}." if warning else ""), used, warning)


def contended(measured_ms: float, target_ms: float, why: str) -> Verdict:
    """The verdict on a network over the budget on a host too contended to tell whether it really is."""
    used = measured_ms / target_ms
    return Verdict(CONTENDED, (
        f"COULD NOT JUDGE: host contended. Measured {measured_ms:.3f} ms, {used:.0%} of the {target_ms:.4g} ms "
        f"budget, but {why}, so the figure says more about other load on the host than about the network. "
        "Re-run the same command when the host is quieter: finished stages are kept and the network is "
        "measured again."), used)  # fmt: skip


def drift_sentence(ratio: float) -> str:
    """What a device drift (reference operators now / in the LUT) means for the user."""
    return (
        f"the device ran its reference operators at {ratio:.2f}x their LUT latency, so it is not in the "
        "state it was profiled in (load from other programs, heat, another clock); re-run the same command "
        "when the device is quiet (finished stages are kept), or delete its LUT to profile it as it is now."
    )


def best_attempt(measured: list[float], target_ms: float, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Index of the attempt to report: the one using most of the budget, else the least over it."""
    fits = [i for i, m in enumerate(measured) if within_budget(m, target_ms, tolerance)]
    if fits:
        return max(fits, key=lambda i: measured[i])
    return min(range(len(measured)), key=lambda i: measured[i])


# --------------------------------------------------------------------------- greedy projection and fill

FILL_STOP = 0.98  # fill_to_target stops once the latency is within 2% under the target
_Key = Callable[[int, int, float], "tuple[float, ...] | None"]


def _best_change(arch: Arch, idx: list[int], logp: list[np.ndarray], lat: Callable[[Arch], float],
                 key: _Key) -> tuple[int, int, float] | None:  # fmt: skip
    """The single-choice change ``(choice, option, new latency)`` with the lowest ``key(c, o, new)``.

    ``key`` returns None for a change that is not allowed; ties keep the first change found.
    """
    best: tuple[tuple[float, ...], int, int, float] | None = None
    for c, lp in enumerate(logp):
        for o in range(len(lp)):
            if o == idx[c]:  # no change (every key refuses it)
                continue
            new = lat(Arch(arch.space, tuple(idx[:c] + [o] + idx[c + 1 :])))
            k = key(c, o, new)
            if k is not None and (best is None or k < best[0]):
                best = (k, c, o, new)
    return None if best is None else best[1:]


def _greedy(arch: Arch, idx: list[int], cur: float, logp: list[np.ndarray], lat: Callable[[Arch], float],
            key: Callable[[list[int], float], _Key], done: Callable[[float], bool]) -> float:  # fmt: skip
    """Apply the best change (see :func:`_best_change`) to ``idx`` until ``done(latency)`` or none is left.

    Bounded by the number of options; returns the latency reached.
    """
    for _ in range(sum(len(v) for v in logp)):
        if done(cur):
            break
        change = _best_change(arch, idx, logp, lat, key(idx, cur))
        if change is None:
            break
        c, o, cur = change
        idx[c] = o
    return cur


def _descend(logp: list[np.ndarray]) -> Callable[[list[int], float], _Key]:
    """Key of the change that loses the least log-probability per ms saved."""

    def key(idx: list[int], cur: float) -> _Key:
        def k(c: int, o: int, new: float) -> tuple[float, ...] | None:
            saved = cur - new
            return None if saved <= 0 else ((logp[c][idx[c]] - logp[c][o]) / saved,)

        return k

    return key


def _climb(logp: list[np.ndarray], target_ms: float) -> Callable[[list[int], float], _Key]:
    """Key of the change with the best log-probability gain that keeps ``LAT <= T``."""

    def key(idx: list[int], cur: float) -> _Key:
        def k(c: int, o: int, new: float) -> tuple[float, ...] | None:
            gain = logp[c][o] - logp[c][idx[c]]
            return None if gain <= 0 or new > target_ms else (-gain,)

        return k

    return key


def _grow(logp: list[np.ndarray], target_ms: float, larger_first: bool) -> Callable[[list[int], float], _Key]:
    """Key of the change that loses the least log-probability per ms added and keeps ``LAT <= T``.

    With ``larger_first``, of two equally cheap changes the one adding more latency wins.
    """

    def key(idx: list[int], cur: float) -> _Key:
        def k(c: int, o: int, new: float) -> tuple[float, ...] | None:
            if not cur < new <= target_ms:
                return None
            cost = (logp[c][idx[c]] - logp[c][o]) / (new - cur)
            return (cost, cur - new) if larger_first else (cost,)

        return k

    return key


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
    cur = _greedy(arch, idx, lat(arch), logp, lat, _descend(logp), lambda ms: ms <= target_ms)
    if cur > target_ms:
        if fallback is None or lat(fallback) > target_ms:
            raise SearchError(f"no architecture within {target_ms:g} ms was found; raise --target-ms")
        idx, cur = list(fallback.indices), lat(fallback)
    # climb back towards the preferred options within the budget
    cur = _greedy(arch, idx, cur, logp, lat, _climb(logp, target_ms), lambda ms: False)
    if lower_ms is not None:
        _greedy(arch, idx, cur, logp, lat, _grow(logp, target_ms, False), lambda ms: ms >= lower_ms)
    return Arch(arch.space, tuple(idx))


def fill_to_target(
    arch: Arch, logp: list[np.ndarray], latency_ms: Callable[[Arch], float], target_ms: float,
    stop_at: float = FILL_STOP,
) -> Arch:  # fmt: skip
    """Grow ``arch`` towards ``target_ms`` from below, staying at or under it.

    The gradient search guarantees ``LAT <= T`` but not that the budget is used:
    on a small dataset the loss rarely pays for a larger network, and the
    result can be far faster than asked. While the latency is below
    ``stop_at * T``, apply the single-choice change that costs the least
    log-probability per ms it adds (a change the search prefers costs
    nothing; of equal costs the larger change), among those that keep
    ``LAT <= T``. Bounded by the number of options; stops when no change fits.
    """
    idx = list(arch.indices)
    _greedy(arch, idx, latency_ms(arch), logp, latency_ms, _grow(logp, target_ms, True),
            lambda ms: ms >= stop_at * target_ms)  # fmt: skip
    return Arch(arch.space, tuple(idx))


__all__ = [
    "CONTENDED", "DEFAULT_TOLERANCE", "FILL_STOP", "HIT", "MAX_TARGET_MS", "MET", "OVER", "SearchError", "Target",
    "TargetDict", "Verdict", "above_range", "best_attempt", "check_reachable", "check_target_ms", "check_tolerance",
    "contended", "drift_sentence", "fill_to_target", "judge", "parse_target", "project_to_target", "range_warning",
    "resolve_on_model", "undershoot",
    "within_budget",
]  # fmt: skip
