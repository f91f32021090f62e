"""Every block of a real split model quantised alone, as the trade-off profile does
(``splitinfer.profile.sensitivity``): the digits MLP classifier cut into its 15 blocks by the profiler,
each block quantised to fp16 and int8 (static and dynamic), calibrated on the real tensors that reach it.

The tail blocks of the digits model hand the class probabilities on untouched (a graph input that is
also a graph output) while they compute the label: fp16 used to fail there with "Duplicate definition
of name (probabilities)" and static int8 with "Graph is not a DAG". A block with nothing to quantise
(ArgMax's label through ArrayFeatureExtractor, Reshape, Cast) comes back unchanged and says so.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import onnx
import pytest
from helpers.digits import digits
from onnx import TensorProto, helper, numpy_helper

from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.quantize import quantize_model

BATCH = 32
NUM_BATCHES = 8  # the first half calibrates, the second half is compared
CONFIGS = [("fp16", "auto"), ("int8", "static"), ("int8", "dynamic")]
# Relative L2 error of a float output, quantised block against fp32 block, on digits it was not
# calibrated on. Measured (ONNX Runtime 1.32, x86): fp16 at most 3e-4, int8 at most 2e-2 (a MatMul).
TOLERANCE = {"fp16": 2e-3, "int8": 6e-2}


@lru_cache(maxsize=1)
def _blocks() -> tuple[list[bytes], list[list[dict[str, np.ndarray]]]]:
    """The profiler's blocks of the digits model (batch 32) and, per block, the real tensors that reach
    it on each batch of held-out digits (every block before it in fp32)."""
    from splitinfer.profile.profiler import prepare_model

    d = digits()
    prepared = prepare_model(d.model_bytes, batch=BATCH, calibration=d.x[:BATCH])
    sessions = [create_inference_session(b) for b in prepared.block_bytes]
    feeds: list[list[dict[str, np.ndarray]]] = [[] for _ in sessions]
    for i in range(NUM_BATCHES):
        values = {"x": d.x[i * BATCH:(i + 1) * BATCH]}
        for b, session in enumerate(sessions):
            feeds[b].append({t.name: values[t.name] for t in session.get_inputs()})
            names = [o.name for o in session.get_outputs()]
            values.update(zip(names, session.run(names, feeds[b][-1]), strict=True))
    return prepared.block_bytes, feeds


def _passthrough(block: onnx.ModelProto) -> set[str]:
    inputs = {vi.name for vi in block.graph.input}
    return {vi.name for vi in block.graph.output} & inputs


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _info(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["splitinfer.quantize"])


def _outputs(model: onnx.ModelProto | bytes, feeds: list[dict[str, np.ndarray]]) -> list[dict]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = create_inference_session(data)
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f), strict=True)) for f in feeds]


def test_the_digits_blocks_include_pass_through_outputs():
    """What makes these blocks hard, checked so the tests below keep testing it."""
    blocks, _ = _blocks()
    assert len(blocks) >= 10
    assert sum(bool(_passthrough(onnx.load_from_string(b))) for b in blocks) >= 3


@pytest.mark.parametrize(("precision", "method"), CONFIGS)
def test_every_digits_block_quantises_and_stays_close_to_fp32(precision, method):
    blocks, feeds = _blocks()
    half = NUM_BATCHES // 2
    worst = []
    for b, data in enumerate(blocks):
        block = onnx.load_from_string(data)
        q = quantize_model(block, precision, calibration=feeds[b][:half], method=method)
        assert [str(v) for v in (*q.graph.input, *q.graph.output)] == \
            [str(v) for v in (*block.graph.input, *block.graph.output)], f"block {b}"
        passed = _passthrough(block)
        error = 0.0
        for ref, out in zip(_outputs(block, feeds[b][half:]), _outputs(q, feeds[b][half:]), strict=True):
            for name, r in ref.items():
                o = out[name]
                assert o.dtype == r.dtype and o.shape == r.shape, f"block {b}, {name}"
                if name in passed:  # handed on: bit for bit what came in
                    np.testing.assert_array_equal(o, r, err_msg=f"block {b}, {name}")
                elif r.dtype.kind == "f":
                    error = max(error, float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-12)))
                else:  # labels: a tie in int8 may pick another class, rarely
                    assert np.mean(o != r) <= 0.01, f"block {b}, {name}"
        worst.append(error)
        assert error <= TOLERANCE[precision], f"block {b} ({sorted(_ops(block))}): relative error {error:.3g}"
    print(f"digits blocks, {precision} {method}: relative error per block " +
          " ".join(f"{e:.1e}" for e in worst))


def test_a_block_that_computes_while_handing_on_an_input_is_quantised():
    """The ArgMax block (probabilities in, probabilities and argmax out): fp16 computes in float16 and
    static int8 quantises ArgMax's input, and both hand probabilities on in float32."""
    blocks, feeds = _blocks()
    b = next(b for b, data in enumerate(blocks) if "ArgMax" in _ops(onnx.load_from_string(data)))
    block = onnx.load_from_string(blocks[b])
    assert _passthrough(block)
    fp16 = quantize_model(block, "fp16")
    assert "unchanged" not in _info(fp16)
    assert any(a.name == "to" and a.i == TensorProto.FLOAT16 for n in fp16.graph.node for a in n.attribute)
    int8 = quantize_model(block, "int8", calibration=feeds[b], method="static")
    assert _info(int8) == {"precision": "int8", "method": "static"}
    assert "QuantizeLinear" in _ops(int8)


