"""State pairs (a decoder's cache) stay in the partition that computes them (graph/state.py; issue 20)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.stateful_models import WIDTH, cached_chain, empty_past

from splitinfer.errors import CutError
from splitinfer.graph import analyze, load_model, run_chain, split, verify
from splitinfer.graph.liveness import compute_liveness
from splitinfer.graph.state import StatePair, find_state

LAYERS = 3
PREFILL = {"x": [1, 4, WIDTH], **{f"past_key_values.{i}.key": [1, 1, 0, WIDTH] for i in range(LAYERS)}}
DECODE = {"x": [1, 1, WIDTH], **{f"past_key_values.{i}.key": [1, 1, 4, WIDTH] for i in range(LAYERS)}}


def _load(proto):
    return load_model(proto, input_shapes=PREFILL, sizes=[DECODE])


def _at_layers(model, analysis):
    """Cut positions right after each layer's Relu but the last."""
    order = list(analysis.order)
    return [order.index(f"l{i}.relu") + 1 for i in range(LAYERS - 1)]


def test_pasts_pair_with_presents_by_huggingface_names():
    pairs = find_state(cached_chain().graph)
    assert pairs == tuple(StatePair(f"past_key_values.{i}.key", f"present.{i}.key") for i in range(LAYERS))
    graph = cached_chain().graph
    graph.output.pop()  # present.2.key gone: its past pairs with nothing
    assert len(find_state(graph)) == LAYERS - 1


def test_state_is_never_live_across_a_cut():
    model = _load(cached_chain())
    analysis = analyze(model)
    live = compute_liveness(model, analysis.order)
    for p in model.state:  # a past is fed where it is read; a present lives only until its layer reads it
        assert p.past not in live.birth and live.death[p.present] < len(analysis.order)
    for cut in analysis.cuts:
        assert not {t.name for t in cut.tensors} & {p.past for p in model.state}


def test_each_partition_holds_its_layers_state_and_two_steps_equal_the_whole_model():
    model = _load(cached_chain())
    analysis = analyze(model)
    parts = split(model, _at_layers(model, analysis), analysis)
    owned = [[p.past for p in part.state] for part in parts]
    assert owned == [[f"past_key_values.{i}.key"] for i in range(LAYERS)]
    for part in parts:  # only its own state in and out; the rest is the hidden state
        names = {s.name for s in (*part.inputs, *part.outputs)}
        others = {n for p in model.state if p not in part.state for n in (p.past, p.present)}
        assert not names & others
    whole = ort.InferenceSession(cached_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in whole.get_outputs()]
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((1, 4, WIDTH)).astype(np.float32), **empty_past(LAYERS)}
    for _step in range(3):  # prefill, then two decode steps: the cache grows on each partition
        want = dict(zip(names, whole.run(None, feeds), strict=True))
        got = run_chain(parts, feeds)
        assert set(got) == set(names)
        for n in names:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-5, atol=1e-6)
        feeds = {"x": rng.standard_normal((1, 1, WIDTH)).astype(np.float32),
                 **{p.past: got[p.present] for p in model.state}}
    assert verify(model, parts).ok


def test_a_cut_that_separates_a_layers_cache_is_refused():
    model = _load(cached_chain(past_read_by=2))
    analysis = analyze(model)
    # cut after layers 0 and 1 (by tensor): layer 2 reads layer 0's past, in another partition
    with pytest.raises(CutError, match=r"state past_key_values\.0\.key"):
        split(model, [["l0.out"], ["l1.out"]], analysis)
    # and no candidate cut lies between the nodes that use that cache
    uses = [analysis.order.index(n) for n in ("l0.cache", "l2.old")]
    assert not [c for c in analysis.candidates if min(uses) < c.position <= max(uses)]


def test_a_model_without_state_has_none():
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["past_x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("past_x", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])])
    assert find_state(graph) == ()


def test_a_decoder_given_no_shapes_loads_at_its_prefill_and_a_decode_step_and_other_models_do_not():
    from splitinfer.errors import ShapeError
    from splitinfer.graph.state import decoder_sizes

    proto = cached_chain()
    graph = onnx.ModelProto()
    graph.CopyFrom(proto)
    prefill, decode = decoder_sizes(graph.graph, find_state(graph.graph), prompt_len=5, pasts=[5])
    assert prefill["x"] == [1, 5, WIDTH] and prefill["past_key_values.0.key"] == [1, 1, 0, WIDTH]
    assert decode["x"] == [1, 1, WIDTH] and decode["past_key_values.0.key"] == [1, 1, 5, WIDTH]
    model = load_model(proto)  # at its prefill and decode steps after 16 and LONG_PAST tokens
    from splitinfer.graph.state import LONG_PAST
    assert [dict(s)["past_key_values.0.key"][2] for s in model.sizes] == [0, 16, LONG_PAST]
    # the same graph without its state pairs is no decoder: its open dims must be given
    graph.graph.output.pop()
    del graph.graph.output[1:]
    with pytest.raises(ShapeError):
        load_model(graph)


def test_a_decoders_attention_mask_spans_its_past_and_new_tokens():
    """optimum's ``attention_mask`` is [batch, past + new tokens]: at a decode step one longer than the past
    (an export's mask arithmetic fails otherwise); ``position_ids``, like the ids, spans the new tokens."""
    from splitinfer.graph.state import decoder_sizes

    proto = cached_chain()
    for name, dims in (("attention_mask", ["batch", "total"]), ("position_ids", ["batch", "seq"])):
        proto.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, dims))
    prefill, decode = decoder_sizes(proto.graph, find_state(proto.graph), prompt_len=5, pasts=[5])
    assert (prefill["attention_mask"], prefill["position_ids"]) == ([1, 5], [1, 5])
    assert (decode["attention_mask"], decode["position_ids"]) == ([1, 6], [1, 1])
    for size in map(dict, load_model(proto).sizes):  # the prefill and each decode step
        assert size["attention_mask"] == (1, size["past_key_values.0.key"][2] + size["x"][1])
