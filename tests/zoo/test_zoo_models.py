"""The zoo's models: valid ONNX, runnable, deterministic, sane activations, real sizes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from splitinfer import zoo
from splitinfer.errors import ModelError, ShapeError

NAMES = zoo.names()
_SMALL: dict[str, onnx.ModelProto] = {}


def small(name: str) -> onnx.ModelProto:
    if name not in _SMALL:
        _SMALL[name] = zoo.build_small(name)
    return _SMALL[name]


def session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    # Basic optimisations only: ALL spends seconds pre-packing full-size weights.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    """A value's shape: a dimension chosen at run time by its name (the decoders' batch and lengths)."""
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def traced(model: onnx.ModelProto) -> dict[str, int]:
    """The sizes of a model's run-time dims in its summary: batch 1, the prompt, an empty past."""
    meta = json.loads({p.key: p.value for p in model.metadata_props}["splitinfer.zoo"])
    summary = zoo.summarize(meta["name"], small=True) if meta["small"] else zoo.summarize(
        meta["name"], width=meta["width"], depth=meta["depth"], resolution=meta["resolution"])
    sizes = {}
    # The model's own outputs: a test may have made intermediates outputs too, after them.
    values = [*model.graph.input, *model.graph.output[:len(summary.outputs)]]
    for value, spec in zip(values, [*summary.inputs, *summary.outputs], strict=True):
        for dim, size in zip(dims(value), spec.shape, strict=True):
            if isinstance(dim, str):
                assert sizes.setdefault(dim, size) == size, (value.name, dim, size, sizes[dim])
    return sizes


def concrete(value: onnx.ValueInfoProto, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[d] if isinstance(d, str) else d for d in dims(value))


def make_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard normal images (and past keys/values); token ids below the vocabulary size (of the
    embedding that reads them); an all-ones mask. Run-time dims at their summary's sizes."""
    rng = np.random.default_rng(seed)
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    sizes = traced(model)
    feeds = {}
    for value in model.graph.input:
        shape = concrete(value, sizes)
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(shape, dtype=np.int64)
        else:
            table = next(n.input[0] for n in model.graph.node
                         if n.op_type == "Gather" and n.input[1] == value.name)
            feeds[value.name] = rng.integers(0, weights[table][0], size=shape, dtype=np.int64)
    return feeds


