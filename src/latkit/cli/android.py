"""`latkit loopback-device` and `latkit parse-benchmark`: the phone side of latkit."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latkit.cli import common
from latkit.cli.root import app


@app.command("parse-benchmark")
def parse_benchmark_cmd(
    file: Path = typer.Argument(..., help="Saved output of TFLite's benchmark_model."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Parse benchmark_model output (timings, op profile, memory, delegation)."""
    from latkit.devices.benchmark_parser import parse_benchmark_output, read_output_file

    result = parse_benchmark_output(read_output_file(file))  # bounded: /dev/zero is refused
    data = result.to_dict()
    if as_json:
        common.print_json(data)
        return
    for k, v in data.items():
        if k not in ("raw", "op_profile", "node_types") and v not in (None, [], {}):
            common.out.print(common.esc(f"{k}: {v}"))


@app.command("loopback-device")
def loopback_cmd(
    root: Path | None = typer.Option(None, "--root", help="Sandbox folder standing in for the phone "
                                     "(default: one per port in latkit's cache)."),
    port: int = typer.Option(6555, "--port", help="TCP port on 127.0.0.1 (0: any free port)."),
    auth: str = typer.Option("key", "--auth", help="key: only the device's own key, which latkit's "
                             "client uses (default) | accept: any new key | refuse | off: no "
                             "authentication (any local user gets a shell)"),
    scenario: str = typer.Option("cool", "--scenario", help="cool | heat | throttle"),
    serial: str = typer.Option("loopback", "--serial", help="Serial it reports (ro.serialno)."),
    model: str = typer.Option("Loopback Pixel", "--model", help="Model it reports (ro.product.model)."),
    simulate_ms: Optional[float] = typer.Option(
        None, "--simulate-latency-ms", min=0.001,
        help="Simulated timing: benchmark_model sleeps this long per run instead of running the "
             "model, and says so in its output (for farm and throughput tests)."),
    old_port: Optional[int] = typer.Option(None, "-p", hidden=True),  # -p is --precision everywhere now
) -> None:
    """Run the loopback ADB device on 127.0.0.1 until interrupted."""
    from latkit.devices.loopback.server import serve

    port = common.renamed("--port", port, "-p", old_port, 6555)

    def ready(dev) -> None:
        if simulate_ms is not None:
            from latkit.devices.loopback.benchmark_model import install_simulator

            install_simulator(dev.root, simulate_ms)
            common.err.print(f"simulated timing: every benchmark_model run sleeps {simulate_ms:g} ms")
        common.err.print(common.esc(f"loopback ADB device listening on 127.0.0.1:{dev.port} "
                                    f"(folder {dev.root})"), highlight=False)
        if dev.auth == "key":
            common.err.print(common.esc(f"it accepts only its key {dev.key_path}; latkit uses it, "
                                        f"for adb run: ADB_VENDOR_KEYS={dev.key_path} adb connect "
                                        f"127.0.0.1:{dev.port}"), highlight=False)

    serve(root=root, port=port, auth=auth, scenario=scenario, serial=serial, model=model,
          on_ready=ready)
