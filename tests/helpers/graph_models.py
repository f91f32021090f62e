"""Small ONNX models built with onnx.helper, each exercising one shape of graph.

Every builder is seeded and returns an ``onnx.ModelProto`` that ONNX Runtime
runs in milliseconds.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _c(name: str, value: object, dtype: object = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, inputs, outputs, inits, opset=13, functions=(), extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def _conv(rng, inits, x, y, cin, cout, k=3, name=None):
    w, b = f"{y}_w", f"{y}_b"
    inits += [_w(rng, w, (cout, cin, k, k)), _c(b, rng.standard_normal(cout) * 0.1)]
    return helper.make_node("Conv", [x, w, b], [y], pads=[k // 2] * 4, name=name or f"conv_{y}")


def conv_chain(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu x3 with a MaxPool, then GAP, Gemm, Softmax. Unnamed Relu nodes."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [
        _conv(rng, inits, "x", "c1", 3, 8),
        helper.make_node("Relu", ["c1"], ["r1"]),
        _conv(rng, inits, "r1", "c2", 8, 8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        _conv(rng, inits, "p", "c3", 8, 16),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    inits += [_w(rng, "fc_w", (10, 16)), _c("fc_b", np.zeros(10))]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 16, 16])],
                  [helper.make_tensor_value_info("probs", F, [1, 10])], inits, opset)


def residual(opset: int = 17, seed: int = 0, num_blocks: int = 2) -> onnx.ModelProto:
    """A stem and ``num_blocks`` residual blocks (conv-relu-conv + skip), then a head."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [_conv(rng, inits, "x", "stem", 4, 8),
             helper.make_node("Relu", ["stem"], ["h0"], name="stem_relu")]
    for i in range(num_blocks):
        h = f"h{i}"
        nodes += [
            _conv(rng, inits, h, f"b{i}_c1", 8, 8),
            helper.make_node("Relu", [f"b{i}_c1"], [f"b{i}_r1"], name=f"b{i}_relu1"),
            _conv(rng, inits, f"b{i}_r1", f"b{i}_c2", 8, 8),
            helper.make_node("Add", [f"b{i}_c2", h], [f"b{i}_sum"], name=f"b{i}_add"),
            helper.make_node("Relu", [f"b{i}_sum"], [f"h{i + 1}"], name=f"b{i}_relu2"),
        ]
    nodes += [
        helper.make_node("GlobalAveragePool", [f"h{num_blocks}"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1, name="fc"),
    ]
    inits += [_w(rng, "fc_w", (5, 8)), _c("fc_b", np.zeros(5))]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 4, 8, 8])],
                  [helper.make_tensor_value_info("y", F, [1, 5])], inits, opset)


def if_model(opset: int = 11, seed: int = 0) -> onnx.ModelProto:
    """An If whose branches read an outer tensor ``y`` and an outer initializer ``two``."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "w1", (8, 8)), _w(rng, "w2", (8, 4)), _c("two", 2.0), _c("zero", 0.0)]
    out_t = helper.make_tensor_value_info("branch_out", F, [1, 8])
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["y"], ["t1"]), helper.make_node("Mul", ["t1", "two"], ["branch_out"])],
        "then", [], [out_t],
    )
    else_g = helper.make_graph([helper.make_node("Neg", ["y"], ["branch_out"])], "else", [], [out_t])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["y"], name="mm1"),
        helper.make_node("ReduceSum", ["y"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g, name="if"),
        helper.make_node("Add", ["z", "y"], ["z2"], name="add"),
        helper.make_node("MatMul", ["z2", "w2"], ["out"], name="mm2"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 8])],
                  [helper.make_tensor_value_info("out", F, [1, 4])], inits, opset)


def early_output(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Output ``early`` is made by the second node; ``final`` at the end. Outputs: early, final."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [
        _conv(rng, inits, "x", "c1", 3, 4),
        helper.make_node("Relu", ["c1"], ["early"], name="relu1"),
        _conv(rng, inits, "early", "c2", 4, 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        _conv(rng, inits, "r2", "c3", 4, 4),
        helper.make_node("Sigmoid", ["c3"], ["final"], name="sig"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("early", F, [1, 4, 8, 8]),
                   helper.make_tensor_value_info("final", F, [1, 4, 8, 8])],
                  inits, opset)


def shared_init(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """The square weight ``w`` is read by the first and the last MatMul."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "w", (16, 16)), _w(rng, "v", (16, 16))]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="mm_w1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu1"),
        helper.make_node("MatMul", ["b", "v"], ["c"], name="mm_v"),
        helper.make_node("Tanh", ["c"], ["d"], name="tanh"),
        helper.make_node("MatMul", ["d", "w"], ["out"], name="mm_w2"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [2, 16])],
                  [helper.make_tensor_value_info("out", F, [2, 16])], inits, opset)


def two_input(opset: int = 17, seed: int = 0, vocab: int = 50) -> onnx.ModelProto:
    """Token ids (int64) into an embedding, a bool mask, LayerNorm, and a Shape->Reshape chain."""
    rng = np.random.default_rng(seed)
    inits = [
        _w(rng, "emb", (vocab, 16)), _w(rng, "proj", (16, 16)),
        _c("ln_g", np.ones(16)), _c("ln_b", np.zeros(16)),
        _c("axes", [2], np.int64), _c("idx0", 0, np.int64),
        _c("minus1", [-1], np.int64), _c("ax0", [0], np.int64),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("Cast", ["mask"], ["mf"], to=F, name="cast_mask"),
        helper.make_node("Unsqueeze", ["mf", "axes"], ["mu"], name="unsq"),
        helper.make_node("Mul", ["e", "mu"], ["em"], name="apply_mask"),
        helper.make_node("LayerNormalization", ["em", "ln_g", "ln_b"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "proj"], ["h"], name="proj"),
        helper.make_node("Shape", ["h"], ["h_shape"], name="shape"),
        helper.make_node("Gather", ["h_shape", "idx0"], ["n"], axis=0, name="take_batch"),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq_n"),
        helper.make_node("Concat", ["n1", "minus1"], ["new_shape"], axis=0, name="concat_shape"),
        helper.make_node("Reshape", ["h", "new_shape"], ["flat"], name="reshape"),
        helper.make_node("Relu", ["flat"], ["out"], name="relu"),
    ]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6]),
              helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 6])]
    return _model(nodes, inputs, [helper.make_tensor_value_info("out", F, [1, 96])], inits, opset)


