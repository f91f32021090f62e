"""Profiling a model whose weights stay on disk (issue 21, item 4), and the blob a partition travels as."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from splitinfer import zoo
from splitinfer.errors import ModelError
from splitinfer.graph import load_model
from splitinfer.graph.external import serialize
from splitinfer.profile.device import profile_model
from splitinfer.profile.lazy import PartitionBytes, TensorSpill
from splitinfer.profile.profiler import ProfileSettings, prepare_model

WIDTH = 512  # the zoo's small mlp: 3 layers of 512
CPU = ["CPUExecutionProvider"]


def _mlp(path):
    """The zoo's small mlp saved with its weights in a .data file, and the same model's bytes inline."""
    zoo.save("mlp", path, small=True, external_data=True)
    return path, zoo.build_small("mlp").SerializeToString()


def test_the_blob_of_a_model_on_disk_runs_as_the_model_itself(tmp_path):
    path, inline = _mlp(tmp_path / "mlp.onnx")
    proto = onnx.load(str(path), load_external_data=False)
    blob = serialize(proto, tmp_path, "the model")
    parsed = onnx.ModelProto()
    parsed.ParseFromString(bytes(blob))
    assert not any(t.external_data for t in parsed.graph.initializer)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, WIDTH)).astype(np.float32)}
    got = ort.InferenceSession(bytes(blob), providers=CPU).run(None, feeds)[0]
    want = ort.InferenceSession(inline, providers=CPU).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)


def test_a_blob_past_protobufs_limit_is_refused_before_anything_is_read(tmp_path):
    big = tmp_path / "big.data"
    with open(big, "wb") as f:  # sparse: no disk used
        f.truncate(3 << 30)
    t = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[3 << 28])
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "big.data"), ("offset", "0"), ("length", str(3 << 30))):
        t.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3 << 28])], [t])
    with pytest.raises(ModelError, match="over protobuf's 2 GB"):
        serialize(helper.make_model(graph), tmp_path, "partition 0")


def test_a_model_on_disk_is_profiled_block_by_block_without_the_whole_model(tmp_path):
    path, _ = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path, weights_on_disk=True)
    prepared = prepare_model(model, max_blocks=4)
    assert prepared.whole_bytes is None and isinstance(prepared.block_bytes, PartitionBytes)
    assert prepared.block_bytes.nbytes(0) >= WIDTH * WIDTH * 4
    profile = profile_model(None, prepared=prepared, settings=ProfileSettings(budget_s=0.3, min_runs=2))
    (device,) = profile.devices.values()
    assert device.whole_model is None
    assert all(b is not None for b in device.blocks) and len(device.blocks) == prepared.num_blocks
    # the same model with its weights in memory: the blocks get the same tensors
    in_memory = prepare_model(load_model(path), max_blocks=4)
    assert in_memory.whole_bytes is not None
    for mine, theirs in zip(prepared.block_feeds, in_memory.block_feeds, strict=True):
        assert mine.keys() == theirs.keys()
        for name in mine:
            np.testing.assert_array_equal(mine[name], theirs[name])


def test_calibration_tensors_past_the_budget_are_kept_on_disk(tmp_path):
    path, _ = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path)
    kept = prepare_model(model, max_blocks=4)
    spilled = prepare_model(model, max_blocks=4, calibration_memory_bytes=WIDTH * 4)
    assert spilled.spill is not None and spilled.spill.spilled_bytes > 0 and kept.spill.spilled_bytes == 0
    assert any(isinstance(v, np.memmap) for feeds in spilled.block_feeds for v in feeds.values())
    for a, b in zip(spilled.block_feeds, kept.block_feeds, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    profile = profile_model(None, prepared=spilled, settings=ProfileSettings(budget_s=0.2, min_runs=2))
    assert all(b is not None for b in next(iter(profile.devices.values())).blocks)


def test_the_spill_holds_up_to_its_budget_and_removes_its_folder():
    spill = TensorSpill(budget_bytes=100)
    small = spill.keep({"a": np.zeros(10, np.float32)})  # 40 bytes: held
    big = spill.keep({"b": np.arange(100, dtype=np.float32)})  # 400 more: to disk
    assert not isinstance(small["a"], np.memmap) and isinstance(big["b"], np.memmap)
    np.testing.assert_array_equal(big["b"], np.arange(100, dtype=np.float32))
    folder = spill._folder.name
    del big
    spill.close()
    import os
    assert not os.path.exists(folder)
