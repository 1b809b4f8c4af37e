"""Shape arithmetic ONNX's data propagation cannot follow is folded, so every tensor after it has a shape."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from latkit.profiler.graph import onnx_graph


def test_a_same_padding_computed_from_the_input_size_gets_its_shape():
    """Pad amounts from Shape -> Gather -> Sub -> Max -> Div -> Cast -> Concat (timm's dynamic 'same' padding)."""
    c = lambda name, v, dt=np.int64: numpy_helper.from_array(np.asarray(v, dt), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i2"], ["h"], axis=0),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["hf", "two"], ["half"]),
        helper.make_node("Ceil", ["half"], ["oh"]),
        helper.make_node("Sub", ["oh", "onef"], ["t1"]),
        helper.make_node("Mul", ["t1", "two"], ["t2"]),
        helper.make_node("Add", ["t2", "threef"], ["t3"]),
        helper.make_node("Sub", ["t3", "hf"], ["total"]),
        helper.make_node("Clip", ["total", "zerof"], ["total0"]),
        helper.make_node("Div", ["total0", "two"], ["before_f"]),
        helper.make_node("Floor", ["before_f"], ["before_f2"]),
        helper.make_node("Cast", ["before_f2"], ["before"], to=TensorProto.INT64),
        helper.make_node("Cast", ["total0"], ["total_i"], to=TensorProto.INT64),
        helper.make_node("Sub", ["total_i", "before"], ["after"]),
        helper.make_node("Concat", ["zeros2", "before", "before", "zeros2", "after", "after"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("Conv", ["padded", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2]),
    ]
    inits = [c("i2", 2), c("two", 2.0, np.float32), c("onef", [1.0], np.float32), c("threef", [3.0], np.float32),
             c("zerof", 0.0, np.float32), c("zeros2", [0, 0]),
             numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 15, 15])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = onnx_graph(model, "same.onnx")
    assert graph.shape("padded") == (1, 3, 17, 17)  # 15 -> ceil(15/2)=8 outputs need (8-1)*2+3-15 = 2 pad rows
    assert graph.shape("y") == (1, 8, 8, 8)
    assert "pads" in graph.constants
