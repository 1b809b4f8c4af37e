"""Small model files written directly with the formats' own builders (no torch export, no converter):
a stack of 3x3 convolutions with ReLU, heavy enough (about a millisecond) that a runtime's per-layer
overhead is small beside each layer, built in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNELS, SIZE, DEPTH = 32, 32, 4


def _weights(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cin = [3] + [CHANNELS] * (DEPTH - 1)
    return [((rng.standard_normal((CHANNELS, c, 3, 3)) * 0.1).astype(np.float32),
             (rng.standard_normal(CHANNELS) * 0.1).astype(np.float32)) for c in cin]


def conv_stack_onnx(path: Path, seed: int = 0) -> Path:
    """The conv stack as an ONNX file (NCHW input ``image`` 1x3x32x32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "image"
    for i, (w, b) in enumerate(_weights(seed)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "conv_stack",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_stack_tflite(path: Path, seed: int = 0) -> Path:
    """The conv stack as a TFLite file (NHWC input 1x32x32x3), CONV_2D with a fused ReLU."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    buffers, tensors, ops = [s.BufferT()], [], []

    def tensor(name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type = name, shape, s.TensorType.FLOAT32
        b = s.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data, dtype=np.float32).tobytes(), dtype=np.uint8)
        buffers.append(b)
        t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    x = first = tensor("image", [1, SIZE, SIZE, 3])
    for i, (w, b) in enumerate(_weights(seed)):
        options = s.Conv2DOptionsT()
        options.padding, options.strideW, options.strideH = s.Padding.SAME, 1, 1
        options.fusedActivationFunction = s.ActivationFunctionType.RELU
        op = s.OperatorT()
        op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = 0, s.BuiltinOptions.Conv2DOptions, options
        op.inputs = [x, tensor(f"w{i}", list(w.transpose(0, 2, 3, 1).shape), w.transpose(0, 2, 3, 1)),
                     tensor(f"b{i}", [CHANNELS], b)]
        x = tensor(f"conv{i}/Relu", [1, SIZE, SIZE, CHANNELS])
        op.outputs = [x]
        ops.append(op)
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CONV_2D
    code.version = 1
    graph = s.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs, graph.name = tensors, ops, [first], [x], "main"
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], buffers
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
