"""The lossy compressions, for float32 and float64 tensors only: ``fp16`` and ``int8``.

``fp16``: each value rounded to float16 (2 bytes), restored to the original dtype. Relative error at
most 2**-11 for magnitudes in float16's normal range (6.1e-5 to 65504); below it, absolute error at
most 2**-25 (float16's subnormal spacing). NaN and inf travel as they are; a finite value beyond
65504 is refused (it would arrive as inf).

``int8``: affine quantisation to one byte per value, as ONNX's QuantizeLinear with uint8 codes:
``code = clip(round(x / scale) + zero_point, 0, 255)``, restored as ``(code - zero_point) * scale``.
Scale and zero point come from the tensor's minimum and maximum, widened to include 0 (so that 0,
the most common activation, is restored exactly, and a receiver could dequantise inside an ONNX
graph); per tensor, or per channel along an axis (``axis``), where each channel has its own. Error
at most ``scale / 2`` per channel (plus the float rounding of one multiply). A constant-zero channel
gets scale 0 and is restored exactly. NaN or inf anywhere is refused: no finite range holds them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitinfer.compression._base import (
    DEFAULT_MAX_BYTES,
    FLOAT_DTYPES,
    Compressed,
    Compression,
    as_bytes,
    base_params,
    check_header,
    check_length,
    fault,
)
from splitinfer.errors import ErrorCode, PlanError, TransportError

_FP16_KEYS = frozenset({"dtype", "shape", "coded_dtype"})
_INT8_KEYS = frozenset({"dtype", "shape", "coded_dtype", "axis", "scale", "zero_point"})
_FP16_LIMIT = 65520.0  # float16's largest finite value is 65504; anything from 65520 rounds to inf
_lock = threading.Lock()
_f16_table: np.ndarray | None = None


def _float16_to_float32() -> np.ndarray:
    """Every float16 bit pattern as float32: a gather from it is 3x faster than numpy's cast."""
    global _f16_table
    if _f16_table is None:
        with _lock, np.errstate(invalid="ignore"):  # NaN patterns stay NaN
            _f16_table = np.arange(1 << 16, dtype=np.uint16).view("<f2").astype(np.float32)
    return _f16_table


