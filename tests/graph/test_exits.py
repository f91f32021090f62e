"""Exits: declared by the API or the model's metadata, checked; confidence rules on logits whose
confidence is known per sample; a user ONNX rule graph."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from splitinfer import zoo
from splitinfer.errors import ModelError, ShapeError
from splitinfer.graph import load_model
from splitinfer.graph.exits import EXITS_KEY, Exit, confidence, is_confident, read_exits
from splitinfer.zoo import exits as zoo_exits

F = TensorProto.FLOAT


def probs_row(p: float, num_classes: int) -> list[float]:
    """Logits whose softmax puts ``p`` on class 0 and the rest evenly on the others."""
    rest = (1 - p) / (num_classes - 1)
    return [math.log(p)] + [math.log(rest)] * (num_classes - 1)


def three_outputs(metadata: list | str | None = None) -> onnx.ModelProto:
    """x [2, 4] -> a = x + 1, b = a * 2 (exits, float), final = b - 1."""
    nodes = [helper.make_node("Add", ["x", "one"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "two"], ["b"], name="mul"),
             helper.make_node("Sub", ["b", "one"], ["final"], name="sub")]
    inits = [helper.make_tensor("one", F, [], [1.0]), helper.make_tensor("two", F, [], [2.0])]
    outputs = [helper.make_tensor_value_info(n, F, [2, 4]) for n in ("a", "b", "final")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 4])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        helper.set_model_props(model, {EXITS_KEY: text})
    return model


def rule_graph(path, *, out_type=TensorProto.BOOL, in_type=F, num_inputs=1, per_sample=True):
    """A rule: confident when the largest logit of a sample is above 2."""
    inputs = [helper.make_tensor_value_info(f"v{i}", in_type, ["n", 4]) for i in range(num_inputs)]
    nodes = [helper.make_node("ReduceMax", ["v0"], ["m"], axes=[1] if per_sample else None, keepdims=0),
             helper.make_node("Greater", ["m", "two"], ["ok"])]
    out = "ok"
    if out_type != TensorProto.BOOL:
        nodes.append(helper.make_node("Cast", ["ok"], ["ok_cast"], to=out_type))
        out = "ok_cast"
    two = helper.make_tensor("two", in_type, [], [2])
    graph = helper.make_graph(nodes, "rule", inputs, [helper.make_tensor_value_info(out, out_type, None)],
                              [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return str(path)


# ---- the rules on constructed logits ------------------------------------------------------------

def test_softmax_max_per_sample():
    logits = np.array([probs_row(0.95, 4), probs_row(0.85, 4), probs_row(0.4, 4), [0.0] * 4],
                      dtype=np.float32)
    np.testing.assert_allclose(confidence("softmax_max", logits), [0.95, 0.85, 0.4, 0.25], rtol=1e-6)
    assert is_confident(Exit("e", threshold=0.9), logits).tolist() == [True, False, False, False]
    assert is_confident(Exit("e", threshold=0.8), logits).tolist() == [True, True, False, False]
    # The boundary counts: four equal logits give exactly 0.25.
    assert is_confident(Exit("e", threshold=0.25), logits).tolist() == [True, True, True, True]
    assert is_confident(Exit("e"), np.array([probs_row(0.91, 3), probs_row(0.89, 3)])).tolist() == \
        [True, False]  # no threshold: 0.9


def test_entropy_per_sample():
    uniform4 = [0.0] * 4  # ln 4 = 1.386 nats
    peaked = [50.0, 0.0, 0.0, 0.0]  # ~0
    half = [0.0, 0.0, -1e9, -1e9]  # ln 2 = 0.693
    logits = np.array([uniform4, peaked, half])
    np.testing.assert_allclose(confidence("entropy", logits), [math.log(4), 0.0, math.log(2)], atol=1e-12)
    assert is_confident(Exit("e", "entropy", 0.1), logits).tolist() == [False, True, False]
    assert is_confident(Exit("e", "entropy", 0.7), logits).tolist() == [False, True, True]
    assert is_confident(Exit("e", "entropy", math.log(4)), logits).tolist() == [True, True, True]


def test_rules_are_stable_and_never_confident_on_non_finite_logits():
    logits = np.array([[1e4, 0.0, -1e4], [np.nan, 0.0, 0.0], [-np.inf, 0.0, 0.0], [1e30, 1e30, 1e30]])
    assert is_confident(Exit("e", threshold=0.99), logits).tolist() == [True, False, False, False]
    assert is_confident(Exit("e", "entropy", 0.01), logits).tolist() == [True, False, False, False]
    np.testing.assert_allclose(confidence("softmax_max", logits[[0, 3]]), [1.0, 1 / 3])
    assert np.isnan(confidence("entropy", logits[1:2])).all()
    assert is_confident(Exit("e"), np.zeros((0, 5), np.float32)).shape == (0,)


def test_softmax_rules_take_batch_by_classes():
    with pytest.raises(ShapeError, match=r"logits \[batch, classes\], not shape \(2, 3, 4\)"):
        is_confident(Exit("e"), np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"not shape \(5,\)"):
        confidence("entropy", np.zeros(5))


def test_the_zoo_writes_the_key_the_graph_reads():
    assert zoo_exits.EXITS_KEY == EXITS_KEY


# ---- a user ONNX rule ----------------------------------------------------------------------------

def test_onnx_rule_returns_one_bool_per_sample(tmp_path):
    path = rule_graph(tmp_path / "rule.onnx")
    (e,) = read_exits(three_outputs(), ["a"], rule="onnx", rule_path=path)
    values = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [2.5, 0, 0, 0]], dtype=np.float32)
    assert is_confident(e, values).tolist() == [True, False, True]
    assert is_confident(e, values[1:2]).tolist() == [False]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"out_type": F}, "does not return a bool"),
    ({"num_inputs": 2}, "has 2 input"),
    ({"in_type": TensorProto.DOUBLE}, "takes float64, the exit is float32"),
])
def test_onnx_rule_graph_is_checked_when_read(tmp_path, kwargs, match):
    path = rule_graph(tmp_path / "rule.onnx", **kwargs)
    with pytest.raises(ModelError, match=match):
        read_exits(three_outputs(), ["a"], rule="onnx", rule_path=path)


def test_onnx_rule_errors(tmp_path):
    model = three_outputs()
    with pytest.raises(ModelError, match="cannot read the rule graph"):
        read_exits(model, ["a"], rule="onnx", rule_path=tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        read_exits(model, ["a"], rule="onnx", rule_path=tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match=r"rule 'onnx' without a graph\. give rule_path="):
        read_exits(model, ["a"], rule="onnx")
    with pytest.raises(ModelError, match=r"rule 'onnx' and a threshold\. drop threshold="):
        read_exits(model, ["a"], rule="onnx", rule_path=rule_graph(tmp_path / "t.onnx"), threshold=0.5)
    # One bool for the whole batch is not one per sample.
    (e,) = read_exits(model, ["a"], rule="onnx", rule_path=rule_graph(tmp_path / "r.onnx", per_sample=False))
    with pytest.raises(ModelError, match=r"returned bool of shape \(\) for 3 sample"):
        is_confident(e, np.zeros((3, 4), np.float32))


# ---- declaring exits --------------------------------------------------------------------------------

def test_exits_from_names_take_the_defaults_or_what_is_given():
    model = three_outputs()
    assert read_exits(model, ["a", "b"]) == (Exit("a", "softmax_max", 0.9), Exit("b", "softmax_max", 0.9))
    assert read_exits(model, ["b"], rule="entropy", threshold=0.2) == (Exit("b", "entropy", 0.2),)
    assert read_exits(model) == ()
    assert read_exits(model, [Exit("a", "entropy", 1.5)]) == (Exit("a", "entropy", 1.5),)


def test_exits_from_metadata_and_names_found_there():
    declared = [{"output": "a", "rule": "entropy", "threshold": 0.4}, {"output": "b", "threshold": 0.7}]
    model = three_outputs(declared)
    assert read_exits(model) == (Exit("a", "entropy", 0.4), Exit("b", "softmax_max", 0.7))
    assert read_exits(model, ["b"]) == (Exit("b", "softmax_max", 0.7),)
    assert read_exits(model, ["b"], threshold=0.95) == (Exit("b", "softmax_max", 0.95),)
    assert read_exits(load_model(model)) == read_exits(model)


def test_zoo_models_declare_their_exits():
    exits = read_exits(zoo.build_small("resnet18_exits"))
    assert [(e.output, e.rule) for e in exits] == [("exit1", "softmax_max"), ("exit2", "softmax_max")]
    exits = read_exits(zoo.build_small("bert_exits"))
    assert [(e.output, e.rule) for e in exits] == [("exit1", "entropy"), ("exit2", "entropy")]


def test_metadata_rule_path_is_relative_to_the_model(tmp_path):
    rule_graph(tmp_path / "rule.onnx")
    model = three_outputs([{"output": "a", "rule": "onnx", "rule_path": "rule.onnx"}])
    onnx.save(model, tmp_path / "m.onnx")
    (e,) = read_exits(load_model(tmp_path / "m.onnx"))
    assert e.rule_path == str(tmp_path / "rule.onnx")
    assert is_confident(e, np.full((2, 4), 3, np.float32)).tolist() == [True, True]


@pytest.mark.parametrize(("exits", "kwargs", "match"), [
    (["c"], {}, r"exit 'c' \(in exits=\) is not an output of the model. give outputs of the model as "
                r"exits: a, b"),
    (["final"], {}, "exit 'final' .* is the model's last output"),
    (["a", "a"], {}, "exit 'a' is given twice in exits="),
    (["a"], {"rule": "margin"}, "exit 'a' has rule 'margin'. use rule= softmax_max, entropy, or onnx"),
    (["a"], {"threshold": 0.0}, r"exit 'a' \(rule softmax_max\) is 0.0. use a finite number > 0"),
    (["a"], {"threshold": 1.5}, r"is 1.5. use a finite number > 0 and <= 1; threshold= is the top class's"),
    (["a"], {"threshold": float("nan")}, "is nan"),
    (["a"], {"rule": "entropy", "threshold": -0.1}, r"\(rule entropy\) is -0.1. use a finite number >= 0;"),
    (["a"], {"rule": "entropy"}, r"\(rule entropy\) is missing. give threshold="),
    (["a"], {"rule_path": "r.onnx"}, "rule 'softmax_max' and a rule_path"),
    ("a,b", {}, r"exits= is the string 'a,b'. give a list of output names, e.g. exits=\['a', 'b'\]"),
])
def test_bad_exits_name_the_argument(exits, kwargs, match):
    with pytest.raises(ModelError, match=match):
        read_exits(three_outputs(), exits, **kwargs)


@pytest.mark.parametrize(("metadata", "match"), [
    ("[{oops", "is not a list of exits"),
    ('{"output": "a"}', "is not a list of exits"),
    ([{"rule": "entropy"}], "is not a list of exits"),
    ([{"output": "a", "threshold": "high"}], "is not a list of exits"),
    ([{"output": "zz", "threshold": 0.5}], r"exit 'zz' \(in the model's metadata 'splitinfer.exits'\)"),
    ([{"output": "a", "threshold": 2}], "is 2"),
])
def test_bad_metadata(metadata, match):
    with pytest.raises(ModelError, match=match):
        read_exits(three_outputs(metadata))
