"""PNG plots of a search trajectory (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from latkit.core.files import write_figure
from latkit.core.errors import MissingExtraError


def save_figure(plt: Any, fig: Any, path: Path, dpi: int) -> Path:
    """Lay ``fig`` out, write it to ``path`` (atomically) and close it."""
    fig.tight_layout()
    write_figure(path, fig, dpi=dpi)
    plt.close(fig)
    return path


def plot_trajectory(
    out: Path, rows: Sequence[Mapping[str, Any]], target_ms: float, final: tuple[float, float]
) -> dict[str, Path]:
    """Write ``expected_latency.png`` and ``accuracy_latency.png`` into ``out``.

    Args:
        out: the run directory.
        rows: trajectory rows (``epoch``, ``kind``, ``accuracy``, ``latency_ms``,
            ``expected_latency_ms``).
        target_ms: the target, drawn as a line.
        final: ``(accuracy, latency_ms)`` of the returned architecture.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("search plots (matplotlib)", "search", exc) from None
    files = {}
    by_epoch = [r for r in rows if r["kind"] == "derived"]
    fig, ax = plt.subplots(figsize=(6, 4))
    if by_epoch:
        ep = [r["epoch"] for r in by_epoch]
        ax.plot(ep, [r["expected_latency_ms"] for r in by_epoch], "o-", label="expected latency E[LAT]")
        ax.plot(ep, [r["latency_ms"] for r in by_epoch], "s--", label="derived arch (argmax)")
    else:
        ax.text(0.5, 0.5, "no per-epoch latency (framework search)", ha="center", transform=ax.transAxes)
    ax.axhline(target_ms, color="red", lw=1, label=f"target {target_ms:.3g} ms")
    ax.set_xlabel("epoch")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    files["plot_latency"] = save_figure(plt, fig, out / "expected_latency.png", 100)

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("sampled", "o"), ("query", "o"), ("derived", "s")):
        pts = [r for r in rows if r["kind"] == kind]
        if pts:
            ax.scatter([r["latency_ms"] for r in pts], [r["accuracy"] for r in pts], marker=marker,
                       alpha=0.6, label=kind)  # fmt: skip
    ax.scatter([final[1]], [final[0]], marker="*", s=200, color="black", label="returned")
    ax.axvline(target_ms, color="red", lw=1, label="target")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend()
    files["plot_scatter"] = save_figure(plt, fig, out / "accuracy_latency.png", 100)
    return files
