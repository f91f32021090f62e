"""The model zoo: standard architectures written directly as ONNX, with seeded weights.

No torch, no downloads: every model is built node by node with ``onnx.helper``
from a seeded numpy generator, so the same arguments give byte-identical models.
Full size by default (the real parameter counts, FLOPs and tensor sizes);
``width``, ``depth`` and ``resolution`` make smaller variants, and
:func:`build_small` gives a tiny one that runs in milliseconds for tests.
:func:`build` returns the model in memory (at most 2 GB of weights, protobuf's
limit); :func:`save` writes it to a file, its weights to a ``.data`` file beside it
as they are drawn when they pass that limit (or when asked), so that a model of any
size is built holding one weight at a time.
Modules: ``builder`` (the graph builder) with ``tensors`` and ``moments`` (what it
tracks) and ``weights`` (the ``.data`` file it writes), ``cnn``, ``transformer``, ``detector``,
``mlp``, ``decoder`` (the architectures; ``decoder``: GPT-2 and a Llama with a key/value
cache, their batch and lengths chosen at run time), ``exits`` (a ResNet-18 and a BERT
with two early-exit heads each, their thresholds set on seeded inputs), ``config``
(their settings), ``calibration`` (batch-norm statistics on seeded inputs).

>>> from splitinfer import zoo
>>> model = zoo.build("resnet18")                 # 11.7M params, 224x224
>>> tiny = zoo.build_small("bert")                # 2 layers, seq 16, vocab 1000
>>> zoo.summarize("vgg16").num_params             # counted without drawing weights
>>> zoo.save("mlp", "mlp.onnx")                   # 2.4 GB: mlp.onnx + mlp.data
>>> zoo.save("llama", "llama.onnx")               # 1.1B params, 4.4 GB: llama.onnx + llama.data
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import onnx

from splitinfer.errors import ModelError, ShapeError
from splitinfer.types import ONNX_TO_NUMPY, TensorSpec
from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.calibration import calibrate_batch_norms
from splitinfer.zoo.cnn import build_mobilenetv2, build_resnet18, build_resnet50, build_vgg16
from splitinfer.zoo.config import ZooConfig
from splitinfer.zoo.decoder import build_gpt2, build_llama
from splitinfer.zoo.detector import build_detector
from splitinfer.zoo.exits import (
    build_bert_exits,
    build_resnet18_exits,
    record_bert_exits,
    record_resnet18_exits,
)
from splitinfer.zoo.mlp import build_mlp
from splitinfer.zoo.transformer import build_bert, build_vit_b16
from splitinfer.zoo.weights import WeightFile

__all__ = ["MAX_OPSET", "MIN_OPSET", "ModelSummary", "ZooConfig", "build", "build_small", "describe",
           "external_data_file", "group_layers", "names", "save", "short_description", "summarize"]

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
    max_resolution: int = 8192
    # Adds to the finished model's metadata what needs its calibrated weights (its exits' thresholds);
    # the last argument is the folder of the model's external weights, if any.
    annotate: Callable[[onnx.ModelProto, ZooConfig, int, Path | None], None] | None = None


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
    "mlp": _Entry(
        build_mlp, "Wide MLP (9 Gemm + ReLU layers of 8192, a classifier head): the cheapest model of "
        "its size, for models larger than a device", "wide MLP, over 2 GB",
        ZooConfig(resolution=8192), ZooConfig(width=0.0625, depth=0.34, resolution=512, num_classes=10),
        resolution_step=1, resolution_word="number of input features"),
    # Decoders: ``resolution`` is the prompt length their summary and MAC count trace (a prefill, past
    # empty); the model itself takes any length up to the positions it has.
    "gpt2": _Entry(
        build_gpt2, "GPT-2 small decoder (12 pre-LN layers, learned positions, LM head tied to the token "
        "embedding) with a key/value cache", "GPT-2 small, KV cache",
        ZooConfig(resolution=128, vocab_size=50257),
        ZooConfig(width=1 / 12, depth=1 / 6, resolution=8, vocab_size=1000),
        resolution_step=1, resolution_word="prompt length", max_resolution=1024),
    "llama": _Entry(
        build_llama, "Llama decoder at TinyLlama-1.1B's sizes (22 layers, RMSNorm, rotary positions, "
        "grouped-query attention 32/4 heads, SwiGLU) with a key/value cache", "Llama 1.1B, KV cache",
        ZooConfig(resolution=128, vocab_size=32000),
        ZooConfig(width=1 / 32, depth=1 / 11, resolution=8, vocab_size=1000),
        resolution_step=1, resolution_word="prompt length", max_resolution=2048),
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
    if not isinstance(res, int) or res < low or res % step or res > entry.max_resolution:
        word = entry.resolution_word
        top = entry.max_resolution
        kind = (f"a whole number from 1 to {top}" if step == 1
                else f"a positive multiple of {step} (at most {top})")
        raise ShapeError(f"{name} cannot take {word} {res!r}",
                         f"give a {word} that is {kind}, e.g. {entry.config.resolution}")
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
        # A decoder's run-time dims as traced (batch 1, the prompt, an empty past): plain ints.
        return TensorSpec(tensor, ONNX_TO_NUMPY[info.dtype], tuple(int(d) for d in info.shape))

    return ModelSummary(name, tuple(spec(t) for t in builder.inputs), tuple(spec(t) for t in builder.outputs),
                        builder.num_params, builder.num_macs)


def _make(name: str, cfg: ZooConfig, seed: int, opset: int, small: bool,
          weights: WeightFile | None = None) -> onnx.ModelProto:
    """The model; with ``weights``, its large weights written there (and the file closed)."""
    entry = _entry(name)
    _check_opset_and_seed(opset, seed)
    counted = _count(name, cfg)
    if weights is None and counted.weight_bytes > _MAX_WEIGHT_BYTES:
        raise ModelError(
            f"{name} at width {cfg.width:g} would hold {counted.weight_bytes / 1e9:.1f} GB of weights, "
            "over protobuf's 2 GB limit for a model in memory",
            "write it to a file with zoo.save() or `splitinfer zoo build NAME -o FILE.onnx` (the weights "
            "go to FILE.data beside it), or use a smaller --width (or --depth)")
    builder = GraphBuilder(seed=seed, opset=opset, weights=weights)
    entry.build(builder, cfg)
    args = {"name": name, "width": cfg.width, "depth": cfg.depth, "resolution": cfg.resolution,
            "num_classes": cfg.num_classes, "vocab_size": cfg.vocab_size, "seed": seed,
            "opset": opset, "small": small}
    metadata = {"splitinfer.zoo": json.dumps(args, sort_keys=True)}
    model = builder.finish(name, describe(name), metadata)
    if weights is not None:
        weights.close()  # whole on disk before ONNX Runtime reads it
    calibrate_batch_norms(model, seed=seed, weights=weights)
    if entry.annotate is not None:
        entry.annotate(model, cfg, seed, None if weights is None else weights.folder)
    return model


def build(name: str, *, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
          seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Build zoo model ``name``: full size by default, smaller with ``width``/``depth`` < 1.

    ``resolution`` is the image side (the sequence length for ``bert``; for the decoders ``gpt2``
    and ``llama``, whose lengths are chosen at run time, the prompt length their summary traces). The
    same arguments give a byte-identical model; another ``seed`` gives other
    weights. Raises :class:`ModelError` for an unknown name or bad argument.
    """
    return _make(name, _config(name, width, depth, resolution), seed, opset, small=False)


