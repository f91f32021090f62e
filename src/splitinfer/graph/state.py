"""State a model carries from one call to the next: a decoder's key/value cache.

A decoder exported with its cache (Hugging Face's naming) takes, per layer, ``past_key_values.N.key``
and ``.value`` and returns ``present.N.key`` and ``.value``: what the next step feeds back as its past.
Such an input and output make a *state pair*. When the model is split, a state pair belongs to the
partition whose nodes read the past and make the present (a layer is never cut in two: its past and
present are read and made by the same nodes' segment), so the cache stays on the device that computes
it: a state never crosses a cut and never travels to the coordinator (:mod:`splitinfer.graph.liveness`
does not count it live, :mod:`splitinfer.graph.partition` gives it to its partition alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

# (prefix of the input, prefix of the output it pairs with): optimum's names, and older exports'.
_PREFIXES = (("past_key_values.", "present."), ("past_key_values_", "present_"), ("past.", "present."),
             ("past_", "present_"))


@dataclass(frozen=True)
class StatePair:
    """An input fed back from an output at the next call: ``past`` <- ``present``."""

    past: str
    present: str


def find_state(graph: onnx.GraphProto) -> tuple[StatePair, ...]:
    """The graph's state pairs, in the order of its inputs: an input named like a past (``past_key_values.N.
    key``, ``past.N``, ``past_...``) whose present (``present.N.key``, ...) is an output of the same type."""
    outputs = {o.name: o for o in graph.output}
    initializers = {t.name for t in graph.initializer}
    pairs = []
    for i in graph.input:
        if i.name in initializers:
            continue
        for past, present in _PREFIXES:
            if i.name.startswith(past):
                name = present + i.name[len(past):]
                out = outputs.get(name)
                if out is not None and _elem_type(out) == _elem_type(i):
                    pairs.append(StatePair(i.name, name))
                break
    return tuple(pairs)


def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else -1
