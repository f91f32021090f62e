"""Every compression restores what it was given: lossless ones bit-exact on every dtype (0-d, empty,
strided and big-endian tensors too), lossy ones within their stated bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitinfer.compression import (
    COMPRESSIONS,
    Compressed,
    decompress,
    get_compression,
    parse_compression,
    wire_bytes,
)
from splitinfer.errors import TransportError
from splitinfer.types import NUMPY_DTYPES

LOSSLESS = ("none", "lz4", "zstd")
LOSSY = ("fp16", "int8")
SHAPES = [(), (0,), (3, 0, 2), (7,), (2, 3, 5)]
ALL_SPECS = ("none", "lz4", "zstd", "lz4:level=9", "zstd:level=-3", "zstd:level=19",
             "fp16", "int8", "int8:per_channel:axis=1", "int8:per_channel:axis=-1")


def _random(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random bit patterns (floats include NaNs and infs), bools 0 or 1."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    raw = rng.integers(0, 256, size=(*shape, NUMPY_DTYPES[dtype].itemsize), dtype=np.uint8)
    return raw.view(NUMPY_DTYPES[dtype]).reshape(shape)


def _bits(arr: np.ndarray) -> bytes:
    """The values' bytes in native order, for a bit-exact comparison (NaN == NaN here)."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")).tobytes()


def _assert_bit_exact(restored: np.ndarray, original: np.ndarray) -> None:
    assert restored.shape == original.shape
    assert restored.dtype == original.dtype.newbyteorder("=")
    assert _bits(restored) == _bits(original)


@pytest.mark.parametrize("name", LOSSLESS)
@pytest.mark.parametrize("dtype", sorted(NUMPY_DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_lossless_round_trip_is_bit_exact(name, dtype, shape):
    arr = _random(dtype, shape)
    c = get_compression(name).compress(arr)
    assert c.name == name
    assert c.params["dtype"] == dtype and c.params["shape"] == list(shape)
    _assert_bit_exact(decompress(c), arr)


@pytest.mark.parametrize("name", LOSSLESS)
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "float16", "uint16"])
def test_lossless_round_trip_of_strided_and_big_endian_tensors(name, dtype):
    base = _random(dtype, (6, 8, 4), seed=1)
    strided = base[::2, :, 1:3].transpose(2, 0, 1)
    assert not strided.flags.c_contiguous
    big_endian = base.astype(base.dtype.newbyteorder(">"))
    for arr in (strided, big_endian, big_endian[:, ::3]):
        restored = decompress(get_compression(name).compress(arr))
        _assert_bit_exact(restored, arr)
        assert restored.dtype.isnative


def test_none_neither_copies_on_the_way_out_nor_in():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    c = get_compression("none").compress(arr)
    assert np.shares_memory(np.frombuffer(c.payload, dtype=np.uint8), arr)
    restored = decompress(c)
    assert np.shares_memory(restored, arr)
    assert not restored.flags.writeable  # a view of what the peer sent: never written through


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_compressions_shrink_sparse_activations(name):
    arr = np.maximum(np.random.default_rng(2).standard_normal((64, 32, 32), dtype=np.float32), 0)
    c = get_compression(name).compress(arr)
    if name == "none":
        assert wire_bytes(c) > arr.nbytes  # the raw bytes plus the params
    else:
        assert wire_bytes(c) < arr.nbytes / 1.3  # half of it is zeros
    _assert_bit_exact(decompress(c), arr)


# ---- lossy: fp16 ---------------------------------------------------------------------------------

