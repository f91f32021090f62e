"""Inputs of bench_quality.py: scikit-image's photographs and their views, the zoo's image models,
and where each model is cut (the fewest bytes near 25/50/75% of its FLOPs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitinfer import zoo
from splitinfer.data import Dataset, Preprocess
from splitinfer.graph import analyze, load_model, split
from splitinfer.runtime import StageSpec
from splitinfer.types import TensorSpec

PHOTOS = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
          "rocket": "rocket.jpg", "immunohistochemistry": "ihc.png",
          "hubble_deep_field": "hubble_deep_field.jpg", "retina": "retina.jpg",
          "motorcycle_left": "motorcycle_left.png", "motorcycle_right": "motorcycle_right.png"}
MIN_PHOTOS = 6
CROP = 0.7  # the corner crops keep 70% of each side
CUT_FLOP_SHARES = (0.25, 0.5, 0.75)  # where the 3 cuts go, as shares of the model's FLOPs
CUT_WINDOW = 0.1  # how far from its share a cut may be
RELU_OPS = ("Relu", "Clip")  # Clip is ReLU6 in the zoo


def photographs() -> dict[str, object]:
    """name -> RGB Pillow image, for every photograph of PHOTOS the installed scikit-image has."""
    import skimage.data
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    found = {}
    for name, filename in PHOTOS.items():
        path = folder / filename
        if path.is_file():
            with Image.open(path) as image:
                found[name] = image.convert("RGB")
    missing = sorted(set(PHOTOS) - set(found))
    if missing:
        print(f"(scikit-image {skimage.__version__} lacks {', '.join(missing)})")
    if len(found) < MIN_PHOTOS:
        raise SystemExit(f"only {len(found)} of scikit-image's photographs are installed; need {MIN_PHOTOS}")
    return found


def views(photos: Mapping[str, object]) -> dict[str, object]:
    """Each photograph as it is, flipped left-right, and its top-left and bottom-right 70% crops."""
    from PIL import Image

    out = {}
    for name, image in photos.items():
        w, h = image.size  # type: ignore[attr-defined]
        cw, ch = int(w * CROP), int(h * CROP)
        out[name] = image
        out[f"{name} flipped"] = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # type: ignore[attr-defined]
        out[f"{name} top-left"] = image.crop((0, 0, cw, ch))  # type: ignore[attr-defined]
        out[f"{name} bottom-right"] = image.crop((w - cw, h - ch, w, h))  # type: ignore[attr-defined]
    return out


def image_dataset(images: Mapping[str, object], spec: TensorSpec) -> Dataset:
    pre = Preprocess.for_input(spec.shape, spec.dtype)
    x = np.stack([pre.apply(image) for image in images.values()])
    return Dataset(x, source=f"{len(images)} views of scikit-image photographs", names=list(images),
                   preprocess=pre)


# ---- models and cuts ---------------------------------------------------------------------------
def image_models() -> list[str]:
    """The zoo models whose one input is a float image batch, N x 3 x H x W."""
    out = []
    for name in zoo.names():
        inputs = zoo.summarize(name, small=True).inputs
        if len(inputs) == 1 and len(inputs[0].shape) == 4 and inputs[0].shape[1] == 3 \
                and inputs[0].dtype.startswith("float"):
            out.append(name)
    return out


@dataclass
class CutInfo:
    index: int  # 1-based, as the hop into stage ``index``
    tensors: tuple[TensorSpec, ...]
    ops: tuple[str, ...]  # what made each tensor
    kind: str  # post-ReLU or other
    flop_share: float  # share of the model's FLOPs before the cut
    zeros: list[float] = field(default_factory=list)  # per image
    ratios: dict[str, list[float]] = field(default_factory=dict)  # compression -> per image

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.tensors)

    def describe(self) -> str:
        return ", ".join(f"{s.name} {'x'.join(map(str, s.shape))}" for s in self.tensors)


def producers_of(proto) -> dict[str, object]:
    return {out: node for node in proto.graph.node for out in node.output}


def cut_kind(names: Sequence[str], producers: Mapping[str, object]) -> tuple[tuple[str, ...], str]:
    ops, relu = [], True
    for name in names:
        node = producers.get(name)
        op = node.op_type if node is not None else "input"  # type: ignore[attr-defined]
        ops.append(op)
        if op == "MaxPool":  # a max pool of a ReLU output is one too
            inner = producers.get(node.input[0])  # type: ignore[union-attr]
            relu &= inner is not None and inner.op_type in RELU_OPS  # type: ignore[attr-defined]
        else:
            relu &= op in RELU_OPS
    return tuple(ops), "post-ReLU" if relu else "other"


def choose_cuts(analysis) -> list[int]:
    """Indexes into ``analysis.cuts``: for each of CUT_FLOP_SHARES, what a planner balancing FLOPs
    would take, the cut with the fewest bytes within CUT_WINDOW of that share of the FLOPs (ties: the
    nearest to it, then the later one: after the activation rather than before it)."""
    total = sum(b.flops for b in analysis.blocks)
    before = np.cumsum([b.flops for b in analysis.blocks])[:-1] / total  # share of FLOPs before cut i
    chosen: list[int] = []
    for share in CUT_FLOP_SHARES:
        window = [i for i in range(len(analysis.cuts)) if abs(before[i] - share) <= CUT_WINDOW] or \
            [int(np.argmin(np.abs(before - share)))]
        best = min((i for i in window if i not in chosen),
                   key=lambda i: (analysis.cuts[i].num_bytes, round(abs(before[i] - share), 6), -i))
        chosen.append(best)
    return sorted(chosen)


def split_model(model_bytes: bytes) -> tuple[list[StageSpec], list[CutInfo]]:
    """The model cut as :func:`choose_cuts` says, one device per stage."""
    model = load_model(model_bytes)
    analysis = analyze(model)
    total = sum(b.flops for b in analysis.blocks)
    before = np.cumsum([b.flops for b in analysis.blocks])[:-1] / total
    chosen = choose_cuts(analysis)
    parts = split(model, [analysis.cuts[i] for i in chosen], analysis)
    stages = [StageSpec(p.index, f"d{p.index}", p.to_bytes(), p.inputs, p.outputs) for p in parts]
    producers = producers_of(model.proto)
    cuts = []
    for k, i in enumerate(chosen, 1):
        tensors = stages[k].inputs
        ops, kind = cut_kind([s.name for s in tensors], producers)
        cuts.append(CutInfo(k, tensors, ops, kind, float(before[i])))
    return stages, cuts


def per_channel_spec(cuts: Sequence[CutInfo]) -> str:
    """int8 per channel along NCHW's channels, or along the features of a transformer's N x T x C."""
    ranks = {len(s.shape) for cut in cuts for s in cut.tensors}
    return "int8:per_channel:axis=1" if ranks == {4} else "int8:per_channel:axis=-1"


# ---- runners -------------------------------------------------------------------------------------
