"""Decoder-only transformers with a key/value cache: GPT-2 small and a Llama (TinyLlama-1.1B's sizes).

The interface is the one Hugging Face's exports have (optimum's decoder "with past"), so a model
from the zoo and an exported one are split, served and driven alike:

- inputs: ``input_ids`` int64 [batch, sequence_length]; per layer i ``past_key_values.{i}.key`` and
  ``.value`` float32 [batch, kv_heads, past_sequence_length, head_dim] (empty at the first step);
- outputs: ``logits`` [batch, sequence_length, vocab]; per layer ``present.{i}.key`` and ``.value``
  [batch, kv_heads, total_sequence_length, head_dim]: the past with this step's keys/values appended
  (Llama's keys after the rotary embedding, as Hugging Face keeps them).

The four sizes are symbolic dims (:class:`~splitinfer.zoo.tensors.Dim`): traced at batch 1,
``cfg.resolution`` new tokens and an empty past (the prefill of a prompt that long) for the counts
and summaries, never written as numbers into the graph. There is no ``position_ids`` and no
``attention_mask`` input (one sequence, no padding): token t of a step sits at position
past_sequence_length + t, which each layer reads from the shape of its own past keys (GPT-2's
position embedding from layer 0's), and attends to every past position and to this step's tokens up
to itself.

The logits are spread wide (a standard deviation of about 5: Llama's head drawn so, GPT-2's tied
head through Gemm's alpha) so that greedy decoding's top logit leads the second by far more than
the float differences between a split run and the whole model: seeded weights then give a token
sequence that splitting must reproduce exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.config import ZooConfig, scale_channels, scale_depth
from splitinfer.zoo.tensors import BOOL, FLOAT, INT64, Dim
from splitinfer.zoo.transformer import mlp

BATCH, SEQUENCE, PAST, TOTAL = "batch", "sequence_length", "past_sequence_length", "total_sequence_length"
# The logits' second moment: a standard deviation of 5 puts the top two of 1,000 or 50,000 logits
# about 1 apart on a typical greedy step (0.01 at the closest of 64), 1e4 to 1e6 times the float
# noise of a split run.
LOGIT_M2 = 25.0
ROPE_BASE = 10000.0
EMBED_STD = 0.02  # GPT-2's initializer range


@dataclass(frozen=True)
class DecoderSize:
    """A decoder's dimensions; ``intermediate`` is the MLP's width."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


GPT2 = DecoderSize(layers=12, hidden=768, heads=12, kv_heads=12, intermediate=3072, vocab=50257,
                   max_positions=1024)
LLAMA = DecoderSize(layers=22, hidden=2048, heads=32, kv_heads=4, intermediate=5632, vocab=32000,
                    max_positions=2048)


