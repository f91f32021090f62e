"""What the zoo's builder tracks of a tensor: element types, shapes, expected moments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnx import TensorProto

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL


class Dim(int):
    """A dimension chosen at run time (a batch, a sequence length): ONNX's ``dim_param`` ``name``.

    Its integer value is the size the builder traces the model at, for parameter and MAC counts and
    summaries; shape arithmetic on it gives plain ints, so a dimension derived from symbolic ones is
    named explicitly where it is made (a decoder's ``total_sequence_length``). The builder writes
    the name, never the value, into the model's inputs, outputs and value_info.
    """

    name: str

    def __new__(cls, value: int, name: str) -> Dim:
        dim = super().__new__(cls, value)
        dim.name = name
        return dim

    def __repr__(self) -> str:
        return f"Dim({int(self)}, {self.name!r})"

    def __reduce__(self) -> tuple[type[Dim], tuple[int, str]]:
        return Dim, (int(self), self.name)


def onnx_dims(shape: Sequence[int]) -> list[int | str]:
    """A shape as ``helper.make_tensor_value_info`` takes it: a :class:`Dim` by its name."""
    return [d.name if isinstance(d, Dim) else int(d) for d in shape]


def recorded(shape: Sequence[int]) -> tuple[int, ...]:
    """A shape as the builder records it: ints, a :class:`Dim` kept as it is."""
    return tuple(d if isinstance(d, Dim) else int(d) for d in shape)


def broadcast_shapes(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """The numpy broadcast of two shapes; of two equal sizes, a :class:`Dim` is kept."""
    a, b = tuple(a), tuple(b)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(_broadcast(x, y) for x, y in zip(a, b, strict=True))


def _broadcast(x: int, y: int) -> int:
    if x == 1 and not (isinstance(x, Dim) and y == 1):
        return y
    if y == 1 or isinstance(x, Dim) or x != y:
        return x  # numpy refuses unequal sizes other than 1; the model's run will say so
    return y


@dataclass(frozen=True)
class TensorInfo:
    """What the builder knows of a tensor: shape (a :class:`Dim` where it is chosen at run time),
    ONNX element type, expected moments."""

    shape: tuple[int, ...]
    dtype: int = FLOAT
    mean: float = 0.0
    m2: float = 1.0
