"""Loading models: sources, names, dynamic dims, shape gaps, generated inputs."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from helpers import graph_models as tm
from onnx import helper

from splitinfer.errors import ModelError, ShapeError
from splitinfer.graph import load_model


def test_sources_agree_and_sha256(tmp_path):
    proto = tm.conv_chain()
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    data = path.read_bytes()
    from_path, from_bytes, from_proto = load_model(path), load_model(data), load_model(proto)
    assert from_path.sha256 == from_bytes.sha256 == hashlib.sha256(data).hexdigest()
    assert from_proto.sha256 == hashlib.sha256(proto.SerializeToString()).hexdigest()
    assert from_path.path == path and from_bytes.path is None
    assert from_path.inputs == from_bytes.inputs == from_proto.inputs
    assert from_path.outputs[0].shape == (1, 10)
    assert from_path.opset == 13


def test_loading_does_not_touch_the_given_proto():
    proto = tm.conv_chain()
    before = proto.SerializeToString()
    load_model(proto)
    assert proto.SerializeToString() == before


def test_unnamed_nodes_get_unique_deterministic_names():
    proto = tm.conv_chain()
    proto.graph.node[3].name = proto.graph.node[0].name  # a duplicate name
    names = [n.name for n in load_model(proto).proto.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert names == [n.name for n in load_model(proto).proto.graph.node]


def test_external_data(tmp_path):
    proto = tm.residual()
    path = tmp_path / "ext.onnx"
    onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    model = load_model(path)
    feeds = model.make_feeds()
    import onnxruntime as ort

    # onnx.save turned `proto` into an external-data proto: build the reference again.
    want = ort.InferenceSession(tm.residual().SerializeToString()).run(None, feeds)[0]
    got = ort.InferenceSession(model.proto.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_opsets(opset):
    model = load_model(tm.conv_chain(opset=opset))
    assert model.opset == opset
    assert model.tensor("c2").shape == (1, 8, 16, 16)


def test_every_intermediate_shape_is_known():
    model = load_model(tm.residual())
    for node in model.proto.graph.node:
        for out in node.output:
            assert model.tensor(out).dtype == "float32"


def test_gaps_filled_by_one_onnxruntime_run():
    # ONNX shape inference cannot see through com.microsoft.Gelu; ORT can run it.
    proto = tm.custom_ops()
    inferred = onnx.shape_inference.infer_shapes(proto)
    assert "g" not in {vi.name for vi in inferred.graph.value_info}
    model = load_model(proto)
    assert model.tensor("g").shape == (2, 8)
    assert model.tensor("b").shape == (2, 8)
    assert any(f.name == "AddRelu" for f in model.proto.functions)  # model-local function kept


def test_dynamic_dims_from_input_shape_and_batch():
    model = load_model(tm.dynamic(), input_shapes={"x": (2, 3, 20, 24)})
    assert model.inputs[0].shape == (2, 3, 20, 24)
    assert model.tensor("c1").shape == (2, 4, 20, 24)
    assert model.outputs[0].shape == (2, 4)
    with pytest.raises(ShapeError, match=r"dynamic dims \[<batch>,3,<height>,<width>\]"):
        load_model(tm.dynamic(), batch=2)  # height and width still unknown


def test_batch_fixes_leading_dim_and_shared_symbols():
    proto = tm.two_input()
    for vi in proto.graph.input:  # [batch, seq] on both inputs
        dims = vi.type.tensor_type.shape.dim
        dims[0].dim_param, dims[1].dim_param = "batch", "seq"
    model = load_model(proto, input_shapes={"ids": (1, 6)})
    assert model.tensor("mask").shape == (1, 6)  # 'seq' and 'batch' shared with ids
    model = load_model(proto, input_shapes={"ids": (1, 6), "mask": (1, 6)}, batch=1)
    assert model.outputs[0].shape == (1, 96)


@pytest.mark.parametrize(
    ("shapes", "batch", "message"),
    [
        ({"x": (1, 3, 32, 32)}, None, "contradicts the model"),
        ({"x": (1, 3, 16)}, None, "has 4 dims"),
        ({"nope": (1, 3, 16, 16)}, None, "not an input of the model"),
        ({}, 4, "batch=4 contradicts the model"),
        ({"x": (1, 3, 0, 16)}, None, "dim <= 0"),
    ],
)
def test_bad_shapes(shapes, batch, message):
    with pytest.raises(ShapeError, match=message):
        load_model(tm.conv_chain(), input_shapes=shapes, batch=batch)


def test_not_onnx_and_truncated(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    with pytest.raises(ModelError, match="not an ONNX model"):
        load_model(text)
    data = tm.conv_chain().SerializeToString()
    with pytest.raises(ModelError, match="ONNX model"):
        load_model(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="empty"):
        load_model(b"")


def test_make_feeds_dtypes_and_ranges():
    model = load_model(tm.two_input(vocab=7))
    feeds = model.make_feeds(seed=3)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (1, 6)
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 7  # within the embedding table
    assert feeds["mask"].dtype == np.bool_ and feeds["mask"].all()
    again = model.make_feeds(seed=3)
    np.testing.assert_array_equal(feeds["ids"], again["ids"])
    floats = load_model(tm.conv_chain()).make_feeds(seed=0, batch_size=4)["x"]
    assert floats.shape == (4, 3, 16, 16) and floats.dtype == np.float32
    assert abs(float(floats.mean())) < 0.1 and 0.9 < float(floats.std()) < 1.1


def test_int_inputs_without_embedding_stay_below_100():
    x = helper.make_tensor_value_info("n", onnx.TensorProto.INT32, [50])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.INT32, [50])
    proto = helper.make_model(helper.make_graph([helper.make_node("Neg", ["n"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    feeds = load_model(proto).make_feeds()
    assert feeds["n"].dtype == np.int32 and feeds["n"].min() >= 0 and feeds["n"].max() < 100


def test_initializers_listed_as_inputs_are_not_inputs():
    proto = tm.shared_init()
    proto.ir_version = 3
    proto.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in proto.graph.initializer
    )
    model = load_model(proto)
    assert [s.name for s in model.inputs] == ["x"]
    assert set(model.make_feeds()) == {"x"}


@pytest.mark.parametrize(("location", "reason"), [("../../etc/passwd", "points outside the directory"),
                                                  ("/etc/passwd", "absolute path"), ("gone.bin", "gone.bin")])
def test_external_data_a_model_may_not_name_is_a_model_error(tmp_path, location, reason):
    proto = tm.residual()
    weight = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    path = tmp_path / "bad.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError) as caught:
        load_model(path)
    assert "cannot read the external data of" in caught.value.problem and reason in caught.value.problem
    assert "\n" not in str(caught.value)
