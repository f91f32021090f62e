"""The zoo's small decoders loaded for splitting: at a prefill size (past 0) and a decode size."""

from __future__ import annotations

import onnx

from splitinfer.graph import Model, analyze, load_model, split
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


def decoder_stages(model: Model, devices: str = "abc") -> list[StageSpec]:
    """The decoder cut into len(devices) partitions at evenly spaced candidate cuts, one per device."""
    analysis = analyze(model)
    n = len(devices)
    cuts = [analysis.cuts[k * len(analysis.cuts) // n].position for k in range(1, n)]
    parts = split(model, cuts, analysis)
    return [StageSpec(k, device, part.to_bytes(), part.inputs, part.outputs,
                      state=tuple((p.past, p.present) for p in part.state))
            for k, (device, part) in enumerate(zip(devices, parts, strict=True))]
