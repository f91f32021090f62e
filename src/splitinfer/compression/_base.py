"""What every compression shares: the `Compressed` record, the base class, and the checks a receiver
runs on what a peer sent before anything is allocated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from splitinfer.errors import ErrorCode, PlanError, TransportError
from splitinfer.types import NUMPY_DTYPES

# The receiver's default bound on one restored tensor: the wire codec's default frame limit.
DEFAULT_MAX_BYTES = 1 << 30
MAX_NDIM = 32  # as the wire codec: no model has more, and it bounds the work on a peer's shape
_MAX_ARRAY_BYTES = 1 << 62  # numpy refuses shapes whose size (zeros aside) does not fit an intp
ALL_DTYPES = frozenset(NUMPY_DTYPES)
FLOAT_DTYPES = frozenset({"float32", "float64"})
# Little-endian dtypes by name: the payload's byte order, whatever the machines' (LE on x86 and arm64,
# where these equal the native dtypes, so nothing is byte-swapped there).
LE_DTYPES: dict[str, np.dtype] = {name: dt.newbyteorder("<") for name, dt in NUMPY_DTYPES.items()}
# dtype -> name without numpy's dtype.name (a microsecond per call, per tensor, per request).
_NAME_OF_DTYPE: dict[np.dtype, str] = {dt: name for name, dt in LE_DTYPES.items()}


@dataclass(frozen=True, slots=True)
class Compressed:
    """One compressed tensor: ``payload`` goes on the wire as a frame, ``params`` in the message header.

    ``params`` holds plain values only (str, int, float, None, lists of them): the original dtype
    name and shape, and what the compression needs to restore it. ``name`` says which compression
    made it (the receiver looks it up with :func:`splitinfer.compression.decompress`).
    """

    name: str
    payload: bytes | bytearray | memoryview
    params: dict[str, Any]


class Compression:
    """A way to send one tensor in fewer bytes; subclasses are frozen dataclasses (equal when their
    settings are)."""

    name: ClassVar[str]
    lossy: ClassVar[bool]
    dtypes: ClassVar[frozenset[str]]  # the dtype names it accepts

    def accepts(self, dtype: np.dtype | str) -> bool:
        """Whether it can carry tensors of ``dtype`` (a numpy dtype or its name)."""
        return dtype_name(dtype) in self.dtypes

    def check(self, dtype: np.dtype | str, shape: tuple[int, ...] | None = None,
              where: str = "the tensor") -> None:
        """At plan or config time: a clear :class:`PlanError` when it cannot carry this tensor."""
        if not self.accepts(dtype):
            kind = "lossy and carries" if self.lossy else "carries"
            raise PlanError(f"compression {self.spec} is {kind} {' or '.join(sorted(self.dtypes))} tensors "
                            f"only; {where} is {dtype_name(dtype) or dtype}",
                            "use none, lz4 or zstd on this hop (they carry every dtype)")

    @property
    def spec(self) -> str:
        """The text form, as :func:`splitinfer.compression.parse_compression` reads it."""
        return self.name

    def __str__(self) -> str:
        return self.spec

    def compress(self, arr: np.ndarray) -> Compressed:
        raise NotImplementedError

    def carry(self, arr: np.ndarray) -> np.ndarray | Compressed:
        """The tensor as a hop with this compression sends it: compressed when this compression takes
        its dtype, else as it is (integers over a lossy hop)."""
        return self.compress(arr) if self.accepts(arr.dtype) else arr

    def decompress(self, c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        raise NotImplementedError

    def _dtype_of(self, arr: np.ndarray) -> tuple[str, np.dtype]:
        """The name and little-endian dtype of a tensor to compress; a TransportError (as the codec's
        encode) for one this compression does not carry."""
        if not isinstance(arr, np.ndarray):
            raise TransportError(f"compression {self.spec} got a {type(arr).__name__}, not an array",
                                 "pass a numpy array", code=ErrorCode.DTYPE)
        name = dtype_name(arr.dtype)
        if name not in self.dtypes:
            raise TransportError(f"compression {self.spec} cannot carry a {arr.dtype} tensor",
                                 f"use it for {' or '.join(sorted(self.dtypes))} tensors only, or none, "
                                 "lz4 or zstd", code=ErrorCode.DTYPE)
        return name, LE_DTYPES[name]


def dtype_name(dtype: Any) -> str:
    """The name of a dtype (of either byte order), scalar type or dtype name; '' for anything else."""
    if isinstance(dtype, str):
        return dtype if dtype in NUMPY_DTYPES else ""
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        dtype = np.dtype(dtype)  # np.float32 and the like
    if isinstance(dtype, np.dtype):
        name = _NAME_OF_DTYPE.get(dtype)
        return name if name is not None else _NAME_OF_DTYPE.get(dtype.newbyteorder("<"), "")
    return ""


def as_bytes(arr: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without copying (0-d and empty arrays too)."""
    return memoryview(arr.reshape(-1).view(np.uint8))


def base_params(name: str, arr: np.ndarray) -> dict[str, Any]:
    return {"dtype": name, "shape": list(arr.shape)}


