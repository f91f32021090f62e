"""The zoo's decoders (gpt2, llama): optimum's interface with a key/value cache, sizes chosen at run time.

The full-size llama (1.1B parameters, 4.4 GB) is saved and run only with SPLITINFER_BIG_TESTS=1
(about a minute and 4.4 GB of disk); the rest runs the small variants in milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from splitinfer import zoo
from splitinfer.errors import ShapeError

DECODERS = ["gpt2", "llama"]
LAYERS, HIDDEN, HEADS, VOCAB = 2, 64, 4, 1000
KV_HEADS = {"gpt2": 4, "llama": 2}
HEAD_DIM = HIDDEN // HEADS
_SMALL: dict[str, onnx.ModelProto] = {}


def small(name: str) -> onnx.ModelProto:
    if name not in _SMALL:
        _SMALL[name] = zoo.build_small(name)
    return _SMALL[name]


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def empty_past(name: str, batch: int = 1, length: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (batch, KV_HEADS[name], length, HEAD_DIM)
    return {f"past_key_values.{i}.{kind}": rng.standard_normal(shape).astype(np.float32)
            for i in range(LAYERS) for kind in ("key", "value")}


def run(sess: ort.InferenceSession, ids: np.ndarray, past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input_ids": ids, **past}), strict=True))


def presents_as_past(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name.replace("present.", "past_key_values."): value for name, value in out.items()
            if name.startswith("present.")}


@pytest.mark.parametrize("name", DECODERS)
def test_the_interface_is_optimums_decoder_with_past(name):
    graph = small(name).graph
    kv = KV_HEADS[name]
    past = [f"past_key_values.{i}.{kind}" for i in range(LAYERS) for kind in ("key", "value")]
    assert [v.name for v in graph.input] == ["input_ids", *past]
    presents = [p.replace("past_key_values", "present") for p in past]
    assert [v.name for v in graph.output] == ["logits", *presents]
    shapes = {v.name: dims(v) for v in [*graph.input, *graph.output]}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert shapes["input_ids"] == ("batch", "sequence_length")
    assert shapes["past_key_values.1.value"] == ("batch", kv, "past_sequence_length", HEAD_DIM)
    assert shapes["logits"] == ("batch", "sequence_length", VOCAB)
    assert shapes["present.1.key"] == ("batch", kv, "total_sequence_length", HEAD_DIM)
    nodes = {n.name for n in graph.node}
    if name == "gpt2":
        assert {"transformer.h.1.attn.c_attn.matmul", "transformer.h.1.mlp.c_fc.matmul", "lm_head"} <= nodes
        # Tied: the LM head reads the token embedding; no other weight of its size.
        assert next(n for n in graph.node if n.name == "lm_head").input[1] == "transformer.wte.weight"
    else:
        weights = {t.name: tuple(t.dims) for t in graph.initializer}
        assert weights["model.layers.1.self_attn.q_proj.weight"] == (HIDDEN, HEADS * HEAD_DIM)
        assert weights["model.layers.1.self_attn.k_proj.weight"] == (HIDDEN, kv * HEAD_DIM)
        assert weights["lm_head.weight"] == (HIDDEN, VOCAB)
        assert not any(t.endswith(".bias") for t in weights)
        assert {"model.layers.1.mlp.down_proj", "model.layers.1.input_layernorm"} <= nodes


@pytest.mark.parametrize("name", DECODERS)
# The traced sizes, then others (totals 7 and 10, not the traced 8).
@pytest.mark.parametrize(("batch", "seq", "past"), [(1, 8, 0), (2, 3, 4), (1, 1, 9)])
def test_every_intermediate_shape_holds_at_other_sizes(name, batch, seq, past):
    """value_info names the run-time dims and pins none: run with every intermediate as an output."""
    model = onnx.ModelProto()
    model.CopyFrom(small(name))
    model.graph.output.extend(model.graph.value_info)
    ids = np.random.default_rng(1).integers(0, VOCAB, (batch, seq), dtype=np.int64)
    out = run(session(model), ids, empty_past(name, batch, past))
    sizes = {"batch": batch, "sequence_length": seq, "past_sequence_length": past,
             "total_sequence_length": past + seq, "batch_x_sequence_length": batch * seq}
    for value in model.graph.output:
        want = tuple(sizes[d] if isinstance(d, str) else d for d in dims(value))
        assert out[value.name].shape == want, value.name


@pytest.mark.parametrize("name", DECODERS)
def test_steps_with_the_cache_equal_the_whole_sequence(name):
    """Prefill 5 tokens, then 2, then 1, each with the presents before as its past: the same logits
    and keys/values as the 8 tokens at once (positions and masking right across steps)."""
    sess = session(small(name))
    ids = np.random.default_rng(2).integers(0, VOCAB, (2, 8), dtype=np.int64)
    whole = run(sess, ids, empty_past(name, batch=2))
    past, logits = empty_past(name, batch=2), []
    for start, end in ((0, 5), (5, 7), (7, 8)):
        out = run(sess, ids[:, start:end], past)
        logits.append(out["logits"])
        past = presents_as_past(out)
    np.testing.assert_allclose(np.concatenate(logits, axis=1), whole["logits"], atol=1e-4, rtol=1e-5)
    for key, value in presents_as_past(whole).items():
        np.testing.assert_allclose(past[key], value, atol=1e-5, err_msg=key)
    assert np.abs(whole["logits"]).std() > 1  # scaled up: greedy margins far above float noise


@pytest.mark.parametrize("name", DECODERS)
def test_a_token_sees_no_later_token(name):
    sess = session(small(name))
    ids = np.random.default_rng(3).integers(0, VOCAB, (1, 6), dtype=np.int64)
    changed = ids.copy()
    changed[0, 4] = (ids[0, 4] + 1) % VOCAB
    a, b = run(sess, ids, empty_past(name))["logits"], run(sess, changed, empty_past(name))["logits"]
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-2


def test_llama_keeps_its_keys_after_the_rotary_embedding():
    """Layer 0's key of one token (its input has no position in it) at positions 0 and 3: the same
    vector turned, pair by pair (i, i + head_dim / 2), by the angle of its position."""
    sess = session(small("llama"))
    token = np.array([[7]], dtype=np.int64)
    at_0 = run(sess, token, empty_past("llama"))["present.0.key"][0, :, -1]
    at_3 = run(sess, token, {k: np.zeros_like(v) for k, v in empty_past("llama", length=3).items()}
               )["present.0.key"][0, :, -1]
    half = HEAD_DIM // 2
    angle = 3.0 / 10000.0 ** (np.arange(half) / half)
    x1, x2 = at_0[:, :half], at_0[:, half:]
    cos, sin = np.cos(angle), np.sin(angle)
    turned = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=1)
    np.testing.assert_allclose(at_3, turned, atol=1e-5)
    assert np.abs(at_3 - at_0).max() > 1e-2


def test_full_size_counts_are_gpt2_small_and_tinyllama():
    """Hugging Face's parameter counts (gpt2, TinyLlama-1.1B); MACs of a 128-token prefill."""
    t = 128
    gpt2 = zoo.summarize("gpt2")
    h, v = 768, 50257
    per_layer = t * h * 3 * h + 2 * t * t * h + t * h * h + 2 * t * h * 4 * h
    assert gpt2.num_params == 124_439_808
    assert gpt2.num_macs == 12 * per_layer + t * h * v
    assert [s.shape for s in gpt2.inputs[:2]] == [(1, 128), (1, 12, 0, 64)]
    assert [s.shape for s in gpt2.outputs[:2]] == [(1, 128, 50257), (1, 12, 128, 64)]
    llama = zoo.summarize("llama")
    h, v, kv, inter = 2048, 32000, 4 * 64, 5632
    per_layer = 2 * t * h * h + 2 * t * h * kv + 2 * t * t * h + 3 * t * h * inter
    assert llama.num_params == 1_100_048_384
    assert llama.num_macs == 22 * per_layer + t * h * v
    assert len(llama.inputs) == 1 + 44 and llama.inputs[1].shape == (1, 4, 0, 64)
    assert zoo.external_data_file("llama", "l.onnx") is not None  # 4.4 GB: only save() writes it
    assert zoo.external_data_file("gpt2", "g.onnx") is None
    assert zoo.summarize("gpt2", resolution=16).inputs[0].shape == (1, 16)


