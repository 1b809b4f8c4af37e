"""`latkit train`: train a searched architecture on its own, for `latkit export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latkit.cli import common
from latkit.cli.root import app


@app.command("train")
def train_cmd(
    arch: Path = typer.Option(..., "--arch", "-a", help="arch.json written by `latkit search` or `latkit run`."),
    data: str = typer.Option("digits", "--data", help="digits (embedded) | cifar10:PATH | folder:PATH."),
    out: Path = typer.Option(Path("train"), "--out", "-o",
                             help="Folder for weights.safetensors and its weights.json sidecar."),
    space: Optional[str] = typer.Option(None, "--space", "-s", help="Space of --arch if the file does not say."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", min=1, max=4096, help="Default: the arch's own."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Passes over the training split."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Cap every epoch at N batches."),
    init: str = typer.Option(
        "auto", "--init",
        help="auto: start from the search checkpoint beside --arch if there is one (as `latkit run` does); "
             "scratch; or a search's checkpoint.safetensors.",
    ),  # fmt: skip
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train --arch on --data and write weights that `latkit export --weights` takes."""
    from latkit.cli.progress import Stages
    from latkit.deploy.train import train_arch

    with Stages(enabled=not as_json) as shown:
        result = train_arch(arch, data, out, space=space, resolution=resolution, epochs=epochs,
                            max_steps=max_steps, init=init, seed=seed,
                            on_progress=lambda done, total, message: shown("training", done, total, message))  # fmt: skip
    if as_json:
        common.print_json(result.to_dict())
        return
    common.out.print(f"held-out accuracy {result.accuracy_pct:.2f}% after {result.steps} steps "
                     f"({result.classes} classes, {result.resolution} px, from {common.esc(result.init)})")
    common.out.print(f"weights: {common.esc(result.weights_path)}")
    common.out.print(f"export:  latkit export --arch {common.esc(arch)} --weights {common.esc(result.weights_path)}")
