"""The model zoo: standard architectures written directly as ONNX, with seeded weights.

No torch, no downloads: every model is built node by node with ``onnx.helper``
from a seeded numpy generator, so the same arguments give byte-identical models.
Full size by default (the real parameter counts, FLOPs and tensor sizes);
``width``, ``depth`` and ``resolution`` make smaller variants, and
:func:`build_small` gives a tiny one that runs in milliseconds for tests.
Modules: ``builder`` (the graph builder) with ``tensors`` and ``moments`` (what it
tracks), ``cnn``, ``transformer``, ``detector`` (the architectures), ``exits`` (a ResNet-18 and a BERT
with two early-exit heads each, their thresholds set on seeded inputs), ``config``
(their settings), ``calibration`` (batch-norm statistics on seeded inputs).

>>> from splitinfer import zoo
>>> model = zoo.build("resnet18")                 # 11.7M params, 224x224
>>> tiny = zoo.build_small("bert")                # 2 layers, seq 16, vocab 1000
>>> zoo.summarize("vgg16").num_params             # counted without drawing weights
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import onnx

from splitinfer.errors import ModelError, ShapeError
from splitinfer.types import ONNX_TO_NUMPY, TensorSpec
from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.calibration import calibrate_batch_norms
from splitinfer.zoo.cnn import build_mobilenetv2, build_resnet18, build_resnet50, build_vgg16
from splitinfer.zoo.config import ZooConfig
from splitinfer.zoo.detector import build_detector
from splitinfer.zoo.exits import (
    build_bert_exits,
    build_resnet18_exits,
    record_bert_exits,
    record_resnet18_exits,
)
from splitinfer.zoo.transformer import build_bert, build_vit_b16

__all__ = ["MAX_OPSET", "MIN_OPSET", "ModelSummary", "ZooConfig", "build", "build_small", "describe",
           "names", "short_description", "summarize"]

MIN_OPSET, MAX_OPSET = 13, 21
# Protobuf cannot serialise a message of 2 GiB or more; leave room for the graph itself.
_MAX_WEIGHT_BYTES = 2_000_000_000


@dataclass(frozen=True)
class _Entry:
    build: Callable[[GraphBuilder, ZooConfig], None]
    title: str  # what it is, for describe()
    short: str  # a few words, for tables
    config: ZooConfig  # full size
    small: ZooConfig  # the build_small variant
    resolution_step: int  # resolution must be a multiple of this
    resolution_word: str = "resolution"
    # Adds to the finished model's metadata what needs its calibrated weights (its exits' thresholds).
    annotate: Callable[[onnx.ModelProto, ZooConfig, int], None] | None = None


_VISION_SMALL = ZooConfig(width=0.125, depth=0.5, resolution=32, num_classes=10)
_ENTRIES: dict[str, _Entry] = {
    "vgg16": _Entry(
        build_vgg16, "VGG-16 image classifier (13 convs + 3 FC, no batch norm)", "VGG-16",
        ZooConfig(resolution=224), _VISION_SMALL, resolution_step=32),
    "resnet18": _Entry(
        build_resnet18, "ResNet-18 image classifier (basic blocks 2-2-2-2)", "ResNet-18",
        ZooConfig(resolution=224), _VISION_SMALL, resolution_step=32),
    "resnet50": _Entry(
        build_resnet50, "ResNet-50 v1.5 image classifier (bottlenecks 3-4-6-3)", "ResNet-50 v1.5",
        ZooConfig(resolution=224), replace(_VISION_SMALL, depth=0.34), resolution_step=32),
    "mobilenetv2": _Entry(
        build_mobilenetv2, "MobileNetV2 image classifier (inverted residuals, ReLU6)", "MobileNetV2",
        ZooConfig(resolution=224), replace(_VISION_SMALL, width=0.25, resolution=64), resolution_step=32),
    "vit_b16": _Entry(
        build_vit_b16, "ViT-B/16 image transformer (16x16 patches, 12 pre-LN layers)", "ViT-B/16",
        ZooConfig(resolution=224), replace(_VISION_SMALL, depth=0.17), resolution_step=16),
    "bert": _Entry(
        build_bert, "BERT-base text encoder (12 post-LN layers, int64 token ids, pooled)", "BERT-base",
        ZooConfig(resolution=128), ZooConfig(width=0.125, depth=0.17, resolution=16, vocab_size=1000),
        resolution_step=1, resolution_word="sequence length"),
    "detector": _Entry(
        build_detector, "YOLOv5s-style detector (C3 backbone, FPN+PAN, heads p4 and p5)",
        "YOLOv5s-style detector", ZooConfig(resolution=640, num_classes=80),
        ZooConfig(width=0.125, depth=0.34, resolution=64, num_classes=3), resolution_step=32),
    "resnet18_exits": _Entry(
        build_resnet18_exits, "ResNet-18 with early exits after layer1 and layer3 (softmax_max rule)",
        "ResNet-18, 2 exits", ZooConfig(resolution=224), _VISION_SMALL, resolution_step=32,
        annotate=record_resnet18_exits),
    "bert_exits": _Entry(
        build_bert_exits, "BERT-base classifier with early exits after layers 4 and 8 (entropy rule)",
        "BERT-base, 2 exits", ZooConfig(resolution=128, num_classes=2),
        ZooConfig(width=0.125, depth=0.25, resolution=16, num_classes=2, vocab_size=1000),
        resolution_step=1, resolution_word="sequence length", annotate=record_bert_exits),
}


@dataclass(frozen=True)
class ModelSummary:
    """A zoo model's interface and size, computed without drawing any weight."""

    name: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    num_params: int = 0
    num_macs: int = 0  # multiply-accumulates of Conv, Gemm and MatMul

    @property
    def gflops(self) -> float:
        """2 x MACs of Conv, Gemm and MatMul, in units of 1e9."""
        return 2 * self.num_macs / 1e9

    @property
    def weight_bytes(self) -> int:
        """float32 bytes of all weights."""
        return 4 * self.num_params


