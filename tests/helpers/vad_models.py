"""A voice-activity model shaped like Silero VAD, built with onnx.helper and seeded weights.

Inputs ``x`` float [1, 512], ``sr`` int64 scalar, ``state`` float [2, 1, 64]; outputs ``y``
[1, 1] and the new ``stateN``. The whole network lives inside ``If(Equal(sr, 16000))``: the
then-branch holds two Convs, a MatMul and an LSTM; the else-branch is ``If(Equal(sr, 8000))``
with a smaller MatMul+Tanh network for 8 kHz, whose own else-branch fails in ONNX Runtime (a
Gather past the 512 samples), as the real model fails on a rate it does not know.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F, I64 = TensorProto.FLOAT, TensorProto.INT64
HIDDEN = 64


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _i64(name: str, value: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)


def _out(name: str, shape: list[int] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, F, shape)


def _branch_16k(rng: np.random.Generator) -> onnx.GraphProto:
    h = HIDDEN
    inits = [
        _i64("k16_shape3", [1, 1, 512]), _w(rng, "k16_c1_w", (16, 1, 5)), _w(rng, "k16_c2_w", (32, 16, 5)),
        _i64("k16_flat", [1, 32 * 128]), _w(rng, "k16_fc_w", (32 * 128, h)),
        _i64("k16_seq", [1, 1, h]),
        _w(rng, "k16_lstm_w", (1, 4 * h, h)), _w(rng, "k16_lstm_r", (1, 4 * h, h)),
        numpy_helper.from_array((rng.standard_normal((1, 8 * h)) * 0.1).astype(np.float32), "k16_lstm_b"),
        _i64("k16_zero", [0]), _i64("k16_one", [1]), _i64("k16_two", [2]), _i64("k16_row", [1, h]),
        _w(rng, "k16_out_w", (h, 1)),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "k16_shape3"], ["k16_x3"]),
        helper.make_node("Conv", ["k16_x3", "k16_c1_w"], ["k16_c1"], pads=[2, 2], strides=[2]),
        helper.make_node("Relu", ["k16_c1"], ["k16_r1"]),
        helper.make_node("Conv", ["k16_r1", "k16_c2_w"], ["k16_c2"], pads=[2, 2], strides=[2]),
        helper.make_node("Relu", ["k16_c2"], ["k16_r2"]),
        helper.make_node("Reshape", ["k16_r2", "k16_flat"], ["k16_flat_x"]),
        helper.make_node("MatMul", ["k16_flat_x", "k16_fc_w"], ["k16_fc"]),
        helper.make_node("Relu", ["k16_fc"], ["k16_feat"]),
        helper.make_node("Reshape", ["k16_feat", "k16_seq"], ["k16_seq_x"]),
        helper.make_node("Slice", ["state", "k16_zero", "k16_one"], ["k16_h0"]),
        helper.make_node("Slice", ["state", "k16_one", "k16_two"], ["k16_c0"]),
        helper.make_node("LSTM",
                         ["k16_seq_x", "k16_lstm_w", "k16_lstm_r", "k16_lstm_b", "", "k16_h0", "k16_c0"],
                         ["", "k16_hn", "k16_cn"], hidden_size=h),
        helper.make_node("Concat", ["k16_hn", "k16_cn"], ["k16_state"], axis=0),
        helper.make_node("Reshape", ["k16_hn", "k16_row"], ["k16_h"]),
        helper.make_node("MatMul", ["k16_h", "k16_out_w"], ["k16_logit"]),
        helper.make_node("Sigmoid", ["k16_logit"], ["k16_y"]),
    ]
    return helper.make_graph(nodes, "vad_16k", [], [_out("k16_y"), _out("k16_state")], initializer=inits)


def _branch_8k(rng: np.random.Generator) -> onnx.GraphProto:
    inits = [_i64("k8_pairs", [1, 256, 2]), _w(rng, "k8_fc_w", (256, HIDDEN)),
             _w(rng, "k8_out_w", (HIDDEN, 1))]
    nodes = [
        helper.make_node("Reshape", ["x", "k8_pairs"], ["k8_x"]),
        helper.make_node("ReduceMean", ["k8_x"], ["k8_half"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["k8_half", "k8_fc_w"], ["k8_fc"]),
        helper.make_node("Tanh", ["k8_fc"], ["k8_h"]),
        helper.make_node("Add", ["state", "k8_h"], ["k8_sum"]),
        helper.make_node("Tanh", ["k8_sum"], ["k8_state"]),
        helper.make_node("MatMul", ["k8_h", "k8_out_w"], ["k8_logit"]),
        helper.make_node("Sigmoid", ["k8_logit"], ["k8_y"]),
    ]
    return helper.make_graph(nodes, "vad_8k", [], [_out("k8_y"), _out("k8_state")], initializer=inits)


def _branch_unknown_rate() -> onnx.GraphProto:
    # Sample 600 of 512: ONNX Runtime fails when it runs, as the real model does on a rate it lacks.
    nodes = [helper.make_node("Gather", ["x", "bad_index"], ["bad_y"], axis=1),
             helper.make_node("Identity", ["state"], ["bad_state"])]
    return helper.make_graph(nodes, "vad_unknown_rate", [], [_out("bad_y"), _out("bad_state")],
                             initializer=[_i64("bad_index", [600, 601])])


def vad_model(seed: int = 0) -> onnx.ModelProto:
    """The VAD-like model (opset 13, ONNX Runtime runs it in milliseconds at sr 16000 or 8000)."""
    rng = np.random.default_rng(seed)
    inner = helper.make_graph(
        [helper.make_node("Equal", ["sr", "rate_8k"], ["is_8k"]),
         helper.make_node("If", ["is_8k"], ["y8", "state8"], name="if_8k",
                          then_branch=_branch_8k(rng), else_branch=_branch_unknown_rate())],
        "vad_not_16k", [], [_out("y8"), _out("state8")], initializer=[_i64("rate_8k", 8000)])
    nodes = [
        helper.make_node("Equal", ["sr", "rate_16k"], ["is_16k"], name="is_16k"),
        helper.make_node("If", ["is_16k"], ["y", "stateN"], name="if_16k",
                         then_branch=_branch_16k(rng), else_branch=inner),
    ]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("x", F, [1, 512]), helper.make_tensor_value_info("sr", I64, []),
         helper.make_tensor_value_info("state", F, [2, 1, HIDDEN])],
        [_out("y", [1, 1]), _out("stateN", [2, 1, HIDDEN])],
        initializer=[_i64("rate_16k", 16000)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def run_original(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs in ONNX Runtime, by name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run raises; its log lines would only clutter the output
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