def build_small(name: str, seed: int = 0, *, opset: int = 17) -> onnx.ModelProto:
    """A tiny variant of ``name`` (1/8 to 1/4 width, 1-2 blocks per stage, 32-64 px, seq 16,
    10 classes or a 1000-word vocabulary; the decoders: 2 layers of 64, 4 heads) that builds and
    runs in well under a second."""
    return _make(name, _entry(name).small, seed, opset, small=True)


def save(name: str, path: str | Path, *, width: float = 1.0, depth: float = 1.0,
         resolution: int | None = None, seed: int = 0, opset: int = 17, small: bool = False,
         external_data: bool | None = None) -> Path:
    """Build zoo model ``name`` (arguments as :func:`build`; ``small``: :func:`build_small`'s
    variant) and write it to ``path``; returns ``path``.

    ``external_data``: True writes every weight over 64 KiB to ``path`` with suffix ``.data``
    as it is drawn (4096-byte aligned, named in the model by that file's name: keep the two
    files in one folder), holding one weight at a time; False keeps them inside the ``.onnx``
    (at most 2 GB, protobuf's limit); None (default) chooses the ``.data`` file when the
    weights pass that limit. The same arguments give byte-identical files, and the same
    weights either way. See :func:`external_data_file`.
    """
    path = Path(path)
    cfg = _save_config(name, width, depth, resolution, small)
    data = _data_file(name, cfg, path, external_data)
    _check_opset_and_seed(opset, seed)  # before a .data file of the same name is overwritten
    if data is None:
        _write_model(_make(name, cfg, seed, opset, small), path)
        return path
    try:
        with WeightFile(data) as weights:
            model = _make(name, cfg, seed, opset, small, weights)
        _write_model(model, path)
    except BaseException:
        data.unlink(missing_ok=True)  # weights without their model are of no use
        raise
    return path


