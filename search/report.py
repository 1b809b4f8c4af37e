"""The pipeline's report: ``report.md`` with PNG plots, from the pipeline's summary.

Everything here reads plain data (the JSON the pipeline saves in its folder),
so a report can be redrawn from a finished run without running anything.
matplotlib is used headless (Agg) and imported inside the functions.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latkit._files import check_output_dir, write_figure, write_text

log = logging.getLogger(__name__)

HIT_TOLERANCE = 0.10  # |measured - target| / target that counts as hitting the target


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_layers(layers: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Horizontal bars: each layer's LUT latency (free layers left out)."""
    plt = _pyplot()
    rows = [r for r in layers if r.get("latency_ms", 0) > 0]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    names = [r["name"] for r in rows]
    ax.barh(range(len(rows)), [r["latency_ms"] for r in rows], color="#4477aa")
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("LUT latency (ms)")
    ax.set_title(title or "Per-layer latency of the chosen network")
    fig.tight_layout()
    write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def plot_predicted_vs_measured(points: Sequence[dict[str, Any]], path: Path) -> Path:
    """Predicted against measured latency, with y = x and the +-10% band.

    Each point is ``{"predicted_ms", "measured_ms", "label", "kind"}``; kinds
    ``calibration`` (networks the calibration was fitted on) and ``final``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    values = [v for p in points for v in (p["predicted_ms"], p["measured_ms"])]
    lo, hi = min(values) * 0.8, max(values) * 1.2
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="measured = predicted")
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15, label="±10%")
    styles = {"calibration": dict(marker="o", color="#4477aa"), "final": dict(marker="*", s=160, color="#cc3311")}
    for kind, style in styles.items():
        pts = [p for p in points if p.get("kind") == kind]
        if pts:
            ax.scatter([p["measured_ms"] for p in pts], [p["predicted_ms"] for p in pts], label=kind, **style)
            for p in pts:
                if kind == "final":
                    ax.annotate(p.get("label", ""), (p["measured_ms"], p["predicted_ms"]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured end-to-end latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title("Predicted vs measured")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def plot_trajectory(history: Sequence[dict[str, Any]], target_ms: float, path: Path) -> Path:
    """Search trajectory per epoch: expected and derived latency, and the loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for key, label, style in (("expected_latency_ms", "expected latency E[LAT]", "-o"),
                              ("derived_latency_ms", "derived (argmax) latency", "-s")):  # fmt: skip
        ys = [h.get(key, math.nan) for h in history]
        ax.plot(epochs, ys, style, ms=4, label=label)
    ax.axhline(target_ms, color="#cc3311", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.axhspan(target_ms * (1 - HIT_TOLERANCE), target_ms, color="#cc3311", alpha=0.08)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("latency (ms)")
    losses = [h.get("loss", math.nan) for h in history]
    if any(math.isfinite(v) for v in losses):
        ax2 = ax.twinx()
        ax2.plot(epochs, losses, ":", color="grey", label="loss")
        ax2.set_ylabel("loss", color="grey")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Search trajectory")
    fig.tight_layout()
    write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_latency(
    samples: Sequence[dict[str, Any]], chosen: dict[str, Any], target_ms: float, path: Path
) -> Path:
    """Accuracy against latency of sampled architectures, the chosen one marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter([s["latency_ms"] for s in samples], [s["accuracy"] for s in samples], s=14,
               color="#4477aa", alpha=0.7, label=f"sampled architectures ({len(samples)})")  # fmt: skip
    ax.scatter([chosen["latency_ms"]], [chosen["accuracy"]], marker="*", s=220, color="#cc3311",
               zorder=3, label="chosen")  # fmt: skip
    ax.axvline(target_ms, color="#cc3311", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("accuracy (%, supernet weights)")
    ax.set_title("Accuracy vs latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


def hit(measured_ms: float, target_ms: float, tolerance: float = HIT_TOLERANCE) -> bool:
    """Whether ``measured_ms`` is within ``tolerance`` (relative) of ``target_ms``."""
    return abs(measured_ms - target_ms) <= tolerance * target_ms


def drift_sentence(ratio: float) -> str:
    """What a device drift (reference operators now / in the LUT) means for the user."""
    return (
        f"the device ran its reference operators at {ratio:.2f}x their LUT latency, so it is not in the "
        "state it was profiled in (load from other programs, heat, another clock); re-run the same command "
        "when the device is quiet (finished stages are kept), or delete its LUT to profile it as it is now."
    )


def above_range(target_ms: float, range_ms: tuple[float, float] | None, tolerance: float = HIT_TOLERANCE) -> bool:
    """Whether even the space's slowest architecture is predicted more than ``tolerance`` under the target.

    ``range_ms`` is the (fastest, slowest) predicted latency of the space on the
    device; None (not known) counts as in range.
    """
    return range_ms is not None and range_ms[1] < (1 - tolerance) * target_ms


def met_above_range(measured_ms: float, target_ms: float, range_ms: tuple[float, float] | None) -> bool:
    """The target was above the space's range and the slowest network measured no more than 10% over it.

    No architecture can come within 10% of such a target from below, so the
    largest network, running faster than asked, is the right answer.
    """
    return above_range(target_ms, range_ms) and measured_ms <= (1 + HIT_TOLERANCE) * target_ms


def verdict(
    measured_ms: float,
    target_ms: float,
    drift: dict[str, Any] | None = None,
    range_ms: tuple[float, float] | None = None,
) -> str:
    """Plain sentences on how the measured latency compares with the target.

    ``drift`` is the measurement's ``device_drift`` entry; a miss measured on a
    drifted device says so, since the figure then tells about the machine's
    state rather than the searched network. ``range_ms`` is the (fastest,
    slowest) predicted latency of the space: a target above it is met, not hit.
    """
    off = (measured_ms - target_ms) / target_ms
    if hit(measured_ms, target_ms):
        return f"HIT: measured {measured_ms:.3f} ms is within 10% of the {target_ms:g} ms target ({off:+.1%})."
    if range_ms is not None and met_above_range(measured_ms, target_ms, range_ms):
        return (
            f"MET: measured {measured_ms:.3f} ms ({off:+.1%}). The {target_ms:g} ms target is above this space "
            f"on this device (its slowest architecture is predicted at {range_ms[1]:.3f} ms), so the largest "
            f"network was chosen. For a search that trades speed for accuracy, give a target between "
            f"{range_ms[0]:.3f} and {range_ms[1]:.3f} ms."
        )
    side = "slower" if off > 0 else "faster"
    text = (
        f"MISSED: measured {measured_ms:.3f} ms is {abs(off):.1%} {side} than the {target_ms:g} ms "
        "target (more than 10% off)."
    )
    if drift and not drift.get("steady", True):
        text += " But " + drift_sentence(drift["ratio"])
    return text


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_markdown(summary: dict[str, Any], plots: dict[str, str]) -> str:
    """The text of ``report.md`` (plots referenced by their file names)."""
    t = summary["target_ms"]
    lines = [
        "# latkit run report", "",
        f"- device: `{summary['device']}`",
        f"- precision: **{summary.get('precision', 'fp32')}** (LUT, calibration, search and the measured file; "
        "training in fp32)",
        f"- space: `{summary['space']}` at resolution {summary['resolution']}",
        f"- latency target: **{t:g} ms**",
        f"- data: {summary.get('data', '-')}",
        f"- latkit {summary.get('latkit_version', '')}", "",
        "## Result", "",
        f"**{summary['verdict']}**", "",
        "| attempt | target used by search (ms) | predicted (ms) | measured (ms) | off target | device drift |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for a in summary.get("attempts", []):
        m = a.get("measured_ms")
        off = f"{(m - t) / t:+.1%}" if m is not None else "-"
        drift = (a.get("measure") or {}).get("drift")
        lines.append(f"| {a['name']} | {_fmt(a.get('search_target_ms'))} | {_fmt(a.get('predicted_ms'))} "
                     f"| {_fmt(m)} | {off} | {_fmt(drift['ratio'], 2) + 'x' if drift else '-'} |")  # fmt: skip
    lines += ["", "Device drift: the network's slowest LUT operators re-measured beside the exported file, "
              "now / LUT (1.00x = the device runs as when profiled)."]
    lines += ["", f"Chosen architecture: `{summary.get('arch')}`", ""]
    lines += accuracy_lines(summary)
    files = summary.get("files", [])
    if files:
        lines += ["## Exported files", "",
                  "| file | format | size | parity (max rel. error) | top-1 agreement | measured (ms) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for f in files:
            agree = f.get("top1_agreement")
            lines.append(f"| `{f['file']}` | {f['format']}/{f['variant']} | {f['size_bytes'] / 1e6:.2f} MB "
                         f"| {f['max_rel_err']:.2e} | {'-' if agree is None else f'{agree:.0%}'} "
                         f"| {_fmt(f.get('measured_ms'))} |")  # fmt: skip
        lines.append("")
    cal = summary.get("calibration")
    if cal:
        lines += ["## Calibration", "",
                  f"`e2e = {cal['a']:.3f} * lut_sum {cal['b']:+.4f} * n_ops {cal['c']:+.3f}` "
                  f"({cal['method']}, {cal['n_points']} networks, max rel. error {cal['max_rel_err']:.1%})", ""]  # fmt: skip
    titles = {"layers": "Per-layer latency", "predicted_vs_measured": "Predicted vs measured",
              "trajectory": "Search trajectory", "accuracy_latency": "Accuracy vs latency"}  # fmt: skip
    for key, title in titles.items():
        if key in plots:
            lines += [f"## {title}", "", f"![{title}]({plots[key]})", ""]
    stages = summary.get("stages", {})
    if stages:
        lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in stages.items()]
        lines.append("")
    return "\n".join(lines)


def accuracy_lines(summary: dict[str, Any]) -> list[str]:
    """The held-out accuracy lines: fp32 (torch) beside the shipped file's, and the quantization drop."""
    fp32 = summary.get("accuracy")
    if fp32 is None:
        return []
    data = summary.get("data", "")
    ev = summary.get("evaluate") or {}
    deployed = ev.get("deployed_accuracy_pct")
    precision = ev.get("precision", summary.get("precision", "fp32"))
    if deployed is None:
        return [f"Held-out accuracy after training: {fp32:.2f}% ({data}).", ""]
    lines = ["## Accuracy", "", f"Held-out accuracy ({ev.get('n_images', '?')} images of {data}):", "",
             "| model | runtime | accuracy |", "|---|---|---|",
             f"| fp32 network | torch | {fp32:.2f}% |"]  # fmt: skip
    for fmt_name, acc in (ev.get("files_accuracy_pct") or {}).items():
        runtime = "ONNX Runtime" if fmt_name == "onnx" else "LiteRT"
        lines.append(f"| {precision} {fmt_name} file | {runtime} | {acc:.2f}% |")
    drop = ev.get("accuracy_drop_pct")
    word = "quantization drop" if precision != "fp32" else "export drop"
    lines += ["", f"**{word}: {drop:+.2f} points** (fp32 minus the shipped {ev.get('deployed_format')} file)", ""]
    return lines


def _inline_html(text: str) -> str:
    """Escape ``text`` and turn the report's inline marks (**bold**, `code`) into HTML."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def markdown_to_html(markdown: str, title: str = "latkit run report") -> str:
    """A standalone HTML page of the markdown :func:`render_markdown` writes.

    Only the constructs that function emits are understood: headings, list
    items, pipe tables, images, bold and code spans; anything else is a paragraph.
    """
    body: list[str] = []
    table: list[list[str]] = []

    def flush_table() -> None:
        if table:
            head, rows = table[0], [r for r in table[1:] if not all(set(c) <= set("-: ") for c in r)]
            body.append("<table><tr>" + "".join(f"<th>{_inline_html(c)}</th>" for c in head) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append("</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush_table()
        if body and body[-1].startswith("<li>") and not line.startswith("- "):
            body.append("</ul>")
        image = re.fullmatch(r"!\[(.*)\]\((.*)\)", line)
        if image:
            body.append(f'<p><img src="{html.escape(image[2])}" alt="{html.escape(image[1])}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline_html(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            if not (body and body[-1].startswith("<li>")):
                body.append("<ul>")
            body.append(f"<li>{_inline_html(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline_html(line)}</p>")
    flush_table()
    if body and body[-1].startswith("<li>"):
        body.append("</ul>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em}img{max-width:100%}")  # fmt: skip
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Draw the plots the summary has data for and write ``out_dir/report.md`` and ``report.html``.

    ``summary`` keys used: ``target_ms``, ``device``, ``space``, ``resolution``,
    ``verdict``, ``attempts``, ``arch``, ``files``, ``calibration``, ``stages``
    and, for plots, ``layers`` (per-layer estimate rows), ``points``
    (predicted vs measured), ``history`` (search epochs), ``samples`` and
    ``chosen`` (accuracy vs latency).

    Returns:
        The path of ``report.md``.
    """
    out = check_output_dir(out_dir, "report folder")
    plots: dict[str, str] = {}
    t = summary["target_ms"]
    jobs = (
        ("layers", summary.get("layers"), lambda p: plot_layers(summary["layers"], p)),
        ("predicted_vs_measured", summary.get("points"), lambda p: plot_predicted_vs_measured(summary["points"], p)),
        ("trajectory", summary.get("history"), lambda p: plot_trajectory(summary["history"], t, p)),
        ("accuracy_latency", summary.get("samples") and summary.get("chosen"),
         lambda p: plot_accuracy_latency(summary["samples"], summary["chosen"], t, p)),
    )  # fmt: skip
    for name, data, draw in jobs:
        if data:
            draw(out / f"{name}.png")
            plots[name] = f"{name}.png"
    path = out / "report.md"
    text = render_markdown(summary, plots)
    write_text(path, text, "report")
    write_text(out / "report.html", markdown_to_html(text), "report")
    return path


__all__ = [
    "HIT_TOLERANCE",
    "accuracy_lines",
    "above_range",
    "hit",
    "met_above_range",
    "plot_accuracy_latency",
    "plot_layers",
    "plot_predicted_vs_measured",
    "plot_trajectory",
    "markdown_to_html",
    "render_markdown",
    "drift_sentence",
    "verdict",
    "write_report",
]
