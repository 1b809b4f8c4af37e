"""Plug-ins from an installed distribution's entry points, through the real CLI.

A dummy distribution (a ``*.dist-info`` folder with ``entry_points.txt`` next to its
module) is put on ``PYTHONPATH`` of a ``python -m latkit`` subprocess, exactly as
``pip install`` would leave it; nothing in latkit names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"

PLUGIN = textwrap.dedent(
    '''
    """A third-party package adding one of each kind of latkit plug-in."""
    from latkit.devices.onnxruntime_cpu import OnnxRuntimeCPU
    from latkit.predictors.network import RidgePredictor
    from latkit.profiler.spaces.fbnet import FBNetSpace
    from latkit.profiler.spaces.proxyless import ProxylessMobileW05Space
    from latkit.search.framework.base import SearchContext


    class HalfProxyless(ProxylessMobileW05Space):
        """The w0.5 proxyless space under a plug-in's name."""


    class MyFBNet(FBNetSpace):
        """FBNet under a plug-in's name."""


    class MyCPU(OnnxRuntimeCPU):
        """ONNX Runtime on the host CPU under a plug-in's URI scheme."""


    class MyRidge(RidgePredictor):
        """Ridge regression under a plug-in's name."""


    def first_feasible(ctx: SearchContext, tries: int = 0) -> dict:
        """Query feasible samples in order until the budget is spent."""
        for _ in range(20 * ctx.budget):
            if ctx.remaining <= 0:
                break
            ctx.query(ctx.sample_feasible())
        return {"plugin": "first_feasible"}
    '''
)

ENTRY_POINTS = textwrap.dedent(
    """
    [latkit.spaces]
    half_proxyless = latkit_dummy_plugin:HalfProxyless
    my_fbnet = latkit_dummy_plugin:MyFBNet

    [latkit.devices]
    mycpu = latkit_dummy_plugin:MyCPU

    [latkit.predictors]
    my_ridge = latkit_dummy_plugin:MyRidge

    [latkit.algorithms]
    first-feasible = latkit_dummy_plugin:first_feasible
    """
)


def _install(root: Path, name: str, module: str, entry_points: str) -> Path:
    """Lay out a distribution as an installer would: module + dist-info."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(module)
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


def _latkit(site: Path, cache: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "LATKIT_CACHE": str(cache), "COLUMNS": "200"}
    # cwd outside the checkout: there `python -m latkit` would find the bare source folder
    return subprocess.run([sys.executable, "-m", "latkit", *argv], capture_output=True, text=True,
                          env=env, timeout=600, check=False, cwd=cache.parent)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return _install(tmp_path_factory.mktemp("site"), "latkit_dummy_plugin", PLUGIN, ENTRY_POINTS)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow  # starts latkit in several subprocesses
def test_plugin_space_and_device_profile_a_lut(site, tmp_path):
    ops = json.loads(_ok(_latkit(site, tmp_path, "ops", "half_proxyless", "--resolution", "32", "--json")))
    builtin = json.loads(_ok(_latkit(site, tmp_path, "ops", "proxyless_mobile_w05", "--resolution", "32",
                                     "--json")))
    assert len(ops) == len(builtin) > 10  # the same layers under the plug-in's name

    lut = tmp_path / "lut.db"
    _ok(_latkit(site, tmp_path, "profile", "--device", "mycpu", "--space", "half_proxyless",
                "--resolution", "32", "--lut", str(lut), "--quick", "--limit", "3"))
    summary = json.loads(_ok(_latkit(site, tmp_path, "lut", "show", str(lut), "--json")))["summary"]
    (dev,) = summary["devices"]
    assert dev["uri"] == "mycpu" and dev["ops"] == 3


@pytest.mark.slow  # starts latkit in several subprocesses
def test_plugin_predictor_and_space_fit_predict_and_eval(site, tmp_path):
    csv = DATA / "fbnet_latency_ms.csv"
    listed = _ok(_latkit(site, tmp_path, "predictor", "list"))
    assert "my_ridge" in listed and "ridge" in listed
    _ok(_latkit(site, tmp_path, "predictor", "fit", "--csv", str(csv), "--space", "my_fbnet",
                "--target", "pixel3", "--predictor", "my_ridge", "--k", "40", "--out", str(tmp_path / "p")))
    saved = json.loads((tmp_path / "p" / "predictor.json").read_text())
    assert "my_ridge" in json.dumps(saved)
    summary = json.loads(_ok(_latkit(site, tmp_path, "predictor", "eval", "--csv", str(csv), "--space",
                                     "my_fbnet", "--target", "pixel3", "--k", "10", "--seeds", "1",
                                     "--json")))
    assert summary["method"]["spearman"] > 0.5


@pytest.mark.slow  # starts latkit in several subprocesses
def test_plugin_algorithm_runs_a_tabular_search(site, tmp_path):
    out = json.loads(_ok(_latkit(
        site, tmp_path, "search", "--space", "nasbench201",
        "--accuracy-table", f"{DATA / 'nasbench201_accuracy.csv'}:cifar10-val",
        "--latency-table", f"{DATA / 'nasbench201_latency_ms.csv'}:pixel3",
        "--target-ms", "10", "--algorithm", "first-feasible", "--queries", "20",
        "--out", str(tmp_path / "s"), "--json")))
    assert out["queries_used"] == 20 and out["best_latency_ms"] <= 10
    assert out["extra"]["plugin"] == "first_feasible"


def test_every_group_loads_its_plugin_beside_the_builtins(site, tmp_path):
    # the quick check of all four groups (the slow tests above drive each through a command)
    code = ("from latkit.devices.base import DEVICES; from latkit.predictors.base import PREDICTORS; "
            "from latkit.profiler.spaces.base import SPACES; from latkit.search.framework.base import ALGORITHMS; "
            "import json; print(json.dumps({k: [r.names(), r.get(n).__name__] for k, r, n in ("
            "('devices', DEVICES, 'mycpu'), ('predictors', PREDICTORS, 'my_ridge'), "
            "('spaces', SPACES, 'my_fbnet'), ('algorithms', ALGORITHMS, 'first-feasible'))}))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False, cwd=tmp_path)  # fmt: skip
    got = json.loads(_ok(proc))
    assert got["devices"][1] == "MyCPU" and {"mycpu", "cpu:onnxruntime"} <= set(got["devices"][0])
    assert got["predictors"][1] == "MyRidge" and {"my_ridge", "ridge"} <= set(got["predictors"][0])
    assert got["spaces"][1] == "MyFBNet" and {"my_fbnet", "half_proxyless", "fbnet"} <= set(got["spaces"][0])
    assert got["algorithms"][1] == "first_feasible" and {"first-feasible", "ppo"} <= set(got["algorithms"][0])


def test_unknown_name_lists_builtins_and_plugins(site, tmp_path):
    proc = _latkit(site, tmp_path, "ops", "nope")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "half_proxyless" in proc.stderr and "proxyless_mobile" in proc.stderr


def test_broken_plugin_is_one_error_line(tmp_path):
    site = _install(tmp_path / "site", "latkit_broken_plugin", "import no_such_module_xyz\n",
                    "[latkit.spaces]\nbroken = latkit_broken_plugin:Space\n")
    proc = _latkit(site, tmp_path, "ops", "broken")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "broken" in lines[0] and "latkit_broken_plugin" in lines[0] and "no_such_module_xyz" in lines[0]
