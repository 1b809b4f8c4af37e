"""What a ``benchmark_model`` run says about the delegate a phone was asked to use.

:func:`summarize_delegation` turns the parsed delegation lines
(:class:`~latkit.devices.benchmark_parser.BenchmarkResult`) into one
:class:`Delegation` for the device's delegate: the dict stored in each
measurement's ``provenance["delegation"]`` and, when the graph did not run
wholly on that delegate (partly on the CPU, not at all, or unknown), the one
line stored as ``provenance["delegation_warning"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latkit.devices.benchmark_parser import BenchmarkResult

# the words a device URI uses for a delegate -> how benchmark_model names it (lowercased)
# and a fragment of its kernel's name in "Replacing ..." lines
_DELEGATE_NAMES = {"xnnpack": ("xnnpack", "xnnpack"), "gpu": ("gpu", "gpu"), "nnapi": ("nnapi", "nnapi")}


@dataclass(frozen=True)
class Delegation:
    """What one run's output says about the delegate it was asked to use.

    ``to_dict()`` is the form stored in a measurement's ``provenance["delegation"]``;
    ``warning`` (None when the graph ran as asked) goes to
    ``provenance["delegation_warning"]``.
    """

    delegate: str
    applied: bool
    delegated_kernels: int | None
    fully_delegated: bool | None
    summary: str
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The provenance form (``warning`` is stored beside it, not in it)."""
        return {"delegate": self.delegate, "applied": self.applied,
                "delegated_kernels": self.delegated_kernels,
                "fully_delegated": self.fully_delegated, "summary": self.summary}


def summarize_delegation(result: BenchmarkResult, delegate: str) -> Delegation:
    """How far ``delegate`` (``none``, ``xnnpack``, ``gpu``, ``nnapi``) ran ``result``'s graph.

    The explicit summary line wins; a build that prints none is read from its
    ``Replacing N out of M node(s)`` line; with neither the delegation is unknown,
    which is itself a warning (the run may have timed the CPU).
    """
    if delegate == "none":
        applied = [r for r in result.delegation if r.applied]
        if applied:
            others = [r.name for r in applied]
            return Delegation("none", True, None, None, applied[0].line,
                              f"no delegate was asked for, but benchmark_model applied "
                              f"{', '.join(others)}; check the binary's default delegates")
        return Delegation("none", False, None, None, "no delegate: TFLite's built-in CPU kernels")
    name, kernel = _DELEGATE_NAMES.get(delegate, (delegate, delegate))
    report = next((r for r in reversed(result.delegation)
                   if r.name.lower().replace(" ", "") == name), None)
    if report is not None:
        warning = None
        if not report.applied:
            warning = (f"the {delegate} delegate took no part of the graph: all of it ran on "
                       "the CPU")
        elif not report.fully_delegated:
            warning = (f"the {delegate} delegate ran only part of the graph "
                       f"({report.delegated_kernels} delegate kernels); the rest ran on the CPU")
        return Delegation(delegate, report.applied, report.delegated_kernels,
                          report.fully_delegated, report.line, warning)
    rep = next((r for r in reversed(result.replacements) if kernel in r.kernel.lower()), None)
    if rep is not None:
        full = None if rep.total is None else (rep.nodes == rep.total and rep.partitions == 1)
        warning = None
        if rep.nodes == 0:
            warning = f"the {delegate} delegate took no part of the graph: all of it ran on the CPU"
        elif full is False:
            warning = (f"the {delegate} delegate took {rep.nodes} of {rep.total} nodes "
                       f"({rep.partitions} partitions); the rest ran on the CPU")
        return Delegation(delegate, rep.nodes > 0, rep.partitions, full, rep.line, warning)
    return Delegation(delegate, False, None, None, "",
                      f"benchmark_model printed no delegation summary for the {delegate} "
                      "delegate: whether it ran the graph is unknown")
