"""Decoders (the zoo's small ones, Hugging Face exports) loaded for splitting: at a prefill size (past 0)
and a decode size; their stages cut evenly or right after each layer's cache."""

from __future__ import annotations

import onnx

from splitinfer.graph import Analysis, Model, analyze, load_model, split
from splitinfer.graph.liveness import state_nodes
from splitinfer.runtime import StageSpec


def decoder_shapes(proto: onnx.ModelProto, seq: int, past: int) -> dict[str, list[int]]:
    """input_ids [1, seq] and every past [1, kv_heads, past, head_dim]."""
    shapes = {"input_ids": [1, seq]}
    for value in proto.graph.input:
        if value.name.startswith("past_key_values."):
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
            shapes[value.name] = [1, dims[1], past, dims[3]]
    return shapes


def load_decoder(proto: onnx.ModelProto, prompt_len: int = 8) -> Model:
    return load_model(proto, input_shapes=decoder_shapes(proto, prompt_len, 0),
                      sizes=[decoder_shapes(proto, 1, prompt_len)])


def cuts_after_layers(model: Model, analysis: Analysis) -> list[int]:
    """The first candidate cut after the last node that uses each layer's cache (``past_key_values.N.*``
    of one N): a stage per layer's cache, then one for the rest."""
    where = {node: k for k, node in enumerate(analysis.order)}
    last: dict[str, int] = {}
    for pair in model.state:
        layer = pair.past.split(".")[1]
        uses = [where[n] for n in state_nodes(model.graph_index, pair) if n in where]
        last[layer] = max(last.get(layer, 0), *uses)
    positions = [c.position for c in analysis.candidates]
    return sorted({next(p for p in positions if p > end) for end in last.values()})


def decoder_stages(model: Model, devices: str = "abc", by_layer: bool = False) -> list[StageSpec]:
    """The decoder cut into len(devices) partitions, one per device: at evenly spaced candidate cuts, or
    (``by_layer``) at :func:`cuts_after_layers`, which must give len(devices) - 1 cuts."""
    analysis = analyze(model)
    n = len(devices)
    cuts = cuts_after_layers(model, analysis) if by_layer else \
        [analysis.cuts[k * len(analysis.cuts) // n].position for k in range(1, n)]
    parts = split(model, cuts, analysis)
    return [StageSpec(k, device, part.to_bytes(), part.inputs, part.outputs,
                      state=tuple((p.past, p.present) for p in part.state))
            for k, (device, part) in enumerate(zip(devices, parts, strict=True))]