def decoder_size(full: DecoderSize, cfg: ZooConfig) -> DecoderSize:
    """``full`` at ``cfg``'s width and depth: at least 4 heads of at least 8, the key/value heads in
    the same proportion (at least 2, dividing the heads), the MLP's ratio kept; ``cfg.vocab_size``."""
    heads = max(4, scale_depth(full.heads, cfg.width))
    head_dim = max(8, math.floor(full.hidden * cfg.width / heads + 0.5))
    hidden = heads * head_dim
    kv_heads = heads if full.kv_heads == full.heads else max(2, heads * full.kv_heads // full.heads)
    while heads % kv_heads:
        kv_heads -= 1
    intermediate = scale_channels(full.intermediate * hidden // full.hidden, 1.0)
    return replace(full, layers=scale_depth(full.layers, cfg.depth), hidden=hidden, heads=heads,
                   kv_heads=kv_heads, intermediate=intermediate, vocab=cfg.vocab_size)


@dataclass(frozen=True)
class _Dims:
    """The run-time dims, as traced: batch 1, ``cfg.resolution`` new tokens, an empty past."""

    batch: Dim
    seq: Dim
    past: Dim
    total: Dim


def _inputs(g: GraphBuilder, size: DecoderSize, cfg: ZooConfig) -> _Dims:
    dims = _Dims(Dim(1, BATCH), Dim(cfg.resolution, SEQUENCE), Dim(0, PAST), Dim(cfg.resolution, TOTAL))
    g.add_input("input_ids", (dims.batch, dims.seq), INT64)
    for i in range(size.layers):
        for kind in ("key", "value"):
            g.add_input(f"past_key_values.{i}.{kind}", (dims.batch, size.kv_heads, dims.past, size.head_dim))
    return dims


def _shape(g: GraphBuilder, x: str, name: str) -> str:
    return g.node("Shape", [x], name, shape=(len(g.info[x].shape),), dtype=INT64)


def _positions(g: GraphBuilder, x: str, layer: int, dims: _Dims, name: str) -> tuple[str, str]:
    """The positions [seq] of this step's tokens (``x``'s axis 1), past_sequence_length + t, and the
    total length (a scalar). Each layer reads the past length from its own past keys: a layer's cache
    and every node reading it then sit together, and a model split between layers keeps each cache
    on one device with nothing but the hidden state crossing a cut."""
    def length(shape: str, axis: int, what: str) -> str:
        return g.node("Gather", [shape, g.const(axis, np.int64)], f"{name}.{what}", shape=(), dtype=INT64,
                      axis=0)

    seq_len = length(_shape(g, x, f"{name}.input_shape"), 1, "sequence_length")
    past_len = length(_shape(g, f"past_key_values.{layer}.key", f"{name}.past_shape"), 2, "past_length")
    total_len = g.node("Add", [past_len, seq_len], f"{name}.total_length", shape=(), dtype=INT64)
    positions = g.node("Range", [past_len, total_len, g.const(1, np.int64)], f"{name}.position_ids",
                       shape=(dims.seq,), dtype=INT64)
    return positions, total_len


def _causal_mask(g: GraphBuilder, positions: str, total_len: str, dims: _Dims, name: str) -> str:
    """[seq, total] bool, true where the key comes after the query (masked out)."""
    keys = g.node("Range", [g.const(0, np.int64), total_len, g.const(1, np.int64)], f"{name}.key_positions",
                  shape=(dims.total,), dtype=INT64)
    return g.node("Greater", [g.unsqueeze(keys, (0,), name=f"{name}.key_positions.row"),
                              g.unsqueeze(positions, (1,), name=f"{name}.position_ids.column")],
                  f"{name}.causal_mask", shape=(dims.seq, dims.total), dtype=BOOL)


def _reshape(g: GraphBuilder, x: str, target: list[int], shape: tuple[int, ...], name: str) -> str:
    """Reshape to ``target`` (0 keeps that dim, -1 takes the rest), so run-time sizes stay open;
    ``shape`` is what it traces to."""
    src = g.info[x]
    return g.node("Reshape", [x, g.const(target, np.int64)], name, shape=shape, dtype=src.dtype,
                  mean=src.mean, m2=src.m2)


def _slice(g: GraphBuilder, x: str, start: int, end: int, name: str) -> str:
    """``x[..., start:end]``."""
    src = g.info[x]
    return g.node("Slice", [x, g.const([start], np.int64), g.const([end], np.int64), g.const([-1], np.int64)],
                  name, shape=(*src.shape[:-1], end - start), mean=src.mean, m2=src.m2)


def _rotary_tables(g: GraphBuilder, positions: str, head_dim: int, name: str) -> tuple[str, str]:
    """cos and sin [seq, head_dim] of the rotary embedding at ``positions`` (computed from them, as
    Hugging Face's LlamaRotaryEmbedding does: no table, no limit but float precision)."""
    inv_freq = 1.0 / ROPE_BASE ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    inv = g.const(inv_freq, np.float32, name="const.model.rotary_emb.inv_freq")  # one, shared
    pos = g.cast(g.unsqueeze(positions, (1,), name=f"{name}.positions"), FLOAT, name=f"{name}.positions.cast")
    freqs = g.binary("Mul", pos, inv, name=f"{name}.freqs")
    angles = g.concat([freqs, freqs], -1, name=f"{name}.angles")
    shape = g.info[angles].shape
    return (g.node("Cos", [angles], f"{name}.cos", shape=shape, m2=0.5),
            g.node("Sin", [angles], f"{name}.sin", shape=shape, m2=0.5))


def _rotate(g: GraphBuilder, x: str, cos_sin: tuple[str, str], name: str) -> str:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1] for the halves x1, x2 of the head."""
    d = g.info[x].shape[-1]
    first = _slice(g, x, 0, d // 2, f"{name}.first_half")
    second = _slice(g, x, d // 2, d, f"{name}.second_half")
    src = g.info[second]
    negated = g.node("Neg", [second], f"{name}.negate", shape=src.shape, mean=-src.mean, m2=src.m2)
    rotated = g.concat([negated, first], -1, name=f"{name}.rotate_half")
    cos, sin = cos_sin
    turned = g.binary("Mul", rotated, sin, name=f"{name}.sin")
    return g.add(g.binary("Mul", x, cos, name=f"{name}.cos"), turned, name=name)


def _attention(g: GraphBuilder, x: str, size: DecoderSize, dims: _Dims, layer: int, name: str,
               llama: bool) -> tuple[str, list[str]]:
    """Causal self-attention over the past and this step (GPT-2's fused ``c_attn`` with biases, or
    Llama's ``q_proj``/``k_proj``/``v_proj`` without, grouped-query, rotary): the output and the
    layer's present key and value."""
    b, s, d = dims.batch, dims.seq, size.head_dim
    h, kv, hidden = size.heads, size.kv_heads, size.hidden
    positions, total_len = _positions(g, x, layer, dims, name)
    if not llama:
        qkv = g.linear(x, 3 * hidden, name=f"{name}.c_attn")
        q, k, v = (_slice(g, qkv, j * hidden, (j + 1) * hidden, f"{name}.c_attn.{role}")
                   for j, role in enumerate(("query", "key", "value")))
        out_proj = f"{name}.c_proj"
    else:
        q, k, v = (g.linear(x, n * d, name=f"{name}.{role}_proj", bias=False)
                   for role, n in (("q", h), ("k", kv), ("v", kv)))
        out_proj = f"{name}.o_proj"

    def heads(t: str, n: int, role: str) -> str:
        t = _reshape(g, t, [0, 0, n, d], (b, s, n, d), f"{name}.{role}.split_heads")
        return g.transpose(t, (0, 2, 1, 3), name=f"{name}.{role}.transpose")

    q, k, v = heads(q, h, "query"), heads(k, kv, "key"), heads(v, kv, "value")
    if llama:
        cos_sin = _rotary_tables(g, positions, d, f"{name}.rotary_emb")
        q, k = _rotate(g, q, cos_sin, f"{name}.query.rotary"), _rotate(g, k, cos_sin, f"{name}.key.rotary")
    present = []
    for kind, new in (("key", k), ("value", v)):
        present.append(g.node("Concat", [f"past_key_values.{layer}.{kind}", new], f"{name}.{kind}_cache",
                              out=f"present.{layer}.{kind}", shape=(b, kv, dims.total, d), m2=g.info[new].m2,
                              axis=2))
    keys, values = present
    if kv < h:
        # Grouped-query attention: each key/value head serves h / kv query heads (head j uses
        # key/value head j // (h / kv), as Hugging Face's repeat_kv), by broadcasting instead of a copy.
        group = h // kv
        q = _reshape(g, q, [0, kv, group, -1, d], (b, kv, group, s, d), f"{name}.query.group")
        keys = g.unsqueeze(keys, (2,), name=f"{name}.key.group")
        values = g.unsqueeze(values, (2,), name=f"{name}.value.group")
    rank = len(g.info[keys].shape)
    keys = g.transpose(keys, (*range(rank - 2), rank - 1, rank - 2), name=f"{name}.key.transpose_last")
    scores = g.matmul(q, keys, name=f"{name}.scores")
    scores = g.binary("Mul", scores, g.const(1.0 / math.sqrt(d)), name=f"{name}.scale")
    src = g.info[scores]
    future = _causal_mask(g, positions, total_len, dims, name)
    masked = g.node("Where", [future, g.const(np.finfo(np.float32).min), scores], f"{name}.masked_scores",
                    shape=src.shape, m2=src.m2)
    context = g.matmul(g.softmax(masked, name=f"{name}.softmax"), values, name=f"{name}.context")
    if kv < h:
        context = _reshape(g, context, [0, h, -1, d], (b, h, s, d), f"{name}.context.ungroup")
    context = g.transpose(context, (0, 2, 1, 3), name=f"{name}.context.transpose")
    context = _reshape(g, context, [0, 0, hidden], (b, s, hidden), f"{name}.merge_heads")
    return g.linear(context, hidden, name=out_proj, bias=not llama), present


def _rms_norm(g: GraphBuilder, x: str, name: str, eps: float = 1e-5) -> str:
    """Llama's RMSNorm: x / sqrt(mean(x^2) + eps) * weight (ReduceMean's axes an input from opset 18)."""
    src = g.info[x]
    dim = src.shape[-1]
    g.param(f"{name}.weight", (dim,), lambda: 1.0 + 0.1 * g.rng.standard_normal(dim, dtype=np.float32))
    square = g.node("Mul", [x, x], f"{name}.square", shape=src.shape, mean=src.m2)
    stat = (*src.shape[:-1], 1)
    if g.opset >= 18:
        mean = g.node("ReduceMean", [square, g.const([-1], np.int64)], f"{name}.variance", shape=stat)
    else:
        mean = g.node("ReduceMean", [square], f"{name}.variance", shape=stat, axes=[-1])
    rms = g.node("Sqrt", [g.add(mean, g.const(eps), name=f"{name}.add_eps")], f"{name}.rms", shape=stat)
    normed = g.node("Div", [x, rms], f"{name}.normalize", shape=src.shape)
    return g.node("Mul", [normed, f"{name}.weight"], name, shape=src.shape, m2=1.01)


def _finish(g: GraphBuilder, logits: str, present: list[str]) -> None:
    """Outputs in the exporters' order: the logits, then each layer's present key and value."""
    g.mark_output(logits)
    for name in present:
        g.mark_output(name)


def build_gpt2(g: GraphBuilder, cfg: ZooConfig) -> None:
    """GPT-2 small: token and learned position embeddings (1,024 positions), 12 pre-LN layers of
    fused-QKV attention (12 heads) and a GELU MLP (4x), a final LayerNorm, and the LM head tied to
    the token embedding (Gemm with transB on ``transformer.wte.weight``: one copy of the weight)."""
    size = decoder_size(GPT2, cfg)
    dims = _inputs(g, size, cfg)
    # Embeddings at GPT-2's initial scale: a large tied weight would make the current token's own
    # logit stand out (the model would repeat it). Gemm's alpha then gives the logits their spread
    # (LOGIT_M2); positions as large as tokens, so that a wrong position shows in the logits.
    g.normal("transformer.wte.weight", (size.vocab, size.hidden), EMBED_STD)
    g.normal("transformer.wpe.weight", (size.max_positions, size.hidden), EMBED_STD)
    tokens = g.gather("transformer.wte.weight", "input_ids", name="transformer.wte")
    positions, _ = _positions(g, "input_ids", 0, dims, "transformer.wpe")
    x = g.add(tokens, g.gather("transformer.wpe.weight", positions, name="transformer.wpe"),
              name="transformer.embed")
    present: list[str] = []
    for i in range(size.layers):
        name = f"transformer.h.{i}"
        y, kv = _attention(g, g.layer_norm(x, name=f"{name}.ln_1"), size, dims, i, f"{name}.attn", False)
        present += kv
        x = g.add(x, y, name=f"{name}.attn.residual")
        y = mlp(g, g.layer_norm(x, name=f"{name}.ln_2"), size.hidden, f"{name}.mlp.c_fc", f"{name}.mlp.act",
                f"{name}.mlp.c_proj")
        x = g.add(x, y, name=f"{name}.mlp.residual")
    x = g.layer_norm(x, name="transformer.ln_f")
    tokens_dim = Dim(dims.batch * dims.seq, f"{BATCH}_x_{SEQUENCE}")
    flat = _reshape(g, x, [-1, size.hidden], (tokens_dim, size.hidden), "lm_head.flatten")
    g.num_macs += tokens_dim * size.hidden * size.vocab
    alpha = math.sqrt(LOGIT_M2 / (size.hidden * EMBED_STD**2 * g.info[x].m2))
    scores = g.node("Gemm", [flat, "transformer.wte.weight"], "lm_head", shape=(tokens_dim, size.vocab),
                    m2=LOGIT_M2, transB=1, alpha=alpha)
    leading = g.node("Slice", [_shape(g, x, "lm_head.input_shape"), g.const([0], np.int64),
                               g.const([2], np.int64)], "lm_head.leading_dims", shape=(2,), dtype=INT64)
    shape = g.node("Concat", [leading, g.const([size.vocab], np.int64)], "lm_head.output_shape",
                   shape=(3,), dtype=INT64, axis=0)
    logits = g.node("Reshape", [scores, shape], "lm_head.unflatten", out="logits",
                    shape=(dims.batch, dims.seq, size.vocab), m2=LOGIT_M2)
    _finish(g, logits, present)


def build_llama(g: GraphBuilder, cfg: ZooConfig) -> None:
    """Llama (TinyLlama-1.1B's sizes): token embedding, 22 layers of RMSNorm, grouped-query attention
    (32 query heads, 4 key/value heads) with rotary positions, RMSNorm and a SwiGLU MLP (5,632), no
    biases, a final RMSNorm and a separate LM head."""
    size = decoder_size(LLAMA, cfg)
    dims = _inputs(g, size, cfg)
    g.normal("model.embed_tokens.weight", (size.vocab, size.hidden), 1.0)
    x = g.gather("model.embed_tokens.weight", "input_ids", name="model.embed_tokens")
    present: list[str] = []
    for i in range(size.layers):
        name = f"model.layers.{i}"
        y = _rms_norm(g, x, f"{name}.input_layernorm")
        y, kv = _attention(g, y, size, dims, i, f"{name}.self_attn", True)
        present += kv
        x = g.add(x, y, name=f"{name}.self_attn.residual")
        y = _rms_norm(g, x, f"{name}.post_attention_layernorm")
        gate = g.act(g.linear(y, size.intermediate, name=f"{name}.mlp.gate_proj", bias=False), "silu",
                     name=f"{name}.mlp.act_fn")
        up = g.linear(y, size.intermediate, name=f"{name}.mlp.up_proj", bias=False)
        y = g.linear(g.binary("Mul", gate, up, name=f"{name}.mlp.gate_mul_up"), size.hidden,
                     name=f"{name}.mlp.down_proj", bias=False)
        x = g.add(x, y, name=f"{name}.mlp.residual")
    x = _rms_norm(g, x, "model.norm")
    _finish(g, g.linear(x, size.vocab, name="lm_head", bias=False, gain=LOGIT_M2, out="logits"), present)
