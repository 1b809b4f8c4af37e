"""Every Python API verb checks its arguments at the door (issue 28): a wrong type or value is one
``UsageError`` naming the argument (a wrong type is also a ``TypeError``), raised before any work,
never a traceback from deep inside a runtime nor a silently odd run."""

from __future__ import annotations

import math

import pytest

import latkit
from latkit.core.errors import UsageError


class _Model:
    """A latency model answering ``value`` for every architecture."""

    def __init__(self, value: float) -> None:
        self.value = value

    def latency_ms(self, arch):
        return self.value

    def min_latency(self, space):
        return self.value, None


def _calls(tmp):
    lut, arch = tmp / "x.db", tmp / "arch.json"
    return {
        "open_device(123)": (lambda: latkit.open_device(123), "uri", True),
        "open_device(threads='2')": (lambda: latkit.open_device("cpu:onnxruntime", threads="2"), "threads", True),
        "open_device(threads=1.5)": (lambda: latkit.open_device("cpu:onnxruntime", threads=1.5), "threads", True),
        "open_device(threads=True)": (lambda: latkit.open_device("cpu:onnxruntime", threads=True), "threads", True),
        "open_device(threads=10**6)": (lambda: latkit.open_device("cpu:onnxruntime", threads=10**6), "threads", False),
        "open_device('adb:\\n')": (lambda: latkit.open_device("adb:\n"), "uri", False),
        "profile(limit='2')": (lambda: latkit.profile("cpu:onnxruntime", "proxyless_mobile_w05", lut, limit="2"),
                               "limit", True),
        "profile(limit=0)": (lambda: latkit.profile("cpu:onnxruntime", "proxyless_mobile_w05", lut, limit=0),
                             "limit", False),
        "profile(passes=1000)": (lambda: latkit.profile("cpu:onnxruntime", "proxyless_mobile_w05", lut,
                                                        passes=1000), "passes", False),
        "profile(device=42)": (lambda: latkit.profile(42, "proxyless_mobile_w05", lut), "device", True),
        "profile(lut=None)": (lambda: latkit.profile("cpu:onnxruntime", "proxyless_mobile_w05", None), "lut", True),
        "estimate(resolution='64')": (lambda: latkit.estimate(lut, arch, resolution="64"), "resolution", True),
        "estimate(calibration='no')": (lambda: latkit.estimate(lut, arch, calibration="no"), "calibration", True),
        "estimate(arch=[nan])": (lambda: latkit.estimate(lut, [math.nan]), "arch", True),
        "estimate(arch={'ks': object})": (lambda: latkit.estimate(lut, {"ks": object()}), "arch", True),
        "sample_latencies(n='3')": (lambda: latkit.sample_latencies("cpu:onnxruntime", "proxyless_mobile_w05", "3",
                                                                    tmp / "s.csv"), "n", True),
        "sample_latencies(classes=-1)": (lambda: latkit.sample_latencies("cpu:onnxruntime", "proxyless_mobile_w05", 3,
                                                                         tmp / "s.csv", classes=-1), "classes", False),
        "fit_predictor(k=0)": (lambda: latkit.fit_predictor("a.csv", "nasbench201", "cpu", tmp, k=0), "k", False),
        "fit_predictor(design='best')": (lambda: latkit.fit_predictor("a.csv", "fbnet", "cpu", tmp, design="best"),
                                         "design", False),
        "predict(archs='abc')": (lambda: latkit.predict(tmp, "abc"), "archs", True),
        "predict_model(input_shape='1,3')": (lambda: latkit.predict_model("m.onnx", tmp, input_shape="1,3"),
                                             "input_shape", True),
        "search_arch(latency_model='fast')": (lambda: latkit.search_arch("nasbench201", "fast", 5.0, tmp),
                                              "latency_model", False),  # a LUT path that names no file
        "search_arch(latency_model=42)": (lambda: latkit.search_arch("nasbench201", 42, 5.0, tmp),
                                          "latency_model", True),
        "search_arch(target_ms=nan)": (lambda: latkit.search_arch("nasbench201", _Model(1.0), math.nan, tmp),
                                       "target_ms", False),
        "search_arch(on_progress='x')": (lambda: latkit.search_arch("nasbench201", _Model(1.0), 5.0, tmp,
                                                                    on_progress="x"), "on_progress", True),
        "train(epochs='1')": (lambda: latkit.train(arch, epochs="1"), "epochs", True),
        "train(resolution=100000)": (lambda: latkit.train(arch, resolution=100000), "resolution", False),
        "export(formats=7)": (lambda: latkit.export(arch, formats=7), "formats", True),
        "measure(model=3)": (lambda: latkit.measure("cpu:onnxruntime", 3), "model", True),
        "measure(statistic='p3')": (lambda: latkit.measure("cpu:onnxruntime", "m.onnx", statistic="p3"),
                                    "statistic", False),
        "measure(quick='yes')": (lambda: latkit.measure("cpu:onnxruntime", "m.onnx", quick="yes"), "quick", True),
        "measure_layers(runs='5')": (lambda: latkit.measure_layers("cpu:onnxruntime", "m.onnx", runs="5"), "runs",
                                     True),
        "measure_layers(quantile=2)": (lambda: latkit.measure_layers("cpu:onnxruntime", "m.onnx", quantile=2),
                                       "quantile", False),
        "run(target_ms=[1])": (lambda: latkit.run("cpu:onnxruntime", "nasbench201", [1], tmp), "target_ms", True),
        "run(on_progress=1)": (lambda: latkit.run("cpu:onnxruntime", "nasbench201", 5.0, tmp, on_progress=1),
                               "on_progress", True),
        "build_kernel_predictors(budget='5x')": (lambda: latkit.build_kernel_predictors(
            "cpu:onnxruntime", lut=lut, budget="5x"), "budget", False),
        "build_kernel_predictors(budget=nan)": (lambda: latkit.build_kernel_predictors(
            "cpu:onnxruntime", lut=lut, budget=math.nan), "budget", False),
        "build_kernel_predictors(per_type=0)": (lambda: latkit.build_kernel_predictors(
            "cpu:onnxruntime", lut=lut, per_type=0), "per_type", False),
        "build_kernel_predictors(device=3)": (lambda: latkit.build_kernel_predictors(3, lut=lut), "device", True),
        "detect_fusion(quick='yes')": (lambda: latkit.detect_fusion("cpu:onnxruntime", lut=lut, quick="yes"),
                                       "quick", True),
        "detect_fusion(lut=7)": (lambda: latkit.detect_fusion("cpu:onnxruntime", lut=7), "lut", True),
        "calibrate_kernels(networks=1)": (lambda: latkit.calibrate_kernels("cpu:onnxruntime", lut=lut, networks=1),
                                          "networks", False),
        "calibrate_kernels(precision=8)": (lambda: latkit.calibrate_kernels("cpu:onnxruntime", lut=lut, precision=8),
                                           "precision", True),
        "transfer_kernels(samples='4')": (lambda: latkit.transfer_kernels("cpu:onnxruntime", tmp / "p", lut=lut,
                                                                          samples="4"), "samples", True),
        "transfer_kernels(source=None)": (lambda: latkit.transfer_kernels("cpu:onnxruntime", None, lut=lut),
                                          "source", True),
        "farm_devices(adb='adb+tcp://h:1')": (lambda: latkit.farm_devices(adb="adb+tcp://h:1"), "adb", True),
        "farm_devices(threads=0)": (lambda: latkit.farm_devices(threads=0), "threads", False),
        "farm_profile(devices=5)": (lambda: latkit.farm_profile("proxyless_mobile_w05", 5, lut), "devices", True),
        "farm_profile(op_timeout_s=0.5)": (lambda: latkit.farm_profile("proxyless_mobile_w05", "adb*", lut,
                                                                       op_timeout_s=0.5), "op_timeout_s", False),
        "farm_profile(on_progress=1)": (lambda: latkit.farm_profile("proxyless_mobile_w05", "adb*", lut,
                                                                    on_progress=1), "on_progress", True),
    }


CASES = sorted(_calls(__import__("pathlib").Path(".")))


@pytest.mark.parametrize("case", CASES)
def test_bad_argument_is_refused_at_the_door(case, tmp_path):
    call, name, is_type = _calls(tmp_path)[case]
    with pytest.raises(UsageError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"{name}") or f"{name}" in message.split(" must ")[0], message
    assert isinstance(info.value, TypeError) is is_type
    assert len(message.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_a_latency_model_answering_nonsense_stops_the_search(value, tmp_path):
    with pytest.raises(UsageError, match="latency_model.min_latency returned"):
        latkit.search_arch("nasbench201", _Model(value), 5.0, tmp_path / "out")


def test_a_closed_device_is_refused(tmp_path):
    dev = latkit.open_device("cpu:onnxruntime")
    dev.close()
    with pytest.raises(UsageError, match="is closed"):
        latkit.measure(dev, tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="is closed"):
        latkit.profile(dev, "proxyless_mobile_w05", tmp_path / "x.db")
    assert list(tmp_path.iterdir()) == []
