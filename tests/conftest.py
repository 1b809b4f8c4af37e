"""Makes the shared test helpers in this folder (``cli_checks``, ``artefacts``) importable from
every test module, and holds the fixtures several folders share (the expensive shared
artefacts, a profiled LUT and a finished pipeline run, are in ``artefacts.py``)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["artefacts"]


@pytest.fixture(scope="session")
def ort_device():
    """The real ONNX Runtime CPU device, one thread, opened once per test session."""
    from latkit.devices.base import open_device

    dev = open_device("cpu:onnxruntime", threads=1)
    yield dev
    dev.close()
