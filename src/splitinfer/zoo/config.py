"""Size settings shared by the zoo's architectures."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ZooConfig:
    """How big to build an architecture.

    ``resolution`` is the image side for vision models, the sequence length
    for text encoders, and for decoders (their lengths chosen at run time) the
    prompt length their summary and MAC count trace; ``num_classes`` and
    ``vocab_size`` only shrink for the tiny test variants of
    :func:`splitinfer.zoo.build_small` (a decoder's full size sets its own).
    """

    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    vocab_size: int = 30522


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (torchvision's _make_divisible)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return rounded


def scale_depth(repeats: int, depth: float) -> int:
    """``repeats * depth`` rounded half up, at least 1."""
    return max(1, math.floor(repeats * depth + 0.5))


def scale_heads(width: float, full_heads: int = 12, full_hidden: int = 768) -> tuple[int, int]:
    """(num_heads, hidden) of a transformer at ``width``: heads scale with width, at least 2."""
    num_heads = max(2, scale_depth(full_heads, width))
    head_dim = max(8, math.floor(full_hidden * width / num_heads + 0.5))
    return num_heads, num_heads * head_dim