def _assert_fp16_bound(restored: np.ndarray, arr: np.ndarray) -> None:
    """Relative error <= 2**-11 in float16's normal range, absolute <= 2**-25 below it."""
    assert restored.dtype == arr.dtype.newbyteorder("=") and restored.shape == arr.shape
    x = arr.astype(np.float64)
    error = np.abs(restored.astype(np.float64) - x)
    bound = np.where(np.abs(x) >= 2.0**-14, np.abs(x) * 2.0**-11, 2.0**-25)
    assert (error <= bound).all(), float((error - bound).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fp16_restores_within_its_bound_in_the_original_dtype(dtype, shape):
    rng = np.random.default_rng(3)
    arr = np.asarray(rng.standard_normal(shape) * 10.0 ** rng.integers(-9, 5, size=shape), dtype=dtype)
    c = get_compression("fp16").compress(arr)
    assert np.frombuffer(c.payload, np.uint8).size == 2 * arr.size  # half of float32, a quarter of 64
    _assert_fp16_bound(decompress(c), arr)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fp16_of_strided_and_big_endian_tensors(dtype):
    base = np.random.default_rng(4).standard_normal((5, 6, 7)).astype(dtype)
    for arr in (base.transpose(2, 0, 1)[:, ::2], base.astype(base.dtype.newbyteorder(">"))):
        _assert_fp16_bound(decompress(get_compression("fp16").compress(arr)), arr)


def test_fp16_carries_nan_and_inf_and_refuses_a_finite_value_it_would_turn_into_inf():
    arr = np.array([np.nan, np.inf, -np.inf, 65504.0, -65519.0, 1.0], dtype=np.float32)
    restored = decompress(get_compression("fp16").compress(arr))
    assert np.isnan(restored[0]) and restored[1] == np.inf and restored[2] == -np.inf
    assert restored[3:].tolist() == [65504.0, -65504.0, 1.0]
    for bad in ([1.0, 65520.0], [np.nan, -1e6]):
        with pytest.raises(TransportError, match="65504"):
            get_compression("fp16").compress(np.array(bad, dtype=np.float64))


# ---- lossy: int8 ---------------------------------------------------------------------------------

def _assert_int8_bound(restored: np.ndarray, arr: np.ndarray, c: Compressed) -> None:
    """|error| <= scale / 2 per channel, plus the rounding of one multiply (a few ulp)."""
    assert restored.dtype == arr.dtype.newbyteorder("=") and restored.shape == arr.shape
    axis = c.params["axis"]
    shape = [1] * arr.ndim
    if axis is not None:
        shape[axis] = arr.shape[axis]
    scale = np.array(c.params["scale"]).reshape(shape)
    x = arr.astype(np.float64)
    slack = 4 * np.finfo(arr.dtype).eps * np.abs(x).max(initial=0)
    error = np.abs(restored.astype(np.float64) - x)
    assert (error <= scale / 2 * 1.001 + slack).all(), float((error - scale / 2).max())
    assert (restored[arr == 0] == 0).all()  # 0 is restored exactly: ReLU's zeros stay zeros


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", ["int8", "int8:per_channel:axis=1", "int8:per_channel:axis=-1"])
@pytest.mark.parametrize("shape", [(1, 4, 3, 3), (2, 5), (3, 0, 2), (2, 1)], ids=str)
def test_int8_restores_within_half_a_scale_per_channel(dtype, spec, shape):
    rng = np.random.default_rng(5)
    # Channels of very different ranges and offsets: per-channel scales must follow each.
    arr = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=shape[-1:]) + 3).astype(dtype)
    c = parse_compression(spec).compress(arr)
    assert np.frombuffer(c.payload, np.uint8).size == arr.size  # one byte per value
    channels = 1 if spec == "int8" else arr.shape[c.params["axis"]]
    assert len(c.params["scale"]) == len(c.params["zero_point"]) == channels
    _assert_int8_bound(decompress(c), arr, c)


def test_int8_per_channel_is_more_precise_than_per_tensor_on_channels_of_different_ranges():
    arr = np.stack([np.linspace(0, 1, 50), np.linspace(0, 1000, 50)]).astype(np.float32)[None]
    errors = {}
    for spec in ("int8", "int8:per_channel:axis=1"):
        errors[spec] = np.abs(decompress(parse_compression(spec).compress(arr))[0, 0] - arr[0, 0]).max()
    assert errors["int8:per_channel:axis=1"] < errors["int8"] / 100


