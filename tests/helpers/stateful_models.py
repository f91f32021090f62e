"""A tiny model with a cache, as a decoder exported with past key/values has (graph/state.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 8


def cached_chain(layers: int = 3, *, past_read_by: int | None = None) -> onnx.ModelProto:
    """``x`` [1, seq, 8] through ``layers`` layers; layer i keeps ``past_key_values.i.key`` [1, 1, past, 8]
    (its past keys) and returns ``present.i.key`` (those and this step's), and mixes their mean into its
    output, as attention over a cache does. ``past_read_by``: that layer also reads layer 0's past (a
    state that cutting between them would split)."""
    rng = np.random.default_rng(0)
    seq, past = "sequence_length", "past_sequence_length"
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, WIDTH])]
    outputs = []
    x = "x"
    inits.append(numpy_helper.from_array(np.array([1, 1, -1, WIDTH], np.int64), "kv_shape"))
    inits.append(numpy_helper.from_array(np.array([1, 1, WIDTH], np.int64), "mean_shape"))
    for i in range(layers):
        p, pk = f"past_key_values.{i}.key", f"present.{i}.key"
        inputs.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, [1, 1, past, WIDTH]))
        outputs.append(helper.make_tensor_value_info(pk, TensorProto.FLOAT, [1, 1, f"total_{i}", WIDTH]))
        for w in ("wk", "w"):
            inits.append(numpy_helper.from_array(
                (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), f"l{i}.{w}"))
        nodes += [
            helper.make_node("MatMul", [x, f"l{i}.wk"], [f"l{i}.k"], name=f"l{i}.k_proj"),
            helper.make_node("Reshape", [f"l{i}.k", "kv_shape"], [f"l{i}.k4"], name=f"l{i}.k_heads"),
            helper.make_node("Concat", [p, f"l{i}.k4"], [pk], name=f"l{i}.cache", axis=2),
            helper.make_node("ReduceMean", [pk], [f"l{i}.mean"], name=f"l{i}.mean", axes=[2], keepdims=0),
            helper.make_node("Reshape", [f"l{i}.mean", "mean_shape"], [f"l{i}.ctx"], name=f"l{i}.ctx"),
            helper.make_node("MatMul", [x, f"l{i}.w"], [f"l{i}.h"], name=f"l{i}.proj"),
            helper.make_node("Add", [f"l{i}.h", f"l{i}.ctx"], [f"l{i}.sum"], name=f"l{i}.add"),
        ]
        last = f"l{i}.sum"
        if past_read_by == i:
            nodes += [helper.make_node("ReduceSum", ["past_key_values.0.key"], [f"l{i}.old"],
                                       name=f"l{i}.old", keepdims=0),
                      helper.make_node("Add", [last, f"l{i}.old"], [f"l{i}.sum2"], name=f"l{i}.add_old")]
            last = f"l{i}.sum2"
        nodes.append(helper.make_node("Relu", [last], [f"l{i}.out"], name=f"l{i}.relu"))
        x = f"l{i}.out"
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="head"))
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, seq, WIDTH]))
    graph = helper.make_graph(nodes, "cached_chain", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def empty_past(layers: int = 3) -> dict[str, np.ndarray]:
    return {f"past_key_values.{i}.key": np.zeros((1, 1, 0, WIDTH), np.float32) for i in range(layers)}
