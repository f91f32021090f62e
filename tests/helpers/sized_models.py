"""Models exported with symbolic batch and sequence dims, as a framework's dynamic-axes export writes them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from splitinfer import zoo


def dynamic_batch(name: str = "resnet18") -> onnx.ModelProto:
    """A small zoo model whose inputs' and outputs' leading dim is the symbol ``N``."""
    model = zoo.build_small(name)
    for vi in [*model.graph.input, *model.graph.output]:
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "N"
    return model


def batch_and_sequence() -> onnx.ModelProto:
    """x [N, S, 8] -> MatMul, Relu, a Reshape from its own computed shape, MatMul, mean over S -> [N, 4]."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        # Flatten the batch and sequence and restore them from the input's shape: what exports do.
        helper.make_node("Shape", ["r"], ["r_shape"], name="shape"),
        helper.make_node("Constant", [], ["flat"], name="flat_c",
                         value=numpy_helper.from_array(np.array([-1, 16], np.int64))),
        helper.make_node("Reshape", ["r", "flat"], ["rf"], name="flatten"),
        helper.make_node("MatMul", ["rf", "w2"], ["o"], name="mm2"),
        helper.make_node("Constant", [], ["four"], name="four_c",
                         value=numpy_helper.from_array(np.array([4], np.int64))),
        helper.make_node("Slice", ["r_shape", "zero", "two"], ["ns"], name="ns"),
        helper.make_node("Concat", ["ns", "four"], ["o_shape"], name="o_shape", axis=0),
        helper.make_node("Reshape", ["o", "o_shape"], ["o3"], name="unflatten"),
        helper.make_node("ReduceMean", ["o3"], ["y"], name="mean", axes=[1], keepdims=0),
    ]
    inits = [w1, w2, numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "two")]
    graph = helper.make_graph(nodes, "batch_and_sequence",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
