"""Classifiers with two early-exit heads: a ResNet-18 and a BERT-base, as BranchyNet and DeeBERT.

An exit head is a small classifier on the trunk part-way down: global average pool + Gemm
(the CNN), or the first token + LayerNorm + Gemm (the transformer). Its logits are a model
output; the outputs are the exits in depth order, then the final ``logits``. The model lists
its exits in its metadata (:data:`EXITS_KEY`), each with a confidence rule and a threshold:
the format :func:`splitinfer.graph.exits.read_exits` reads.

Random weights give every input about the same confidence, so a fixed threshold such as 0.9
would let no request (or every request) leave early. The thresholds are set instead from the
model's own outputs on seeded inputs, as the batch norms are (:mod:`splitinfer.zoo.calibration`):
about half the inputs leave at the first exit and half of the rest at the second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from splitinfer.quality.confidence import EXITS_KEY, confidence
from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.cnn import basic_block
from splitinfer.zoo.config import ZooConfig, scale_channels, scale_depth
from splitinfer.zoo.tensors import FLOAT
from splitinfer.zoo.transformer import NUM_LAYERS, bert_inputs, bert_layer

# Seeded inputs the thresholds are set on: a median of 16 is stable enough for a default, and
# 16 runs of the full-size BERT stay within a few seconds.
_NUM_SAMPLES = 16
# Each model's rule: the CNN as SDN / MSDNet (the top class's probability), the transformer as
# DeeBERT (the entropy of the prediction).
_RULES = {"resnet18": "softmax_max", "bert": "entropy"}


def _exit_names(num_exits: int = 2) -> list[str]:
    return [f"exit{k}" for k in range(1, num_exits + 1)]


def _pooled_head(g: GraphBuilder, x: str, cfg: ZooConfig, name: str) -> None:
    y = g.global_avg_pool(x, name=f"{name}.pool")
    y = g.flatten(y, name=f"{name}.flatten")
    g.mark_output(g.linear(y, cfg.num_classes, name=f"{name}.fc", out=name))


def build_resnet18_exits(g: GraphBuilder, cfg: ZooConfig) -> None:
    """ResNet-18 (basic blocks 2-2-2-2) with exits after layer1 and layer3 (about 30% and 78% of
    its multiply-accumulates), each a pool and a Gemm; the final head as in ResNet-18."""
    x = g.add_input("image", (1, 3, cfg.resolution, cfg.resolution))
    stem = scale_channels(64, cfg.width)
    x = g.batch_norm(g.conv(x, stem, 7, name="conv1", stride=2, pad=3), name="bn1")
    x = g.act(x, "relu", name="relu")
    x = g.max_pool(x, 3, 2, name="maxpool", pad=1)
    channels = stem
    exits = iter(_exit_names())
    for stage in range(1, 5):
        width = scale_channels(64 * 2 ** (stage - 1), cfg.width)
        for i in range(scale_depth(2, cfg.depth)):
            stride = 2 if stage > 1 and i == 0 else 1
            x, channels = basic_block(g, x, channels, width, stride, f"layer{stage}.{i}")
        if stage in (1, 3):
            # The head's nodes right after its stage: in file order too, the exit ends a cut.
            _pooled_head(g, x, cfg, next(exits))
    x = g.global_avg_pool(x, name="avgpool")
    x = g.flatten(x, name="flatten")
    g.mark_output(g.linear(x, cfg.num_classes, name="fc", out="logits"))


def exit_layers(num_layers: int) -> tuple[int, int]:
    """The (0-based) encoder layers after which the transformer's two exits sit: a third and two
    thirds of the way down (layers 3 and 7 of 12), always before the last layer."""
    first = max(0, round(num_layers / 3) - 1)
    second = max(first + 1, round(2 * num_layers / 3) - 1)
    return first, second


def build_bert_exits(g: GraphBuilder, cfg: ZooConfig) -> None:
    """BERT-base (12 post-LN layers) classifying the first token, with exits after layers 4 and 8
    (first token + LayerNorm + Gemm); the final head is BERT's pooler (dense + tanh) + a Gemm.
    At least 3 layers at any depth, so both exits come before the last layer."""
    x, bias, hidden, num_heads = bert_inputs(g, cfg)
    num_layers = max(3, scale_depth(NUM_LAYERS, cfg.depth))
    heads = dict(zip(exit_layers(num_layers), _exit_names(), strict=True))
    for i in range(num_layers):
        x = bert_layer(g, x, hidden, num_heads, f"encoder.layer.{i}", bias)
        if i in heads:
            head = heads[i]
            y = g.gather(x, g.const(0, np.int64), name=f"{head}.first_token", axis=1)
            y = g.layer_norm(y, name=f"{head}.LayerNorm", eps=1e-12)
            g.mark_output(g.linear(y, cfg.num_classes, name=f"{head}.classifier", out=head))
    x = g.gather(x, g.const(0, np.int64), name="pooler.first_token", axis=1)
    x = g.act(g.linear(x, hidden, name="pooler.dense"), "tanh", name="pooler.tanh")
    g.mark_output(g.linear(x, cfg.num_classes, name="classifier", out="logits"))


# ---- the thresholds ---------------------------------------------------------------------------

def _split_half(rule: str, values: np.ndarray) -> float:
    """A threshold that half the ``values`` pass (softmax_max: at or above it; entropy: at or
    below it): halfway between the two middle values, to 4 significant digits when that keeps
    it between them."""
    ranked = np.sort(values)[::-1] if rule == "softmax_max" else np.sort(values)
    half = len(ranked) // 2
    inner, outer = float(ranked[half - 1]), float(ranked[half])
    middle = (inner + outer) / 2
    short = float(f"{middle:.4g}")
    return short if min(inner, outer) < short < max(inner, outer) else middle


def _feeds(model: onnx.ModelProto, cfg: ZooConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Standard normal images; token ids below the vocabulary size; an all-ones mask."""
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == FLOAT:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(shape, dtype=np.int64)
        else:
            feeds[value.name] = rng.integers(0, cfg.vocab_size, size=shape, dtype=np.int64)
    return feeds


