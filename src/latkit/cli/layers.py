"""``latkit measure --per-layer``: run the measured model under the runtime's profiler and show its layers."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from latkit.cli import common

PER_LAYER_HELP = ("Also profile the model layer by layer with the runtime's own profiler (ONNX Runtime's "
                  "profiler, benchmark_model --enable_op_profiling on a phone; cpu:litert has none and says so) "
                  "and show each layer's time and share, their sum against the end-to-end figure, and peak memory.")
TOP_ROWS = 40  # the table shows the slowest layers; --json has them all
NAME_CHARS = 70  # a converter's layer names run to hundreds of characters; the table shows their ends


def add_layer_profile(result: dict[str, Any], dev: Any, model: Any, quantile: float, runs: int | None = None) -> None:
    """Profile ``model`` on the open ``dev`` and add ``per_layer`` to ``measure``'s result (each layer's
    figure is the measurement's own ``quantile`` of its runs, where the runtime gives every run)."""
    from latkit.devices.layers import PROFILE_RUNS
    from latkit.profiler.layers import profile_layers

    common.err.print(f"profiling layers on {common.esc(dev.uri)} ({runs or PROFILE_RUNS} runs)")
    profile = profile_layers(dev, model, runs or PROFILE_RUNS, quantile)
    result["per_layer"] = profile.to_dict(end_to_end_ms=result["latency_ms"])


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def print_layer_profile(doc: dict[str, Any]) -> None:
    """The per-layer table (slowest first), the sum against the end-to-end figures, and memory."""
    from latkit.devices.layers import sum_text

    layers = doc["layers"]
    if layers:
        shown = sorted(layers, key=lambda r: -r["latency_ms"])[:TOP_ROWS]
        more = f", the {TOP_ROWS} slowest shown (--json lists all)" if len(layers) > TOP_ROWS else ""
        grid = Table("layer", "op type", f"{doc['statistic']} ms", "share",
                     title=f"per layer: {len(layers)} layer(s), {doc['runtime']}, {doc['runs']} runs{more}")
        for r in shown:
            name = r["name"] if len(r["name"]) <= NAME_CHARS else "..." + r["name"][-NAME_CHARS:]
            grid.add_row(common.esc(name), common.esc(r["op_type"]), common.fmt_ms(r["latency_ms"]),
                         f"{r['share']:.1%}")  # fmt: skip
        common.out.print(grid)
        common.out.print(f"per-layer {sum_text(doc, common.fmt_ms)}")
    elif doc.get("run_ms"):
        common.out.print(f"per layer: none; the {doc['runs']} runs took {common.fmt_ms(doc['run_ms'])} ms each "
                         f"({doc['statistic']})")
    if doc.get("note"):
        common.out.print(f"[yellow]per layer:[/] {common.esc(doc['note'])}")
    for m in doc.get("memory") or []:
        common.out.print(f"memory: {_mib(m['bytes'])}  {common.esc(m['what'])}")
    if not doc.get("memory"):
        common.out.print("memory: this runtime reports none")


__all__ = ["PER_LAYER_HELP", "add_layer_profile", "print_layer_profile"]
