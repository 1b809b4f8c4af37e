"""Makes the shared test helpers in this folder (``cli_checks``, ``artefacts``) importable from
every test module, and holds the fixtures several folders share (the expensive shared
artefacts, a profiled LUT and a finished pipeline run, are in ``artefacts.py``)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The loopback phone's samples: 20 ms of runs instead of the 200 ms floor that guards against a
# real phone's benchmark_model start-up; the tests check what is measured and stored, not how
# precisely (this environment reaches the CLI commands the tests start as well).
os.environ.setdefault("LATKIT_ADB_SAMPLE_MS", "20")

pytest_plugins = ["artefacts"]


@pytest.fixture(scope="session")
def ort_device():
    """The real ONNX Runtime CPU device, one thread, opened once per test session."""
    from latkit.devices.base import open_device

    dev = open_device("cpu:onnxruntime", threads=1)
    yield dev
    dev.close()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m serial`` alone (tox's second run) import only the test modules that mark a test
    ``serial``: importing all of them (torch, Ray, LiteRT...) to select a handful took most of
    that run. A serial test is marked in its own module (``pytest.mark.serial``), never from here."""
    if config.getoption("markexpr", "") != "serial" or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return "mark.serial" not in collection_path.read_text(encoding="utf-8")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests of a module that share a module- or class-scoped fixture on one xdist worker,
    and put the modules marked ``start_first`` at the front.

    Under ``--dist loadgroup`` (tox.ini) tests of one ``xdist_group`` run on one worker,
    so such a fixture (a loopback phone, a cluster, a converted model) is built once
    instead of once per worker. xdist hands the groups out in collection order
    (``--no-loadscope-reorder``), so a group whose fixture takes minutes, marked
    ``start_first``, starts at once and the short tests fill the workers up to the end
    instead of one worker running it alone at the end. Session artefacts need no group:
    ``artefacts.py`` builds each once for all workers.
    """
    items.sort(key=lambda item: item.get_closest_marker("start_first") is None)  # stable: otherwise as collected
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        module = item.nodeid.split("::")[0]
        for defs in info.name2fixturedefs.values():
            if any(d.scope in ("module", "class") for d in defs):
                item.add_marker(pytest.mark.xdist_group(module))
                break
