"""Issue 16's smaller items in the library: a scalar output verifies, block parameters sum to the
model's, the relative difference means something near 0, shape errors name API arguments."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from helpers import graph_models as tm
from onnx import TensorProto, helper, numpy_helper

from splitinfer.errors import ShapeError
from splitinfer.graph import analyze, load_model, split, verify
from splitinfer.graph.shapes import as_flags

verify_module = importlib.import_module("splitinfer.graph.verify")  # the package's `verify` is the function


def _model(name: str, nodes: list, output_shape: list[int], inits: list) -> onnx.ModelProto:
    """Input x [4, 8] float, one float output of ``output_shape`` named as the last node's."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, output_shape)
    model = helper.make_model(helper.make_graph(nodes, name, [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def scalar_output() -> onnx.ModelProto:
    """MatMul-Relu-MatMul-Tanh, then ReduceSum over every axis with keepdims=0: the output is 0-d."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32) / 3, n) for n in "wv"]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="mm1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("MatMul", ["b", "v"], ["c"], name="mm2"),
        helper.make_node("Tanh", ["c"], ["d"], name="tanh"),
        helper.make_node("ReduceSum", ["d"], ["s"], keepdims=0, name="sum"),
    ]
    return _model("scalar", nodes, [], inits)


def relu_output() -> onnx.ModelProto:
    """MatMul-Relu-MatMul-Relu: about half of the output is exactly 0."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), n) for n in "wv"]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="mm1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu1"),
        helper.make_node("MatMul", ["b", "v"], ["c"], name="mm2"),
        helper.make_node("Relu", ["c"], ["y"], name="relu2"),
    ]
    return _model("relu", nodes, [4, 8], inits)


def test_a_scalar_output_splits_into_two_partitions_and_verifies():
    model = load_model(scalar_output())
    assert model.outputs[0].shape == ()
    analysis = analyze(model, max_blocks=2)
    parts = split(model, analysis.cuts, analysis)
    assert len(parts) == 2
    report = verify(model, parts)
    assert report.ok and report.outputs[0].name == "s"
    assert report.max_abs <= 1e-5 and report.outputs[0].max_rel <= 1e-5


@pytest.mark.parametrize("max_blocks", [0, 2, 3])
def test_a_parameter_read_by_two_blocks_counts_once(max_blocks):
    # w is read by the first and the last MatMul: in different blocks whenever there are 2 or more
    analysis = analyze(load_model(tm.shared_init()), max_blocks=max_blocks)
    assert len(analysis.blocks) >= 2
    assert sum(b.num_params for b in analysis.blocks) == analysis.num_params == 2 * 16 * 16
    assert sum(b.param_bytes for b in analysis.blocks) == analysis.param_bytes == 2 * 16 * 16 * 4
    assert analysis.blocks[0].num_params >= 16 * 16  # w, in the first block that reads it


def test_the_relative_difference_is_to_the_largest_reference_value(monkeypatch):
    """Where the reference is 0, the chain's 1e-9 there is 1e-9 of the output's scale, not 1e9."""
    model = load_model(relu_output())
    parts = split(model, [["b"]])
    want = verify(model, parts)
    assert want.ok and want.outputs[0].max_rel == 0.0
    chain = verify_module.run_chain

    def off_by_a_little(*args, **kwargs):
        return {name: value + np.float32(1e-6) for name, value in chain(*args, **kwargs).items()}

    monkeypatch.setattr(verify_module, "run_chain", off_by_a_little)
    report = verify(model, parts, feeds={"x": np.abs(np.random.default_rng(2).standard_normal((4, 8)))
                                         .astype(np.float32)})
    (diff,) = report.outputs
    assert diff.ok and 5e-7 < diff.max_abs < 2e-6
    assert 0 < diff.max_rel < 1e-5  # the element-wise ratio at the zeros read about 1e302


def test_shape_errors_name_the_api_arguments_and_the_cli_translates_them():
    with pytest.raises(ShapeError) as caught:
        load_model(tm.dynamic())
    line = caught.value.line()
    assert "input_shapes={'x': (<batch>, 3, <height>, <width>)} with numbers for the <...> dims" in line
    assert "(batch=N fixes a leading batch dim)" in line and "--" not in line
    assert ("add --input-shape x=<batch>,3,<height>,<width> with numbers for the <...> dims "
            "(--batch N fixes a leading batch dim)") in as_flags(line)
    for shapes, batch, api in [
        ({"x": (1, 3, 0, 16)}, None, "input_shapes={'x': (1, 3, 0, 16)} has a dim <= 0"),
        ({}, 4, "batch=4 contradicts the model"),
        ({}, 0, "batch=0 is not a positive number. give batch=1 or more"),
        ({"nope": (1,)}, None, "input_shapes= names 'nope', which is not an input"),
    ]:
        with pytest.raises(ShapeError) as caught:
            load_model(tm.conv_chain(), input_shapes=shapes, batch=batch)
        assert api in caught.value.line() and "--" not in caught.value.line()
    assert as_flags("batch=0 is not a positive number. give batch=1 or more") == (
        "--batch 0 is not a positive number. give --batch 1 or more")
    assert as_flags("drop batch=, or use batch=1") == "drop --batch, or use --batch 1"
    assert as_flags("input_shapes={'a b': (7,)} names") == "--input-shape a b=7 names"


@pytest.mark.parametrize(
    ("shapes", "fix"),
    [
        ({"x": (1, 3, 16)}, "give 4 dims: input_shapes={'x': (1, 3, 16, 16)}"),
        ({"x": (1, 3, 32, 32)}, "give input_shapes={'x': (1, 3, 16, 16)}, or leave 'x' out: the model "
                                "fixes its shape"),
    ],
)
def test_a_shape_without_dynamic_dims_asks_for_no_numbers(shapes, fix):
    with pytest.raises(ShapeError) as caught:
        load_model(tm.conv_chain(), input_shapes=shapes)  # x is [1, 3, 16, 16]: nothing dynamic
    assert caught.value.line().endswith(fix) and "<...>" not in caught.value.line()


def test_a_shape_with_dynamic_dims_still_asks_for_numbers_for_them():
    with pytest.raises(ShapeError) as caught:
        load_model(tm.dynamic(), input_shapes={"x": (1, 3, 16)})
    assert caught.value.fix == ("give 4 dims: input_shapes={'x': (<batch>, 3, <height>, <width>)} "
                                "with numbers for the <...> dims")
