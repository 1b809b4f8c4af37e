"""Kernel-level prediction of any model: graph reading, kernel grouping, fallbacks, saving, fusion detection."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from latkit.core.errors import StoreError, UsageError
from latkit.predictors.kernel_network import predict_graphs, predict_model
from latkit.predictors.kernels import KernelPredictors, fit_predictors
from latkit.profiler.graph import onnx_graph, read_graph
from latkit.profiler.kernel_patterns import group_kernels
from latkit.profiler.kernels import KernelConfig, KernelType, default_rules, work


def _model(nodes, inits, x_shape, y_name, x_dims=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims or list(x_shape))
    y = helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _w(name, shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def _conv_bn_relu_cumsum():
    """Conv -> BN -> Relu -> CumSum (an op type no kernel predictor covers)."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("CumSum", ["r", "axis"], ["y"]),
    ]
    inits = [_w("w", (16, 8, 3, 3)), _w("b", (16,)), _w("s", (16,)), _w("o", (16,)), _w("m", (16,)),
             numpy_helper.from_array(np.ones(16, np.float32), "v"),
             numpy_helper.from_array(np.asarray(1, np.int64), "axis")]
    return _model(nodes, inits, (1, 8, 28, 28), "y")


def _run_kernel_model(c):
    """The output of ``c``'s ONNX kernel model run once in ONNX Runtime on zeros."""
    import onnxruntime as ort

    from latkit.profiler.kernel_models import build_onnx, input_shape

    session = ort.InferenceSession(build_onnx(c).SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.zeros(input_shape(c), np.float32)})
    return y


def _synthetic_predictors(rules=None):
    """Predictors fitted on an analytic latency (no measuring): 1 ns per MAC or element plus 5 us."""
    from latkit.profiler.kernel_sampling import sample_configs

    rows = []
    for t in (KernelType.CONV, KernelType.ELEMENTWISE, KernelType.POINTWISE):
        for c in sample_configs(t, 12, seed=3):
            rows.append((c, 0.005 + 1e-6 * work(c)[0]))
    return fit_predictors(rows, {"uri": "cpu:onnxruntime", "runtime": "onnxruntime"},
                          rules or default_rules("onnxruntime"), overhead_ms=0.005)


def test_conv_bn_relu_is_one_kernel_and_unknown_op_is_a_flagged_fallback():
    graph = onnx_graph(_conv_bn_relu_cumsum(), "m.onnx")
    kg = group_kernels(graph, default_rules("onnxruntime"))
    assert [k.type for k in kg.kernels] == [KernelType.CONV, KernelType.UNKNOWN]
    conv = kg.kernels[0]
    assert conv.op_types == ("Conv", "BatchNormalization", "Relu")
    assert conv.config == KernelConfig(KernelType.CONV, 28, 28, 8, 16, 3, 1, 1, 0, act="relu")
    pred = predict_graphs(_synthetic_predictors(), [kg])[0]
    (fallback,) = pred.uncovered
    assert fallback.op_types == ("CumSum",) and "element-wise" in fallback.fallback
    assert fallback.latency_ms > 0
    cov = pred.to_dict()["coverage"]
    assert cov["operators"] == 4 and cov["in_predicted_kernels"] == 3
    assert cov["not_covered"][0]["op_types"] == ["CumSum"]
    assert pred.latency_ms == pytest.approx(pred.kernel_sum_ms + 0.005)


def test_without_rules_every_operator_is_its_own_kernel():
    graph = onnx_graph(_conv_bn_relu_cumsum(), "m.onnx")
    kg = group_kernels(graph, default_rules("torch"))
    assert [k.type for k in kg.kernels] == [KernelType.CONV, KernelType.ELEMENTWISE, KernelType.ACTIVATION,
                                            KernelType.UNKNOWN]
    assert sum(len(k.nodes) for k in kg.kernels) == 4


def test_dynamic_dimension_is_refused_in_one_line_and_input_shape_fixes_it(tmp_path):
    m = _conv_bn_relu_cumsum()
    dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "batch"
    path = tmp_path / "dyn.onnx"
    onnx.save(m, str(path))
    with pytest.raises(UsageError) as err:
        read_graph(path)
    assert "'batch'" in str(err.value) and "--input-shape" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    graph = read_graph(path, (2, 8, 28, 28))
    assert graph.shape("r") == (2, 16, 28, 28)


