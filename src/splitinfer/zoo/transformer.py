"""Transformer encoders: a ViT-B/16-style image classifier and a BERT-base-style text encoder.

Attention is written out with MatMul, Softmax and Reshape/Transpose (no fused
ops), LayerNormalization is the ONNX op (decomposed below opset 17), GELU goes
through Erf. Names follow the timm / Hugging Face module names.
"""

from __future__ import annotations

import math

import numpy as np

from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.config import ZooConfig, scale_depth, scale_heads
from splitinfer.zoo.tensors import FLOAT, INT64

NUM_LAYERS = 12
PATCH = 16
MAX_POSITIONS = 512


def attention(g: GraphBuilder, x: str, num_heads: int, name: str, mask: str | None = None) -> str:
    batch, tokens, hidden = g.info[x].shape
    head_dim = hidden // num_heads

    def heads(role: str, perm: tuple[int, ...]) -> str:
        y = g.linear(x, hidden, name=f"{name}.{role}")
        y = g.reshape(y, (batch, tokens, num_heads, head_dim), name=f"{name}.{role}.split_heads")
        return g.transpose(y, perm, name=f"{name}.{role}.transpose")

    q = heads("query", (0, 2, 1, 3))
    k = heads("key", (0, 2, 3, 1))  # already transposed for q @ k
    v = heads("value", (0, 2, 1, 3))
    scores = g.matmul(q, k, name=f"{name}.scores")
    scores = g.binary("Mul", scores, g.const(1.0 / math.sqrt(head_dim)), name=f"{name}.scale")
    if mask is not None:
        scores = g.add(scores, mask, name=f"{name}.mask")
    probs = g.softmax(scores, name=f"{name}.softmax")
    context = g.matmul(probs, v, name=f"{name}.context")
    context = g.transpose(context, (0, 2, 1, 3), name=f"{name}.context.transpose")
    context = g.reshape(context, (batch, tokens, hidden), name=f"{name}.merge_heads")
    return g.linear(context, hidden, name=f"{name}.output")


def mlp(g: GraphBuilder, x: str, hidden: int, fc1: str, act: str, fc2: str) -> str:
    y = g.linear(x, 4 * hidden, name=fc1)
    return g.linear(g.act(y, "gelu", name=act), hidden, name=fc2)


def build_vit_b16(g: GraphBuilder, cfg: ZooConfig) -> None:
    """ViT-B/16: 16x16 patch embedding Conv, class token, learned positions, 12 pre-LN layers."""
    num_heads, hidden = scale_heads(cfg.width)
    grid = cfg.resolution // PATCH
    num_tokens = grid * grid + 1
    x = g.add_input("image", (1, 3, cfg.resolution, cfg.resolution))
    x = g.conv(x, hidden, PATCH, name="patch_embed.proj", stride=PATCH, pad=0, bias=True, gain=1.0)
    x = g.reshape(x, (1, hidden, grid * grid), name="patch_embed.flatten")
    x = g.transpose(x, (0, 2, 1), name="patch_embed.transpose")
    g.normal("cls_token", (1, 1, hidden), 0.02)
    x = g.concat(["cls_token", x], 1, name="embed.prepend_cls")
    g.normal("pos_embed", (1, num_tokens, hidden), 0.02)
    x = g.add(x, "pos_embed", name="embed.add_pos")
    for i in range(scale_depth(NUM_LAYERS, cfg.depth)):
        name = f"blocks.{i}"
        y = attention(g, g.layer_norm(x, name=f"{name}.norm1", eps=1e-6), num_heads, f"{name}.attn")
        x = g.add(x, y, name=f"{name}.add1")
        y = g.layer_norm(x, name=f"{name}.norm2", eps=1e-6)
        y = mlp(g, y, hidden, f"{name}.mlp.fc1", f"{name}.mlp.gelu", f"{name}.mlp.fc2")
        x = g.add(x, y, name=f"{name}.add2")
    x = g.layer_norm(x, name="norm", eps=1e-6)
    x = g.gather(x, g.const(0, np.int64), name="pool_cls", axis=1)
    g.mark_output(g.linear(x, cfg.num_classes, name="head", out="logits"))


