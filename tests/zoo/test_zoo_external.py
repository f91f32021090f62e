"""`zoo.save`: weights written to a .data file as they are drawn, and the `mlp` that needs it.

The full-size mlp (2.4 GB) is built only with SPLITINFER_BIG_TESTS=1 (about 15 s and 2.4 GB
of disk); the rest runs small models in well under a second each.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from splitinfer import zoo
from splitinfer.errors import ModelError

CPU = ["CPUExecutionProvider"]
# An odd number of input features: the first weight ends off a 4096-byte boundary, so the next
# one's offset is padded.
SMALL_MLP = {"width": 0.0625, "depth": 0.34, "resolution": 515}


def external(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def refs(tensor: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


# A decoder's run-time dims: two new tokens after a past of three.
RUN_TIME_DIMS = {"batch": 1, "sequence_length": 2, "past_sequence_length": 3}


def feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for value in model.graph.input:
        shape = [RUN_TIME_DIMS[d.dim_param] if d.dim_param else d.dim_value
                 for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            out[value.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            out[value.name] = np.ones(shape, dtype=np.int64)  # bert, decoders: token 1; bert: mask 1
    return out


def run(model: onnx.ModelProto | str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=CPU).run(None, inputs)


# small: build_small's variant. resnet18 at half width: its head (256 x 1000) goes to the file
# and calibration rescales it there. The exits model: its thresholds are set by ONNX Runtime
# reading the file. llama: the decoder only save() can write at full size (its embedding and head,
# 1000 x 64, go to the file).
CASES = {
    "mlp": ("mlp", {"small": True}),
    "llama": ("llama", {"small": True}),
    "resnet18": ("resnet18", {"small": True}),
    "resnet18_wide_head": ("resnet18", {"width": 0.5, "depth": 0.5, "resolution": 32}),
    "resnet18_exits": ("resnet18_exits", {"small": True}),
}


def in_memory(name: str, kwargs: dict) -> onnx.ModelProto:
    if kwargs.get("small"):
        return zoo.build_small(name)
    return zoo.build(name, **kwargs)


@pytest.mark.parametrize("case", list(CASES))
def test_external_weights_give_the_in_memory_model(case, tmp_path):
    name, kwargs = CASES[case]
    path = zoo.save(name, tmp_path / f"{name}.onnx", external_data=True, **kwargs)
    assert path == tmp_path / f"{name}.onnx" and (tmp_path / f"{name}.data").is_file()
    saved = onnx.load(path, load_external_data=False)
    want = in_memory(name, kwargs)
    assert external(saved)
    # Same weights, in the same order, and the same metadata (the exits' thresholds).
    assert [t.name for t in saved.graph.initializer] == [t.name for t in want.graph.initializer]
    for got, expected in zip(saved.graph.initializer, want.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(got, base_dir=str(tmp_path)),
                                      numpy_helper.to_array(expected), err_msg=got.name)
    assert list(saved.metadata_props) == list(want.metadata_props)
    assert saved.graph.node == want.graph.node
    inputs = feeds(want)
    for got, expected in zip(run(str(path), inputs), run(want, inputs), strict=True):
        np.testing.assert_array_equal(got, expected)
    if case == "resnet18_wide_head":
        assert "fc.weight" in {t.name for t in external(saved)}  # rescaled in the file, in place


@pytest.mark.parametrize(("name", "kwargs"), [("mlp", SMALL_MLP),
                                               ("resnet18", {"width": 0.5, "depth": 0.5, "resolution": 32})])
def test_references_are_relative_aligned_and_only_for_large_weights(name, kwargs, tmp_path):
    path = zoo.save(name, tmp_path / "r.onnx", external_data=True, **kwargs)
    model = onnx.load(path, load_external_data=False)
    size = (tmp_path / "r.data").stat().st_size
    ends = []
    for t in model.graph.initializer:
        nbytes = int(np.prod(t.dims)) * 4
        if t.data_location != onnx.TensorProto.EXTERNAL:
            assert nbytes <= 64 * 1024, t.name
            continue
        ref = refs(t)
        assert ref["location"] == "r.data" and nbytes > 64 * 1024
        offset, length = int(ref["offset"]), int(ref["length"])
        assert offset % 4096 == 0 and length == nbytes and offset + length <= size
        ends.append((offset, offset + length))
    assert ends == sorted(ends) and all(a[1] <= b[0] for a, b in itertools.pairwise(ends))
    assert ends[-1][1] == size


def test_two_saves_are_byte_identical(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder in (first, second):
        zoo.save("mlp", folder / "m.onnx", external_data=True, **SMALL_MLP)
    for suffix in (".onnx", ".data"):
        assert (first / f"m{suffix}").read_bytes() == (second / f"m{suffix}").read_bytes()
    other = tmp_path / "other.onnx"
    zoo.save("mlp", other, seed=1, external_data=True, **SMALL_MLP)
    assert other.with_suffix(".data").read_bytes() != (first / "m.data").read_bytes()


@pytest.mark.parametrize("external_data", [None, False])
def test_inline_save_is_the_in_memory_model_and_writes_no_data_file(external_data, tmp_path):
    path = zoo.save("detector", tmp_path / "d.onnx", small=True, seed=3, external_data=external_data)
    assert path.read_bytes() == zoo.build_small("detector", seed=3).SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]
    assert zoo.external_data_file("detector", path, small=True, external_data=external_data) is None
    wide = zoo.save("mlp", tmp_path / "w.onnx", width=0.125, external_data=external_data)
    assert wide.read_bytes() == zoo.build("mlp", width=0.125).SerializeToString()


def test_building_holds_one_weight_at_a_time(tmp_path):
    """9 layers of 2048 x 2048 (16 MiB each): drawing and writing them keeps about one."""
    layer_bytes = 2048 * 2048 * 4
    tracemalloc.start()
    try:
        path = zoo.save("mlp", tmp_path / "m.onnx", width=0.25, resolution=2048, external_data=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    data_bytes = (tmp_path / "m.data").stat().st_size
    (tmp_path / "m.data").unlink()  # 150 MB: pytest keeps the last runs' folders
    assert data_bytes > 9 * layer_bytes
    assert path.stat().st_size < 200_000  # references, biases and the graph only
    assert peak < 2.5 * layer_bytes, peak / layer_bytes


def test_over_2_gb_goes_to_a_data_file_by_default_and_build_refuses_it(tmp_path):
    target = tmp_path / "m.onnx"
    assert zoo.external_data_file("mlp", target) == tmp_path / "m.data"
    assert zoo.external_data_file("mlp", target, width=0.5) is None
    assert zoo.external_data_file("mlp", target, width=0.5, external_data=True) == tmp_path / "m.data"
    with pytest.raises(ModelError, match="2 GB") as caught:
        zoo.build("mlp")
    assert "zoo.save" in caught.value.fix and ".data" in caught.value.fix
    with pytest.raises(ModelError, match="2 GB") as caught:
        zoo.save("mlp", target, external_data=False)
    assert "--inline-data" in caught.value.fix
    assert not list(tmp_path.iterdir())


def test_bad_arguments_write_nothing(tmp_path):
    with pytest.raises(ModelError, match="same name"):
        zoo.save("mlp", tmp_path / "m.data", small=True, external_data=True)
    with pytest.raises(ModelError, match="external_data 'yes'"):
        zoo.save("mlp", tmp_path / "m.onnx", small=True, external_data="yes")
    with pytest.raises(ModelError, match="small variant sets its own"):
        zoo.save("mlp", tmp_path / "m.onnx", small=True, width=0.5)
    keep = tmp_path / "keep.data"
    keep.write_bytes(b"someone's data")
    with pytest.raises(ModelError, match="opset 12"):
        zoo.save("mlp", tmp_path / "keep.onnx", small=True, opset=12, external_data=True)
    assert keep.read_bytes() == b"someone's data"
    with pytest.raises(ModelError, match="cannot write"):
        zoo.save("mlp", tmp_path / "missing" / "m.onnx", small=True, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.data"]


def test_a_failed_build_leaves_no_data_file(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(zoo, "_write_model", fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        zoo.save("mlp", tmp_path / "m.onnx", small=True, external_data=True)
    assert not list(tmp_path.iterdir())


def test_mlp_sizes():
    full = zoo.summarize("mlp")
    assert [s.shape for s in full.inputs] == [(1, 8192)] and [s.shape for s in full.outputs] == [(1, 1000)]
    assert full.num_params == 9 * (8192 * 8192 + 8192) + 8192 * 1000 + 1000
    assert full.weight_bytes > 2**31 and full.num_macs == full.num_params - 9 * 8192 - 1000
    half = zoo.summarize("mlp", width=0.5, depth=0.34, resolution=1024)
    assert half.num_params == 1024 * 4096 + 4096 + 2 * (4096 * 4096 + 4096) + 4096 * 1000 + 1000
    model = zoo.build_small("mlp")
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Gemm", "Relu"] * 3 + ["Gemm"]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 512]
    assert "mlp" in zoo.names() and "MLP" in zoo.describe("mlp") and "612.2M params" in zoo.describe("mlp")


def test_mlp_activations_keep_their_scale_over_depth():
    model = zoo.build("mlp", width=0.125, depth=2, resolution=1024)  # 18 layers of 1024
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    shapes = {v.name: v for v in model.graph.value_info}
    model.graph.output.extend(shapes[r] for r in relus)
    results = run(model, feeds(model, seed=5))
    logits, hidden = results[0], results[1:]
    mean_squares = [float(np.mean(h.astype(np.float64) ** 2)) for h in hidden]
    assert len(hidden) == 18 and min(mean_squares) > 0.6 and max(mean_squares) < 1.6, mean_squares
    assert 0.1 < float(np.abs(logits).max()) < 10


@pytest.mark.skipif(os.environ.get("SPLITINFER_BIG_TESTS") != "1",
                    reason="writes the full-size mlp, 2.4 GB (15 s or more): SPLITINFER_BIG_TESTS=1")
def test_full_size_mlp_over_2_gb_is_saved_in_little_memory_and_runs(tmp_path):
    path, data = tmp_path / "mlp.onnx", tmp_path / "mlp.data"
    try:
        _check_full_size_mlp(path, data)
    finally:
        data.unlink(missing_ok=True)  # pytest keeps the last runs' folders: not 2.4 GB each


def _check_full_size_mlp(path, data):
    # In a process of its own, for its peak resident memory (ru_maxrss: KiB on Linux).
    code = ("import resource, sys; from splitinfer import zoo; zoo.save('mlp', sys.argv[1]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=600, check=True)
    peak_bytes = int(out.stdout.split()[-1])
    weight_bytes = zoo.summarize("mlp").weight_bytes
    assert data.stat().st_size >= weight_bytes - 1_000_000 and path.stat().st_size < 1_000_000
    assert peak_bytes < 0.25 * weight_bytes, peak_bytes / 1e9
    model = onnx.load(path, load_external_data=False)
    assert all(int(refs(t)["offset"]) % 4096 == 0 for t in external(model))
    assert json.loads({p.key: p.value for p in model.metadata_props}["splitinfer.zoo"])["width"] == 1.0
    (logits,) = run(str(path), feeds(model))
    assert logits.shape == (1, 1000) and np.isfinite(logits).all() and 0.1 < np.abs(logits).max() < 100
