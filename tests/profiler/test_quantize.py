"""int8 / fp16 model files: what the quantizers write, what the files contain, how they run.

Every int8 check reads the file's tensors and operators (not its name) and runs
the file on the real runtime (LiteRT with XNNPACK, ONNX Runtime). Closeness to
the float32 torch module is judged on the op's seeded example input, which
is not one of the calibration inputs:

* mean relative error ``mean|q - ref| / mean|ref|`` at most ``INT8_MEAN_REL``
  (5%), and
* largest error over the largest reference magnitude at most ``INT8_MAX_REL``
  (20%: an activation beyond the calibrated range clips; on these ops the
  worst seen is 12%).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from latkit.devices.base import open_device
from latkit.devices.precision import Precision
from latkit.core.errors import StoreError, UsageError
from latkit.profiler.export import BuiltModel
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.quantize import (
    ONNX_INT8_SCHEME,
    TFLITE_INT8_SCHEME,
    check_kernels,
    inspect_kernels,
    model_precision,
    quantize_onnx,
    quantize_tflite,
    quantizer_version,
)
from latkit.profiler.spaces import get_space

pytestmark = pytest.mark.slow

pytest.importorskip("ai_edge_quantizer")
pytest.importorskip("ai_edge_litert")

INT8_MEAN_REL = 0.05
INT8_MAX_REL = 0.20
FP16_MAX_REL = 1e-3


def _space_mbconv() -> OpSpec:
    """An MBConv block of a real space (ProxylessNAS mobile, 14x14, expand 6)."""
    ops = get_space("proxyless_mobile").operators()
    return next(o for o in ops if o.op_type is OpType.MBCONV and o.input_shape[0] == 14 and o.expand_ratio == 6)


OPS = {
    "conv": OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 16), kernel=3, stride=2, act=Act.RELU6),
    "depthwise": OpSpec(OpType.MBCONV, (16, 16, 32), (16, 16, 32), kernel=3, expand_ratio=1,
                        mid_channels=32, act=Act.RELU6),
    "mbconv": _space_mbconv(),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qcache")


def _reference(spec: OpSpec, cache) -> tuple[np.ndarray, np.ndarray]:
    model = BuiltModel(spec, cache_dir=cache)
    x = model.example_input()
    with torch.inference_mode():
        return x.numpy(), model.torch_module()(x).numpy()


def _errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    got = got.reshape(ref.shape)
    err = np.abs(got - ref)
    return float(err.mean() / np.abs(ref).mean()), float(err.max() / np.abs(ref).max())


@pytest.mark.parametrize("name", list(OPS))
def test_int8_tflite_has_int8_kernels_and_runs_close_to_fp32(cache, name):
    spec = OPS[name]
    x, ref = _reference(spec, cache)
    model = BuiltModel(spec, cache_dir=cache, precision=Precision.INT8)
    path = model.file("tflite")
    found = inspect_kernels(path)
    assert found.kernels >= 1 and found.int8_kernels == found.kernels and found.hybrid_kernels == 0
    assert model_precision(path) is Precision.INT8
    meta = model.export_meta("tflite")
    assert meta["precision"] == "int8" and meta["scheme"] == TFLITE_INT8_SCHEME
    assert meta["quantizer"] == quantizer_version("tflite") and meta["kernels"]["int8"] == found.kernels
    session = open_device("cpu:litert").open(model)
    try:
        detail = session._interpreter.get_input_details()[0]  # full-integer: the input is int8 too
        assert np.dtype(detail["dtype"]) == np.int8
        mean_rel, max_rel = _errors(session.run(x)[0], ref)
        assert session.time(5) > 0
    finally:
        session.close()
    assert mean_rel <= INT8_MEAN_REL and max_rel <= INT8_MAX_REL, (mean_rel, max_rel)


@pytest.mark.parametrize("name", list(OPS))
def test_int8_onnx_is_qdq_with_int8_weights_and_runs_close_to_fp32(cache, name):
    spec = OPS[name]
    x, ref = _reference(spec, cache)
    model = BuiltModel(spec, cache_dir=cache, precision=Precision.INT8)
    path = model.file("onnx")
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert int8_weights  # per-channel int8 conv weights
    found = check_kernels(path, Precision.INT8)
    assert found.int8_kernels == found.kernels >= 1
    assert model.export_meta("onnx")["scheme"] == ONNX_INT8_SCHEME
    session = open_device("cpu:onnxruntime").open(model)
    try:
        name_in = session._session.get_inputs()[0].name
        mean_rel, max_rel = _errors(session._session.run(None, {name_in: x})[0], ref)
        assert session.time(5) > 0
    finally:
        session.close()
    assert mean_rel <= INT8_MEAN_REL and max_rel <= INT8_MAX_REL, (mean_rel, max_rel)


def test_int8_pooling_has_no_kernels_and_is_told_by_its_activations(cache):
    spec = OpSpec(OpType.POOL, (7, 7, 64), (1, 1, 64))
    tfl = BuiltModel(spec, cache_dir=cache, precision=Precision.INT8).file("tflite")
    found = inspect_kernels(tfl)
    assert found.kernels == 0 and found.int8_activations and found.precision is Precision.INT8
    assert model_precision(BuiltModel(spec, cache_dir=cache).file("tflite")) is Precision.FP32
    # ONNX Runtime's quantizer leaves a lone ReduceMean in float: nothing to check, nothing refused
    onnx_file = BuiltModel(spec, cache_dir=cache, precision=Precision.INT8).file("onnx")
    assert check_kernels(onnx_file, Precision.INT8).kernels == 0
    for uri in ("cpu:litert", "cpu:onnxruntime"):
        with open_device(uri).open(BuiltModel(spec, cache_dir=cache, precision=Precision.INT8)) as session:
            assert session.time(5) > 0


def test_fp16_tflite_has_float16_weights_and_float_compute(cache):
    spec = OPS["mbconv"]
    x, ref = _reference(spec, cache)
    model = BuiltModel(spec, cache_dir=cache, precision=Precision.FP16)
    path = model.file("tflite")
    found = inspect_kernels(path)
    assert found.fp16_weights >= found.kernels >= 1 and found.int8_kernels == 0
    assert model_precision(path) is Precision.FP16
    assert "-fp16-" in path.name and model.export_meta("tflite")["precision"] == "fp16"
    session = open_device("cpu:litert").open(model)
    try:
        _, max_rel = _errors(session.run(x)[0], ref)
    finally:
        session.close()
    assert max_rel <= FP16_MAX_REL


def test_fp32_files_say_fp32_and_keep_their_cache_names(cache):
    spec = OPS["conv"]
    plain = BuiltModel(spec, cache_dir=cache)
    for fmt in ("onnx", "tflite"):
        path = plain.file(fmt)
        assert model_precision(path) is Precision.FP32
        assert check_kernels(path, Precision.FP32).int8_kernels == 0
        with pytest.raises(StoreError, match=r"is not an int8 model: it is fp32") as err:
            check_kernels(path, Precision.INT8)
        assert "\n" not in str(err.value)
        q = BuiltModel(spec, cache_dir=cache, precision=Precision.INT8)
        assert q.path(fmt) != path and "-int8-" in q.path(fmt).name and "int8" not in path.name
        assert plain.path(fmt) == BuiltModel(spec, cache_dir=cache, precision=Precision.FP32).path(fmt)


def test_quantized_file_is_reused_from_the_cache(cache):
    model = BuiltModel(OPS["conv"], cache_dir=cache, precision=Precision.INT8)
    first = model.file("onnx")
    stamp = first.stat().st_mtime_ns
    again = BuiltModel(OPS["conv"], cache_dir=cache, precision=Precision.INT8).file("onnx")
    assert again == first and again.stat().st_mtime_ns == stamp


def test_dynamic_range_file_is_not_called_int8(cache, tmp_path):
    from ai_edge_quantizer import quantizer, recipe

    src = BuiltModel(OPS["conv"], cache_dir=cache).file("tflite")
    dst = tmp_path / "dynamic.tflite"
    q = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
    q.quantize(enable_progress_report=False).export_model(str(dst), overwrite=True)
    assert inspect_kernels(dst).hybrid_kernels >= 1
    assert model_precision(dst) is Precision.FP32
    with pytest.raises(StoreError, match="float activations"):
        check_kernels(dst, Precision.INT8)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_garbage_file_is_one_clear_error(tmp_path, suffix):
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes(b"\x00\x01 not a model \xff" * 7)
    quantize = quantize_onnx if suffix == ".onnx" else quantize_tflite
    for call in (lambda: model_precision(bad), lambda: check_kernels(bad, Precision.INT8),
                 lambda: quantize(bad, tmp_path / f"q{suffix}", Precision.INT8)):
        with pytest.raises(StoreError, match=f"cannot read .*model{suffix}") as err:
            call()
        assert "\n" not in str(err.value)
    assert not (tmp_path / f"q{suffix}").exists()


def test_bad_arguments_are_one_line(cache, tmp_path):
    bogus = tmp_path / "weights.bin"  # the content decides the format, not the suffix
    bogus.write_bytes(b"not a model file" * 8)
    with pytest.raises(StoreError, match="cannot read"):
        model_precision(bogus)
    with pytest.raises(StoreError, match="does not exist"):
        model_precision(tmp_path / "absent.onnx")
    src = BuiltModel(OPS["conv"], cache_dir=cache).file("onnx")
    with pytest.raises(UsageError, match="quantized to int8, not fp16"):
        quantize_onnx(src, tmp_path / "x.onnx", Precision.FP16)
    with pytest.raises(UsageError, match=r"has shape \(1, 3, 8, 8\); the model takes \(1, 3, 32, 32\)"):
        quantize_onnx(src, tmp_path / "x.onnx", Precision.INT8, [np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(UsageError, match="not fp16"):
        BuiltModel(OPS["conv"], cache_dir=cache, precision=Precision.FP16).file("onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_representative_inputs_steer_calibration(cache, tmp_path):
    """NCHW calibration data given by the caller is used (and laid out for the file)."""
    src = BuiltModel(OPS["conv"], cache_dir=cache).file("tflite")
    wide = [np.full((1, 3, 32, 32), v, np.float32) for v in (-40.0, 40.0)]
    meta = quantize_tflite(src, tmp_path / "wide.tflite", Precision.INT8, wide)
    assert meta["calibration_inputs"] == 2
    from ai_edge_litert.interpreter import Interpreter

    scale_wide = Interpreter(model_path=str(tmp_path / "wide.tflite")).get_input_details()[0]["quantization"][0]
    quantize_tflite(src, tmp_path / "normal.tflite", Precision.INT8)
    scale = Interpreter(model_path=str(tmp_path / "normal.tflite")).get_input_details()[0]["quantization"][0]
    # inputs of +-40 need a far coarser input scale than standard-normal ones (about 7/255)
    assert scale_wide > 5 * scale and scale == pytest.approx(7.5 / 255, rel=0.3)


def test_int8_tflite_ranges_cover_every_calibration_input(cache, tmp_path):
    """An activation's range is the lowest to highest value over all inputs, not a moving average of each one's.

    ai-edge-quantizer's own ``calibrate`` averages each input's min/max (weight 0.95 on
    the past): with it, the wide inputs among 30 normal ones left an input range that
    did not even reach below 0.
    """
    from ai_edge_litert.interpreter import Interpreter

    src = BuiltModel(OPS["conv"], cache_dir=cache).file("tflite")
    rng = np.random.default_rng(5)
    inputs = [np.full((1, 3, 32, 32), 40.0, np.float32), np.full((1, 3, 32, 32), -40.0, np.float32)]
    inputs += [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(30)]
    quantize_tflite(src, tmp_path / "q.tflite", Precision.INT8, inputs)
    scale, zero = Interpreter(model_path=str(tmp_path / "q.tflite")).get_input_details()[0]["quantization"]
    low, high = (-128 - zero) * scale, (127 - zero) * scale
    assert low <= -40.0 + scale and high >= 40.0 - scale, (low, high)
    assert high - low == pytest.approx(80.0, rel=0.02)  # and no wider than the inputs reach
