"""Every zoo model (small variant): random candidate cuts reproduce the whole model (a decoder's: with
each partition keeping its layers' cache, none cut inside a layer's cache)."""

from __future__ import annotations

import onnx
import pytest
from helpers.decoders import load_decoder
from hypothesis import given, settings
from hypothesis import strategies as st

import splitinfer.zoo as zoo
from splitinfer.graph import analyze, load_model, split, verify

NAMES = zoo.names()
_CACHE: dict[str, tuple] = {}


def _model(name: str):
    if name not in _CACHE:
        proto = zoo.build_small(name)
        # a decoder: at its prefill (an empty cache), its decode step as another size
        decoder = any(i.name.startswith("past_key_values.") for i in proto.graph.input)
        model = load_decoder(proto) if decoder else load_model(proto)
        _CACHE[name] = (model, analyze(model, max_blocks=0))
    return _CACHE[name]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=12)
@given(data=st.data())
def test_random_cuts_reproduce_the_model(name, data):
    model, analysis = _model(name)
    positions = [c.position for c in analysis.candidates]
    chosen = data.draw(st.sets(st.sampled_from(positions), min_size=1, max_size=min(5, len(positions))))
    parts = split(model, sorted(chosen), analysis)
    report = verify(model, parts)
    assert report.ok and report.max_abs <= 1e-4, report


@pytest.mark.parametrize("name", NAMES)
def test_all_blocks_standalone(name):
    model, _ = _model(name)
    analysis = analyze(model)
    parts = split(model, analysis.cuts, analysis)
    assert len(parts) == len(analysis.blocks)
    for part in parts:
        onnx.checker.check_model(part.proto, full_check=True)
    assert verify(model, parts).ok
