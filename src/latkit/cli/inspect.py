"""``latkit inspect FILE``: what a model file says an app needs to feed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from latkit.cli import common
from latkit.cli.root import app


@app.command("inspect")
def inspect_cmd(
    file: Path = typer.Argument(..., help="A model file (.onnx or .tflite)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
) -> None:
    """Print what a model file says about feeding it: input name, shape, layout, normalisation, int8 scale and
    zero point, class labels, latkit version and the measured latency (from the sidecar the file names)."""
    from latkit.deploy.inspect import inspect_file

    info = inspect_file(file)
    if as_json:
        common.print_json(info.to_dict())
        return
    _print(info.to_dict())


def _tensor(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    text = f"{t.get('name')!s}  {t.get('shape')}  {t.get('dtype', '?')}"
    text += f"  {t['layout']}" if t.get("layout") else ""
    q = t.get("quantization")
    return text + (f"  scale {q['scale']:.6g} zero point {q['zero_point']}" if q else "")


def _print(doc: dict[str, Any]) -> None:
    p = doc.get("preprocessing")
    labels = doc.get("labels")
    m = doc.get("measured_latency")
    rows = [
        ("file", doc["file"]), ("format", f"{doc['format']} ({doc.get('precision') or 'precision unknown'})"),
        ("input", _tensor(doc.get("input"))), ("output", _tensor(doc.get("output"))),
        ("preprocessing", "unknown" if not p else
         f"pixels in {p['pixel_range']}, resize to the input's size, then {p['formula']} with mean "
         f"{[round(v, 4) for v in p['mean']]} std {[round(v, 4) for v in p['std']]}"),
        ("labels", "unknown" if not labels else ", ".join(labels)),
        ("dataset", doc.get("dataset") or "-"), ("latkit", doc.get("latkit_version") or "-"),
        ("measured", "not measured" if not m else
         f"{m['latency_ms']:.3f} ms ({m.get('statistic')}) on {m.get('device')}"),
        ("sidecar", doc.get("sidecar_path") or "-"),
    ]  # fmt: skip
    for key, value in rows:
        common.out.print(f"{key:>13}: {common.esc(value)}")
    if doc.get("note"):
        common.out.print(f"[yellow]note:[/] {common.esc(doc['note'])}")