def external_data_file(name: str, path: str | Path, *, width: float = 1.0, depth: float = 1.0,
                       resolution: int | None = None, small: bool = False,
                       external_data: bool | None = None) -> Path | None:
    """The ``.data`` file :func:`save` writes the weights to with these arguments, or None when
    it keeps them inside the ``.onnx`` file."""
    path = Path(path)
    return _data_file(name, _save_config(name, width, depth, resolution, small), path, external_data)


def _save_config(name: str, width: float, depth: float, resolution: int | None, small: bool) -> ZooConfig:
    if not small:
        return _config(name, width, depth, resolution)
    if width != 1.0 or depth != 1.0 or resolution is not None:
        raise ModelError("the small variant sets its own width, depth and resolution",
                         "drop small, or drop width/depth/resolution")
    return _entry(name).small


def _data_file(name: str, cfg: ZooConfig, path: Path, external_data: bool | None) -> Path | None:
    if external_data is not None and not isinstance(external_data, bool):
        raise ModelError(f"external_data {external_data!r} is not True, False or None",
                         "give True (weights in a .data file), False (inside the .onnx) or None (automatic)")
    weight_bytes = _count(name, cfg).weight_bytes
    if external_data is False and weight_bytes > _MAX_WEIGHT_BYTES:
        raise ModelError(f"{name} at width {cfg.width:g} holds {weight_bytes / 1e9:.1f} GB of weights, over "
                         "protobuf's 2 GB limit for one .onnx file",
                         "let the weights go to a .data file beside it "
                         "(drop --inline-data; external_data=None in Python)")
    external = weight_bytes > _MAX_WEIGHT_BYTES if external_data is None else external_data
    if not external:
        return None
    if not path.name:
        raise ModelError(f"{path} names no file", "give a file name, e.g. model.onnx")
    data = path.with_suffix(".data")
    if data == path:
        raise ModelError(f"cannot write the model to {path}: its weights' file would have the same name",
                         "name the model FILE.onnx: its weights go to FILE.data")
    return data


def _write_model(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.save_model(model, path)
    except OSError as e:
        raise ModelError(f"cannot write {path}: {e.strerror or e}",
                         "choose a writable path with room for the model") from None


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
    inputs = ", ".join(f"{t.name}[{'x'.join(map(str, t.shape))}]" for t in group_layers(s.inputs))
    return f"{entry.title}; {inputs}; {s.num_params / 1e6:.1f}M params, {s.gflops:.1f} GFLOPs"


_LAYER_NUMBER = re.compile(r"^(.*?\.)(\d+)(\..*)$")


def group_layers(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """``specs`` with those that differ only in a layer number (a decoder's 44 past keys and values)
    as one each, named ``past_key_values.{0..21}.key``: for tables and one-line descriptions."""
    groups: dict[tuple[str, str, str, tuple[int, ...]], list[int]] = {}
    order: list[tuple[str, str, str, tuple[int, ...]] | TensorSpec] = []
    for spec in specs:
        match = _LAYER_NUMBER.match(spec.name)
        if match is None:
            order.append(spec)
            continue
        key = (match[1], match[3], spec.dtype, spec.shape)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(match[2]))
    out = []
    for item in order:
        if isinstance(item, TensorSpec):
            out.append(item)
            continue
        prefix, suffix, dtype, shape = item
        numbers = groups[item]
        label = str(numbers[0]) if len(numbers) == 1 else f"{{{min(numbers)}..{max(numbers)}}}"
        out.append(TensorSpec(f"{prefix}{label}{suffix}", dtype, shape))
    return tuple(out)
