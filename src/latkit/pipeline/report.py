"""The pipeline's report: ``report.md`` with PNG plots, from the pipeline's summary.

Everything here reads plain data (the JSON the pipeline saves in its folder),
so a report can be redrawn from a finished run without running anything.
matplotlib is used headless (Agg) and imported inside the functions.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from latkit.core.files import check_output_dir, write_text
from latkit.deploy.layout import InputLayout
from latkit.devices.precision import Precision
from latkit.lut.calibration import describe_fit
from latkit.pipeline.pareto import Baseline, Scored, Size, pareto_front
from latkit.search.plots import save_figure
from latkit.pipeline.stages import EpochPoint, ScoredArch
from latkit.search.target import DEFAULT_TOLERANCE

log = logging.getLogger(__name__)


class Point(TypedDict):
    """A network's predicted against its measured latency (``kind``: ``calibration`` or ``final``)."""

    predicted_ms: float
    measured_ms: float
    kind: str
    label: str


class LayerRow(TypedDict, total=False):
    """A layer of the chosen network's estimate (:class:`latkit.lut.estimate.LayerEstimate` as saved)."""

    name: str
    key: str
    op_type: str
    latency_ms: float
    share_pct: float
    source: str  # measured, imported:..., predicted:... ("" for free layers)


class FileRow(TypedDict):
    """An exported file as the report lists it."""

    file: str
    format: str
    variant: str
    top1_agreement: float | None
    parity_passed: bool | None
    size_bytes: int
    max_rel_err: float
    measured_ms: float | None


class RunSummary(TypedDict, total=False):
    """``summary.json``: everything the report renders (a report can be redrawn from it alone).

    Older run folders may lack some keys; the renderer reads every optional one with a default.
    """

    device: str
    space: str
    resolution: int
    supernet_resolution: int
    target_ms: float
    target: str
    tolerance: float
    budget_used: float
    verdict_kind: str  # HIT, MET, OVER or CONTENDED
    verdict: str
    statistic: str  # what every figure is: p5, p10, p25 or median of each measurement's samples
    judged_ms: float  # the figure the verdict rests on (measured, corrected for the host's state when it could be)
    host_check: Mapping[str, object] | None  # the deployed file beside a calibration network (deploy.verify.HostCheck)
    warning: str | None
    data: str
    latkit_version: str
    attempts: list[Mapping[str, object]]  # the stages' results of each attempt (see stages.Attempt.to_dict)
    arch: object
    precision: str
    layout: str
    accuracy: float  # the trained float32 network's held-out accuracy
    evaluate: Mapping[str, object] | None  # stages.EvaluateResult as saved
    files: list[FileRow]
    calibration: Mapping[str, object]  # latkit.lut.calibration.Calibration as saved
    layers: list[LayerRow]
    points: list[Point]
    history: list[EpochPoint]
    samples: list[ScoredArch]
    chosen: Scored | None
    stages: dict[str, float]  # seconds per stage
    best_attempt: str
    baseline: Baseline
    chosen_size: Size
    measurement: Mapping[str, object] | None  # the deployed file's measured_latency sidecar entry
    command: str
    device_state: Mapping[str, object] | None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _attempt_row(a: Mapping[str, object], target_ms: float) -> str:
    """One attempt's row of the result table: its figures, the budget it used, and both drifts."""
    m = a.get("measured_ms")
    judged = a.get("judged_ms", m)
    off = f"{judged / target_ms:.0%}" if isinstance(judged, (int, float)) else "-"
    measure = a.get("measure") or {}
    drift, host = measure.get("drift"), measure.get("host")  # type: ignore[union-attr]
    corrected = host.get("corrected_ms") if host else None
    host_ratio = f"{_fmt(host['ratio'], 2)}x" + ("" if host.get("judged") else " (contended)") if host else "-"
    return (f"| {a['name']} | {_fmt(a.get('search_target_ms'))} | {_fmt(a.get('predicted_ms'))} | {_fmt(m)} "
            f"| {_fmt(corrected)} | {off} | {_fmt(drift['ratio'], 2) + 'x' if drift else '-'} | {host_ratio} |")