def test_cli_refuses_dynamic_model_with_one_error_line(tmp_path, capsys):
    from latkit.cli import main

    m = _conv_bn_relu_cumsum()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    path = tmp_path / "dyn.onnx"
    onnx.save(m, str(path))
    folder = _synthetic_predictors().save(tmp_path / "kp")
    code = main(["predict", str(path), "--device", "cpu:onnxruntime", "--predictors", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "'height'" in err


def test_cli_predict_json_lists_kernels_and_coverage(tmp_path, capsys):
    from latkit.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(_conv_bn_relu_cumsum(), str(path))
    folder = _synthetic_predictors().save(tmp_path / "kp")
    assert main(["predict", str(path), "--device", "cpu:onnxruntime", "--predictors", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [k["kernel"] for k in out["kernels"]] == ["conv", "unknown"]
    assert out["coverage"]["not_covered"][0]["fallback"]
    assert out["latency_ms"] == pytest.approx(sum(k["latency_ms"] for k in out["kernels"]) + out["overhead_ms"])


def test_predictors_save_without_pickle_and_refuse_another_version(tmp_path):
    preds = _synthetic_predictors()
    folder = preds.save(tmp_path / "kp")
    files = sorted(p.name for p in folder.iterdir())
    assert all(name.endswith(".json") for name in files), files
    loaded = KernelPredictors.load(folder)
    configs = [KernelConfig(KernelType.CONV, 56, 56, 32, 64, 3), KernelConfig(KernelType.ELEMENTWISE, 28, 28, 64, 64)]
    assert np.allclose(loaded.predict_configs(configs), preds.predict_configs(configs), rtol=1e-6)
    assert loaded.device["uri"] == "cpu:onnxruntime"
    meta = json.loads((folder / "predictors.json").read_text())
    meta["schema_version"] = 99
    (folder / "predictors.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema version 99"):
        KernelPredictors.load(folder)


def test_batch_prediction_equals_one_by_one():
    preds = _synthetic_predictors()
    graph = onnx_graph(_conv_bn_relu_cumsum(), "m.onnx")
    kg = group_kernels(graph, preds.rules)
    one = predict_graphs(preds, [kg])[0].latency_ms
    batch = predict_graphs(preds, [kg] * 50)
    assert len(batch) == 50 and all(p.latency_ms == pytest.approx(one) for p in batch)


def test_torch_module_with_se_and_shuffle_patterns():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.a, self.b = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

        def forward(self, x):
            x = self.conv(x)
            x = x * torch.sigmoid(self.b(torch.relu(self.a(x.mean((2, 3), keepdim=True)))))
            n, c, h, w = x.shape
            return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    pred = predict_model(Net(), _synthetic_predictors(), (1, 3, 32, 32))
    kinds = [k.kernel for k in pred.kernels]
    assert kinds == ["conv", "se", "shuffle"], kinds
    assert pred.kernels[1].key.startswith("se-16x16-c16-4")


@pytest.mark.serial  # A, B and A->B timed against each other: a second worker's load would blur them
def test_fusion_detection_finds_conv_bn_relu_fused_on_onnxruntime(ort_device, tmp_path):
    from latkit.profiler.fusion import detect_fusion
    from latkit.profiler.protocol import ProtocolConfig

    pairs = (("Conv", "BatchNormalization"), ("Conv", "Relu"), ("Conv", "Add"))
    rules = detect_fusion(ort_device, ProtocolConfig.quick(), pairs, cache_dir=tmp_path)
    assert rules.fuses("Conv", "BatchNormalization") and rules.fuses("Conv", "Relu"), rules.evidence
    # adding a whole tensor after a convolution is a second pass over memory: not fused
    assert not rules.fuses("Conv", "Add") and rules.evidence["Conv->Add"]["added_share_of_b"] > 0.5, rules.evidence
    assert rules.source == "measured"
    assert set(rules.evidence) == {"Conv->BatchNormalization", "Conv->Relu", "Conv->Add"}


def test_fusion_rules_round_trip_through_the_lut(tmp_path):
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.profiler.kernels import FusionRules

    rules = FusionRules(frozenset({("Conv", "Relu")}), "measured", {"Conv->Relu": {"fused": True}})
    with LUT.open(tmp_path / "k.db", create=True) as lut:
        KernelStore(lut).save_rules("cpu:onnxruntime", "onnxruntime", rules)
    with LUT.open(tmp_path / "k.db", readonly=True) as lut:
        back = KernelStore(lut).rules("cpu:onnxruntime")
        assert KernelStore(lut).rules("cpu:litert") is None
    assert back == rules


@pytest.mark.slow
def test_small_build_measures_into_the_lut_and_resumes(ort_device, tmp_path):
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.predictors.kernel_build import BuildSettings, build_kernel_predictors
    from latkit.profiler.protocol import ProtocolConfig

    proto = ProtocolConfig.quick(min_samples=3, max_samples=5, warmup_runs=1, warmup_s=0.0, max_seconds_per_op=0.2)
    types = (KernelType.POINTWISE, KernelType.ELEMENTWISE)
    settings = BuildSettings(budget_s=120, per_type=4, adaptive_per_type=0, rounds=0)
    with LUT.open(tmp_path / "k.db", create=True) as lut:
        preds = build_kernel_predictors(ort_device, lut, settings, protocol=proto, types=types)
        n = len(KernelStore(lut).done_keys(ort_device.uri))
        assert n == 9  # the overhead model and 4 per type
        assert {t: m.n_train for t, m in preds.models.items()} == {KernelType.POINTWISE: 4,
                                                                  KernelType.ELEMENTWISE: 4, KernelType.ACTIVATION: 1}
        build_kernel_predictors(ort_device, lut, BuildSettings(budget_s=120, per_type=4, rounds=0), protocol=proto,
                                types=types)  # fmt: skip
        assert len(KernelStore(lut).done_keys(ort_device.uri)) == n  # resumed: nothing new to measure


@pytest.mark.slow
def test_a_lone_kernels_layout_changes_are_measured_and_left_out_of_its_own_time(ort_device, tmp_path):
    """ONNX Runtime moves a lone convolution's input into its blocked layout and back every run;
    a network does that once. The share is stored with the row and taken off the kernel's time."""
    from latkit.lut.kernel_store import KernelStore
    from latkit.lut.store import LUT
    from latkit.profiler.kernel_models import OVERHEAD_CONFIG, measure_kernels
    from latkit.profiler.protocol import ProtocolConfig

    proto = ProtocolConfig.quick(min_samples=3, max_samples=5, warmup_runs=1, warmup_s=0.0, max_seconds_per_op=0.2)
    dw = KernelConfig(KernelType.DWCONV, h=56, w=56, cin=96, cout=96, kernel=3, stride=1, groups=96, act="relu")
    info = ort_device.info().to_dict()
    with LUT.open(tmp_path / "k.db", create=True) as lut:
        store = KernelStore(lut)
        failed = measure_kernels(ort_device, [dw, OVERHEAD_CONFIG], lambda c, m: store.add(c, m, info), proto,
                                 cache_dir=tmp_path / "models")  # fmt: skip
        assert not failed
        rows = {r[0]: (r[1], json.loads(r[2])) for r in lut._q(  # noqa: SLF001 - the stored row itself
            "SELECT key, latency_ms, provenance_json FROM kernel_measurements")}
        own = dict((c.key, ms) for c, ms in store.measurements(ort_device.uri))
    raw, prov = rows[dw.key]
    # the reorders in and out of NCHWc around a 56x56x96 depthwise convolution: a large share of its run
    assert 0.15 < prov["layout_share"] < 0.9
    overhead = rows[OVERHEAD_CONFIG.key][0]
    assert own[dw.key] == pytest.approx(overhead + (raw - overhead) * (1 - prov["layout_share"]))
    # a lone activation runs in the plain layout: nothing to take off
    assert rows[OVERHEAD_CONFIG.key][1]["layout_share"] == 0
    assert own[OVERHEAD_CONFIG.key] == pytest.approx(rows[OVERHEAD_CONFIG.key][0])


def test_shapes_are_inferred_without_weight_values_but_with_shape_constants():
    """Large weights go to shape inference as bare inputs; a Reshape target keeps its value."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "target"], ["r"]),
        helper.make_node("MatMul", ["r", "fc"], ["y"]),
    ]
    inits = [_w("w", (16, 8, 3, 3)), numpy_helper.from_array(np.asarray([1, -1], np.int64), "target"),
             _w("fc", (16 * 14 * 14, 10))]
    graph = onnx_graph(_model(nodes, inits, (1, 8, 28, 28), "y"), "m.onnx")
    assert graph.shape("c") == (1, 16, 14, 14)
    assert graph.shape("r") == (1, 16 * 14 * 14)
    assert graph.shape("y") == (1, 10)
    assert graph.shape("w") == (16, 8, 3, 3) and {"w", "fc", "target"} <= graph.constants


def test_trees_evaluate_in_numpy_as_xgboost_does_and_predicting_imports_no_xgboost(tmp_path):
    """The saved residual trees give XGBoost's own output; a fresh process predicts without importing it."""
    import subprocess
    import sys

    xgb = pytest.importorskip("xgboost")
    from latkit.predictors.tree_json import TreeEnsemble

    preds = _synthetic_predictors()
    folder = preds.save(tmp_path / "kp")
    model = preds.models[KernelType.CONV]
    booster = xgb.Booster()
    booster.load_model(str(folder / "conv.json"))
    x = np.random.default_rng(1).uniform(0, 8, size=(40, 14))
    assert np.allclose(TreeEnsemble(json.loads((folder / "conv.json").read_text())).predict(x),
                       booster.inplace_predict(x), atol=1e-5)  # fmt: skip
    assert np.allclose(model.trees.predict(x), booster.inplace_predict(x), atol=1e-5)
    code = ("import sys; from latkit.predictors.kernels import KernelPredictors; from latkit.profiler.kernels import "
            f"KernelConfig; p = KernelPredictors.load({str(folder)!r}); "
            "print(p.predict_configs([KernelConfig('conv', 56, 56, 32, 64, 3)])[0], 'xgboost' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    expected = preds.predict_configs([KernelConfig(KernelType.CONV, 56, 56, 32, 64, 3)])[0]
    assert float(out[0]) == pytest.approx(expected, rel=1e-6) and out[1] == "False"


def test_slice_split_expand_reduce_and_instance_norm_are_predicted_kernels():
    """The data-movement, reduction and normalization operators get kernels of their own; a no-op slice is folded."""
    ints = lambda name, v: numpy_helper.from_array(np.asarray(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Slice", ["x", "s0", "s16", "ax1"], ["full"]),  # keeps all 16 channels: folded
        helper.make_node("Split", ["full", "halves"], ["a", "b"], axis=1),
        helper.make_node("ReduceSum", ["a", "ax3"], ["r"], keepdims=1),
        helper.make_node("Expand", ["r", "target"], ["e"]),
        helper.make_node("InstanceNormalization", ["e", "scale", "bias"], ["n"]),
        helper.make_node("Slice", ["b", "s0", "s4", "ax1"], ["y"]),
    ]
    inits = [ints("s0", [0]), ints("s16", [16]), ints("s4", [4]), ints("ax1", [1]), ints("ax3", [3]),
             ints("halves", [8, 8]), ints("target", [1, 8, 14, 14]), _w("scale", (8,)), _w("bias", (8,))]
    kg = group_kernels(onnx_graph(_model(nodes, inits, (1, 16, 14, 14), "y"), "m.onnx"), default_rules("onnxruntime"))
    assert kg.folded == ("Slice_0",)
    assert [k.config for k in kg.kernels] == [
        KernelConfig(KernelType.COPY, 14, 14, 16, 8, extra=2, variant="split"),
        KernelConfig(KernelType.REDUCE, h=8 * 14, cin=14, cout=1, extra=1, variant="sum"),
        KernelConfig(KernelType.COPY, 14, 14, 8, 8, extra=14, variant="expand"),
        KernelConfig(KernelType.NORM, h=8, cin=196, cout=196, variant="instance"),
        KernelConfig(KernelType.COPY, 14, 14, 8, 4, variant="slice"),
    ]
    assert not kg.uncovered


@pytest.mark.parametrize("kind", [KernelType.COPY, KernelType.REDUCE, KernelType.NORM])
def test_sampled_configs_of_the_new_types_build_models_the_runtime_runs(kind):
    from latkit.profiler.kernel_sampling import sample_configs

    configs = sample_configs(kind, 6, seed=5)
    assert len({c.variant for c in configs}) >= 2 and len(configs) == 6
    for c in configs:
        y = _run_kernel_model(c)
        assert y.size > 0
        assert y.size == (work(c)[2] // max(c.extra, 1) if c.variant == "split" else work(c)[2])


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_a_zero_pad_runs_inside_the_convolution_after_it_and_a_reflect_pad_does_not(mode):
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode),
             helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"), _w("w", (4, 2, 3, 3))]
    kg = group_kernels(onnx_graph(_model(nodes, inits, (1, 2, 8, 8), "y"), "m.onnx"), default_rules("onnxruntime"))
    if mode == "constant":  # configured on the unpadded input, whose output size it has
        assert [k.op_types for k in kg.kernels] == [("Pad", "Conv", "Relu")]
        assert kg.kernels[0].config == KernelConfig(KernelType.CONV, 8, 8, 2, 4, 3, 2, act="relu")
    else:
        assert [k.op_types for k in kg.kernels] == [("Pad",), ("Conv", "Relu")]
        assert kg.kernels[0].type is KernelType.UNKNOWN


def test_a_grouped_convolution_is_its_own_kernel_type_and_its_samples_run():
    from latkit.profiler.kernel_sampling import sample_configs

    nodes = [helper.make_node("Conv", ["x", "wg"], ["g"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Conv", ["g", "wd"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=32)]
    kg = group_kernels(onnx_graph(_model(nodes, [_w("wg", (32, 8, 3, 3)), _w("wd", (32, 1, 3, 3))], (1, 32, 14, 14),
                                         "y"), "m.onnx"), default_rules("onnxruntime"))  # fmt: skip
    assert [k.type for k in kg.kernels] == [KernelType.GCONV, KernelType.DWCONV]
    assert kg.kernels[0].config == KernelConfig(KernelType.GCONV, 14, 14, 32, 32, 3, 1, 4)
    configs = sample_configs(KernelType.GCONV, 8, seed=5)
    assert len(configs) == 8 and len({c.cin // c.groups for c in configs}) >= 3  # several group widths
    for c in configs:
        assert 1 < c.groups < c.cin and c.cin % c.groups == 0 == c.cout % c.groups
        y = _run_kernel_model(c)
        assert y.size == work(c)[2]
    assert all(c.groups == c.cin for c in sample_configs(KernelType.DWCONV, 20, seed=5))


def test_a_resize_to_its_own_size_is_not_predicted_from_doubled_ones_alone():
    """Resizes measured at scales 1 and 2; a scale-1 one is predicted below the scale-2 one of its input.

    With samples at scale 2 only, output = 4 x input in every row, and a shrunken
    intercept once let the ridge lean on that: a 8x8 scale-1 resize came out at 40 ms.
    """
    from latkit.predictors.kernels import TypeModel
    from latkit.profiler.kernel_sampling import sample_configs
    from latkit.profiler.kernels import features

    configs = sample_configs(KernelType.RESIZE, 30, seed=2)
    assert {c.stride for c in configs} == {1, 2}
    doubled = [c for c in configs if c.stride == 2]
    model = TypeModel.fit(features(doubled), np.asarray([0.002 + 2e-7 * work(c)[2] for c in doubled]))
    same = KernelConfig(KernelType.RESIZE, 8, 8, 96, 96, stride=1, variant="linear")
    twice = KernelConfig(KernelType.RESIZE, 8, 8, 96, 96, stride=2, variant="linear")
    one, two = model.predict(features([same, twice]))
    assert one <= two < 0.05


def test_a_reshape_transpose_of_tokens_is_configured_by_its_elements():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0])]
    inits = [numpy_helper.from_array(np.asarray([784, 192], np.int64), "shape")]
    kg = group_kernels(onnx_graph(_model(nodes, inits, (1, 784, 192), "y"), "m.onnx"), default_rules("onnxruntime"))
    (k,) = kg.kernels
    assert k.type is KernelType.SHUFFLE and (k.config.h, k.config.cin, k.config.cout) == (784, 192, 192)


def test_strided_pointwise_convolutions_are_sampled_and_run():
    """ResNet's downsampling shortcuts (1x1, stride 2) were never drawn: resnet50 read +107% on them."""
    from latkit.profiler.kernel_sampling import sample_configs

    strided = [c for c in sample_configs(KernelType.POINTWISE, 30, seed=0) if c.stride == 2]
    assert len(strided) >= 3 and all(c.kernel == 1 and not c.extra for c in strided)
    for c in strided[:3]:
        y = _run_kernel_model(c)
        assert y.shape[2:] == c.out_hw() and y.size == work(c)[2]