# ---- a receiver's checks: everything from a peer, before anything is allocated -------------------

def fault(problem: str, fix: str = "send what the sender's compression produced, unmodified") \
        -> TransportError:
    return TransportError(problem, fix, code=ErrorCode.MALFORMED)


def check_header(c: Any, name: str, keys: frozenset[str], dtypes: frozenset[str],
                 max_bytes: int) -> tuple[np.dtype, tuple[int, ...], int, memoryview]:
    """The restored tensor's little-endian dtype, shape and byte size, and the payload's bytes, once
    ``c`` is checked: a `Compressed` of compression ``name`` whose params have exactly ``keys``, a
    known dtype in ``dtypes``, and a shape of at most ``max_bytes`` bytes."""
    if type(max_bytes) is not int or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int, not {max_bytes!r}")
    if not isinstance(c, Compressed):
        raise fault(f"{name}: expected a Compressed, got {type(c).__name__}")
    if c.name != name:
        raise fault(f"a {str(c.name)[:40]!r} payload given to the {name} compression",
                    "decompress with splitinfer.compression.decompress, which picks by name")
    params = c.params
    if type(params) is not dict or params.keys() != keys:
        got = sorted(map(repr, params))[:10] if type(params) is dict else type(params).__name__
        raise fault(f"{name} params have keys {got}, expected {sorted(keys)}")
    dtype_key = params["dtype"]
    if type(dtype_key) is not str or dtype_key not in dtypes:
        raise fault(f"{name} params name dtype {str(dtype_key)[:40]!r}",
                    f"send one of {', '.join(sorted(dtypes))}")
    dtype = LE_DTYPES[dtype_key]
    shape = params["shape"]
    if (type(shape) not in (list, tuple) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise fault(f"{name} params have shape {str(shape)[:80]}",
                    f"send at most {MAX_NDIM} non-negative int dimensions")
    num_bytes = dtype.itemsize * math.prod(shape)  # Python ints: a huge shape cannot overflow
    if num_bytes > max_bytes:
        raise fault(f"{name} params declare {num_bytes} bytes of tensor (limit {max_bytes})",
                    "send smaller tensors, or raise the receiver's limit")
    # An empty tensor's other dimensions are not bounded by its bytes: numpy must still accept them.
    if not num_bytes and dtype.itemsize * math.prod(d or 1 for d in shape) > _MAX_ARRAY_BYTES:
        raise fault(f"empty tensor shape {shape[:8]} is too large for an array")
    try:
        payload = memoryview(c.payload).cast("B")
    except (TypeError, ValueError) as e:  # not a buffer, or not a contiguous one
        raise fault(f"{name} payload is not contiguous bytes ({type(c.payload).__name__}: {e})") from None
    return dtype, tuple(shape), num_bytes, payload


def check_length(name: str, payload: memoryview, expected: int) -> None:
    if payload.nbytes != expected:
        raise fault(f"{name} payload has {payload.nbytes} bytes, its params say {expected}")


def restore_view(name: str, data: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor over ``data`` (its length checked), read-only and without a copy; bools must be
    0 or 1 (numpy would keep another byte as a third truth value)."""
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    if dtype.kind == "b" and arr.size and arr.view(np.uint8).max() > 1:
        raise fault(f"{name} payload holds a bool that is neither 0 nor 1")
    if not dtype.isnative:
        return arr.astype(dtype.newbyteorder("="))
    arr.flags.writeable = False  # always read-only: in process, ``none``'s payload is the sender's array
    return arr


def wire_bytes(c: Compressed) -> int:
    """Bytes on the wire for ``c``: its payload plus its params as msgpack (what the header grows by)."""
    return memoryview(c.payload).nbytes + msgpack_size(c.params)


def msgpack_size(value: Any) -> int:
    """The exact msgpack size of plain values as msgspec encodes them (floats as float64)."""
    kind = type(value)
    if value is None or kind is bool:
        return 1
    if kind is int:
        if -32 <= value <= 127:
            return 1
        if -(1 << 7) <= value < 1 << 8:
            return 2
        if -(1 << 15) <= value < 1 << 16:
            return 3
        return 5 if -(1 << 31) <= value < 1 << 32 else 9
    if kind is float:
        return 9
    if kind is str:
        n = len(value.encode())
        return n + (1 if n < 32 else 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5)
    if kind in (bytes, bytearray, memoryview):
        n = memoryview(value).nbytes
        return n + (2 if n < 1 << 8 else 3 if n < 1 << 16 else 5)
    if kind in (list, tuple, dict):
        n = len(value)
        items = (*value.keys(), *value.values()) if kind is dict else value
        if kind is not dict and items and all(type(v) is float for v in items):
            body = 9 * n  # a list of scales: the common long list, counted without a call per item
        else:
            body = sum(map(msgpack_size, items))
        return body + (1 if n < 16 else 3 if n < 1 << 16 else 5)
    raise TypeError(f"params hold a {kind.__name__}, which is not a plain value")
