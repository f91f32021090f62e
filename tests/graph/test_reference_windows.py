"""The whole model run window by window as verification's reference (graph/reference.py, issue 21)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from splitinfer.graph import analyze, load_model, split, verify
from splitinfer.graph import reference as reference_module
from splitinfer.graph.reference import plan_windows, reference

WIDTH = 256
LAYER_BYTES = WIDTH * WIDTH * 4


def _save(path, nodes, inits, inputs, outputs, value_info=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits, value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, location=path.stem + ".data",
                    size_threshold=1024)
    return path


def _mlp(path, layers=5, declare_types=True):
    rng = np.random.default_rng(3)
    nodes, inits, infos, x = [], [], [], "x"
    for i in range(layers):
        w = ((rng.random((WIDTH, WIDTH), dtype=np.float32) - 0.5) * 0.2).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]
        if declare_types and i < layers - 1:
            infos += [helper.make_tensor_value_info(f"r{i}", onnx.TensorProto.FLOAT, [1, WIDTH])]
        x = f"r{i}"
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, WIDTH]) for n in ("x", x)]
    return _save(path, nodes, inits, io[:1], io[1:], infos)


def test_windows_hold_at_most_the_budget_and_give_the_whole_models_values(tmp_path):
    path = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path, weights_on_disk=True)
    windows = plan_windows(model.proto, LAYER_BYTES)
    assert len(windows) == 5 and all(w.weight_bytes == LAYER_BYTES for w in windows)
    assert [w.inputs for w in windows[1:]] == [(f"r{i}",) for i in range(4)]
    feeds = model.make_feeds()
    fetch = ["r4", "r1", "m3"]
    with reference(model, fetch, ["CPUExecutionProvider"], LAYER_BYTES) as run:
        got = run(feeds)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model_proto = onnx.load(str(path))
    model_proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in ("r1", "m3"))
    want = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del session
    for name, value in zip(["r4", "r1", "m3"], want.run(["r4", "r1", "m3"], feeds), strict=True):
        np.testing.assert_array_equal(got[name], value)


def test_a_window_does_not_end_where_a_crossing_tensor_has_no_declared_type(tmp_path):
    path = _mlp(tmp_path / "mlp.onnx", declare_types=False)
    proto = onnx.load(str(path), load_external_data=False)
    windows = plan_windows(proto, LAYER_BYTES)
    assert len(windows) == 1  # no intermediate is typed: nowhere to cut


def test_a_budget_over_the_model_is_one_session(tmp_path, monkeypatch):
    path = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path, weights_on_disk=True)
    called = []
    monkeypatch.setattr(reference_module, "run_windows", lambda *a: called.append(a))
    with reference(model, ["r4"], ["CPUExecutionProvider"], 5 * LAYER_BYTES) as run:
        run(model.make_feeds())
    assert not called


def test_verify_runs_the_reference_in_windows_and_still_catches_a_wrong_chain(tmp_path, monkeypatch):
    path = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path, weights_on_disk=True)
    analysis = analyze(model)
    parts = split(model, [len(analysis.order) // 2], analysis)
    seen = []
    real = reference_module.run_windows
    monkeypatch.setattr(reference_module, "run_windows", lambda w, *a: seen.append(len(w)) or real(w, *a))
    assert verify(model, parts, window_bytes=LAYER_BYTES).ok
    assert seen == [5]
    # a chain whose second partition computes something else: the windowed reference tells
    bad = onnx.ModelProto()
    bad.CopyFrom(parts[1].proto)
    relu = next(n for n in bad.graph.node if n.op_type == "Relu")
    relu.op_type = "Sigmoid"
    wrong = [parts[0], type(parts[1])(**{**parts[1].__dict__, "proto": bad})]
    assert not verify(model, wrong, window_bytes=LAYER_BYTES).ok


def test_subgraph_reads_count_as_window_inputs(tmp_path):
    """An If branch reads a tensor of the outer graph made in an earlier window: the window that holds the
    If takes it as an input."""
    w = numpy_helper.from_array(np.full((WIDTH, WIDTH), 0.01, np.float32), "w")
    then = helper.make_graph([helper.make_node("Identity", ["m"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [1, WIDTH])])
    other = helper.make_graph([helper.make_node("Neg", ["m"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [1, WIDTH])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, WIDTH]) for n in ("x", "y")]
    infos = [helper.make_tensor_value_info("m", onnx.TensorProto.FLOAT, [1, WIDTH]),
             helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, []),
             helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])]
    path = _save(tmp_path / "if.onnx", nodes, [w, zero], io[:1], io[1:], infos)
    proto = onnx.load(str(path), load_external_data=False)
    windows = plan_windows(proto, 1)
    holder = next(win for win in windows if any(n.op_type == "If" for n in win.proto.graph.node))
    assert "m" in holder.inputs
    feeds = {"x": np.random.default_rng(0).standard_normal((1, WIDTH)).astype(np.float32)}
    got = reference_module.run_windows(windows, feeds, ["y"], ["CPUExecutionProvider"], tmp_path)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], feeds)[0]
    np.testing.assert_array_equal(got["y"], want)


@pytest.mark.parametrize("budget", [1, LAYER_BYTES, 2 * LAYER_BYTES])
def test_every_budget_gives_the_same_outputs(tmp_path, budget):
    path = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path, weights_on_disk=True)
    feeds = model.make_feeds()
    with reference(model, ["r4"], ["CPUExecutionProvider"], budget) as run:
        got = run(feeds)["r4"]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["r4"], feeds)[0]
    np.testing.assert_array_equal(got, want)
