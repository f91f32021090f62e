"""What the zoo's builder tracks of a tensor: element types, shapes, expected moments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnx import TensorProto

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL

def broadcast_shapes(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """The numpy broadcast of two shapes."""
    a, b = tuple(a), tuple(b)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class TensorInfo:
    """What the builder knows of a tensor: shape, ONNX element type, expected moments."""

    shape: tuple[int, ...]
    dtype: int = FLOAT
    mean: float = 0.0
    m2: float = 1.0
