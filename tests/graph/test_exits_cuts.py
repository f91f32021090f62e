"""Cuts at exits: a split at them makes a chain where partition k makes exit k and equals the
whole model; exits that no cut lets end a partition are refused in one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from splitinfer import zoo
from splitinfer.errors import CutError
from splitinfer.graph import analyze, load_model, run_chain, split, verify
from splitinfer.graph.exit_cuts import exit_cuts, exit_partitions
from splitinfer.graph.exits import read_exits
from splitinfer.graph.inference import create_inference_session

F = TensorProto.FLOAT
_ZOO: dict[str, object] = {}


def zoo_model(name: str):
    if name not in _ZOO:
        _ZOO[name] = load_model(zoo.build_small(name))
    return _ZOO[name]


def chain_model(nodes: list[tuple[str, str | list[str], str]], outputs: list[str]) -> onnx.ModelProto:
    """Nodes (op, input or inputs, output) on x [1, 4]; ``outputs`` in order, the last the final one."""
    made = [helper.make_node(op, [i] if isinstance(i, str) else i, [o], name=o) for op, i, o in nodes]
    graph = helper.make_graph(made, "g", [helper.make_tensor_value_info("x", F, [1, 4])],
                              [helper.make_tensor_value_info(o, F, [1, 4]) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# A trunk t1 -> t2 -> final with an exit on each: between the exits, t1 or t2 and exit1 are live.
TWO_EXITS = [("Relu", "x", "t1"), ("Neg", "t1", "exit1"), ("Sigmoid", "t1", "t2"), ("Neg", "t2", "exit2"),
             ("Tanh", "t2", "final")]
# The same with a fork between the exits: 2, 3, 3 and 2 tensors live at the positions there.
FORKED = [("Relu", "x", "t1"), ("Neg", "t1", "exit1"), ("Sigmoid", "t1", "t2"), ("Exp", "t1", "u"),
          ("Add", ["t2", "u"], "v"), ("Neg", "v", "exit2"), ("Tanh", "v", "final")]


@pytest.mark.parametrize("name", ["resnet18_exits", "bert_exits"])
@pytest.mark.parametrize("max_blocks", [0, 8])
def test_split_at_exit_cuts_makes_exit_k_in_partition_k(name, max_blocks):
    model = zoo_model(name)
    analysis = analyze(model, max_blocks=max_blocks)
    exits = read_exits(model)
    cuts = exit_cuts(model, exits, analysis)
    assert [c.output for c in cuts] == ["exit1", "exit2"]
    parts = split(model, [c.position for c in cuts], analysis)
    assert len(parts) == 3
    assert exit_partitions(model, exits, parts) == {"exit1": 0, "exit2": 1}
    for k, exit_name in enumerate(["exit1", "exit2"]):
        part = parts[k]
        # The head ends the partition: its last node makes the exit ...
        assert model.graph_index.nodes[part.nodes[-1]].output[0] == exit_name
        assert exit_name in [s.name for s in part.outputs]
        # ... and the trunk continues in the next one.
        trunk = [s.name for s in part.outputs if s.name not in ("exit1", "exit2")]
        assert trunk and set(trunk) <= {s.name for s in parts[k + 1].inputs}
    assert not any(n.startswith(("exit1", "exit2")) for n in parts[2].nodes)
    report = verify(model, parts)
    assert report.ok and report.max_abs <= 1e-4, report
    # Partition k alone (with those before it) answers exit k as the whole model does.
    feeds = model.make_feeds()
    session = create_inference_session(model.proto.SerializeToString())
    whole = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    for k, exit_name in enumerate(["exit1", "exit2"]):
        early = run_chain(parts[:k + 1], feeds)
        np.testing.assert_allclose(early[exit_name], whole[exit_name], atol=1e-5)


def test_exits_come_in_depth_order_whatever_the_order_given():
    model = zoo_model("resnet18_exits")
    analysis = analyze(model, max_blocks=0)
    given = exit_cuts(model, ["exit2", "exit1"], analysis)
    assert [c.output for c in given] == ["exit1", "exit2"]
    assert given == exit_cuts(model, read_exits(model), analysis)
    first, second = given
    # Every listed position ends exit1's partition before exit2 is made.
    assert first.made_at == first.position < max(first.positions) < second.made_at == second.position


def test_a_small_chain_with_two_exits():
    model = load_model(chain_model(TWO_EXITS, ["exit1", "exit2", "final"]))
    analysis = analyze(model, max_blocks=0)
    cuts = exit_cuts(model, ["exit1", "exit2"], analysis)
    parts = split(model, [c.position for c in cuts], analysis)
    assert [p.nodes for p in parts] == [("t1", "exit1"), ("t2", "exit2"), ("final",)]
    assert verify(model, parts).ok


def test_no_cut_between_exits_with_too_few_cut_tensors():
    model = load_model(chain_model(FORKED, ["exit1", "exit2", "final"]))
    # Between the exits the trunk (1 or 2 tensors) and exit1 are live: 2 tensors at the fewest.
    with pytest.raises(CutError, match=r"no cut lies between exit 'exit1' and exit 'exit2': at least 2 "
                                       r"tensors are live .* than max_cut_tensors=1. give max_cut_tensors=2"):
        exit_cuts(model, ["exit1", "exit2"], analyze(model, max_cut_tensors=1))
    # After exit2: the trunk and both exits.
    with pytest.raises(CutError, match="between exit 'exit2' and the end: at least 3 tensors"):
        exit_cuts(model, ["exit1", "exit2"], analyze(model, max_cut_tensors=2))


def test_exits_made_by_one_node_cannot_be_separated():
    split_node = helper.make_node("Split", ["x", "halves"], ["a", "b"], name="split", axis=1)
    final = helper.make_node("Concat", ["a", "b"], ["final"], name="concat", axis=1)
    graph = helper.make_graph(
        [split_node, final], "g", [helper.make_tensor_value_info("x", F, [1, 4])],
        [helper.make_tensor_value_info(n, F, s)
         for n, s in (("a", [1, 2]), ("b", [1, 2]), ("final", [1, 4]))],
        [helper.make_tensor("halves", TensorProto.INT64, [2], [2, 2])])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(CutError, match="exits 'a' and 'b' are made by the same node 'split': no cut"):
        exit_cuts(model, ["a", "b"])


def test_an_exit_below_the_final_output_ends_no_partition():
    # The exit is computed from the final output: the model's last node makes it.
    model = load_model(chain_model([("Relu", "x", "final"), ("Neg", "final", "late")], ["late", "final"]))
    with pytest.raises(CutError, match="exit 'late' is made by the model's last node 'late': no cut"):
        exit_cuts(model, ["late"])
    with pytest.raises(CutError, match="exit 'nope' is not an output of the model"):
        exit_cuts(model, ["nope"])


def test_cuts_that_do_not_end_each_exit_are_refused():
    model = zoo_model("resnet18_exits")
    analysis = analyze(model, max_blocks=0)
    first, second = exit_cuts(model, ["exit1", "exit2"], analysis)
    with pytest.raises(CutError, match=r"exits 'exit1' and 'exit2' are both made in partition 0\. cut"):
        exit_partitions(model, ["exit1", "exit2"], split(model, [second.position], analysis))
    with pytest.raises(CutError, match=r"exit 'exit2' is made in the last partition \(1\): no cut follows"):
        exit_partitions(model, ["exit1", "exit2"], split(model, [first.position], analysis))
    # Cuts elsewhere too are fine, so long as each exit ends a partition.
    extra = first.position - 3
    parts = split(model, [extra, first.position, second.position + 2], analysis)
    assert exit_partitions(model, ["exit1", "exit2"], parts) == {"exit1": 1, "exit2": 2}


def test_no_cut_where_a_sequence_is_live_between_exits():
    # Both exits read the sequence: it is live from before exit1 until exit2 is made.
    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    nodes = [helper.make_node("Relu", ["x"], ["t1"], name="relu"),
             helper.make_node("SequenceConstruct", ["t1"], ["s"], name="pack"),
             helper.make_node("SequenceAt", ["s", "zero"], ["a"], name="peek"),
             helper.make_node("Neg", ["a"], ["exit1"], name="neg"),
             helper.make_node("SequenceAt", ["s", "zero"], ["exit2"], name="unpack"),
             helper.make_node("Tanh", ["exit2"], ["final"], name="tanh")]
    outputs = [helper.make_tensor_value_info(n, F, [1, 4]) for n in ("exit1", "exit2", "final")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, 4])], outputs, [zero])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(CutError, match="between exit 'exit1' and exit 'exit2': a value that cannot cross"):
        exit_cuts(model, ["exit1", "exit2"], analyze(model, max_blocks=0))
