"""A wide MLP: the cheapest model of a given size, for models larger than a device.

Square fully connected layers hold nearly all of their bytes in weights and do one
multiply-accumulate per weight, so the model is as large as one likes while a run costs
little and its cut tensors are tiny (one row of ``hidden`` floats). At full size its 9 layers
of 8192 hold 2.4 GB, over protobuf's 2 GB limit: :func:`splitinfer.zoo.save` writes it with
its weights in a ``.data`` file, the case that splitting by device memory is for.
"""

from __future__ import annotations

from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.config import ZooConfig, scale_channels, scale_depth

HIDDEN = 8192
NUM_LAYERS = 9


def build_mlp(g: GraphBuilder, cfg: ZooConfig) -> None:
    """``x`` [1, resolution] through ``depth`` x 9 layers of ``width`` x 8192 (Gemm with bias, then
    ReLU; He-scaled, so the activations keep their scale over any depth) and a Gemm to the
    classes' logits."""
    hidden = scale_channels(HIDDEN, cfg.width)
    x = g.add_input("x", (1, cfg.resolution))
    for i in range(scale_depth(NUM_LAYERS, cfg.depth)):
        x = g.act(g.linear(x, hidden, name=f"layers.{i}.fc", gain=2.0), "relu", name=f"layers.{i}.relu")
    g.mark_output(g.linear(x, cfg.num_classes, name="head", out="logits"))
