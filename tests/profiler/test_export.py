"""Exported model files: cache behaviour, validity, and parity with torch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from latkit.devices.base import ModelFormat, ModelSource
from latkit.core.errors import MissingExtraError, StoreError, UsageError
from latkit.devices.precision import Precision, parse_precision
from latkit.profiler.export import (
    ONNX_OPSET,
    BuiltModel,
    default_cache_dir,
    export_ops,
    network_key,
)
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces.base import Layer, Network

pytestmark = pytest.mark.slow

SE_BLOCK = OpSpec(
    OpType.MBCONV, (14, 14, 40), (14, 14, 40), kernel=5, stride=1, expand_ratio=3,
    mid_channels=120, se=True, act=Act.H_SWISH, idskip=True,
)
SMALL = OpSpec(
    OpType.MBCONV, (8, 8, 16), (4, 4, 24), kernel=3, stride=2, expand_ratio=3,
    mid_channels=48, act=Act.RELU6,
)
PARITY_SPECS = [
    SE_BLOCK,
    SMALL,
    OpSpec(OpType.MBCONV, (10, 10, 16), (10, 10, 16), kernel=3, expand_ratio=1, mid_channels=16,
           groups=2, act=Act.RELU, idskip=True),
    OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 16), kernel=3, stride=2, act=Act.H_SWISH),
    OpSpec(OpType.HEAD_CONV, (7, 7, 32), (7, 7, 64), act=Act.H_SWISH),
    OpSpec(OpType.POOL, (7, 7, 64), (1, 1, 64)),
    OpSpec(OpType.POOLED_CONV, (1, 1, 64), (1, 1, 96), act=Act.H_SWISH),
    OpSpec(OpType.LOGITS, (7, 7, 96), (1, 1, 10)),
]


def _ort_run(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _torch_run(model: BuiltModel) -> np.ndarray:
    with torch.inference_mode():
        return model.torch_module()(model.example_input()).numpy()


def test_built_model_is_a_model_source(tmp_path):
    model = BuiltModel(SE_BLOCK, cache_dir=tmp_path)
    assert isinstance(model, ModelSource)
    assert model.key == SE_BLOCK.key
    assert model.input_shape == (1, 40, 14, 14)


@pytest.mark.parametrize("spec", PARITY_SPECS, ids=lambda s: s.op_type.value)
def test_onnx_is_valid_and_matches_torch(tmp_path, spec):
    model = BuiltModel(spec, cache_dir=tmp_path)
    path = model.file(ModelFormat.ONNX)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [ONNX_OPSET]
    meta = model.export_meta("onnx")
    assert meta["opset"] == ONNX_OPSET and meta["key"] == spec.key
    assert meta["schema"] == "latkit.export" and meta["latkit_version"]
    np.testing.assert_allclose(_ort_run(path, model.example_input()), _torch_run(model), atol=1e-4, rtol=1e-4)


def test_second_call_reuses_the_cached_file(tmp_path):
    first = BuiltModel(SMALL, cache_dir=tmp_path)
    path = first.file("onnx")
    stamp = path.stat().st_mtime_ns
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    again = BuiltModel(SMALL, cache_dir=tmp_path)  # a new process would look the same
    assert again.is_cached("onnx")
    assert again.file("onnx") == path
    assert path.stat().st_mtime_ns == stamp
    assert again._module is None  # a cache hit does not even build the module
    assert again.export_meta("onnx")["created"] == sidecar["created"]
    # only the model and its sidecar remain: no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".json"])


@pytest.mark.parametrize("damage", ["empty", "truncated", "no-sidecar"])
def test_damaged_cache_file_is_exported_again(tmp_path, damage):
    model = BuiltModel(SMALL, cache_dir=tmp_path)
    path = model.file("onnx")
    good = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        path.with_name(path.name + ".json").unlink()
    assert not model.is_cached("onnx")
    assert model.file("onnx") == path
    assert path.read_bytes() == good  # deterministic export: same bytes again
    onnx.checker.check_model(onnx.load(str(path)))


def test_file_names_are_sanitised_and_distinct(tmp_path):
    a = BuiltModel(SE_BLOCK, cache_dir=tmp_path)
    names = {
        a.path("onnx").name,
        a.path("tflite").name,
        BuiltModel(SE_BLOCK, cache_dir=tmp_path, seed=1).path("onnx").name,
        BuiltModel(SMALL, cache_dir=tmp_path).path("onnx").name,
    }
    assert len(names) == 4
    for name in names:
        assert ":" not in name and "/" not in name and len(name) < 160
    assert a.path("onnx").suffix == ".onnx" and a.path("tflite").suffix == ".tflite"
    with pytest.raises(UsageError, match="format"):
        a.path("pt")
    with pytest.raises(UsageError, match="not a file format"):
        a.file(ModelFormat.TORCH)


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LATKIT_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    assert BuiltModel(SMALL).path("onnx").parent == tmp_path / "env-cache"
    monkeypatch.delenv("LATKIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "latkit" / "models"


def test_export_ops_skips_free_duplicate_and_cached_ops(tmp_path):
    specs = [SMALL, OpSpec(OpType.SKIP, (8, 8, 16), (8, 8, 16)), SMALL, PARITY_SPECS[5]]
    calls = []
    paths = export_ops(specs, "onnx", lambda i, n, k: calls.append((i, n, k)), cache_dir=tmp_path)
    assert list(paths) == [SMALL.key, PARITY_SPECS[5].key]
    assert calls == [(1, 2, SMALL.key), (2, 2, PARITY_SPECS[5].key)]
    stamps = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    again = export_ops(specs, "onnx", cache_dir=tmp_path)
    assert again == paths
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == stamps


def _network() -> Network:
    specs = [
        OpSpec(OpType.STEM, (32, 32, 3), (16, 16, 16), kernel=3, stride=2, act=Act.H_SWISH),
        OpSpec(OpType.MBCONV, (16, 16, 16), (8, 8, 24), kernel=3, stride=2, expand_ratio=3,
               mid_channels=48, se=True, act=Act.H_SWISH),
        OpSpec(OpType.ZERO, (8, 8, 24), (8, 8, 24)),
        OpSpec(OpType.HEAD_CONV, (8, 8, 24), (8, 8, 64), act=Act.H_SWISH),
        OpSpec(OpType.LOGITS, (8, 8, 64), (1, 1, 10)),
    ]
    return Network("tiny", (32, 32, 3), tuple(Layer(f"l{i}", s) for i, s in enumerate(specs)))


def test_network_key_is_stable_and_export_matches_torch(tmp_path):
    net = _network()
    model = BuiltModel(net, cache_dir=tmp_path)
    assert model.key == network_key(_network()) and model.key.startswith("network-tiny-")
    changed = Network("tiny", net.input_shape, net.layers[:2] + net.layers[3:])
    assert network_key(changed) != model.key
    assert model.input_shape == (1, 3, 32, 32)
    path = model.file("onnx")
    assert model.export_meta("onnx")["network"] == "tiny"
    out = _ort_run(path, model.example_input())
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out, _torch_run(model), atol=1e-4, rtol=1e-4)


def test_tflite_matches_torch(tmp_path):
    pytest.importorskip("litert_torch", reason="TFLite export needs latkit[tflite]")
    from ai_edge_litert.interpreter import Interpreter

    model = BuiltModel(SMALL, cache_dir=tmp_path)
    path = model.file("tflite")
    assert path.read_bytes()[4:8] == b"TFL3"
    assert model.export_meta("tflite")["input_layout"] == "NCHW"
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert tuple(inp["shape"]) == model.input_shape
    interp.set_tensor(inp["index"], model.example_input().numpy())
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(out["index"]), _torch_run(model), atol=1e-4, rtol=1e-4)
    stamp = path.stat().st_mtime_ns
    assert BuiltModel(SMALL, cache_dir=tmp_path).file("tflite") == path
    assert path.stat().st_mtime_ns == stamp


def test_missing_converter_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` fail
    with pytest.raises(MissingExtraError, match=r"latkit\[tflite\]"):
        BuiltModel(SMALL, cache_dir=tmp_path).file("tflite")
    assert [p for p in tmp_path.iterdir() if p.suffix == ".tflite"] == []
    assert os.listdir(tmp_path) == []  # the failed export left nothing behind


def test_unwritable_cache_is_a_store_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(StoreError, match="LATKIT_CACHE"):
        BuiltModel(SMALL, cache_dir=blocker / "models").file("onnx")
    with pytest.raises(UsageError, match="OpSpec or a Network"):
        BuiltModel("Conv-input:224x224x3-output:112x112x16")


def test_broken_sidecar_means_re_export(tmp_path):
    model = BuiltModel(SMALL, cache_dir=tmp_path)
    path = model.file("onnx")
    sidecar = path.with_name(path.name + ".json")
    for junk in ("[" * 100_000, "[1, 2]", "\udcff"):
        sidecar.write_text(junk, errors="surrogateescape")
        assert model.export_meta("onnx") is None
        assert model.file("onnx") == path
        assert json.loads(sidecar.read_text())["size_bytes"] == path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, sidecar.name])


def test_folder_in_place_of_the_model_is_refused(tmp_path):
    model = BuiltModel(SMALL, cache_dir=tmp_path)
    model.path("onnx").mkdir(parents=True)
    with pytest.raises(StoreError, match="folder"):
        model.file("onnx")
    assert model.path("onnx").is_dir()


def test_int8_file_is_quantized_from_the_cached_fp32_file_and_recorded(tmp_path):
    model = BuiltModel(SMALL, cache_dir=tmp_path, precision=Precision.INT8)
    assert model.precision.value == "int8" and "precision='int8'" in repr(model)
    path = model.file("onnx")
    float_path = BuiltModel(SMALL, cache_dir=tmp_path).path("onnx")
    assert float_path.is_file() and path != float_path  # the fp32 file is cached too, once
    meta = model.export_meta("onnx")
    assert meta["precision"] == "int8" and meta["float_file"] == float_path.name
    assert meta["quantizer"].startswith("onnxruntime-") and "per-channel int8 weights" in meta["scheme"]
    assert meta["kernels"]["int8"] == meta["kernels"]["total"] == 3  # expand, depthwise, project
    assert "16 seeded" in meta["representative"]
    # the fp32 sidecar says fp32, and a sidecar of another precision is not this file's
    assert BuiltModel(SMALL, cache_dir=tmp_path).export_meta("onnx")["precision"] == "fp32"
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps({**meta, "precision": "fp16"}))
    assert not model.is_cached("onnx")
    assert model.file("onnx") == path and model.export_meta("onnx")["precision"] == "int8"


def test_export_ops_at_int8(tmp_path):
    paths = export_ops([SMALL, SE_BLOCK], "onnx", cache_dir=tmp_path, precision=Precision.INT8)
    assert set(paths) == {SMALL.key, SE_BLOCK.key}
    for path in paths.values():
        assert "-int8-" in path.name
        graph = onnx.load(str(path)).graph
        assert any(n.op_type == "QuantizeLinear" for n in graph.node)


def test_onnx_fp16_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"offered at fp32 and int8, not fp16") as err:
        BuiltModel(SMALL, cache_dir=tmp_path, precision=Precision.FP16).file("onnx")
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):  # text is parsed where it enters
        parse_precision("fp8")