def embeddings(g: GraphBuilder, cfg: ZooConfig, hidden: int, input_ids: str) -> str:
    seq = cfg.resolution
    positions = max(MAX_POSITIONS, seq)
    g.normal("embeddings.word_embeddings.weight", (cfg.vocab_size, hidden), 0.02)
    g.normal("embeddings.position_embeddings.weight", (positions, hidden), 0.02)
    g.normal("embeddings.token_type_embeddings.weight", (2, hidden), 0.02)
    position_ids = g.const(np.arange(seq)[None, :], np.int64, name="embeddings.position_ids")
    token_type_ids = g.const(np.zeros((1, seq)), np.int64, name="embeddings.token_type_ids")
    words = g.gather("embeddings.word_embeddings.weight", input_ids, name="embeddings.word_embeddings")
    pos = g.gather("embeddings.position_embeddings.weight", position_ids,
                   name="embeddings.position_embeddings")
    types = g.gather("embeddings.token_type_embeddings.weight", token_type_ids,
                     name="embeddings.token_type_embeddings")
    x = g.add(words, pos, name="embeddings.add_position")
    x = g.add(x, types, name="embeddings.add_token_type")
    return g.layer_norm(x, name="embeddings.LayerNorm", eps=1e-12)


def mask_bias(g: GraphBuilder, attention_mask: str) -> str:
    """[1, seq] of 1 (attend) / 0 (padding) -> [1, 1, 1, seq] additive bias of 0 / -10000."""
    m = g.cast(attention_mask, FLOAT, name="extended_mask.cast")
    m = g.unsqueeze(m, (1, 2), name="extended_mask.unsqueeze")
    m = g.binary("Sub", g.const(1.0), m, name="extended_mask.invert")
    return g.binary("Mul", m, g.const(-10000.0), name="extended_mask.bias")


def bert_layer(g: GraphBuilder, x: str, hidden: int, num_heads: int, name: str, bias: str) -> str:
    """One post-LN BERT encoder layer: attention and MLP, each with its residual and LayerNorm."""
    y = attention(g, x, num_heads, f"{name}.attention", mask=bias)
    x = g.add(x, y, name=f"{name}.attention.residual")
    x = g.layer_norm(x, name=f"{name}.attention.LayerNorm", eps=1e-12)
    y = mlp(g, x, hidden, f"{name}.intermediate.dense", f"{name}.intermediate.gelu", f"{name}.output.dense")
    x = g.add(x, y, name=f"{name}.output.residual")
    return g.layer_norm(x, name=f"{name}.output.LayerNorm", eps=1e-12)


def bert_inputs(g: GraphBuilder, cfg: ZooConfig) -> tuple[str, str, int, int]:
    """BERT's inputs (token ids and mask, ``cfg.resolution`` long) embedded: the embeddings, the
    attention bias from the mask, the hidden size and the number of heads."""
    num_heads, hidden = scale_heads(cfg.width)
    input_ids = g.add_input("input_ids", (1, cfg.resolution), INT64, mean=0.0, m2=1.0)
    attention_mask = g.add_input("attention_mask", (1, cfg.resolution), INT64, mean=1.0, m2=1.0)
    return embeddings(g, cfg, hidden, input_ids), mask_bias(g, attention_mask), hidden, num_heads


def build_bert(g: GraphBuilder, cfg: ZooConfig) -> None:
    """BERT-base: token + position + type embeddings, 12 post-LN layers, tanh pooler."""
    x, bias, hidden, num_heads = bert_inputs(g, cfg)
    for i in range(scale_depth(NUM_LAYERS, cfg.depth)):
        x = bert_layer(g, x, hidden, num_heads, f"encoder.layer.{i}", bias)
    x = g.gather(x, g.const(0, np.int64), name="pooler.first_token", axis=1)
    x = g.linear(x, hidden, name="pooler.dense")
    g.mark_output(g.act(x, "tanh", name="pooler.tanh", out="pooled"))