def layer_bars(layers: Sequence[LayerRow], measured_ms: float | None = None) -> tuple[list[LayerRow], list[float], str]:
    """The per-layer chart's rows (free layers left out), bar lengths (ms) and axis label.

    Each layer's figure is its operator measured in isolation (the LUT row). Those
    sum to more than the whole network takes (each isolated model pays its own call
    overhead and cold caches), so with ``measured_ms`` (the network measured whole)
    the bars are scaled to sum to it: they then show each layer's share of the
    measured total, not a per-layer measurement.
    """
    rows = [r for r in layers if r.get("latency_ms", 0) > 0]
    total = sum(r["latency_ms"] for r in rows)
    if measured_ms is None or total <= 0:
        return rows, [r["latency_ms"] for r in rows], "isolated-operator LUT latency (ms; sums to the LUT sum)"
    scale = measured_ms / total
    return rows, [scale * r["latency_ms"] for r in rows], (
        f"isolated-operator LUT latency x {scale:.2f}: scaled to the measured {measured_ms:.3f} ms (ms)")


def plot_layers(layers: Sequence[LayerRow], path: Path, title: str = "", measured_ms: float | None = None) -> Path:
    """Horizontal bars: each layer's isolated-operator estimate, labelled with its op type (see :func:`layer_bars`).

    Bars are coloured by where the LUT row came from: an operator measured alone on
    the device, or predicted / imported (``source`` of the estimate row).
    """
    plt = _pyplot()
    rows, bars, xlabel = layer_bars(layers, measured_ms)
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(rows) + 1.6))
    names = [f"{r['name']} ({r.get('op_type', '?')})" for r in rows]
    measured = [str(r.get("source", "measured")).startswith("measured") for r in rows]
    for flag, color, label in ((True, "#4477aa", "operator measured alone on the device (LUT)"),
                               (False, "#ee7733", "predicted / imported (not measured here)")):  # fmt: skip
        idx = [i for i, m in enumerate(measured) if m == flag]
        if idx:
            ax.barh(idx, [bars[i] for i in idx], color=color, label=label)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title or "Per-layer share of the chosen network (isolated-operator estimates)")
    ax.legend(fontsize=8, loc="best")
    return save_figure(plt, fig, path, 110)


def plot_predicted_vs_measured(points: Sequence[Point], path: Path) -> Path:
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
    return save_figure(plt, fig, path, 110)


