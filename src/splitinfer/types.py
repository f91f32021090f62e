"""Plain data shared by every layer: tensor descriptions, dtype helpers, and the feed check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import numpy as np

from splitinfer.errors import ModelError, ShapeError

# ONNX TensorProto element type -> numpy dtype name. Kept here (not in graph/)
# because the runtime's wire codec needs it too and must not import onnx.
ONNX_TO_NUMPY: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}
NUMPY_TO_ONNX: dict[str, int] = {v: k for k, v in ONNX_TO_NUMPY.items()}
# numpy's dtype.name and np.dtype(str) are slow enough to show in the per-request cost of small
# tensors: the runtime looks dtypes up here.
NUMPY_DTYPES: dict[str, np.dtype] = {name: np.dtype(name) for name in ONNX_TO_NUMPY.values()}


def numpy_dtype(onnx_elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX element type; a clear error for unsupported ones."""
    try:
        return np.dtype(ONNX_TO_NUMPY[onnx_elem_type])
    except KeyError:
        raise ModelError(
            f"ONNX element type {onnx_elem_type} has no numpy equivalent",
            "use a model whose tensors are bool, int, uint or float (16/32/64)",
        ) from None


class TensorSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """A named tensor with a dtype (numpy name) and a shape.

    A negative dim varies: any size is accepted there (:func:`check_feeds`), as for a tensor whose size
    depends on the input values (``Model.dynamic_dims``). ``seen``: for such a spec, the whole shape as
    seen on the analysis input, what :attr:`num_bytes` counts (without it a varying dim counts as 1).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    seen: tuple[int, ...] | None = None

    @property
    def num_bytes(self) -> int:
        shape = self.seen if self.seen is not None else tuple(1 if d < 0 else d for d in self.shape)
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def varies(self) -> bool:
        """Whether some dim accepts any size."""
        return any(d < 0 for d in self.shape)


def _shape_matches(declared: Sequence[int], actual: Sequence[int]) -> bool:
    # A negative declared dimension accepts any size (a dynamic axis).
    if len(declared) != len(actual):
        return False
    return all(d < 0 or d == a for d, a in zip(declared, actual, strict=True))


def check_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], where: str) -> None:
    """Feeds must be exactly the specs' tensors with their dtypes and shapes."""
    # The common case first, cheaply: this runs for every request on the coordinator and on
    # every stage, and numpy's dtype.name alone costs a microsecond.
    if len(feeds) == len(specs) and all(
            (arr := feeds.get(s.name)) is not None and arr.dtype == NUMPY_DTYPES.get(s.dtype)
            and (arr.shape == s.shape or _shape_matches(s.shape, arr.shape)) for s in specs):
        return
    names = [s.name for s in specs]
    if set(feeds) != set(names):
        missing = sorted(set(names) - set(feeds))
        extra = sorted(set(feeds) - set(names))
        raise ShapeError(f"{where} got tensors {sorted(feeds)} (missing {missing}, unexpected {extra})",
                         f"feed exactly {names}")
    for s in specs:
        arr = feeds[s.name]
        if arr.dtype.name != s.dtype:
            raise ShapeError(f"{where}: tensor {s.name!r} has dtype {arr.dtype.name}, expected {s.dtype}",
                             f"cast it with .astype('{s.dtype}')")
        if not _shape_matches(s.shape, arr.shape):
            open_dims = " (-1: any size)" if s.varies else ""
            raise ShapeError(f"{where}: tensor {s.name!r} has shape {list(arr.shape)}, expected "
                             f"{list(s.shape)}{open_dims}", "feed a tensor of the declared shape")