def names() -> list[str]:
    """The zoo's model names, in a stable order."""
    return list(_ENTRIES)


def _entry(name: str) -> _Entry:
    entry = _ENTRIES.get(name)
    if entry is None:
        raise ModelError(f"unknown zoo model {name!r}", f"pick one of: {', '.join(_ENTRIES)}")
    return entry


def _config(name: str, width: float, depth: float, resolution: int | None) -> ZooConfig:
    entry = _entry(name)
    for label, value in (("width", width), ("depth", depth)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 8):
            raise ModelError(f"{label} multiplier {value!r} is out of range",
                             f"give a {label} between 0 (exclusive) and 8, e.g. 0.25 for a small variant")
    res = entry.config.resolution if resolution is None else resolution
    step = entry.resolution_step
    low = step if step > 1 else 1
    if not isinstance(res, int) or res < low or res % step or res > 8192:
        word = entry.resolution_word
        raise ShapeError(f"{name} cannot take {word} {res!r}",
                         f"give a {word} that is a positive multiple of {step} (at most 8192), "
                         f"e.g. {entry.config.resolution}")
    return replace(entry.config, width=float(width), depth=float(depth), resolution=res)


def _check_opset_and_seed(opset: int, seed: int) -> None:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"opset {opset!r} is not supported by the zoo",
                         f"give an opset from {MIN_OPSET} to {MAX_OPSET} (default 17)")
    if not isinstance(seed, int) or seed < 0:
        raise ModelError(f"seed {seed!r} is not a non-negative integer", "give a seed such as 0 or 42")


def _summary(name: str, builder: GraphBuilder) -> ModelSummary:
    def spec(tensor: str) -> TensorSpec:
        info = builder.info[tensor]
        return TensorSpec(tensor, ONNX_TO_NUMPY[info.dtype], info.shape)

    return ModelSummary(name, tuple(spec(t) for t in builder.inputs), tuple(spec(t) for t in builder.outputs),
                        builder.num_params, builder.num_macs)


def _make(name: str, cfg: ZooConfig, seed: int, opset: int, small: bool) -> onnx.ModelProto:
    entry = _entry(name)
    _check_opset_and_seed(opset, seed)
    counted = _count(name, cfg)
    if counted.weight_bytes > _MAX_WEIGHT_BYTES:
        raise ModelError(
            f"{name} at width {cfg.width:g} would hold {counted.weight_bytes / 1e9:.1f} GB of weights, "
            "over protobuf's 2 GB limit", "use a smaller --width (or --depth)")
    builder = GraphBuilder(seed=seed, opset=opset)
    entry.build(builder, cfg)
    args = {"name": name, "width": cfg.width, "depth": cfg.depth, "resolution": cfg.resolution,
            "num_classes": cfg.num_classes, "vocab_size": cfg.vocab_size, "seed": seed,
            "opset": opset, "small": small}
    metadata = {"splitinfer.zoo": json.dumps(args, sort_keys=True)}
    model = builder.finish(name, describe(name), metadata)
    calibrate_batch_norms(model, seed=seed)
    if entry.annotate is not None:
        entry.annotate(model, cfg, seed)
    return model


def build(name: str, *, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
          seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Build zoo model ``name``: full size by default, smaller with ``width``/``depth`` < 1.

    ``resolution`` is the image side (the sequence length for ``bert``). The
    same arguments give a byte-identical model; another ``seed`` gives other
    weights. Raises :class:`ModelError` for an unknown name or bad argument.
    """
    return _make(name, _config(name, width, depth, resolution), seed, opset, small=False)


def build_small(name: str, seed: int = 0, *, opset: int = 17) -> onnx.ModelProto:
    """A tiny variant of ``name`` (1/8 to 1/4 width, 1-2 blocks per stage, 32-64 px, seq 16,
    10 classes or a 1000-word vocabulary) that builds and runs in well under a second."""
    return _make(name, _entry(name).small, seed, opset, small=True)


@lru_cache(maxsize=64)
def _count(name: str, cfg: ZooConfig) -> ModelSummary:
    builder = GraphBuilder(materialize=False)
    _entry(name).build(builder, cfg)
    return _summary(name, builder)


def summarize(name: str, *, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
              small: bool = False) -> ModelSummary:
    """Inputs, outputs, parameter count and MACs of a zoo model, without building its weights."""
    cfg = _entry(name).small if small else _config(name, width, depth, resolution)
    return _count(name, cfg)


def short_description(name: str) -> str:
    """A few words naming the architecture (for tables)."""
    return _entry(name).short


def describe(name: str) -> str:
    """One line: what the model is, and its full-size inputs, parameters and GFLOPs."""
    entry = _entry(name)
    s = summarize(name)
    inputs = ", ".join(f"{t.name}[{'x'.join(map(str, t.shape))}]" for t in s.inputs)
    return f"{entry.title}; {inputs}; {s.num_params / 1e6:.1f}M params, {s.gflops:.1f} GFLOPs"
