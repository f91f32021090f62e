"""Tensors whose size depends on the input values: marked at load, left open in partitions, verified on
several sizes (issue 16, item 3)."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.cli import run_cli
from helpers.dynamic_models import boxes_with_kept, nms_model, nonzero_model, topk_model, x_with_positives
from onnx import TensorProto, helper, numpy_helper

from splitinfer.errors import ShapeError, VerifyError
from splitinfer.graph import analyze, load_model, run_chain, split, verify
from splitinfer.graph.partition import Partition
from splitinfer.types import TensorSpec, check_feeds

# model, inputs of a chosen size, a cut across the varying tensors, the sizes to run
CASES = {
    "nonzero": (nonzero_model, x_with_positives, [["nz"]], (0, 3, 8, 13)),
    "nms": (nms_model, boxes_with_kept, [["sel"]], (0, 2, 5, 8)),
    "topk": (topk_model, x_with_positives, [["values", "indices"]], (1, 4, 9, 16)),
}


def _c(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _load(nodes, inits, outputs):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return load_model(model)


def _out(name: str, elem: int, rank: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [None] * rank)


COUNT = [helper.make_node("Greater", ["x", "zero"], ["pos"]),
         helper.make_node("Cast", ["pos"], ["posi"], to=TensorProto.INT64),
         helper.make_node("ReduceSum", ["posi"], ["n"], keepdims=0)]  # n: a count the values decide


def test_nonzero_marks_its_count_and_what_follows_it_on_that_axis_only():
    model = load_model(nonzero_model())
    assert model.dynamic_dims == {"nz": (1,), "cols": (0,), "v": (0,), "wsel": (0,), "vrow": (1,),
                                  "ones": (1,)}
    # after the MatMul and the ReduceSum the count is gone; Shape's output has a fixed rank
    assert not {"mm", "count", "y", "shape_n", "x", "xflat"} & set(model.dynamic_dims)
    assert model.tensors["nz"].shape[0] == 2  # the sizes seen at load stay in model.tensors


def test_nms_and_topk_with_a_computed_k_mark_their_selection_axis():
    assert load_model(nms_model()).dynamic_dims == {"sel": (0,), "box_idx": (0,), "kept": (0,)}
    # ONNX's inference of TopK with a computed K loses every dim; inferred again with K's axis declared,
    # the batch axis and the MatMul after it stay static
    marked = load_model(topk_model()).dynamic_dims
    assert marked == {"values": (1,), "indices": (1,), "idx": (0,), "wsel": (0,)}


def test_topk_with_a_constant_k_and_static_reshapes_are_not_marked():
    nodes = [helper.make_node("TopK", ["x", "k"], ["values", "indices"]),
             helper.make_node("Reshape", ["x", "fixed"], ["rs_const"]),
             helper.make_node("Shape", ["x"], ["xs"]),
             helper.make_node("Reshape", ["x", "xs"], ["rs_shape"])]  # from Shape of a static tensor: folded
    model = _load(nodes, [_c("k", np.array([3], np.int64)), _c("fixed", np.array([3, 4], np.int64))],
                  [_out("values", TensorProto.FLOAT, 2), _out("rs_const", TensorProto.FLOAT, 2),
                   _out("rs_shape", TensorProto.FLOAT, 2)])
    assert model.dynamic_dims == {}


def test_a_reshape_to_a_computed_shape_is_marked_on_every_axis():
    # cols = 6 + (n > 1e9): always 6, but computed from the values: nothing can tell it before a run
    nodes = [*COUNT, helper.make_node("Greater", ["n", "big"], ["never"]),
             helper.make_node("Cast", ["never"], ["never_i"], to=TensorProto.INT64),
             helper.make_node("Add", ["never_i", "six"], ["cols"]),
             helper.make_node("Unsqueeze", ["cols", "axes0"], ["cols1"]),
             helper.make_node("Concat", ["minus1", "cols1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["rs"])]
    inits = [_c("zero", np.float32(0)), _c("big", np.int64(10**9)), _c("six", np.int64(6)),
             _c("axes0", np.array([0], np.int64)), _c("minus1", np.array([-1], np.int64))]
    model = _load(nodes, inits, [_out("rs", TensorProto.FLOAT, 2)])
    assert model.dynamic_dims == {"rs": (0, 1)}


def test_unique_compress_range_and_onehot_mark_the_axis_they_size():
    nodes = [*COUNT, helper.make_node("Unique", ["posi"], ["u", "ui", "uinv", "uc"], sorted=1),
             helper.make_node("Compress", ["x", "pos"], ["comp"]),
             helper.make_node("Compress", ["x", "mask"], ["comp_const"], axis=1),  # a constant condition
             helper.make_node("Range", ["izero", "n", "ione"], ["r"]),
             helper.make_node("Add", ["n", "ione"], ["depth"]),
             helper.make_node("OneHot", ["ids", "depth", "onoff"], ["oh"])]
    inits = [_c("zero", np.float32(0)), _c("mask", np.array([1, 0, 1, 0, 1, 1], bool)),
             _c("izero", np.int64(0)), _c("ione", np.int64(1)), _c("ids", np.array([0, 1], np.int64)),
             _c("onoff", np.array([0, 1], np.float32))]
    outs = [_out("u", TensorProto.INT64, 1), _out("uinv", TensorProto.INT64, 1),
            _out("comp", TensorProto.FLOAT, 1), _out("comp_const", TensorProto.FLOAT, 2),
            _out("r", TensorProto.INT64, 1), _out("oh", TensorProto.FLOAT, 2)]
    model = _load(nodes, inits, outs)
    # Unique's inverse indices have the input's size; a constant condition keeps Compress's size
    assert model.dynamic_dims == {"u": (0,), "ui": (0,), "uc": (0,), "comp": (0,), "r": (0,), "oh": (1,)}


def _loop_body(kind: str) -> onnx.GraphProto:
    """One step: f = i + sum(x) (x read from outside); a "for" body passes its condition on, a "while"
    body computes it (stop once i > sum(x))."""
    cond = (helper.make_node("Identity", ["cond_in"], ["cond_out"]) if kind == "for"
            else helper.make_node("Greater", ["sx", "fi"], ["cond_out"]))
    return helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0),
         helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["fi", "sx"], ["f"]), cond], f"{kind}_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("f", TensorProto.FLOAT, [])])


@pytest.mark.parametrize(("trip", "kind", "marked"), [("n", "for", {"steps": (0,)}), ("three", "for", {}),
                                                      ("three", "while", {"steps": (0,)})])
def test_a_loop_marks_its_scan_outputs_when_the_values_decide_its_trip_count(trip, kind, marked):
    nodes = [*COUNT, helper.make_node("Loop", [trip, ""], ["steps"], body=_loop_body(kind)),
             helper.make_node("ReduceSum", ["steps"], ["y"], keepdims=1)]
    inits = [_c("zero", np.float32(0)), _c("three", np.int64(3))]
    model = _load(nodes, inits, [_out("y", TensorProto.FLOAT, 1)])
    assert model.dynamic_dims == marked


def test_an_if_on_the_values_marks_the_dims_its_branches_disagree_on():
    def branch(name: str, node: onnx.NodeProto) -> onnx.GraphProto:
        return helper.make_graph([node], name, [], [_out(node.output[0], TensorProto.FLOAT, 2)])

    same = {"then_branch": branch("t1", helper.make_node("Identity", ["x"], ["a1"])),
            "else_branch": branch("e1", helper.make_node("Neg", ["x"], ["b1"]))}
    differ = {"then_branch": branch("t2", helper.make_node("Identity", ["x"], ["a2"])),
              "else_branch": branch("e2", helper.make_node("Reshape", ["x", "three_four"], ["b2"]))}
    nodes = [helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0),
             helper.make_node("Greater", ["sx", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["same"], **same),
             helper.make_node("If", ["cond"], ["differ"], **differ)]
    inits = [_c("zero", np.float32(0)), _c("three_four", np.array([3, 4], np.int64))]
    model = _load(nodes, inits, [_out("same", TensorProto.FLOAT, 2), _out("differ", TensorProto.FLOAT, 2)])
    assert model.dynamic_dims == {"differ": (0, 1)}


def test_shape_of_a_varying_tensor_is_computed_not_folded_to_the_size_seen():
    model = load_model(nonzero_model())
    assert "shape_n" not in model.graph_index.constants and "shape_n" not in model.graph_index.folded
    parts = split(model, [["nz"]])
    assert "shape_n" not in {t.name for p in parts for t in p.proto.graph.initializer}
    feeds = x_with_positives(11)
    want = ort.InferenceSession(nonzero_model().SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(run_chain(parts, feeds)["y"], want, rtol=1e-6)  # y adds the count: 11


def _freeze(part: Partition) -> Partition:
    """The partition as it was built before: its inputs declared with the sizes seen at load."""
    proto = onnx.ModelProto()
    proto.CopyFrom(part.proto)
    for vi, spec in zip(proto.graph.input, part.inputs, strict=True):
        for dim, size in zip(vi.type.tensor_type.shape.dim, spec.seen or spec.shape, strict=True):
            dim.Clear()
            dim.dim_value = size
    return Partition(part.index, proto, part.inputs, part.outputs, part.nodes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_split_across_a_varying_tensor_runs_on_other_sizes(case):
    build, make_feeds, cuts, counts = CASES[case]
    model = load_model(build())
    parts = split(model, cuts, analyze(model))
    whole = ort.InferenceSession(build().SerializeToString(), providers=["CPUExecutionProvider"])
    seen = {spec.name: spec.seen for spec in parts[1].inputs if spec.varies}
    assert seen, "the cut crosses a varying tensor"
    sizes = set()
    for count in counts:
        feeds = make_feeds(count)
        (want,) = whole.run(None, feeds)
        np.testing.assert_allclose(run_chain(parts, feeds)["y"], want, rtol=1e-5, atol=1e-5)
        sizes.add(count)
    assert len(sizes) >= 3
    # The old failure: the second partition declared the sizes seen at load and refused any other.
    other = next(c for c in counts if c != _seen_count(case, seen))
    with pytest.raises(VerifyError, match="fails in ONNX Runtime"):
        run_chain([parts[0], _freeze(parts[1])], make_feeds(other))


def _seen_count(case: str, seen: dict[str, tuple[int, ...] | None]) -> int:
    shape = next(iter(seen.values()))
    assert shape is not None
    return shape[1] if case in ("nonzero", "topk") else shape[0]


def test_partitions_declare_varying_dims_open_and_count_the_bytes_seen():
    model = load_model(nonzero_model())
    first, second = split(model, [["nz"]])
    seen = model.tensors["nz"].shape
    (nz,) = [s for s in first.outputs if s.name == "nz"]
    assert nz == TensorSpec("nz", "int64", (2, -1), seen=seen) and nz.varies
    assert first.cut_bytes == 16 * 4 + 8 * 2 * seen[1]  # x passes through; nz as seen
    (vi,) = [v for v in second.proto.graph.input if v.name == "nz"]
    dims = vi.type.tensor_type.shape.dim
    assert dims[0].dim_value == 2 and dims[1].dim_param == "nz_dim1" and not dims[1].HasField("dim_value")
    inner = {v.name: v for v in second.proto.graph.value_info}
    assert inner["cols"].type.tensor_type.shape.dim[0].dim_param == "cols_dim0"
    # the whole model as loaded declares no size seen once either
    (loaded,) = [v for v in model.proto.graph.value_info if v.name == "nz"]
    assert loaded.type.tensor_type.shape.dim[1].dim_param == "nz_dim1"


def test_a_varying_dim_takes_any_size_and_the_rest_is_still_checked():
    spec = TensorSpec("nz", "int64", (2, -1), seen=(2, 7))
    for n in (0, 1, 7, 50):
        check_feeds({"nz": np.zeros((2, n), np.int64)}, [spec], "stage")
    for bad, what in [(np.zeros((3, 5), np.int64), "shape"), (np.zeros((2, 5, 1), np.int64), "shape"),
                      (np.zeros((2, 5), np.int32), "dtype")]:
        with pytest.raises(ShapeError, match=what) as caught:
            check_feeds({"nz": bad}, [spec], "stage")
        assert len(str(caught.value).splitlines()) == 1
    with pytest.raises(ShapeError, match=r"expected \[2, -1\] \(-1: any size\)"):
        check_feeds({"nz": np.zeros((3, 5), np.int64)}, [spec], "stage")


def test_a_spec_counts_the_bytes_seen_and_writes_no_seen_when_static():
    static = TensorSpec("a", "float32", (1, 2))
    assert msgspec.json.encode(static) == b'{"name":"a","dtype":"float32","shape":[1,2]}'
    assert TensorSpec("a", "float32", (-1, 4), seen=(5, 4)).num_bytes == 80
    assert TensorSpec("a", "float32", (-1, 4)).num_bytes == 16  # a varying dim with nothing seen counts 1
    assert not TensorSpec("a", "float32", (1, 2)).varies


def test_verify_compares_the_chain_on_three_inputs_of_different_sizes():
    model = load_model(nonzero_model())
    parts = split(model, [["nz"], ["nz", "v", "wsel"]])
    report = verify(model, parts)
    assert report.ok and len(report.sizes) == 3
    assert len({run["nz"] for run in report.sizes}) == 3  # three different counts
    assert set(report.sizes[0]) == {"nz", "v", "wsel"}  # the varying tensors the partitions hand on
    assert report.to_dict()["sizes"][0]["nz"] == list(report.sizes[0]["nz"])
    # a chain that takes only the size seen at load passes on that input, fails on the others
    with pytest.raises(VerifyError, match="fails in ONNX Runtime"):
        verify(model, [parts[0], _freeze(parts[1]), parts[2]])


def test_verify_of_a_static_model_runs_once_and_reports_no_sizes():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    model = _load(nodes, [], [_out("y", TensorProto.FLOAT, 2)])
    report = verify(model, split(model, [["a"]]))
    assert report.ok and report.sizes == () and "sizes" not in report.to_dict()


def test_inspect_marks_cuts_whose_size_varies(tmp_path, capsys):
    path = tmp_path / "nonzero.onnx"
    onnx.save(nonzero_model(), path)
    code, out, _ = run_cli(capsys, "inspect", path, "--max-blocks", "0")
    assert code == 0
    assert "size varies with the input values" in out
    rows = [line for line in out.splitlines() if "B*" in line]
    assert rows  # the cuts across nz, cols, v, wsel...
    code, out, _ = run_cli(capsys, "inspect", path, "--max-blocks", "0", "--json")
    assert code == 0 and json.loads(out)["model"]["dynamic_dims"]["nz"] == [1]  # NonZero's count
    code, out, _ = run_cli(capsys, "split", path, "--at", "nz", "--out", tmp_path / "parts")
    assert code == 0 and "sizes seen" in out.replace("\n", " ")


def test_the_profile_records_the_bytes_a_varying_cut_carries_on_many_samples_and_plans_with_their_mean():
    from splitinfer.profile.device import profile_model
    from splitinfer.profile.problem import build_problem
    from splitinfer.profile.profiler import prepare_model

    prepared = prepare_model(nonzero_model(), max_blocks=0)
    varying = [b for b in prepared.blocks if b.cut_bytes_seen]
    steady = [b for b in prepared.blocks[:-1] if not b.cut_bytes_seen]
    assert varying and steady  # x > 0 gives another count on each seeded input; a static cut is one size
    assert all(len(b.cut_bytes_seen) == 32 and len(set(b.cut_bytes_seen)) > 3 for b in varying)
    problem = build_problem(profile_model(None, prepared=prepared, budget_s=0.2))
    for b in prepared.blocks[:-1]:
        want = round(float(np.mean(b.cut_bytes_seen))) if b.cut_bytes_seen else b.cut_bytes
        assert problem.cut_bytes[b.index] == want
