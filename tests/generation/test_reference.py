"""The whole-model reference on the zoo's decoders: its cache gives what recomputing everything gives."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from splitinfer import zoo
from splitinfer.errors import ModelError
from splitinfer.generation import Sampling, generate, whole_model_step

DECODERS = ["gpt2", "llama"]
PROMPT = [5, 17, 300, 42, 999, 0]
_SMALL: dict[str, onnx.ModelProto] = {}


def small(name: str) -> onnx.ModelProto:
    if name not in _SMALL:
        _SMALL[name] = zoo.build_small(name)
    return _SMALL[name]


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def no_cache_step(model: onnx.ModelProto):
    """A ``run_step`` that keeps the tokens, not the cache: every step runs the whole sequence with an
    empty past and takes the last position's logits."""
    sess = session(model)
    empty = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in sess.get_inputs()[1:]}
    tokens: list[int] = []

    def run_step(token_ids: np.ndarray) -> np.ndarray:
        tokens.extend(np.asarray(token_ids).ravel().tolist())
        (logits,) = sess.run(["logits"], {"input_ids": np.array([tokens], np.int64), **empty})
        return logits[0, -1]

    return run_step


@pytest.mark.parametrize("name", DECODERS)
def test_greedy_with_the_cache_equals_recomputing_everything(name):
    """64 greedy tokens: the same ids, logits within 1e-4, and the top logit clear of the second."""
    model = small(name)
    cached = list(generate(whole_model_step(model), PROMPT, Sampling(max_new_tokens=64)))
    recomputed = list(generate(no_cache_step(model), PROMPT, Sampling(max_new_tokens=64)))
    assert len(cached) == 64
    assert [t for t, _ in cached] == [t for t, _ in recomputed]
    for (_, a), (_, b) in zip(cached, recomputed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert len({t for t, _ in cached}) > 5  # not one token over and over
    top2 = np.sort(np.stack([row for _, row in cached]), axis=1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    assert (margins > 1e-3).mean() >= 0.9 and np.median(margins) > 0.1, margins


@pytest.mark.parametrize("name", DECODERS)
def test_generation_is_deterministic_and_a_seed_repeats(name):
    model = small(name)
    step_session = session(model)  # one session, a new cache per sequence
    greedy = [t for t, _ in generate(whole_model_step(step_session), PROMPT, Sampling(max_new_tokens=64))]
    assert greedy == [t for t, _ in generate(whole_model_step(model), PROMPT, Sampling(max_new_tokens=64))]
    sampled = Sampling(temperature=1.0, top_k=50, top_p=0.9, seed=11, max_new_tokens=32)
    first = [t for t, _ in generate(whole_model_step(step_session), PROMPT, sampled)]
    assert first == [t for t, _ in generate(whole_model_step(step_session), PROMPT, sampled)]
    other = Sampling(temperature=1.0, top_k=50, top_p=0.9, seed=12, max_new_tokens=32)
    assert first != [t for t, _ in generate(whole_model_step(step_session), PROMPT, other)]
    top1 = Sampling(temperature=2.0, top_k=1, seed=5, max_new_tokens=64)
    assert greedy == [t for t, _ in generate(whole_model_step(step_session), PROMPT, top1)]


def test_a_stop_id_stops_the_model(tmp_path):
    model = small("llama")
    greedy = [t for t, _ in generate(whole_model_step(model), PROMPT, Sampling(max_new_tokens=20))]
    stop = greedy[5]
    cut = greedy.index(stop) + 1
    path = tmp_path / "llama.onnx"
    onnx.save_model(model, path)  # a model file works as well as a proto
    got = [t for t, _ in generate(whole_model_step(path), PROMPT, Sampling(stop_ids=(stop,)))]
    assert got == greedy[:cut]


def test_a_model_without_a_cache_is_refused():
    x = helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, 4])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.INT64, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])],
                                                "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="not a decoder with a cache: no past_key_values inputs"):
        whole_model_step(model)
    with pytest.raises(ModelError, match="ONNX Runtime cannot open"):
        whole_model_step(b"not onnx")
