"""Splitting at cuts: partitions are standalone, minimal, chain, and equal the whole model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import graph_models as tm
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.errors import CutError, SchemaError
from splitinfer.graph import (
    analyze,
    extract_segment,
    load_manifest,
    load_model,
    run_chain,
    split,
    verify,
    write_partitions,
)

MODELS = {name: load_model(build()) for name, build in tm.SMALL_MODELS.items()}
ANALYSES = {name: analyze(model, max_blocks=0) for name, model in MODELS.items()}


def _check(model, parts):
    for part in parts:
        onnx.checker.check_model(part.proto, full_check=True)
    tm.assert_minimal_chain(model, parts)
    report = verify(model, parts)
    assert report.ok, report
    assert report.max_abs <= 1e-4
    return report


@pytest.mark.parametrize("name", sorted(tm.SMALL_MODELS))
@settings(max_examples=8)
@given(data=st.data())
def test_random_candidate_cuts(name, data):
    model, analysis = MODELS[name], ANALYSES[name]
    positions = [c.position for c in analysis.candidates]
    chosen = data.draw(st.sets(st.sampled_from(positions), min_size=1, max_size=min(5, len(positions))))
    parts = split(model, sorted(chosen), analysis)
    assert len(parts) == len(chosen) + 1
    _check(model, parts)


def test_mid_residual_cut_by_tensor_names():
    model = MODELS["residual"]
    parts = split(model, [["h0", "b0_r1"]])
    assert [s.name for s in parts[1].inputs] == ["h0", "b0_r1"]
    assert [s.name for s in parts[0].outputs] == ["h0", "b0_r1"]
    assert parts[0].nodes[-1] == "b0_relu1"
    _check(model, parts)


def test_if_node_stays_whole_with_its_outer_reads():
    model = MODELS["if_model"]
    order = ANALYSES["if_model"].order
    at = order.index("if")
    parts = split(model, [at, at + 1])
    assert parts[1].nodes == ("if",)
    assert {s.name for s in parts[1].inputs} == {"y", "cond"}
    assert "two" in {t.name for t in parts[1].proto.graph.initializer}  # read inside a branch
    _check(model, parts)


def test_early_output_passes_through_to_the_end():
    model = MODELS["early_output"]
    parts = split(model, [2, 4])
    assert [s.name for s in parts[-1].outputs] == ["early", "final"]
    middle = parts[1]
    assert "early" in {s.name for s in middle.inputs} and "early" in {s.name for s in middle.outputs}
    _check(model, parts)


def test_shared_initializer_copied_where_used():
    model = MODELS["shared_init"]
    parts = split(model, [["b"], ["d"]])
    inits = [{t.name for t in p.proto.graph.initializer} for p in parts]
    assert inits == [{"w"}, {"v"}, {"w"}]
    _check(model, parts)


def test_pass_through_across_three_partitions():
    model = MODELS["pass_through"]
    parts = split(model, [["t1", "a"], ["t2", "a"]])
    middle = parts[1]
    assert {s.name for s in middle.inputs} == {"t1", "a"} and {s.name for s in middle.outputs} == {"t2", "a"}
    assert not any("a" in n.input for n in middle.proto.graph.node)  # graph input -> graph output directly
    _check(model, parts)


def test_shape_chain_is_recomputed_as_constants_in_the_partition():
    model = MODELS["two_input"]
    parts = split(model, [["h"]])
    assert [s.name for s in parts[1].inputs] == ["h"]
    assert "h_shape" in {t.name for t in parts[1].proto.graph.initializer}
    _check(model, parts)


def test_cut_forms_agree():
    model, analysis = MODELS["residual"], ANALYSES["residual"]
    cut = analysis.candidates[4]
    by_cut = split(model, [cut], analysis)
    by_position = split(model, [cut.position], analysis)
    by_names = split(model, [[t.name for t in cut.tensors]], analysis)
    for parts in (by_position, by_names):
        assert [p.nodes for p in parts] == [p.nodes for p in by_cut]
        assert [p.inputs for p in parts] == [p.inputs for p in by_cut]


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ([["nope"]], "'nope' is not in the model"),
        ([["b0_r1"]], "do not separate the graph"),
        ([["h0", "b0_r1", "stem"]], "not needed after the cut"),
        ([["b0_c1_w"]], "is a constant"),
        ([["x"]], "before every node"),
        ([["y"]], "after every node"),
        ([0], "outside the model"),
        ([3, 3], "the same cut"),
        ([["h1"], ["b0_r1", "h0"]], None),  # fine: sorted by position
    ],
)
def test_bad_cuts(cuts, message):
    model = MODELS["residual"]
    if message is None:
        _check(model, split(model, cuts))
        return
    with pytest.raises(CutError, match=message):
        split(model, cuts)


def test_crossing_cuts():
    model = MODELS["branches"]
    # Each cut alone is fine: the other branch and x (a model input) follow.
    for cut in (["p1"], ["q1"]):
        parts = split(model, [cut])
        assert {s.name for s in parts[1].inputs} == {"x", cut[0]}
        _check(model, parts)
    with pytest.raises(CutError, match="cross each other"):
        split(model, [["p1"], ["q1"]])


def test_block_bounds_and_segments():
    model = MODELS["residual"]
    analysis = analyze(model, max_blocks=4)
    parts = split(model, analysis.cuts, analysis)
    assert [(p.first_block, p.last_block) for p in parts] == [(i, i) for i in range(4)]
    feeds = model.make_feeds()
    # The segment of blocks 1..2 maps the outputs of part 0 to the outputs of part 2.
    segment = extract_segment(model, analysis, 1, 2)
    assert segment.inputs == parts[1].inputs and segment.outputs == parts[2].outputs
    onnx.checker.check_model(segment.proto, full_check=True)
    after_0 = run_chain(parts[:1], feeds)
    want = run_chain(parts[1:3], after_0)
    got = run_chain([segment], after_0)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)
    whole = extract_segment(model, analysis, 0, 3)
    assert whole.inputs == model.inputs and whole.outputs == model.outputs
    with pytest.raises(CutError):
        extract_segment(model, analysis, 2, 4)


def test_cut_from_another_order_falls_back_to_its_tensors():
    model = MODELS["residual"]
    analysis = ANALYSES["residual"]
    cut = analysis.candidates[3]
    shifted = type(cut)(position=cut.position + 1, tensors=cut.tensors, num_bytes=cut.num_bytes)
    parts = split(model, [shifted], analysis)
    assert [s.name for s in parts[1].inputs] == [t.name for t in cut.tensors]


def test_manifest_round_trip(tmp_path):
    model = MODELS["early_output"]
    analysis = analyze(model, max_blocks=3)
    parts = split(model, analysis.cuts, analysis)
    (tmp_path / "part_7.onnx").write_bytes(b"stale")
    path = write_partitions(parts, tmp_path, model, analysis)
    assert not (tmp_path / "part_7.onnx").exists()
    manifest = load_manifest(tmp_path)
    assert manifest.model_sha256 == model.sha256 and manifest.num_blocks == 3
    assert [e.outputs for e in manifest.partitions] == [p.outputs for p in parts]
    assert [e.cut_bytes for e in manifest.partitions] == [p.cut_bytes for p in parts]
    reloaded = [onnx.load(manifest.path_of(i)) for i in range(len(parts))]
    assert [r.SerializeToString() for r in reloaded] == [p.to_bytes() for p in parts]
    data = json.loads(path.read_text())
    data["schema"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="schema 2"):
        load_manifest(path)
    data["schema"] = 1
    data["partitions"][0]["inputs"] = "nope"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="malformed"):
        load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(SchemaError, match="not readable JSON"):
        load_manifest(path)
    with pytest.raises(SchemaError, match="does not exist"):
        load_manifest(tmp_path / "nowhere" / "manifest.json")


def test_verify_catches_a_wrong_chain():
    model = MODELS["conv_chain"]
    parts = split(model, [3])
    # Feed the chain from a different model: outputs differ, report says so.
    other = load_model(tm.conv_chain(seed=1))
    report = verify(other, parts)
    assert not report.ok and report.worst.name == "probs" and report.worst.max_abs > 1e-4


def test_partitions_into_a_path_that_is_a_file_is_one_clear_error(tmp_path):
    from splitinfer.errors import SplitinferError

    model = MODELS["early_output"]
    analysis = analyze(model, max_blocks=3)
    parts = split(model, analysis.cuts, analysis)
    (tmp_path / "a-file").write_text("not a folder")
    for target in (tmp_path / "a-file", tmp_path / "a-file" / "sub"):
        with pytest.raises(SplitinferError) as caught:
            write_partitions(parts, target, model, analysis)
        assert caught.value.problem.startswith(f"cannot make the folder {target}") and caught.value.fix
