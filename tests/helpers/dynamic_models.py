"""Small models whose tensor sizes depend on the input values (NonZero, NonMaxSuppression, TopK with a
computed K), with inputs that give them chosen sizes: for the graph and the end-to-end tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
WIDTH = 16  # elements of x in the NonZero and TopK models
NUM_BOXES = 8


def _model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
           outputs: Sequence[onnx.ValueInfoProto], inits: Sequence[onnx.TensorProto],
           name: str) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _weights(shape: tuple[int, ...], name: str, seed: int = 0) -> onnx.TensorProto:
    return _const(name, np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def nonzero_model() -> onnx.ModelProto:
    """x[1,16] -> nz = NonZero(x > 0) [2,N] -> cols = nz[1] [N] -> v = x[cols] [N], w = W[cols] [N,4]
    -> y = v @ w [1,4]. ``shape_n`` = Shape(nz) feeds a ConstantOfShape: never folded."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["pos"]),
        helper.make_node("NonZero", ["pos"], ["nz"]),
        helper.make_node("Gather", ["nz", "one"], ["cols"], axis=0),
        helper.make_node("Reshape", ["x", "flat"], ["xflat"]),
        helper.make_node("Gather", ["xflat", "cols"], ["v"], axis=0),
        helper.make_node("Gather", ["W", "cols"], ["wsel"], axis=0),
        helper.make_node("Unsqueeze", ["v", "axis0"], ["vrow"]),
        helper.make_node("MatMul", ["vrow", "wsel"], ["mm"]),
        helper.make_node("Shape", ["nz"], ["shape_n"]),
        helper.make_node("ConstantOfShape", ["shape_n"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("ReduceSum", ["ones"], ["count"], keepdims=0),
        helper.make_node("Add", ["mm", "count"], ["y"]),
    ]
    inits = [_const("zero", np.float32(0)), _const("one", np.int64(1)),
             _const("flat", np.array([-1], np.int64)), _weights((WIDTH, 4), "W"),
             _const("axis0", np.array([0], np.int64))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits, "nonzero")


def nms_model() -> onnx.ModelProto:
    """boxes[1,8,4], scores[1,1,8] -> sel = NMS(...) [K,3] -> the kept boxes [K,4] -> y = their sum [4]."""
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_min"], ["sel"]),
        helper.make_node("Gather", ["sel", "two"], ["box_idx"], axis=1),
        helper.make_node("Reshape", ["boxes", "box_shape"], ["flat_boxes"]),
        helper.make_node("Gather", ["flat_boxes", "box_idx"], ["kept"], axis=0),
        helper.make_node("ReduceSum", ["kept", "axis0"], ["y"], keepdims=0),
    ]
    inits = [_const("max_out", np.array([NUM_BOXES], np.int64)), _const("iou", np.array([0.5], np.float32)),
             _const("score_min", np.array([0.0], np.float32)), _const("two", np.int64(2)),
             _const("box_shape", np.array([NUM_BOXES, 4], np.int64)),
             _const("axis0", np.array([0], np.int64))]
    return _model(nodes, [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, NUM_BOXES, 4]),
                          helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, NUM_BOXES])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits, "nms")


def topk_model() -> onnx.ModelProto:
    """x[1,16] -> k = count of x > 0 -> values, indices = TopK(x, k) [1,k]
    -> y = values @ W[indices] [1,3]."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["pos_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["pos_i"], ["k2"], keepdims=1),
        helper.make_node("Reshape", ["k2", "one_shape"], ["k"]),
        helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1),
        helper.make_node("Reshape", ["indices", "flat"], ["idx"]),
        helper.make_node("Gather", ["W", "idx"], ["wsel"], axis=0),
        helper.make_node("MatMul", ["values", "wsel"], ["y"]),
    ]
    inits = [_const("zero", np.float32(0)), _const("one_shape", np.array([1], np.int64)),
             _const("flat", np.array([-1], np.int64)), _weights((WIDTH, 3), "W", seed=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits, "topk")


def x_with_positives(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """x[1,16] with exactly ``count`` positive entries (NonZero and TopK models)."""
    rng = np.random.default_rng(seed)
    x = -rng.uniform(0.5, 2.0, (1, WIDTH)).astype(np.float32)
    x[0, rng.permutation(WIDTH)[:count]] *= -1
    return {"x": x}


def boxes_with_kept(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint boxes (no suppression) of which ``count`` score above NMS's threshold of 0."""
    rng = np.random.default_rng(seed)
    corners = np.arange(NUM_BOXES, dtype=np.float32)[:, None] * 10 + rng.uniform(0, 1, (NUM_BOXES, 1))
    boxes = np.concatenate([corners, corners, corners + 5, corners + 5], axis=1)[None].astype(np.float32)
    scores = -rng.uniform(0.1, 1.0, (1, 1, NUM_BOXES)).astype(np.float32)
    scores[0, 0, rng.permutation(NUM_BOXES)[:count]] *= -1
    return {"boxes": boxes, "scores": scores}
