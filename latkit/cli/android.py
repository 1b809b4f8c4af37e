"""`latkit loopback-device` and `latkit parse-benchmark`: the phone side of latkit."""

from __future__ import annotations

from pathlib import Path

import typer

from latkit.cli import app, common


@app.command("parse-benchmark")
def parse_benchmark_cmd(
    file: Path = typer.Argument(..., help="Saved output of TFLite's benchmark_model."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Parse benchmark_model output (timings, op profile, memory, delegation)."""
    from latkit.devices.benchmark_parser import parse_benchmark_output
    from latkit.errors import UsageError

    try:
        text = file.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from exc
    result = parse_benchmark_output(text)
    data = result.to_dict()
    if as_json:
        common.print_json(data)
        return
    for k, v in data.items():
        if k not in ("raw", "op_profile", "node_types") and v not in (None, [], {}):
            common.out.print(common.esc(f"{k}: {v}"))


@app.command("loopback-device")
def loopback_cmd(
    root: Path = typer.Option(Path("loopback-device"), "--root", help="Sandbox folder standing in for the phone."),
    port: int = typer.Option(6555, "--port", "-p", help="TCP port on 127.0.0.1 (0: any free port)."),
    auth: str = typer.Option("off", "--auth", help="off | accept | refuse"),
    scenario: str = typer.Option("cool", "--scenario", help="cool | heat | throttle"),
) -> None:
    """Run the loopback ADB device on 127.0.0.1 until interrupted."""
    from latkit.devices.loopback.server import serve

    serve(root=root, port=port, auth=auth, scenario=scenario,
          on_ready=lambda dev: common.err.print(f"loopback ADB device listening on 127.0.0.1:{dev.port}"))