def record_exits(model: onnx.ModelProto, cfg: ZooConfig, seed: int, rule: str,
                 external_dir: Path | None = None) -> None:
    """Add the model's exits to its metadata (:data:`EXITS_KEY`), in place, with thresholds that
    about half of seeded inputs pass at the first exit and half of the rest at the second.
    ``external_dir``: the folder of the model's external weights, if any."""
    names = [o.name for o in model.graph.output[:-1]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread: the same sums in the same order on every run
    options.log_severity_level = 3
    # Basic optimisations only: ALL spends seconds pre-packing full-size weights used 16 times.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if external_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(external_dir))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng([seed, 0xE817])
    runs = [session.run(names, _feeds(model, cfg, rng)) for _ in range(_NUM_SAMPLES)]
    remaining = np.ones(_NUM_SAMPLES, dtype=bool)
    exits = []
    for k, name in enumerate(names):
        values = confidence(rule, np.concatenate([run[k] for run in runs]))
        threshold = _split_half(rule, values[remaining])
        passed = values >= threshold if rule == "softmax_max" else values <= threshold
        remaining &= ~passed
        exits.append({"output": name, "rule": rule, "threshold": threshold})
    entry = model.metadata_props.add()
    entry.key, entry.value = EXITS_KEY, json.dumps(exits)


def record_resnet18_exits(model: onnx.ModelProto, cfg: ZooConfig, seed: int,
                          external_dir: Path | None = None) -> None:
    """:func:`record_exits` with the CNN's rule (softmax_max)."""
    record_exits(model, cfg, seed, _RULES["resnet18"], external_dir)


def record_bert_exits(model: onnx.ModelProto, cfg: ZooConfig, seed: int,
                      external_dir: Path | None = None) -> None:
    """:func:`record_exits` with the transformer's rule (entropy)."""
    record_exits(model, cfg, seed, _RULES["bert"], external_dir)
