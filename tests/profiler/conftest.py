"""Shared fixtures of the profiler tests: loopback phones owned by the nodes of a local Ray cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SIM_MS = 2.0  # what every loopback phone's simulated benchmark_model reports, in ms


@dataclass
class LoopbackFarm:
    """A module's loopback phones and the Ray cluster whose nodes own them.

    Attributes:
        procs: serial -> the ``latkit loopback-device`` process (its own session).
        uris: serial -> its ``adb+tcp://`` URI.
        stub: a stand-in model file (the simulated ``benchmark_model`` never reads it).
        cluster: the ``ray.cluster_utils.Cluster``.
        nodes: node index -> node (0 is the head).
        sim_ms: what every phone's simulated ``benchmark_model`` reports.
    """

    procs: dict[str, subprocess.Popen]
    uris: dict[str, str]
    stub: Path
    cluster: Any
    nodes: dict[int, Any] = field(default_factory=dict)
    sim_ms: float = SIM_MS


def start_phone(root: Path, serial: str, model: str) -> tuple[subprocess.Popen, str]:
    """A loopback phone with simulated timing; returns its process and URI once it listens."""
    log = root.parent / f"{serial}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "latkit", "loopback-device", "--port", "0", "--root", str(root),
         "--serial", serial, "--model", model, "--simulate-latency-ms", str(SIM_MS)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,  # noqa: SIM115
        cwd=root.parent)  # outside the checkout: `-m latkit` must find the installed package
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()):
            return proc, f"adb+tcp://127.0.0.1:{m.group(1)}"
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"loopback device {serial} did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def loopback_farm(request, tmp_path_factory):
    """The module's ``PHONES`` (``{serial: (model, node index)}``, node 0 the head) as loopback
    phones, each owned, as a custom resource, by its node of one local Ray cluster."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("adb_shell")
    from ray.cluster_utils import Cluster

    from latkit.profiler.farm.identity import device_resource

    layout: dict[str, tuple[str, int]] = request.module.PHONES
    base = tmp_path_factory.mktemp("farm")
    started = {s: start_phone(base / s, s, model) for s, (model, _) in layout.items()}
    stub = base / "stub.tflite"
    stub.write_bytes(b"TFL3 stand-in: the simulated benchmark_model never reads it")
    owned: dict[int, dict[str, float]] = {}
    for serial, (_, node) in layout.items():
        owned.setdefault(node, {})[device_resource(started[serial][1])] = 1
    # Ray's processes inherit the working folder; in a checkout, `latkit` there is the
    # source folder, not the installed package, so start them outside it
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path_factory.mktemp("ray-cwd"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "resources": owned.pop(0, {})})
    nodes = {0: c.head_node, **{i: c.add_node(num_cpus=1, resources=r) for i, r in sorted(owned.items())}}
    ray.init(address=c.address, log_to_driver=False)
    yield LoopbackFarm({s: p for s, (p, _) in started.items()}, {s: u for s, (_, u) in started.items()},
                       stub, c, nodes)
    ray.shutdown()
    c.shutdown()
    mp.undo()
    for proc, _ in started.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