def dynamic(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Input ``x`` is [batch, 3, height, width]."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes = [
        _conv(rng, inits, "x", "c1", 3, 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _conv(rng, inits, "r1", "c2", 4, 4),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flatten"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, ["batch", 3, "height", "width"])],
                  [helper.make_tensor_value_info("y", F, ["batch", 4])], inits, opset)


def pass_through(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """``a`` is made first and read last; four nodes in between."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, f"w{i}", (8, 8)) for i in range(4)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["a"], name="make_a")]
    prev = "a"
    for i, op in enumerate(["Relu", "Tanh", "Sigmoid"], start=1):
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node(op, [f"m{i}"], [f"t{i}"], name=f"act{i}")]
        prev = f"t{i}"
    nodes.append(helper.make_node("Add", [prev, "a"], ["out"], name="add_a"))
    return _model(nodes, [helper.make_tensor_value_info("x", F, [2, 8])],
                  [helper.make_tensor_value_info("out", F, [2, 8])], inits, opset)


def custom_ops(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """A com.microsoft Gelu (ONNX shape inference cannot see through it) and a model-local function."""
    rng = np.random.default_rng(seed)
    fn = helper.make_function(
        "local.fn", "AddRelu", ["a", "b"], ["c"],
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["c"])],
        opset_imports=[helper.make_opsetid("", opset)],
    )
    inits = [_w(rng, "w1", (8, 8)), _w(rng, "w2", (8, 8))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
        helper.make_node("Gelu", ["a"], ["g"], domain="com.microsoft", name="gelu"),
        helper.make_node("MatMul", ["g", "w2"], ["b"], name="mm2"),
        helper.make_node("AddRelu", ["b", "x"], ["out"], domain="local.fn", name="addrelu"),
    ]
    extra = [helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("local.fn", 1)]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [2, 8])],
                  [helper.make_tensor_value_info("out", F, [2, 8])], inits, opset, [fn], extra)


def branches(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Two parallel branches from ``x`` (p: MatMul-Relu, q: MatMul-Tanh) that an Add joins."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "wp", (8, 8)), _w(rng, "wq", (8, 8))]
    nodes = [
        helper.make_node("MatMul", ["x", "wp"], ["p0"], name="mm_p"),
        helper.make_node("Relu", ["p0"], ["p1"], name="relu_p"),
        helper.make_node("MatMul", ["x", "wq"], ["q0"], name="mm_q"),
        helper.make_node("Tanh", ["q0"], ["q1"], name="tanh_q"),
        helper.make_node("Add", ["p1", "q1"], ["out"], name="join"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [2, 8])],
                  [helper.make_tensor_value_info("out", F, [2, 8])], inits, opset)


SMALL_MODELS = {
    "branches": branches,
    "conv_chain": conv_chain,
    "conv_chain_opset21": lambda: conv_chain(opset=21),
    "residual": residual,
    "if_model": if_model,
    "early_output": early_output,
    "shared_init": shared_init,
    "two_input": two_input,
    "pass_through": pass_through,
    "custom_ops": custom_ops,
}


# --- checks shared by the split tests -------------------------------------------------------------


def _reads(node: onnx.NodeProto) -> set[str]:
    """Tensors a node reads, its subgraphs' outer-scope reads included."""
    from splitinfer.graph.topology import list_implicit_inputs

    return {i for i in node.input if i} | set(list_implicit_inputs(node))


def assert_minimal_chain(model, parts) -> None:
    """Each partition's inputs/outputs are exactly the tensors that must cross its cuts.

    Re-derived from the original graph with plain sets: a tensor crosses the cut
    after partition k when it is available there (a model input or made in
    partitions 0..k) and a node of a later partition reads it, or it is a model
    output.
    """
    index = model.graph_index
    model_inputs = set(index.graph_inputs)
    model_outputs = [o for o in index.graph_outputs]
    made: list[set[str]] = []
    read: list[set[str]] = []
    for part in parts:
        nodes = [index.nodes[n] for n in part.nodes]
        made.append({o for n in nodes for o in n.output if o})
        read.append({t for n in nodes for t in _reads(n) if t not in index.constants})
    available = {t for t in model_inputs if any(t in r for r in read) or t in model_outputs}
    assert {s.name for s in parts[0].inputs} == available
    for k, part in enumerate(parts):
        available |= made[k]
        later = set().union(*read[k + 1:]) | set(model_outputs)
        crossing = available & later
        if k == len(parts) - 1:
            assert [s.name for s in part.outputs] == model_outputs
        else:
            assert {s.name for s in part.outputs} == crossing, f"partition {k} outputs"
            assert [s.name for s in parts[k + 1].inputs] == [s.name for s in part.outputs]
        graph_inputs = {i.name for i in part.proto.graph.input}
        assert graph_inputs == {s.name for s in part.inputs}
        # Initializers only where used.
        used = {t for n in part.proto.graph.node for t in _reads(n)}
        used |= {o.name for o in part.proto.graph.output}
        assert {t.name for t in part.proto.graph.initializer} <= used
