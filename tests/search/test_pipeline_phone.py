"""The one-command pipeline against a phone: the loopback ADB device, over the real wire protocol.

The loopback device answers as a phone would (sysfs clocks and temperatures, a
``benchmark_model`` that really runs the pushed .tflite with LiteRT), so every
stage's device traffic is real ADB: pushes, shell commands, parsed tool output.
A phone is slow to profile, so the run measures a sample of the operators and
predicts the rest (``profile_sample``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latkit.devices.android_state import ThermalPolicy
from latkit.devices.loopback.server import LoopbackDevice
from latkit.lut.store import LUT
from latkit.profiler.protocol import ProtocolConfig
from latkit.deploy.export import read_arch, standalone_module
from latkit.api import run as run_pipeline  # the public door: text settings are parsed there
from latkit.pipeline.stages import exported_file

pytestmark = [pytest.mark.slow, pytest.mark.start_first]  # the run takes minutes: started before the rest

SPACE = "proxyless_mobile_w05"
TINY = dict(resolution=32, profile_quick=True, profile_sample=4, search_epochs=2, warmup_epochs=1,
            train_epochs=1, max_steps_per_epoch=3, calibration_networks=3, eval_samples=1,
            formats=("tflite",), max_retries=0)  # fmt: skip


@pytest.fixture(scope="module")
def phone_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("phone-run")
    with LoopbackDevice(tmp / "phone", port=0, auth="accept") as phone:
        uri = f"adb+tcp://127.0.0.1:{phone.port}"
        options = {"key_path": tmp / "adbkey", "backoff_s": 0.05, "thermal": ThermalPolicy(pre_wait_s=2.0)}
        # a share of the slowest network, not ms: a fixed ms target can fall below the fastest network
        # on a slower or loaded host
        result = run_pipeline(uri, SPACE, "60%", tmp / "out", lut=tmp / "phone.db", device_options=options,
                              protocol=ProtocolConfig.quick(min_samples=3, max_samples=4), **TINY)  # fmt: skip
    return result, tmp, uri


def test_every_stage_ran_on_the_phone(phone_run) -> None:
    result, tmp, uri = phone_run
    state = json.loads((tmp / "out" / "pipeline.json").read_text())
    assert [s for s in ("profile", "calibrate", "search", "train", "export", "measure")
            if state["stages"].get(s, {}).get("done")] == ["profile", "calibrate", "search", "train", "export",
                                                            "measure"]  # fmt: skip
    profile = state["stages"]["profile"]["outputs"]
    assert profile["measured"] == 5  # the 10-class classifier and the 4 sampled operators
    with LUT.open(tmp / "phone.db") as lut:
        sources = [r["source"] for r in lut.rows(uri)]
    assert sources.count("measured") == 5
    assert profile["predicted"] == len(sources) - 5 > 50  # the rest of the space, predicted
    assert (tmp / "out" / "report.md").is_file()


def test_the_tflite_file_has_parity_and_a_phone_measurement(phone_run) -> None:
    from ai_edge_litert.interpreter import Interpreter

    result, _, uri = phone_run
    tflite = exported_file(result.export, "tflite")
    meta = tflite.meta()
    info = read_arch(result.arch_path)
    module, _ = standalone_module(info.network, meta["weights"]["file"])
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = module(x).numpy()
    interp = Interpreter(model_path=str(tflite.path))
    interp.allocate_tensors()
    assert tflite.layout.tag == "NHWC"  # the phones' default layout
    interp.set_tensor(interp.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).contiguous().numpy())
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    measured = meta["measured_latency"]
    assert measured["device"] == uri and measured["latency_ms"] == pytest.approx(result.measured_ms)
    prov = measured["provenance"]
    assert prov["device"]["kind"] == "android" and prov["device"]["model"] == "Loopback Pixel"
    # benchmark_model's own runs on the phone: the figure is its parsed average, not a host timer
    assert measured["n_samples"] >= 3 and measured["latency_ms"] > 0
    assert prov["device"]["uri"] == uri
    # the drift check only ever uses measured rows as references
    with LUT.open(Path(result.out_dir).parent / "phone.db") as lut:
        sources = lut.sources([op["key"] for op in measured["device_drift"]["ops"]], uri)
    assert set(sources.values()) == {"measured"}
    assert result.verdict.startswith("HIT" if result.hit else "MET" if result.met else
                                     "COULD NOT JUDGE" if result.contended else "OVER")  # fmt: skip
    # the file timed again on the phone beside a calibration network, in fresh sessions
    assert result.host["ratio"] > 0 and len(result.host["readings"][0]["network_ms"]) >= 2
