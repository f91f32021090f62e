"""Cuts, orders, constant folding and blocks."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from helpers import graph_models as tm
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.errors import CutError
from splitinfer.graph import Analysis, analyze, count_live_tensors, load_model
from splitinfer.graph.blocks import BYTES_PENALTY, choose_cuts
from splitinfer.graph.liveness import compute_liveness, list_orders
from splitinfer.graph.topology import list_implicit_inputs


def _names(cut):
    return {t.name for t in cut.tensors}


def test_mid_residual_cut_has_two_tensors():
    model = load_model(tm.residual())
    analysis = analyze(model, max_blocks=0)
    mid = [c for c in analysis.candidates if _names(c) == {"h0", "b0_r1"} or _names(c) == {"h0", "b0_c1"}]
    assert mid, [(_names(c)) for c in analysis.candidates]
    assert all(len(c.tensors) <= 2 for c in analysis.candidates)
    assert len(analysis.candidates) == len(analysis.order) - 1  # every inner position is a candidate
    cut = mid[0]
    assert cut.num_bytes == 2 * 8 * 8 * 8 * 4


def test_shape_chain_folds_into_constants():
    model = load_model(tm.two_input())
    analysis = analyze(model)
    folded = {"shape", "take_batch", "unsq_n", "concat_shape"}
    assert not folded & set(analysis.order)
    assert len(analysis.order) + len(folded) == analysis.num_nodes
    for cut in analysis.candidates:
        assert not _names(cut) & {"h_shape", "n", "n1", "new_shape"}


def test_if_node_reads_outer_scope():
    model = load_model(tm.if_model())
    node = model.graph_index.nodes["if"]
    assert set(list_implicit_inputs(node)) == {"y", "two"}
    assert "y" in model.graph_index.inputs_of["if"]
    analysis = analyze(model, max_blocks=0)
    before_if = analysis.order.index("if")
    cut = next(c for c in analysis.candidates if c.position == before_if)
    assert _names(cut) == {"y", "cond"}


def test_early_output_lives_to_the_end():
    model = load_model(tm.early_output())
    analysis = analyze(model, max_blocks=0)
    made_at = analysis.order.index("relu1") + 1
    for cut in analysis.candidates:
        assert ("early" in _names(cut)) == (cut.position >= made_at)
    assert analysis.blocks[-1].cut_bytes == analysis.output_bytes == 2 * 4 * 8 * 8 * 4


def test_model_input_read_late_is_live_until_its_last_use():
    model = load_model(tm.custom_ops())  # x is read by mm1 and by the last node
    live = compute_liveness(model, analyze(model).order)
    assert live.birth["x"] == 0 and live.death["x"] == len(live.order) - 1


@pytest.mark.parametrize("name", sorted(tm.SMALL_MODELS))
def test_blocks_cover_the_order_and_sum_up(name):
    model = load_model(tm.SMALL_MODELS[name]())
    for max_blocks in (0, 1, 3):
        analysis = analyze(model, max_blocks=max_blocks)
        assert tuple(n for b in analysis.blocks for n in b.nodes) == analysis.order
        assert sum(b.flops for b in analysis.blocks) == analysis.total_flops
        assert len(analysis.cuts) == len(analysis.blocks) - 1
        if max_blocks:
            assert len(analysis.blocks) <= max_blocks
        else:
            assert len(analysis.cuts) == len(analysis.candidates)
        for block, cut in zip(analysis.blocks, analysis.cuts, strict=False):
            assert block.cut_bytes == cut.num_bytes
            assert block.activation_bytes >= cut.num_bytes


def test_chosen_order_is_topological_and_best():
    model = load_model(tm.residual(num_blocks=3))
    index = model.graph_index
    analysis = analyze(model)
    seen = set(index.graph_inputs) | index.constants
    for name in analysis.order:
        assert all(t in seen for t in index.inputs_of[name]), name
        seen.update(index.nodes[name].output)
    for order in list_orders(index).values():
        counts = count_live_tensors(model, order)
        assert sum(1 for c in counts[1:-1] if 0 < c <= 4) <= len(analysis.candidates)


def test_params_counted_once_per_block():
    model = load_model(tm.shared_init())
    analysis = analyze(model, max_blocks=0)
    assert analysis.num_params == 2 * 16 * 16
    assert sum(b.num_params for b in analysis.blocks) == 2 * 16 * 16  # w, read in two blocks, counted once
    one = analyze(model, max_blocks=1)
    assert one.blocks[0].num_params == 2 * 16 * 16 and one.blocks[0].param_bytes == 2 * 16 * 16 * 4


def test_to_dict_is_json_and_round_trips():
    analysis = analyze(load_model(tm.residual()), max_blocks=4)
    data = json.loads(json.dumps(analysis.to_dict()))
    assert data["num_blocks"] == 4 and "order" not in data
    assert Analysis.from_dict(data) == analysis


def test_bad_max_cut_tensors():
    with pytest.raises(CutError):
        analyze(load_model(tm.residual()), max_cut_tensors=0)


def _objective(points, weights, nbytes, positions, num_blocks):
    prefix = np.concatenate([[0.0], np.cumsum(weights)])
    bounds = [0, *points, len(weights)]
    target = prefix[-1] / num_blocks
    imbalance = sum(((prefix[b] - prefix[a]) / target - 1) ** 2 for a, b in itertools.pairwise(bounds))
    ref = max(1.0, float(np.median(nbytes)))
    return imbalance + BYTES_PENALTY * sum(nbytes[positions.index(p)] / ref for p in points)


@settings(max_examples=60)
@given(
    weights=st.lists(st.integers(0, 100), min_size=3, max_size=12),
    data=st.data(),
)
def test_choose_cuts_matches_brute_force(weights, data):
    m = len(weights)
    positions = sorted(data.draw(st.sets(st.integers(1, m - 1), min_size=2, max_size=m - 1)))
    nbytes = data.draw(st.lists(st.integers(1, 1000), min_size=len(positions), max_size=len(positions)))
    num_blocks = data.draw(st.integers(2, len(positions)))
    w = np.array(weights, dtype=float) + 1.0
    chosen = choose_cuts(positions, nbytes, w, num_blocks)
    assert len(chosen) == num_blocks - 1 and set(chosen) <= set(positions)
    best = min(_objective(list(c), w, nbytes, positions, num_blocks)
               for c in itertools.combinations(positions, num_blocks - 1))
    assert _objective(chosen, w, nbytes, positions, num_blocks) == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_choose_cuts_keeps_everything_when_allowed():
    assert choose_cuts([1, 2, 3], [5, 5, 5], np.ones(4), 0) == [1, 2, 3]
    assert choose_cuts([1, 2, 3], [5, 5, 5], np.ones(4), 4) == [1, 2, 3]
    assert choose_cuts([1, 2, 3], [5, 5, 5], np.ones(4), 1) == []
    # Many candidates: thinned, still the requested number of blocks.
    many = list(range(1, 2000))
    assert len(choose_cuts(many, [1] * len(many), np.ones(2000), 10)) == 9


def test_sequences_never_cross_a_cut():
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("SequenceConstruct", ["a", "x"], ["seq"], name="make_seq"),
        helper.make_node("Neg", ["x"], ["b"], name="neg"),
        helper.make_node("SequenceAt", ["seq", "one"], ["c"], name="take"),
        helper.make_node("Add", ["b", "c"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("one", TensorProto.INT64, [], [1])],
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert "seq" in model.uncuttable
    analysis = analyze(model, max_blocks=0)
    live = compute_liveness(model, analysis.order)
    for cut in analysis.candidates:
        assert not live.birth["seq"] <= cut.position <= live.death["seq"]
    from splitinfer.graph import split

    inside = live.birth["seq"]  # right after make_seq: the sequence is live there
    assert inside <= live.death["seq"]
    with pytest.raises(CutError, match="'seq' would cross"):
        split(model, [inside], analysis)


@pytest.mark.parametrize("max_blocks", [-1, 2.5])
def test_a_block_count_out_of_range_is_a_cut_error_naming_max_blocks(max_blocks):
    model = load_model(tm.residual())
    with pytest.raises(CutError) as caught:
        analyze(model, max_blocks=max_blocks)
    assert caught.value.problem == f"max_blocks is {max_blocks!r}" and "0 = one block per" in caught.value.fix


def test_a_negative_seed_for_generated_inputs_names_seed():
    from splitinfer.errors import SplitinferError

    with pytest.raises(SplitinferError, match="seed is -1"):
        load_model(tm.residual()).make_feeds(seed=-1)