def float_params(model: onnx.ModelProto) -> int:
    """Elements of float weights; shared scalar constants (Clip bounds, GELU's 0.5) are not weights."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and not t.name.startswith("const."))


@pytest.mark.parametrize("name", NAMES)
def test_small_variant_is_valid_and_runs(name):
    model = small(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    summary = zoo.summarize(name, small=True)
    assert [v.name for v in model.graph.input] == [s.name for s in summary.inputs]
    sizes = traced(model)
    assert [concrete(v, sizes) for v in model.graph.output] == [s.shape for s in summary.outputs]
    assert float_params(model) == summary.num_params
    outputs = session(model).run(None, make_feeds(model))
    for value, out in zip(model.graph.output, outputs, strict=True):
        assert out.shape == concrete(value, sizes)
        assert np.isfinite(out).all()
        assert 1e-3 < np.abs(out).max() < 100, (name, value.name, np.abs(out).max())


@pytest.mark.parametrize("name", NAMES)
def test_nodes_and_tensors_are_named_uniquely(name):
    graph = small(name).graph
    node_names = [n.name for n in graph.node]
    assert all(node_names) and len(set(node_names)) == len(node_names)
    outputs = [o for n in graph.node for o in n.output]
    assert all(outputs) and len(set(outputs)) == len(outputs)
    # Every intermediate tensor carries its shape, so tools need no shape inference.
    described = {v.name for v in graph.value_info} | {v.name for v in graph.output}
    assert set(outputs) <= described
    assert not set(outputs) & {t.name for t in graph.initializer}


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_other_seed_other_weights(name):
    first = small(name).SerializeToString()
    assert zoo.build_small(name).SerializeToString() == first
    other = zoo.build_small(name, seed=1)
    assert [n.name for n in other.graph.node] == [n.name for n in small(name).graph.node]
    weights = {t.name: numpy_helper.to_array(t) for t in small(name).graph.initializer}
    changed = [t.name for t in other.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and t.name.endswith(".weight")
               and not np.array_equal(weights[t.name], numpy_helper.to_array(t))]
    num_weights = sum(1 for t in other.graph.initializer if t.name.endswith(".weight"))
    assert len(changed) == num_weights


def test_bytes_are_identical_across_processes():
    code = ("import hashlib, splitinfer.zoo as z; "
            "print(hashlib.sha256(z.build_small('detector').SerializeToString()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == hashlib.sha256(small("detector").SerializeToString()).hexdigest()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2", "detector"])
def test_batch_norms_keep_activations_order_one(name):
    """On inputs it never saw, every BatchNormalization output stays O(1): its statistics fit."""
    model = onnx.ModelProto()
    model.CopyFrom(small(name))
    bn_outputs = [n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"]
    shapes = {v.name: v for v in model.graph.value_info}
    model.graph.output.extend(shapes[o] for o in bn_outputs)
    sess = session(model)
    for seed in (11, 12):
        results = sess.run(bn_outputs, make_feeds(model, seed))
        mean_squares = [float(np.mean(r.astype(np.float64) ** 2)) for r in results]
        assert min(mean_squares) > 0.05 and max(mean_squares) < 20, (name, mean_squares)


@pytest.mark.parametrize("opset", [13, 16, 18, 21])
@pytest.mark.parametrize("name", ["vit_b16", "bert", "detector", "mobilenetv2", "gpt2", "llama"])
def test_other_opsets_give_the_same_function(name, opset):
    model = zoo.build_small(name, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    feeds = make_feeds(model)
    got = session(model).run(None, feeds)
    want = session(small(name)).run(None, feeds)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_width_depth_resolution_change_the_model():
    model = zoo.build("resnet18", width=0.25, depth=0.5, resolution=64)
    assert dims(model.graph.input[0]) == (1, 3, 64, 64)
    # stem, 4 basic blocks of 2 convs, 3 downsample shortcuts
    assert sum(n.op_type == "Conv" for n in model.graph.node) == 1 + 4 * 2 + 3
    assert model.graph.initializer[0].dims == [16, 3, 7, 7]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["splitinfer.zoo"])
    assert meta["width"] == 0.25 and meta["resolution"] == 64 and meta["small"] is False
    text = zoo.build("bert", width=0.125, depth=0.1, resolution=32)
    assert [dims(v) for v in text.graph.input] == [(1, 32), (1, 32)]
    assert dims(text.graph.output[0]) == (1, 96)
    detector = zoo.build("detector", width=0.125, depth=0.34, resolution=416)
    assert [dims(v) for v in detector.graph.output] == [(1, 255, 26, 26), (1, 255, 13, 13)]


def test_bad_arguments_raise_one_clear_error():
    with pytest.raises(ModelError, match=r"unknown zoo model 'resnet1'.*vgg16, resnet18"):
        zoo.build("resnet1")
    with pytest.raises(ModelError, match="width multiplier 0"):
        zoo.build("resnet18", width=0)
    with pytest.raises(ShapeError, match="multiple of 32"):
        zoo.build("resnet18", resolution=100)
    with pytest.raises(ShapeError, match="sequence length 0"):
        zoo.build("bert", resolution=0)
    with pytest.raises(ModelError, match="opset 12"):
        zoo.build_small("vgg16", opset=12)
    with pytest.raises(ModelError, match="2 GB"):
        zoo.build("vgg16", width=3)
    with pytest.raises(ModelError, match="seed"):
        zoo.build_small("vgg16", seed=-1)
    with pytest.raises(ModelError):
        zoo.describe("nope")


# Published parameter counts (torchvision, timm, Hugging Face) and multiply-accumulates at the
# default input. Parameters here include BatchNormalization's running statistics (0.2-1% more).
REAL = {
    "vgg16": (138.36e6, 15.47e9),
    "resnet18": (11.69e6, 1.81e9),
    "resnet50": (25.56e6, 4.09e9),
    "mobilenetv2": (3.50e6, 0.30e9),
    "vit_b16": (86.57e6, 17.56e9),
    "bert": (109.48e6, 11.17e9),
}


@pytest.mark.parametrize("name", list(REAL))
def test_full_size_counts_match_the_real_architectures(name):
    params, macs = REAL[name]
    summary = zoo.summarize(name)
    assert summary.num_params == pytest.approx(params, rel=0.02)
    assert summary.num_macs == pytest.approx(macs, rel=0.05)


def test_full_size_detector_shapes():
    summary = zoo.summarize("detector")
    assert [s.shape for s in summary.outputs] == [(1, 255, 40, 40), (1, 255, 20, 20)]
    assert 5e6 < summary.num_params < 9e6  # YOLOv5s: 7.2M with a third head


def test_describe_is_one_line_with_sizes():
    for name in NAMES:
        line = zoo.describe(name)
        assert "\n" not in line and "M params" in line and "GFLOPs" in line


@pytest.mark.slow
# Models over protobuf's 2 GB cannot be built in memory: test_zoo_external saves and runs those.
@pytest.mark.parametrize("name", [n for n in NAMES if zoo.external_data_file(n, "m.onnx") is None])
def test_full_size_runs_with_bounded_outputs(name):
    model = zoo.build(name)
    assert float_params(model) == zoo.summarize(name).num_params
    data = model.SerializeToString()
    assert len(data) < 2**31
    outputs = session(data).run(None, make_feeds(model))
    for out in outputs:
        assert np.isfinite(out).all()
        assert 0.1 < np.abs(out).max() < 1e3, (name, np.abs(out).max())