@dataclass(frozen=True)
class Fp16(Compression):
    """Half the bytes of float32; see the module's text for the error bound."""

    name = "fp16"
    lossy = True
    dtypes = FLOAT_DTYPES

    def compress(self, arr: np.ndarray) -> Compressed:
        name, _ = self._dtype_of(arr)
        with np.errstate(over="ignore"):  # overflow is checked below, with a clearer message
            half = arr.astype("<f2", order="C")
        # Cheap in the common case: two reductions of the input (NaN makes them NaN: the slow path).
        if arr.size and not (arr.min() > -_FP16_LIMIT and arr.max() < _FP16_LIMIT):
            overflow = np.isinf(half) & np.isfinite(arr)
            if overflow.any():
                value = arr[overflow].flat[0]
                raise TransportError(f"fp16 cannot carry {value:g}: float16's largest value is 65504",
                                     "use int8 (it scales to any range) or a lossless compression")
        return Compressed(self.name, as_bytes(half), base_params(name, arr) | {"coded_dtype": "float16"})

    def decompress(self, c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        dtype, shape, num_bytes, payload = check_header(c, self.name, _FP16_KEYS, self.dtypes, max_bytes)
        if c.params["coded_dtype"] != "float16":
            raise fault(f"fp16 params say coded dtype {str(c.params['coded_dtype'])[:40]!r}, not float16")
        check_length(self.name, payload, num_bytes // dtype.itemsize * 2)
        half = np.frombuffer(payload, dtype="<u2").reshape(shape)
        if dtype.itemsize == 4:
            return np.take(_float16_to_float32(), half.reshape(-1)).reshape(shape)  # 0-d: an array too
        return half.view("<f2").astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class Int8(Compression):
    """A quarter of float32's bytes; ``axis=None`` quantises per tensor, an int per channel along that
    axis (1: NCHW's channels; negative counts from the end)."""

    axis: int | None = None
    name = "int8"
    lossy = True
    dtypes = FLOAT_DTYPES

    @property
    def spec(self) -> str:
        return self.name if self.axis is None else f"{self.name}:per_channel:axis={self.axis}"

    def check(self, dtype: np.dtype | str, shape: tuple[int, ...] | None = None,
              where: str = "the tensor") -> None:
        super().check(dtype, shape, where)
        if self.axis is not None and shape is not None and not -len(shape) <= self.axis < len(shape):
            raise PlanError(f"compression {self.spec} quantises along axis {self.axis}; {where} has "
                            f"{len(shape)} dimensions {list(shape)}",
                            "choose an axis the tensor has, or int8 per tensor")

    def compress(self, arr: np.ndarray) -> Compressed:
        name, _ = self._dtype_of(arr)
        work = np.dtype(np.float32 if name == "float32" else np.float64)
        axis = self._axis_of(arr)
        bshape = [1] * arr.ndim  # scale and zero point broadcast along the channel axis
        if axis is not None:
            bshape[axis] = arr.shape[axis]
        lo, hi = _min_max(arr, axis)
        scale, zero_point = _scale_and_zero_point(lo, hi, work)
        inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0).astype(work)
        # code = trunc(x / scale + zero_point + 0.5), clipped: round half up, in three passes and one cast
        codes = np.empty(arr.shape, dtype=work)
        np.multiply(arr, inverse.reshape(bshape), out=codes)
        np.add(codes, (zero_point + 0.5).astype(work).reshape(bshape), out=codes)
        np.clip(codes, 0, 255, out=codes)
        params = base_params(name, arr) | {
            "coded_dtype": "uint8", "axis": axis,
            "scale": scale.astype(np.float64).tolist(), "zero_point": zero_point.astype(int).tolist()}
        return Compressed(self.name, as_bytes(codes.astype(np.uint8)), params)

    def _axis_of(self, arr: np.ndarray) -> int | None:
        if self.axis is None:
            return None
        if not -arr.ndim <= self.axis < arr.ndim:
            raise TransportError(f"compression {self.spec} got a tensor of shape {list(arr.shape)}",
                                 "choose an axis the tensor has, or int8 per tensor", code=ErrorCode.SHAPE)
        return self.axis % arr.ndim

    def decompress(self, c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        dtype, shape, num_bytes, payload = check_header(c, self.name, _INT8_KEYS, self.dtypes, max_bytes)
        out_dtype = dtype.newbyteorder("=")
        params = c.params
        if params["coded_dtype"] != "uint8":
            raise fault(f"int8 params say coded dtype {str(params['coded_dtype'])[:40]!r}, not uint8")
        axis = params["axis"]
        if axis is not None and (type(axis) is not int or not 0 <= axis < len(shape)):
            raise fault(f"int8 params give axis {str(axis)[:40]} for shape {list(shape)}")
        num_channels = 1 if axis is None else shape[axis]
        scale = _checked_list(params["scale"], "scale", num_channels, (float, int))
        zero_point = _checked_list(params["zero_point"], "zero_point", num_channels, (int,))
        if scale.size and not (np.isfinite(scale).all() and scale.min() >= 0
                               and scale.max() <= np.finfo(out_dtype).max / 255):
            raise fault(f"int8 scales must be finite, >= 0 and <= {np.finfo(out_dtype).max / 255:g}")
        if zero_point.size and not (zero_point.min() >= 0 and zero_point.max() <= 255):
            raise fault("int8 zero points must be 0 to 255")
        check_length(self.name, payload, num_bytes // dtype.itemsize)
        bshape = [1] * len(shape)
        if axis is not None:
            bshape[axis] = num_channels
        codes = np.frombuffer(payload, dtype=np.uint8).reshape(shape)
        out = np.empty(shape, dtype=out_dtype)
        np.subtract(codes, zero_point.astype(out_dtype).reshape(bshape), out=out)
        np.multiply(out, scale.astype(out_dtype).reshape(bshape), out=out)
        return out


def _min_max(arr: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's minimum and maximum (float64, one entry per tensor); a clear error for NaN/inf."""
    num_channels = 1 if axis is None else arr.shape[axis]
    if arr.size == 0:
        return np.zeros(num_channels), np.zeros(num_channels)
    others = None if axis is None else tuple(i for i in range(arr.ndim) if i != axis)
    lo = np.asarray(np.min(arr, axis=others), dtype=np.float64).reshape(num_channels)
    hi = np.asarray(np.max(arr, axis=others), dtype=np.float64).reshape(num_channels)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # min and max are NaN where a NaN is
        raise TransportError("int8 cannot quantise a tensor holding NaN or inf: no scale covers it",
                             "find where the model makes NaN or inf, or use fp16 or a lossless compression "
                             "on this hop")
    return lo, hi


def _scale_and_zero_point(lo: np.ndarray, hi: np.ndarray, work: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the scale (in the working precision, exactly as the receiver will use it) and the
    zero point (0-255) for the range [min(lo, 0), max(hi, 0)]."""
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    scale = hi / 255 - lo / 255  # not (hi - lo) / 255: that overflows for ranges near float64's limit
    # At least the smallest normal number: its inverse stays finite, and a range that small fits in
    # 255 of them, so the bound scale / 2 still holds.
    # (A range of subnormals divides to 0: it gets the smallest normal scale too, not 0, which would
    # mark the channel constant zero.)
    scale = np.where(hi > lo, np.maximum(scale, np.finfo(work).tiny), 0.0).astype(work)
    zero_point = np.divide(-lo, scale, out=np.zeros_like(lo), where=scale > 0)
    return scale, np.clip(np.rint(zero_point), 0, 255)


def _checked_list(values: Any, what: str, length: int, kinds: tuple[type, ...]) -> np.ndarray:
    """A list of ``length`` plain numbers of ``kinds`` (bool is not a number here) as float64."""
    if type(values) is not list or len(values) != length or not set(map(type, values)) <= set(kinds):
        got = f"{len(values)} items" if type(values) is list else type(values).__name__
        raise fault(f"int8 params' {what} must be a list of {length} numbers, got {got}")
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond float64
        raise fault(f"int8 params' {what} holds a number out of range") from None
