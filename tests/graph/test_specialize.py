"""Fixing inputs to values: a network inside an If that the values decide becomes cuttable nodes.

The model (tests/helpers/vad_models.py) is shaped like Silero VAD: ``If(Equal(sr, 16000))`` holds
the 16 kHz network, its else-branch ``If(Equal(sr, 8000))`` the 8 kHz one, and a rate neither
knows fails in ONNX Runtime.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from helpers.vad_models import run_original as run
from helpers.vad_models import vad_model
from onnx import TensorProto, helper, numpy_helper

from splitinfer.errors import ShapeError, VerifyError
from splitinfer.graph import analyze, load_model, split, verify
from splitinfer.graph import model as model_module
from splitinfer.graph.feeds import find_compared_values, find_index_bounds, generate_feeds, ort_reason
from splitinfer.graph.specialize import specialize
from splitinfer.graph.verify import run_chain
from splitinfer.types import TensorSpec


@pytest.fixture(scope="module")
def vad():
    return vad_model()


def _real(seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 512)).astype(np.float32),
            "state": rng.standard_normal((2, 1, 64)).astype(np.float32)}


def test_todays_generated_inputs_fail_and_the_model_is_one_if(vad):
    # Yesterday's generated inputs (no value the graph compares sr with): a random rate in [0, 100)
    # takes the branch that fails, so the run that measures If's output shape cannot run.
    model = load_model(vad)  # loads now: sr gets 16000, the value it is compared with
    old = generate_feeds(model.inputs, find_index_bounds(vad.graph, ["x", "sr", "state"]))
    assert 0 <= int(old["sr"]) < 100
    with pytest.raises(Exception, match="indices element out of data bounds"):
        run(vad, old)
    analysis = analyze(model)
    assert [b.op_types for b in analysis.blocks] == [{"Equal": 1}, {"If": 1}]
    assert analysis.total_flops < 10  # the network is inside the If: stats count a subgraph as 0


def test_fixing_sr_gives_the_networks_blocks_and_flops(vad):
    before = analyze(load_model(vad))
    model = load_model(vad, fixed_inputs={"sr": 16000})
    after = analyze(model)
    print(f"\nblocks {len(before.blocks)} -> {len(after.blocks)}, "
          f"GFLOPs {before.total_flops / 1e9:.6f} -> {after.total_flops / 1e9:.6f}")
    assert [s.name for s in model.inputs] == ["x", "state"]  # sr is a constant now
    ops = {op for b in after.blocks for op in b.op_types}
    assert {"Conv", "MatMul", "LSTM", "Relu", "Sigmoid"} <= ops and "If" not in ops
    assert len(after.blocks) >= 10
    # 16 -> 32 channels, kernel 5, 128 positions; the 4096 x 64 MatMul; the 64 x 1 head
    assert after.total_flops >= 2 * 32 * 16 * 5 * 128 + 2 * 4096 * 64 + 2 * 64
    spec = model.specialization
    assert spec is not None and spec.num_inlined == 1 and spec.max_abs_diff == 0.0
    assert spec.values() == "sr=16000"


def test_the_specialised_model_splits_and_its_chain_equals_the_original(vad):
    feeds = _real()
    model = load_model(vad, feeds={"x": feeds["x"]}, fixed_inputs={"sr": np.int64(16000)})
    analysis = analyze(model, max_blocks=3)
    parts = split(model, list(analysis.cuts), analysis)
    assert len(parts) == 3
    assert verify(model, parts, feeds).ok
    got = run_chain(parts, feeds)
    want = run(vad, {**feeds, "sr": np.array(16000, np.int64)})
    diff = max(float(np.abs(got[n] - want[n]).max()) for n in want)
    print(f"\nmax abs diff of the 3-part chain against the original model: {diff:.3g}")
    assert diff <= 1e-5
    assert np.array_equal(model.make_feeds()["x"], feeds["x"])  # the real input is what verifies


def test_another_rate_takes_the_other_branch(vad):
    model = load_model(vad, fixed_inputs={"sr": 8000})
    ops = {op for b in analyze(model).blocks for op in b.op_types}
    assert {"ReduceMean", "Tanh"} <= ops and not {"Conv", "LSTM", "If"} & ops
    assert model.specialization.num_inlined == 2  # the outer If and the one in its else-branch
    feeds = _real(2)
    want = run(vad, {**feeds, "sr": np.array(8000, np.int64)})
    got = run(model.proto, feeds)
    assert all(np.array_equal(got[n], want[n]) for n in want)


def test_a_rate_neither_branch_knows_is_one_line_naming_the_generated_inputs(vad):
    with pytest.raises(ShapeError) as caught:
        load_model(vad, fixed_inputs={"sr": 5})
    text = str(caught.value)
    assert "with sr=5" in text and "generated values of input(s) x, state" in text
    assert "idx=600" in text and "(in Gather, in If 'if_8k', in If 'if_16k')" in text
    assert "feeds=" in text and "fixed_inputs=" in text and "\n" not in text


@pytest.mark.parametrize(("fixed", "message"), [
    ({"nosuch": 1}, "fixed_inputs= names 'nosuch', which is not an input of the model. the inputs are: "
                    "x, sr, state"),
    ({"sr": 16000.5}, "fixed_inputs= gives input 'sr' 16000.5, which is not int64"),
    ({"sr": [16000, 8000]}, "fixed_inputs= gives input 'sr' 2 value(s) (shape [2]), the model takes "
                            "shape []"),
    ({"sr": "fast"}, "fixed_inputs= gives input 'sr' the value 'fast', not numbers"),
])
def test_bad_fixed_inputs_are_one_line(vad, fixed, message):
    with pytest.raises(ShapeError, match="^" + re.escape(message)):
        load_model(vad, fixed_inputs=fixed)


def test_a_specialised_model_that_differs_from_the_original_is_an_error(vad, monkeypatch):
    def wrong(proto, fixed):  # a bug that scales the head's weights
        special, info = specialize(proto, fixed)
        head = next(t for t in special.graph.initializer if t.name == "k16_out_w")
        head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head) * 1.01, head.name))
        return special, info

    monkeypatch.setattr(model_module, "specialize", wrong)
    with pytest.raises(VerifyError, match=r"^the model specialised to sr=16000 \(1 If inlined, 1 constant "
                                          r"node\(s\) folded\) differs from the original in output 'y'"):
        load_model(vad, fixed_inputs={"sr": 16000})


def test_onnx_runtimes_nested_failure_reads_innermost_first_and_is_cut_at_a_word():
    text = ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running If "
            "node. Name:'outer' Status Message: Non-zero status code returned while running Gather node. "
            "Name:'' Status Message: indices element out of data bounds, idx=600 must be within [-512,511]")
    assert ort_reason(RuntimeError(text)) == ("indices element out of data bounds, idx=600 must be within "
                                              "[-512,511] (in Gather, in If 'outer')")
    long = RuntimeError("word " * 100)
    assert ort_reason(long, limit=42) == "word word word word word word word word ..."


def test_the_run_that_measures_shapes_uses_the_values_given(vad):
    # y's shape differs between branches: a run measures it, on sr as given, not as generated
    assert int(load_model(vad, feeds={"sr": np.array(8000)}).make_feeds()["sr"]) == 8000
    message = ("ONNX Runtime cannot run the model (to measure 1 tensor shape(s) shape inference left "
               "unknown) on generated values of input(s) x, state: indices element out of data bounds")
    with pytest.raises(ShapeError, match="^" + re.escape(message)):
        load_model(vad, feeds={"sr": np.array(5)})


def test_feeds_are_checked_against_the_inputs(vad):
    with pytest.raises(ShapeError, match="feeds= names 'y'"):
        load_model(vad, feeds={"y": np.zeros(1)})
    with pytest.raises(ShapeError, match=re.escape("feeds= gives input 'x' as float64[1, 512], the model")):
        load_model(vad, feeds={"x": np.zeros((1, 512))})
    with pytest.raises(ShapeError, match="'sr' is both in feeds= and in fixed_inputs="):
        load_model(vad, feeds={"sr": np.array(16000)}, fixed_inputs={"sr": 16000})


def test_an_input_compared_with_a_constant_is_generated_as_that_constant(vad):
    assert find_compared_values(vad.graph, ["x", "sr", "state"]) == {"sr": 16000}
    model = load_model(vad)
    assert int(model.make_feeds(seed=3)["sr"]) == 16000
    run(vad, model.make_feeds())  # the real path runs


def _compare_model(op: str, const_first: bool) -> onnx.ModelProto:
    """``y = If(op(Cast(n), 7)) then n+1 else fail``: only values the comparison accepts run."""
    ok = helper.make_graph([helper.make_node("Identity", ["n"], ["ok_y"])], "ok", [],
                           [helper.make_tensor_value_info("ok_y", TensorProto.INT64, [])])
    bad = helper.make_graph([helper.make_node("Gather", ["table", "n"], ["bad_y"])], "bad", [],
                            [helper.make_tensor_value_info("bad_y", TensorProto.INT64, [])])
    args = ["seven", "n64"] if const_first else ["n64", "seven"]
    nodes = [helper.make_node("Cast", ["n"], ["n64"], to=TensorProto.INT64),
             helper.make_node(op, args, ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=ok, else_branch=bad)]
    graph = helper.make_graph(nodes, "cmp", [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [])],
                              initializer=[numpy_helper.from_array(np.array(7, np.int64), "seven"),
                                           numpy_helper.from_array(np.zeros(0, np.int64), "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("op", "const_first", "value"), [
    ("Equal", False, 7), ("Greater", False, 8), ("Less", False, 6), ("GreaterOrEqual", False, 7),
    ("Less", True, 8), ("Greater", True, 6),
])
def test_generated_values_make_each_comparison_true(op, const_first, value):
    model = _compare_model(op, const_first)
    assert find_compared_values(model.graph, ["n"]) == {"n": value}
    assert int(load_model(model).make_feeds()["n"]) == value


def test_an_index_compared_with_a_padding_id_stays_ids():
    spec = TensorSpec("ids", "int64", (1, 64))
    feeds = generate_feeds([spec], {"ids": 50}, values={"ids": 0})  # Equal(ids, 0) makes a mask
    assert feeds["ids"].max() < 50 and len(np.unique(feeds["ids"])) > 1
    assert generate_feeds([spec], {}, values={"ids": 3})["ids"].tolist() == [[3] * 64]


def test_nested_and_outer_names_survive_inlining():
    # The taken branch reads an outer tensor, has initializers, outputs a tensor it also reads and
    # an initializer; a Loop inside it reads a tensor of the branch (by its outer-scope name).
    # (ONNX Runtime 1.2x gives zeros for an If that outputs one branch tensor twice: not tested.)
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "h"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc", f, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", f, [2])])
    then = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["h"]),
         helper.make_node("Loop", ["trips", "", "x"], ["looped"], body=body),
         helper.make_node("Add", ["looped", "h"], ["z"])],
        "then", [], [helper.make_tensor_value_info("z", f, [2]), helper.make_tensor_value_info("h", f, [2]),
                     helper.make_tensor_value_info("w", f, [2])],
        initializer=[numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "w"),
                     numpy_helper.from_array(np.array(3, np.int64), "trips")])
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], [o]) for o in ("n1", "n2", "n3")], "else", [],
        [helper.make_tensor_value_info(o, f, [2]) for o in ("n1", "n2", "n3")])
    # Another If (on an input left free) makes 'looped' in its branch too: the inlined one is renamed.
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["looped"])], "relu", [],
                             [helper.make_tensor_value_info("looped", f, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["r"], name="free", then_branch=relu, else_branch=relu),
         helper.make_node("Greater", ["mode", "zero"], ["on"]),
         helper.make_node("If", ["on"], ["a", "b", "c"], name="pick", then_branch=then, else_branch=other),
         helper.make_node("Sum", ["a", "b", "c", "r"], ["out"])],
        "nest", [helper.make_tensor_value_info("x", f, [2]),
                 helper.make_tensor_value_info("mode", TensorProto.INT64, []),
                 helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", f, [2])],
        initializer=[numpy_helper.from_array(np.array(0, np.int64), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    special, info = specialize(model, {"mode": np.array(1, np.int64)})
    onnx.checker.check_model(special)
    assert info.num_inlined == 1 and [n.name for n in special.graph.node if n.op_type == "If"] == ["free"]
    assert {"pick/looped", "b"} <= {o for n in special.graph.node for o in n.output}  # h is b now
    x, flag = np.array([1.0, -2.0], np.float32), np.array(True)
    want = run(model, {"x": x, "mode": np.array(1, np.int64), "flag": flag})["out"]
    assert np.allclose(run(special, {"x": x, "flag": flag})["out"], want)
    loaded = load_model(model, feeds={"flag": flag}, fixed_inputs={"mode": 1})
    assert loaded.specialization.max_abs_diff == 0.0
    assert any(b.op_types.get("Loop") for b in analyze(loaded).blocks)  # the Loop stays whole