def plot_trajectory(history: Sequence[EpochPoint], target_ms: float, path: Path,
                    tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Search trajectory per epoch: expected and derived latency, and the loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for key, label, style in (("expected_latency_ms", "expected latency E[LAT]", "-o"),
                              ("derived_latency_ms", "derived (argmax) latency", "-s")):  # fmt: skip
        ys = [h.get(key, math.nan) for h in history]
        ax.plot(epochs, ys, style, ms=4, label=label)
    ax.axhline(target_ms, color="#cc3311", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.axhspan(target_ms, target_ms * (1 + tolerance), color="#cc3311", alpha=0.08,
               label=f"tolerance (+{tolerance:.0%})")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("latency (ms)")
    losses = [h.get("loss", math.nan) for h in history]
    handles, labels = ax.get_legend_handles_labels()
    if any(math.isfinite(v) for v in losses):
        ax2 = ax.twinx()
        (line,) = ax2.plot(epochs, losses, ":", color="grey")
        ax2.set_ylabel("search loss (cross-entropy + latency term; may go below 0)", color="grey", fontsize=8)
        handles, labels = [*handles, line], [*labels, "search loss (right axis)"]
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title("Search trajectory")
    return save_figure(plt, fig, path, 110)


def plot_accuracy_latency(samples: Sequence[ScoredArch], chosen: Scored, target_ms: float, path: Path,
                          baseline: Baseline | None = None) -> Path:  # fmt: skip
    """Proxy accuracy against predicted latency of every scored architecture: the Pareto front, the chosen one marked.

    The accuracy is the supernet's shared weights on held-out images (a proxy
    for a trained network's), the latency the calibrated prediction. The
    baseline, when given with an ``accuracy``, is drawn too; otherwise as a
    vertical line at its predicted latency.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    ax.scatter([s["latency_ms"] for s in samples], [s["accuracy"] for s in samples], s=14,
               color="#4477aa", alpha=0.6, label=f"scored architectures ({len(samples)})")  # fmt: skip
    front = pareto_front([*samples, chosen])
    ax.step([p["latency_ms"] for p in front], [p["accuracy"] for p in front], where="post", color="#228833",
            lw=1.5, label=f"Pareto front ({len(front)} networks)")  # fmt: skip
    ax.scatter([chosen["latency_ms"]], [chosen["accuracy"]], marker="*", s=220, color="#cc3311",
               zorder=3, label="chosen")  # fmt: skip
    ax.axvline(target_ms, color="#cc3311", ls="--", lw=1, label=f"target {target_ms:g} ms")
    if baseline and baseline.get("predicted_ms") is not None:
        ax.axvline(baseline["predicted_ms"], color="#555555", ls=":", lw=1.2,
                   label=f"baseline {baseline.get('name', '')} ({baseline['predicted_ms']:.3g} ms predicted)")
    ax.set_xlabel("predicted latency (ms, calibrated LUT)")
    ax.set_ylabel("proxy accuracy (%, supernet weights, untrained)")
    ax.set_title("Accuracy vs latency (search proxy)")
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path, 110)


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_markdown(summary: RunSummary, plots: Mapping[str, str]) -> str:
    """The text of ``report.md`` (plots referenced by their file names)."""
    t = summary["target_ms"]
    lines = [
        "# latkit run report", "",
        f"- device: `{summary['device']}`",
        f"- precision: **{summary.get('precision', Precision.FP32.value)}** (LUT, calibration, search and the "
        "measured file; training in fp32)",
        f"- space: `{summary['space']}` at resolution {summary['resolution']}" + (
            f" (the supernet trained at {summary['supernet_resolution']}x{summary['supernet_resolution']}; "
            f"the chosen network is trained, exported and measured at {summary['resolution']})"
            if summary.get("supernet_resolution", summary["resolution"]) != summary["resolution"] else ""),
        f"- latency target: **{summary.get('target') or f'{t:g} ms'}** (a budget: within it up to "
        f"+{summary.get('tolerance', DEFAULT_TOLERANCE):.0%})",
        f"- data: {summary.get('data', '-')}; every latency is the **{summary.get('statistic', 'p5')}** of its "
        "measurement's samples",
        f"- latkit {summary.get('latkit_version', '')}", "",
        "## Result", "",
        f"**{summary['verdict']}**", "",
        "| attempt | target used by search (ms) | predicted (ms) | measured (ms) | corrected (ms) | budget used "
        "| device drift | host drift |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    lines += [_attempt_row(a, t) for a in summary.get("attempts", [])]
    lines += ["", "Device drift: the network's slowest LUT operators re-measured beside the exported file, "
              "now / LUT (1.00x = the device runs as when profiled). Host drift: a calibration network timed "
              "beside the file in fresh sessions, now / its figure stored in the calibration; the corrected "
              "figure (measured / host drift) is what the verdict rests on, unless the host was too contended "
              "to correct (then the measured figure, and an over-budget one is not judged)."]
    lines += ["", f"Chosen architecture: `{summary.get('arch')}`", ""]
    lines += accuracy_lines(summary)
    lines += comparison_lines(summary) + measurement_lines(summary)
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
    lines += calibration_lines(summary.get("calibration"))
    titles = {"layers": "Per-layer share (operators measured alone, scaled to the measured total)",
              "predicted_vs_measured": "Predicted vs measured",
              "trajectory": "Search trajectory", "accuracy_latency": "Accuracy vs latency"}  # fmt: skip
    for key, title in titles.items():
        if key in plots:
            lines += [f"## {title}", "", f"![{title}]({plots[key]})", ""]
    stages = summary.get("stages", {})
    if stages:
        lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in stages.items()]
        lines.append("")
    lines += reproduce_lines(summary)
    return "\n".join(lines)


def calibration_lines(cal: Mapping[str, object] | None) -> list[str]:
    """The report's calibration section: the fit used, how well it held out of sample, the forms refused."""
    if not cal:
        return []
    lines = ["## Calibration", "", f"{describe_fit(cal)} (in sample: max rel. error {float(cal['max_rel_err']):.1%})."]
    if cal.get("refused"):
        lines.append(f"Forms not used: {cal['refused']}.")
    return lines + [""]


def _size(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:.2f} M"


def comparison_lines(summary: RunSummary) -> list[str]:
    """The chosen network beside the baseline, and the Pareto front of the scored architectures."""
    lines: list[str] = []
    base, chosen = summary.get("baseline"), summary.get("chosen_size") or {}
    attempts = summary.get("attempts") or [{}]
    best = next((a for a in attempts if a.get("name") == summary.get("best_attempt")), attempts[-1])
    if base:
        lines += ["## Chosen network vs baseline", "",
                  "| network | predicted (ms) | measured (ms) | measured where | params | MACs |", "|---|---|---|---|---|---|",
                  f"| chosen | {_fmt(best.get('predicted_ms'))} | {_fmt(best.get('measured_ms'))} | exported file "
                  f"| {_size(chosen.get('params'))} | {_size(chosen.get('macs'))} |",
                  f"| baseline: {base['name']} | {_fmt(base.get('predicted_ms'))} | {_fmt(base.get('measured_ms'))} "
                  f"| {base.get('measured_in', '-')} | {_size(base.get('params'))} | {_size(base.get('macs'))} |", ""]  # fmt: skip
        if base.get("measured_ms") and best.get("measured_ms"):
            lines += [f"Speed-up over the baseline (measured): **{base['measured_ms'] / best['measured_ms']:.2f}x**.", ""]
    samples, c = summary.get("samples") or [], summary.get("chosen")
    if samples and c:
        front = pareto_front([*samples, {**c, "chosen": True}])
        lines += ["## Pareto front (search proxy)", "",
                  f"{len(samples)} architectures scored by the search; accuracy is the **proxy** accuracy of the "
                  "supernet's shared weights (not a trained network), latency the **predicted** (calibrated LUT) one.", "",
                  "| predicted latency (ms) | proxy accuracy (%) | |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {p['latency_ms']:.3f} | {p['accuracy']:.1f} | {'**chosen**' if p.get('chosen') else ''} |"
                  for p in front]
        if not any(p.get("chosen") for p in front):
            lines += ["", f"The chosen network ({c['latency_ms']:.3f} ms, {c['accuracy']:.1f}%) is not on the front: "
                      "it was picked for the latency budget, then trained."]  # fmt: skip
        lines.append("")
    return lines


def measurement_lines(summary: RunSummary) -> list[str]:
    """The deployed file's latency statistics and the device and runtime it ran on."""
    m = summary.get("measurement") or {}
    if not m:
        return []
    lines = ["## Measurement", "",
             f"- latency: **{_fmt(m.get('latency_ms'))} ms** ({m.get('statistic', '?')}), 95% CI "
             f"[{_fmt(m.get('ci_low_ms'))}, {_fmt(m.get('ci_high_ms'))}] ms, median {_fmt(m.get('median_ms'))} ms, "
             f"p90 {_fmt(m.get('p90_ms'))} ms, {m.get('n_samples', '?')} samples"]  # fmt: skip
    dev = (m.get("provenance") or {}).get("device") or {}
    names = {"uri": "device", "model": "CPU / device model", "runtime": "runtime", "runtime_version": "runtime version",
             "threads": "threads"}  # fmt: skip
    lines += [f"- {label}: `{dev[k]}`" for k, label in names.items() if dev.get(k) not in (None, "")]
    lines += [f"- {k}: `{v}`" for k, v in sorted((dev.get("extra") or {}).items()) if not isinstance(v, (dict, list))]
    lines += thermal_lines(summary.get("device_state"))
    lines.append("")
    return lines


def thermal_lines(state: Mapping[str, Any] | None) -> list[str]:
    """One line on the device's thermal state after the run (phones report it), or none."""
    snap = (state or {}).get("snapshot") or {}
    zones = [v for v in (snap.get("zones_c") or {}).values() if -20.0 < v < 150.0]
    if not zones:
        return []
    base = ((state or {}).get("baseline") or {}).get("temp_c")
    caps = snap.get("max_freq_khz") or {}
    return [f"- thermal state after the run: hottest zone {max(zones):.1f} °C"
            + (f" (baseline {base:.1f} °C)" if base is not None else "")
            + (f", max clock caps {', '.join(f'{int(v) // 1000} MHz' for v in sorted(set(caps.values())))}" if caps else "")]


def reproduce_command(config: Mapping[str, Any], out_dir: str | Path, lut: str | Path | None = None) -> str:
    """The ``latkit run`` command line that reruns a pipeline of ``config`` (a ``PipelineConfig`` as a dict).

    Settings at their defaults are left out; a relative target keeps its form (``60%``).
    """
    share = config.get("target_share")
    target = f"{share * 100:g}%" if share is not None else f"{config['target_ms']:g}"
    args = ["latkit", "run", "--device", config["device"], "--space", config["space"], "--target-ms", target]
    flags = (("tolerance", "--tolerance", DEFAULT_TOLERANCE), ("data", "--data", "digits"),
             ("resolution", "--resolution", None), ("search_epochs", "--search-epochs", 6),
             ("train_epochs", "--train-epochs", 3), ("max_steps_per_epoch", "--max-steps", None),
             ("profile_sample", "--sample", None), ("seed", "--seed", 0),
             ("precision", "--precision", Precision.FP32.value),
             ("layout", "--layout", InputLayout.NHWC.value))  # fmt: skip
    for key, flag, default in flags:
        if config.get(key, default) != default:
            args += [flag, f"{config[key]:g}" if isinstance(config[key], float) else str(config[key])]
    if config.get("profile_quick"):
        args.append("--quick")
    if lut is not None:
        args += ["--lut", str(lut)]
    return shlex.join([*args, "--out", str(out_dir)])


def reproduce_lines(summary: RunSummary) -> list[str]:
    """The command line that reproduces the run."""
    cmd = summary.get("command")
    return ["## Reproduce", "", f"`{cmd}`", ""] if cmd else []


def accuracy_lines(summary: RunSummary) -> list[str]:
    """The held-out accuracy lines: fp32 (torch) beside the shipped file's, and the quantization drop."""
    fp32 = summary.get("accuracy")
    if fp32 is None:
        return []
    data = summary.get("data", "")
    ev = summary.get("evaluate") or {}
    deployed = ev.get("deployed_accuracy_pct")
    precision = ev.get("precision", summary.get("precision", Precision.FP32.value))
    if deployed is None:
        return [f"Held-out accuracy after training: {fp32:.2f}% ({data}).", ""]
    lines = ["## Accuracy", "", f"Held-out accuracy ({ev.get('n_images', '?')} images of {data}):", "",
             "| model | runtime | accuracy |", "|---|---|---|",
             f"| fp32 network | torch | {fp32:.2f}% |"]  # fmt: skip
    for format, acc in (ev.get("files_accuracy_pct") or {}).items():
        runtime = "ONNX Runtime" if format == "onnx" else "LiteRT"
        lines.append(f"| {precision} {format} file | {runtime} | {acc:.2f}% |")
    drop = ev.get("accuracy_drop_pct")
    word = "quantization drop" if precision != Precision.FP32 else "export drop"
    lines += ["", f"**{word}: {drop:+.2f} points** (fp32 minus the shipped {ev.get('deployed_format')} file)", ""]
    return lines


def _inline_html(text: str) -> str:
    """Escape ``text`` and turn the report's inline marks (**bold**, `code`) into HTML."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _image_src(src: str, images_dir: Path | None) -> str:
    """A ``data:`` URI of the PNG ``images_dir/src``, so the page needs no other file."""
    if images_dir is None or not (images_dir / src).is_file():
        return html.escape(src)
    return "data:image/png;base64," + base64.b64encode((images_dir / src).read_bytes()).decode("ascii")


def markdown_to_html(markdown: str, title: str = "latkit run report", images_dir: Path | None = None) -> str:
    """A standalone HTML page of the markdown :func:`render_markdown` writes.

    Only the constructs that function emits are understood: headings, list
    items, pipe tables, images, bold and code spans; anything else is a paragraph.
    Images found in ``images_dir`` are inlined as base64 ``data:`` URIs, so
    the page is self-contained (it can be mailed or attached alone).
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
            body.append(f'<p><img src="{_image_src(image[2], images_dir)}" alt="{html.escape(image[1])}"></p>')
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


def _measured(summary: RunSummary) -> float | None:
    """The reported network's measured latency (ms), which the per-layer chart is scaled to, or None."""
    attempts = {a.get("name"): a for a in summary.get("attempts") or []}
    best = attempts.get(summary.get("best_attempt")) or (next(iter(attempts.values())) if attempts else None)
    ms = best.get("measured_ms") if best else None
    return float(ms) if isinstance(ms, (int, float)) and ms > 0 else None


def write_report(out_dir: str | Path, summary: RunSummary) -> Path:
    """Draw the plots the summary has data for and write ``out_dir/report.md`` and ``report.html``.

    ``summary`` keys used: ``target_ms``, ``device``, ``space``, ``resolution``,
    ``verdict``, ``attempts``, ``arch``, ``files``, ``calibration``, ``stages``
    and, for plots, ``layers`` (per-layer estimate rows), ``points``
    (predicted vs measured), ``history`` (search epochs), ``samples`` and
    ``chosen`` (accuracy vs latency); optional ``baseline`` and ``chosen_size``
    (:mod:`latkit.pipeline.pareto`), ``measurement`` (the deployed file's
    ``measured_latency`` entry: CI, p90, device provenance) and ``command``.

    Returns:
        The path of ``report.md``.
    """
    out = check_output_dir(out_dir, "report folder")
    plots: dict[str, str] = {}
    t = summary["target_ms"]
    jobs = (
        ("layers", summary.get("layers"), lambda p: plot_layers(summary["layers"], p, measured_ms=_measured(summary))),
        ("predicted_vs_measured", summary.get("points"), lambda p: plot_predicted_vs_measured(summary["points"], p)),
        ("trajectory", summary.get("history"), lambda p: plot_trajectory(summary["history"], t, p,
                                                                           summary.get("tolerance", DEFAULT_TOLERANCE))),
        ("accuracy_latency", summary.get("samples") and summary.get("chosen"),
         lambda p: plot_accuracy_latency(summary["samples"], summary["chosen"], t, p, summary.get("baseline"))),
    )  # fmt: skip
    for name, data, draw in jobs:
        if data:
            draw(out / f"{name}.png")
            plots[name] = f"{name}.png"
    path = out / "report.md"
    text = render_markdown(summary, plots)
    write_text(path, text, "report")
    write_text(out / "report.html", markdown_to_html(text, images_dir=out), "report")
    return path


__all__ = [
    "FileRow",
    "LayerRow",
    "Point",
    "RunSummary",
    "accuracy_lines",
    "comparison_lines",
    "measurement_lines",
    "plot_accuracy_latency",
    "plot_layers",
    "plot_predicted_vs_measured",
    "plot_trajectory",
    "markdown_to_html",
    "render_markdown",
    "reproduce_command",
    "thermal_lines",
    "reproduce_lines",
    "write_report",
]