@pytest.mark.parametrize("spec", ["int8", "int8:per_channel:axis=0"])
def test_int8_of_constant_tensors(spec):
    for value in (0.0, 5.0, -2.5, 1e-30):
        arr = np.full((3, 4), value, dtype=np.float32)
        c = parse_compression(spec).compress(arr)
        restored = decompress(c)
        assert np.isfinite(restored).all()
        if value == 0:
            assert all(s == 0 for s in c.params["scale"])  # the zero range, stored as scale 0
            assert (restored == 0).all()
        _assert_int8_bound(restored, arr, c)


def test_int8_of_strided_big_endian_and_0d_tensors():
    base = np.random.default_rng(6).standard_normal((4, 6, 5)).astype(np.float32)
    cases = [(base.transpose(1, 0, 2)[::2], "int8:per_channel:axis=1"),
             (base.astype(">f4"), "int8:per_channel:axis=2"), (np.array(-3.25), "int8")]
    for arr, spec in cases:
        c = parse_compression(spec).compress(arr)
        _assert_int8_bound(decompress(c), arr, c)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_int8_refuses_nan_and_inf(bad):
    arr = np.ones((2, 3), dtype=np.float32)
    arr[1, 2] = bad
    for spec in ("int8", "int8:per_channel:axis=0"):
        with pytest.raises(TransportError, match="NaN or inf"):
            parse_compression(spec).compress(arr)


def test_int8_axis_must_exist_in_the_tensor():
    with pytest.raises(TransportError, match="shape"):
        parse_compression("int8:per_channel:axis=2").compress(np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("name", LOSSY)
@pytest.mark.parametrize("dtype", ["int8", "int64", "uint8", "bool", "float16"])
def test_lossy_compressions_refuse_other_dtypes_at_compress_time(name, dtype):
    with pytest.raises(TransportError, match=dtype):
        get_compression(name).compress(np.zeros(3, dtype=dtype))


# ---- properties ----------------------------------------------------------------------------------

_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@given(st.sampled_from(LOSSLESS), st.sampled_from(sorted(NUMPY_DTYPES)), _shapes,
       st.sampled_from(["<", ">"]), st.data())
def test_property_lossless_round_trip(name, dtype, shape, order, data):
    dt = NUMPY_DTYPES[dtype].newbyteorder(order)
    arr = data.draw(hnp.arrays(dt, shape))
    if arr.ndim and data.draw(st.booleans()):
        arr = arr[..., ::2]  # strided
    _assert_bit_exact(decompress(get_compression(name).compress(arr)), arr)


def _floats(dtype: str, limit: float):
    width = 32 if dtype == "float32" else 64
    limit = float(np.float32(limit)) if width == 32 else limit
    return st.floats(-limit, limit, width=width, allow_nan=False, allow_subnormal=True)


@given(st.sampled_from(["float32", "float64"]), _shapes, st.data())
def test_property_fp16_round_trip(dtype, shape, data):
    arr = data.draw(hnp.arrays(dtype, shape, elements=_floats(dtype, 65504.0)))
    _assert_fp16_bound(decompress(get_compression("fp16").compress(arr)), arr)


@given(st.sampled_from(["float32", "float64"]), hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
       st.sampled_from(["int8", "int8:per_channel:axis=0", "int8:per_channel:axis=-1"]), st.data())
def test_property_int8_round_trip(dtype, shape, spec, data):
    arr = data.draw(hnp.arrays(dtype, shape, elements=_floats(dtype, 1e30)))
    c = parse_compression(spec).compress(arr)
    _assert_int8_bound(decompress(c), arr, c)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_compression_round_trips_through_its_registry_name(spec):
    compression = parse_compression(spec)
    assert compression.name in COMPRESSIONS
    arr = np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5)
    restored = decompress(compression.compress(arr))
    assert np.abs(restored - arr).max() <= (0.005 if compression.lossy else 0)


def test_int8_keeps_a_range_of_subnormals_within_its_bound():
    # hypothesis found it: 5e-324 / 255 is 0, and a scale of 0 marks a constant-zero channel
    arr = np.array([5e-324, 0.0])
    packed = parse_compression("int8").compress(arr)
    scale = packed.params["scale"][0]
    assert scale > 0
    assert np.abs(decompress(packed) - arr).max() <= scale / 2
