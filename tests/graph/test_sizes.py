"""Symbolic batch and sequence dims kept open: one chain of partitions serves every size given."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers.sized_models import batch_and_sequence, dynamic_batch

from splitinfer.cli._model import parse_sizes
from splitinfer.errors import CutError, ShapeError
from splitinfer.graph import analyze, load_model, split
from splitinfer.graph.sizes import describe_size
from splitinfer.graph.verify import run_chain, verify

ONE, EIGHT = {"image": (1, 3, 32, 32)}, {"image": (8, 3, 32, 32)}


def _whole(proto, feeds):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_the_axes_that_differ_between_sizes_stay_open_in_every_partition():
    model = load_model(dynamic_batch(), input_shapes=ONE, sizes=[EIGHT])
    assert model.sizes == (ONE, EIGHT)
    assert model.symbolic_dims["image"] == (0,) and model.symbolic_dims["logits"] == (0,)
    assert all(axes == (0,) for axes in model.symbolic_dims.values())  # only the batch axis varies
    assert not model.dynamic_dims  # and nothing depends on the input values
    analysis = analyze(model)
    parts = split(model, [c.position for c in analysis.cuts][:3], analysis)
    for part in parts:
        for spec in (*part.inputs, *part.outputs):
            assert spec.shape[0] == -1 and spec.seen is not None and spec.seen[0] == 1
    for size in model.sizes:
        feeds = model.make_feeds(seed=5, shapes=size)
        (want,) = _whole(dynamic_batch(), feeds)
        got = run_chain(parts, feeds)["logits"]
        assert got.shape == (size["image"][0], 10)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_one_size_fixes_the_dims_as_before():
    model = load_model(dynamic_batch(), input_shapes=ONE)
    assert model.sizes == (ONE,) and not model.symbolic_dims
    parts = split(model, [analyze(model).cuts[0].position])
    assert all(d >= 0 for p in parts for s in (*p.inputs, *p.outputs) for d in s.shape)


def test_batch_and_sequence_both_stay_open_and_shapes_computed_inside_are_not_frozen():
    model = load_model(batch_and_sequence(), input_shapes={"x": (1, 4, 8)}, sizes=[{"x": (3, 10, 8)}])
    assert model.symbolic_dims["x"] == (0, 1) and model.symbolic_dims["y"] == (0,)
    analysis = analyze(model, max_blocks=0)
    # cut after the Shape of r: its value must travel (or be recomputed), never fold to (1, 4, 16)
    parts = split(model, [c.position for c in analysis.cuts], analysis)
    assert len(parts) >= 3
    report = verify(model, parts)
    assert report.ok and report.input_sizes == ({"x": (1, 4, 8)}, {"x": (3, 10, 8)})
    feeds = {"x": np.random.default_rng(0).standard_normal((5, 7, 8)).astype(np.float32)}  # not given
    np.testing.assert_allclose(run_chain(parts, feeds)["y"], _whole(batch_and_sequence(), feeds)[0],
                               atol=1e-5)


def test_a_model_that_fixes_its_batch_inside_is_refused_at_that_size():
    # The zoo's BERT reshapes to a constant (1, seq, heads, dim): it cannot serve batch 8.
    proto = dynamic_batch("bert")
    ones = {"input_ids": (1, 16), "attention_mask": (1, 16)}
    model = load_model(proto, input_shapes=ones, sizes=[{"input_ids": (8, 16), "attention_mask": (8, 16)}])
    parts = split(model, [analyze(model).cuts[0].position])
    with pytest.raises(ShapeError, match=r"does not run at input_ids=8x16, attention_mask=8x16"):
        verify(model, parts)


def test_bad_sizes_are_refused_naming_the_argument():
    with pytest.raises(ShapeError, match=r"sizes= is not a list of input shapes"):
        load_model(dynamic_batch(), input_shapes=ONE, sizes=EIGHT)
    with pytest.raises(ShapeError, match=r"sizes= image=8x3x16x16: .*contradicts the model"):
        load_model(dynamic_batch(), input_shapes=ONE, sizes=[{"image": (8, 3, 16, 16)}])
    with pytest.raises(CutError, match=r"cuts_at= holds position 0, which is not a candidate cut"):
        analyze(load_model(dynamic_batch(), input_shapes=ONE), cuts_at=[0])


def test_input_shape_given_once_per_size_makes_the_sizes():
    sizes = parse_sizes(["ids=1,16", "mask=1,16", "ids=8,16", "mask=8,16", "pos=16"])
    assert sizes == [{"ids": (1, 16), "mask": (1, 16), "pos": (16,)},
                     {"ids": (8, 16), "mask": (8, 16), "pos": (16,)}]
    assert parse_sizes(None) == [{}]
    with pytest.raises(ShapeError, match=r"gives input 'b' 2 times, another input 3 times"):
        parse_sizes(["a=1", "a=2", "a=3", "b=1", "b=2"])


def test_a_size_names_each_input_once_and_a_decoders_pasts_as_one_entry():
    pasts = {f"past_key_values.{i}.{kind}": [1, 12, 16, 64] for i in range(6) for kind in ("key", "value")}
    assert describe_size({"input_ids": [1, 1], **pasts}) == \
        "input_ids=1x1, past_key_values.*.key=1x12x16x64 (x6), past_key_values.*.value=1x12x16x64 (x6)"
    assert describe_size({"x": [8, 3, 32, 32], "mask": [8, 16]}) == "x=8x3x32x32, mask=8x16"
    # names alike but dims not: each its own, nothing hidden
    assert describe_size({"a1": [1, 2], "a2": [1, 3]}) == "a1=1x2, a2=1x3"
