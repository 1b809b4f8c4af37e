"""Reading a TFLite file into the operator graph: ONNX names, NCHW shapes, fused activations, fallbacks.

The small models are written with the flatbuffer schema's object API (a
fraction of a millisecond; no converter runs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

from latkit.core.errors import UsageError  # noqa: E402
from latkit.profiler.graph import read_graph  # noqa: E402
from latkit.profiler.kernel_patterns import group_kernels  # noqa: E402
from latkit.profiler.kernels import KernelConfig, KernelType, default_rules  # noqa: E402


class _Writer:
    """Tensors, buffers and operators of one small TFLite model."""

    def __init__(self) -> None:
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.buffers = [schema.BufferT()]
        self.model.operatorCodes = []
        self.graph = schema.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []

    def tensor(self, name, shape, data=None, dtype=schema.TensorType.FLOAT32, signature=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, 0
        t.shapeSignature = list(signature) if signature is not None else None
        if data is not None:
            b = schema.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(b)
            t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def weight(self, name, shape):
        return self.tensor(name, shape, np.full(shape, 0.01, np.float32))

    def ints(self, name, values):
        return self.tensor(name, [len(values)], np.asarray(values, np.int32), schema.TensorType.INT32)

    def op(self, builtin, inputs, outputs, options_type=0, options=None):
        code = getattr(schema.BuiltinOperator, builtin)
        codes = [c.builtinCode for c in self.model.operatorCodes]
        if code not in codes:
            oc = schema.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            self.model.operatorCodes.append(oc)
            codes.append(code)
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(code), list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.graph.operators.append(o)

    def finish(self, inputs, outputs) -> bytes:
        import flatbuffers

        self.graph.inputs, self.graph.outputs = list(inputs), list(outputs)
        self.model.subgraphs = [self.graph]
        b = flatbuffers.Builder(1024)
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _conv_options(stride, padding, act, depthwise=False):
    o = schema.DepthwiseConv2DOptionsT() if depthwise else schema.Conv2DOptionsT()
    o.strideH = o.strideW = stride
    o.padding, o.fusedActivationFunction = padding, act
    if depthwise:
        o.depthMultiplier = 1
    return (schema.BuiltinOptions.DepthwiseConv2DOptions if depthwise else schema.BuiltinOptions.Conv2DOptions), o


def _small_cnn(signature=None) -> bytes:
    """NHWC 16x16x8 -> pad -> conv 3x3/2 relu6 -> depthwise 3x3 relu -> add -> mean -> FC -> cumsum."""
    w = _Writer()
    act = schema.ActivationFunctionType
    x = w.tensor("x", [1, 16, 16, 8], signature=signature)
    padded = w.tensor("padded", [1, 18, 18, 8])
    w.op("PAD", [x, w.tensor("pads", [4, 2], np.asarray([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32),
                           schema.TensorType.INT32)], [padded])  # fmt: skip
    c1 = w.tensor("c1", [1, 8, 8, 16])
    w.op("CONV_2D", [padded, w.weight("w1", [16, 3, 3, 8]), w.weight("b1", [16])], [c1],
         *_conv_options(2, schema.Padding.VALID, act.RELU6))
    c2 = w.tensor("c2", [1, 8, 8, 16])
    w.op("DEPTHWISE_CONV_2D", [c1, w.weight("w2", [1, 3, 3, 16]), w.weight("b2", [16])], [c2],
         *_conv_options(1, schema.Padding.SAME, act.RELU, depthwise=True))
    s = w.tensor("s", [1, 8, 8, 16])
    w.op("ADD", [c1, c2], [s], schema.BuiltinOptions.AddOptions, schema.AddOptionsT())
    m = w.tensor("m", [1, 16])
    reducer = schema.ReducerOptionsT()
    w.op("MEAN", [s, w.ints("axes", [1, 2])], [m], schema.BuiltinOptions.ReducerOptions, reducer)
    f = w.tensor("f", [1, 10])
    w.op("FULLY_CONNECTED", [m, w.weight("fw", [10, 16]), w.weight("fb", [10])], [f],
         schema.BuiltinOptions.FullyConnectedOptions, schema.FullyConnectedOptionsT())
    y = w.tensor("y", [1, 10])
    w.op("CUMSUM", [f, w.tensor("axis", [], np.asarray(1, np.int32), schema.TensorType.INT32)], [y])
    return w.finish([x], [y])


def test_tflite_operators_map_to_kernels_with_nchw_shapes_and_fused_activations(tmp_path):
    path = tmp_path / "small.tflite"
    path.write_bytes(_small_cnn())
    graph = read_graph(path)
    assert graph.source_format == "tflite"
    assert [n.op_type for n in graph.nodes] == ["Pad", "Conv", "Conv", "Add", "ReduceMean", "Gemm", "CUMSUM"]
    assert graph.shape("x") == (1, 8, 16, 16) and graph.shape("c1") == (1, 16, 8, 8)
    assert graph.shape("w1") == (16, 8, 3, 3) and graph.shape("w2") == (16, 1, 3, 3)
    assert graph.nodes[4].attrs["axes"] == [2, 3]  # NHWC's H, W in NCHW order
    kg = group_kernels(graph, default_rules("litert"))
    assert [k.op_types for k in kg.kernels] == [("Pad", "Conv"), ("Conv",), ("Add",), ("ReduceMean",), ("Gemm",),
                                                ("CUMSUM",)]  # fmt: skip
    configs = [k.config for k in kg.kernels]
    assert configs[0] == KernelConfig(KernelType.CONV, 16, 16, 8, 16, 3, 2, 1, act="clip")
    assert configs[1] == KernelConfig(KernelType.DWCONV, 8, 8, 16, 16, 3, 1, 16, act="relu")
    assert configs[2] == KernelConfig(KernelType.ELEMENTWISE, 8, 8, 16, 16, variant="add")
    assert configs[3] == KernelConfig(KernelType.POOL, 8, 8, 16, 16, variant="global")
    assert configs[4] == KernelConfig(KernelType.FC, 1, 1, 16, 10)
    unknown = kg.kernels[5]
    assert unknown.type is KernelType.UNKNOWN and unknown.out_elems == 10 and "element-wise" in unknown.fallback


def test_tflite_dynamic_input_is_refused_in_one_line_and_input_shape_resizes_it(tmp_path):
    path = tmp_path / "dyn.tflite"
    path.write_bytes(_small_cnn(signature=[-1, 16, 16, 8]))
    with pytest.raises(UsageError) as err:
        read_graph(path)
    assert "dynamic dimension 0" in str(err.value) and "--input-shape" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    graph = read_graph(path, (2, 16, 16, 8))
    assert graph.shape("x") == (2, 8, 16, 16) and graph.shape("c2") == (2, 16, 8, 8)


def test_cli_predicts_a_tflite_file_with_its_fallback_listed(tmp_path, capsys):
    from latkit.cli import main
    from latkit.predictors.kernels import fit_predictors
    from latkit.profiler.kernel_sampling import sample_configs
    from latkit.profiler.kernels import work

    # three rows a type: log-linear models only (no trees to fit, no XGBoost to import)
    rows = [(c, 0.005 + 1e-6 * work(c)[0]) for t in (KernelType.CONV, KernelType.DWCONV, KernelType.ELEMENTWISE)
            for c in sample_configs(t, 3, seed=1)]  # fmt: skip
    folder = fit_predictors(rows, {"uri": "cpu:litert", "runtime": "litert"}, default_rules("litert"),
                            overhead_ms=0.005).save(tmp_path / "kp")  # fmt: skip
    path = tmp_path / "small.tflite"
    path.write_bytes(_small_cnn())
    assert main(["predict", str(path), "--device", "cpu:litert", "--predictors", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [k["kernel"] for k in out["kernels"]] == ["conv", "dwconv", "elementwise", "pool", "fc", "unknown"]
    assert out["coverage"]["operators"] == 7 and out["coverage"]["in_predicted_kernels"] == 4
    assert [c["op_types"] for c in out["coverage"]["not_covered"]] == [["ReduceMean"], ["Gemm"], ["CUMSUM"]]


def test_kernel_models_written_as_tflite_read_back_as_the_same_kernel():
    """The TFLite kernel writer and the reader agree: each model is one kernel of its own configuration."""
    from dataclasses import replace

    from latkit.profiler.kernel_sampling import sample_configs
    from latkit.profiler.kernel_tflite import build_tflite
    from latkit.profiler.tflite_graph import tflite_graph

    fused = ("", "relu", "clip")  # the activations a TFLite operator carries itself
    # a residual add is its own operator in a TFLite file (LiteRT fuses no Conv -> Add): one kernel has none
    configs = [replace(c, act=fused[i % 3], extra=0)
               for t in (KernelType.CONV, KernelType.DWCONV, KernelType.GCONV, KernelType.POINTWISE)
               for i, c in enumerate(sample_configs(t, 4, seed=4))]  # fmt: skip
    configs += [c for t in (KernelType.FC, KernelType.RESIZE, KernelType.SOFTMAX, KernelType.REDUCE)
                for c in sample_configs(t, 3, seed=4)]  # fmt: skip
    for c in configs:
        kg = group_kernels(tflite_graph(build_tflite(c), "k.tflite"), default_rules("litert"))
        assert [k.config for k in kg.kernels] == [c], c.key


def test_kernels_measure_on_litert_and_an_unbuilt_type_fails_in_one_line(tmp_path):
    from latkit.devices.base import open_device
    from latkit.profiler.kernel_models import measure_kernels
    from latkit.profiler.protocol import ProtocolConfig

    device = open_device("cpu:litert")
    proto = ProtocolConfig.quick(min_samples=3, max_samples=5, warmup_runs=1, warmup_s=0.0, max_seconds_per_op=0.2)
    got = {}
    conv = KernelConfig(KernelType.DWCONV, 14, 14, 32, 32, 3, 1, 32, act="relu")
    norm = KernelConfig(KernelType.LAYERNORM, h=49, cin=64, cout=64)
    try:
        failed = measure_kernels(device, [conv, norm], lambda c, m: got.update({c.key: m}), proto, cache_dir=tmp_path)
    finally:
        device.close()
    assert list(got) == [conv.key] and got[conv.key].latency_ms > 0
    assert (tmp_path / f"kernel-{conv.key}.tflite").is_file()
    assert list(failed) == [norm.key] and "not built as a TFLite file" in failed[norm.key]


@pytest.mark.slow  # reads the session's int8 run (built once per worker by the pipeline tests that share it)
def test_a_networks_tflite_and_onnx_files_group_into_the_same_kernels(int8_run):
    """The run's float32 ONNX file, its TFLite file and its int8 TFLite file: one network, the same kernels."""
    from collections import Counter

    export = int8_run.out / "export"

    def kernels(name):
        kg = group_kernels(read_graph(export / name), default_rules("litert"))
        assert not kg.uncovered, [k.op_types for k in kg.uncovered]
        # a flatten before the classifier is a reshape in ONNX; the TFLite converter folds it
        return Counter(k.config.key for k in kg.kernels if k.type is not KernelType.SHUFFLE)

    onnx_kernels = kernels("model.onnx")
    assert sum(onnx_kernels.values()) > 40
    assert kernels("model.tflite") == onnx_kernels
    assert kernels("model_int8.tflite") == onnx_kernels


def test_cli_predict_takes_the_precision_the_file_holds(tmp_path, capsys):
    """Without --precision an int8 file asks for int8 predictors, and says how to use the fp32 ones."""
    from latkit.cli import main

    w = _Writer()
    x = w.tensor("x", [1, 8, 8, 4], dtype=schema.TensorType.INT8)
    y = w.tensor("y", [1, 8, 8, 8], dtype=schema.TensorType.INT8)
    wt = w.tensor("w", [8, 1, 1, 4], np.ones((8, 1, 1, 4), np.int8), schema.TensorType.INT8)
    w.op("CONV_2D", [x, wt, -1], [y], *_conv_options(1, schema.Padding.SAME, 0))
    path = tmp_path / "q.tflite"
    path.write_bytes(w.finish([x], [y]))
    code = main(["predict", str(path), "--device", "cpu:litert", "--lut", str(tmp_path / "k.db")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "at int8" in err and "--precision fp32" in err and len(err.splitlines()) == 1