@pytest.mark.parametrize(("precision", "method"), CONFIGS)
def test_blocks_with_nothing_to_quantise_come_back_unchanged_and_say_so(precision, method):
    blocks, feeds = _blocks()
    label_ops = {"ArrayFeatureExtractor", "Reshape", "Cast"}  # the label's tail: int64 values only
    tail = [b for b, data in enumerate(blocks) if _ops(onnx.load_from_string(data)) <= label_ops
            and _passthrough(onnx.load_from_string(data))]
    assert len(tail) >= 2
    for b in tail:
        block = onnx.load_from_string(blocks[b])
        q = quantize_model(block, precision, calibration=feeds[b], method=method)
        assert q.graph == block.graph, f"block {b}"
        info = _info(q)
        assert info["precision"] == precision and info["method"] is None and info["unchanged"], info


def test_dynamic_int8_leaves_a_block_without_matmul_unchanged():
    blocks, _ = _blocks()
    add = next(data for data in blocks if _ops(onnx.load_from_string(data)) == {"Add"})
    q = quantize_model(add, "int8", method="dynamic")
    assert q.graph == onnx.load_from_string(add).graph
    assert _info(q)["unchanged"] == "no op that dynamic int8 quantises"


@pytest.mark.parametrize(("precision", "method"), CONFIGS)
def test_an_initializer_and_an_input_handed_on_keep_their_values(precision, method):
    """A model whose outputs include a weight it also multiplies by and its own input: the weight
    comes out in float32 as it was, whatever the quantiser does to the copy the MatMul reads."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "handed_on",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.random((16, 8), np.float32)} for _ in range(4)]
    q = quantize_model(model, precision, calibration=feeds, method=method)
    assert "unchanged" not in _info(q)
    assert [vi.name for vi in q.graph.output] == ["y", "w", "x"]
    for ref, out in zip(_outputs(model, feeds), _outputs(q, feeds), strict=True):
        np.testing.assert_array_equal(out["w"], w)
        np.testing.assert_array_equal(out["x"], ref["x"])
        assert np.linalg.norm(out["y"] - ref["y"]) <= TOLERANCE[precision] * np.linalg.norm(ref["y"])


def test_the_sensitivity_profile_gets_every_digits_block_in_every_precision():
    """Through the profile's own entry point: no block is reported as unable to run in fp16 or int8,
    and quantising any single block alone changes few top-1 classes."""
    from splitinfer.profile.profiler import prepare_model
    from splitinfer.profile.tradeoff_profile import sensitivity_of

    d = digits()
    prepared = prepare_model(d.model_bytes, batch=BATCH, calibration=d.x[:BATCH])
    sens = sensitivity_of(prepared, d.x, ["fp16", "int8"], [], limit=128)
    for precision in ("fp16", "int8"):
        assert all(part is not None for part in sens.quantized_blocks[precision]), precision
        costs = sens.block_quality[precision]
        assert all(c is not None and c <= 0.02 for c in costs), (precision, costs)