def test_prompt_length_is_bounded_by_positions_and_descriptions_group_layers():
    with pytest.raises(ShapeError, match=r"prompt length 1025.*from 1 to 1024"):
        zoo.summarize("gpt2", resolution=1025)
    line = zoo.describe("llama")
    assert "past_key_values.{0..21}.key[1x4x0x64]" in line and "1100.0M params" in line
    assert "past_key_values.3." not in line


@pytest.mark.skipif(os.environ.get("SPLITINFER_BIG_TESTS") != "1",
                    reason="writes the full-size llama, 4.4 GB (a minute or more): SPLITINFER_BIG_TESTS=1")
def test_full_size_llama_is_saved_with_external_data_and_runs(tmp_path):
    path, data = tmp_path / "llama.onnx", tmp_path / "llama.data"
    try:
        code = ("import resource, sys; from splitinfer import zoo; zoo.save('llama', sys.argv[1]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             timeout=900, check=True)
        weight_bytes = zoo.summarize("llama").weight_bytes
        assert data.stat().st_size >= weight_bytes - 1_000_000 and path.stat().st_size < 2_000_000
        assert int(out.stdout.split()[-1]) < 0.25 * weight_bytes  # one weight at a time
        sess = session(str(path))
        ids = np.array([[1, 450, 4996, 17354]], dtype=np.int64)
        past = {i.name: np.zeros((1, 4, 0, 64), np.float32) for i in sess.get_inputs()[1:]}
        result = run(sess, ids, past)
        logits = result["logits"]
        assert logits.shape == (1, 4, 32000) and np.isfinite(logits).all()
        assert result["present.21.value"].shape == (1, 4, 4, 64)
        top = np.sort(logits[0], axis=-1)
        assert (top[:, -1] - top[:, -2] > 1e-3).all()
    finally:
        data.unlink(missing_ok=True)  # pytest keeps the last runs' folders: not 4.4 GB each
