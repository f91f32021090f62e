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

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from splitinfer.generation.steps import ATTENTION_MASK

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


DEFAULT_PROMPT_LEN = 16
# A decoder given no shapes is also loaded at a decode step after this long a past: a step reads its whole
# past, and two pasts give the line its time follows (profile/generation.py).
LONG_PAST = 128


def decoder_sizes(graph: onnx.GraphProto, pairs: Sequence[StatePair], prompt_len: int = DEFAULT_PROMPT_LEN,
                  pasts: Sequence[int] | None = None) -> list[dict[str, list[int]]] | None:
    """A decoder's sizes when its inputs leave dims open: the prefill (batch 1, ``prompt_len`` new
    tokens, empty pasts), then a decode step (one new token) after each of ``pasts`` tokens (default:
    ``prompt_len`` and :data:`LONG_PAST`); None when every dim is fixed. Loaded at all of them, its
    partitions keep the sequence and past axes open (graph/sizes.py). The layout is Hugging Face's: a
    past is [batch, heads, past, head_dim]; ``attention_mask`` is [batch, past + new tokens]; any other
    input's first axis is the batch, its other open axes the new tokens."""
    if not pairs:  # not a decoder: its open dims are the caller's to give
        return None
    past_names = {p.past for p in pairs}
    initializers = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if value.name in past_names and (len(dims) != 4 or None in (dims[1], dims[3])):
            return None
        inputs.append((value.name, dims))
    if not any(None in dims for _, dims in inputs):
        return None

    def size(new: int, past: int) -> dict[str, list[int]]:
        out = {}
        for name, dims in inputs:
            if name in past_names:
                out[name] = [1, dims[1], past, dims[3]]
            else:  # the mask spans the past too, or the export's mask arithmetic (against the cache) fails
                tokens = past + new if name == ATTENTION_MASK else new
                out[name] = [d if d is not None else 1 if a == 0 else tokens for a, d in enumerate(dims)]
        return out

    return [size(prompt_len, 0), *(size(1, past) for past in (pasts or (prompt_len, LONG_PAST)))]


def is_past(name: str) -> bool:
    """Whether an input named ``name`` is named like a past (its pair is checked by :func:`find_state`)."""
    return any(name.startswith(past) for past, _ in _PREFIXES)


def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else -1
