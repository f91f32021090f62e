"""Whatever a peer sends as a compressed tensor, the receiver raises a TransportError (code
``malformed``) before allocating more than the params allow: wrong lengths, huge shapes, unknown
dtypes, bad scales, truncated frames, and frames that decompress to far more than they say."""

from __future__ import annotations

import struct
import tracemalloc

import lz4.frame
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.compression import Compressed, decompress, get_compression
from splitinfer.errors import ErrorCode, TransportError

MiB = 1 << 20
ARR = np.linspace(-2, 3, 24, dtype=np.float32).reshape(2, 3, 4)
GOOD = {name: get_compression(name, **settings).compress(ARR) for name, settings in
        [("none", {}), ("fp16", {}), ("int8", {"axis": 1}), ("lz4", {}), ("zstd", {})]}


_DROP = object()


def _with(c: Compressed, payload=None, **params) -> Compressed:
    """``c`` with another payload and some params replaced (``_DROP`` as a value: the key removed)."""
    new = {k: v for k, v in (c.params | params).items() if v is not _DROP}
    return Compressed(c.name, c.payload if payload is None else payload, new)


def _refused(c: Compressed, match: str | None = None, max_bytes: int = 1 << 30) -> TransportError:
    with pytest.raises(TransportError, match=match) as info:
        decompress(c, max_bytes=max_bytes)
    assert info.value.code == ErrorCode.MALFORMED
    return info.value


def _peak_bytes(c: Compressed, max_bytes: int = 1 << 30) -> int:
    """The most memory Python and numpy held while the receiver refused ``c``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _refused(c, max_bytes=max_bytes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(GOOD))
@pytest.mark.parametrize(("change", "match"), [
    ({"dtype": "complex64"}, "dtype"),
    ({"dtype": "object"}, "dtype"),
    ({"dtype": 5}, "dtype"),
    ({"dtype": ["float32"]}, "dtype"),
    ({"shape": [2, -3, 4]}, "shape"),
    ({"shape": [2, 3.0, 4]}, "shape"),
    ({"shape": [2, True, 4]}, "shape"),
    ({"shape": "2,3,4"}, "shape"),
    ({"shape": [1] * 33}, "shape"),
    ({"shape": [1 << 40, 1 << 40]}, "limit"),
    ({"shape": [0, 1 << 62, 4]}, "too large"),
    ({"shape": _DROP}, "keys"),
    ({"extra": 1}, "keys"),
], ids=str)
def test_bad_params_are_refused(name, change, match):
    _refused(_with(GOOD[name], **change), match)


@pytest.mark.parametrize("name", list(GOOD))
def test_bad_containers_are_refused(name):
    good = GOOD[name]
    _refused(Compressed(name, good.payload, [("dtype", "float32")]), "keys")
    _refused(Compressed(name, good.payload, good.params | {1: 2, b"x": None}), "keys")
    _refused(Compressed(name, 12345, good.params), "not contiguous bytes")
    _refused(Compressed(name, memoryview(np.zeros((8, 8), np.uint8)[:, ::2]), good.params), "contiguous")
    _refused(_with(good, payload=b""))
    _refused(Compressed("fp16" if name != "fp16" else "int8", good.payload, good.params), "keys")


@pytest.mark.parametrize("name", list(GOOD))
def test_the_receivers_size_limit_holds(name):
    good = GOOD[name]
    assert decompress(good, max_bytes=ARR.nbytes).shape == ARR.shape
    _refused(good, "limit", max_bytes=ARR.nbytes - 1)


@pytest.mark.parametrize("name", ["none", "fp16", "int8"])
@pytest.mark.parametrize("delta", [-1, 1, -24])
def test_a_payload_of_the_wrong_length_is_refused(name, delta):
    payload = bytes(GOOD[name].payload)
    payload = payload[:delta] if delta < 0 else payload + b"\0" * delta
    _refused(_with(GOOD[name], payload=payload), "bytes")


def test_a_bool_that_is_neither_0_nor_1_is_refused():
    for name in ("none", "lz4", "zstd"):
        _refused(get_compression(name).compress(np.array([0, 1, 2, 1], np.uint8).view(bool)), "bool")


@pytest.mark.parametrize(("change", "match"), [
    ({"coded_dtype": "uint16"}, "coded"),
    ({"axis": 3}, "axis"),
    ({"axis": -1}, "axis"),
    ({"axis": True}, "axis"),
    ({"axis": None}, "scale"),  # per tensor now: the three scales are too many
    ({"scale": [0.1, 0.1]}, "scale"),
    ({"scale": [0.1, float("nan"), 0.1]}, "finite"),
    ({"scale": [0.1, float("inf"), 0.1]}, "finite"),
    ({"scale": [0.1, -0.1, 0.1]}, ">= 0"),
    ({"scale": [0.1, 1e37, 0.1]}, "<="),
    ({"scale": [0.1, "0.1", 0.1]}, "scale"),
    ({"scale": [0.1, True, 0.1]}, "scale"),
    ({"scale": (0.1, 0.1, 0.1)}, "scale"),
    ({"zero_point": [0, 256, 0]}, "zero points"),
    ({"zero_point": [0, -1, 0]}, "zero points"),
    ({"zero_point": [0, 1.0, 0]}, "zero_point"),
    ({"zero_point": [0, 10**400, 0]}, "out of range"),
    ({"zero_point": [0, 0]}, "zero_point"),
], ids=str)
def test_bad_int8_params_are_refused(change, match):
    _refused(_with(GOOD["int8"], **change), match)


def test_bad_fp16_params_are_refused():
    _refused(_with(GOOD["fp16"], coded_dtype="bfloat16"), "coded")
    _refused(_with(GOOD["fp16"], dtype="float16"), "dtype")  # fp16 restores float32/float64 only


def test_the_receiver_picks_a_known_compression_by_name():
    _refused(Compressed("gzip", b"", {}), "unknown compression")
    _refused(Compressed(None, b"", {}), "unknown compression")
    _refused("not a Compressed", "Compressed")
    for name in GOOD:
        with pytest.raises(TransportError, match="expected a Compressed") as info:
            get_compression(name).decompress(b"\0" * 4)
        assert info.value.code == ErrorCode.MALFORMED


# ---- frames: truncated, padded, lying about their size, and bombs ---------------------------------

FRAMES = {"lz4": lambda raw: lz4.frame.compress(raw, store_size=True),
          "zstd": lambda raw: zstandard.ZstdCompressor().compress(raw)}


def _frame_of(name: str, data: bytes, params_shape: list[int]) -> Compressed:
    return Compressed(name, data, {"dtype": "uint8", "shape": params_shape})


@pytest.mark.parametrize("name", ["lz4", "zstd"])
def test_truncated_padded_and_doubled_frames_are_refused(name):
    good = GOOD[name]
    frame = bytes(good.payload)
    for payload in (frame[:-1], frame[: len(frame) // 2], frame[:5], frame + b"\0", frame + frame,
                    b"\0" * len(frame), b"not a frame at all"):
        _refused(_with(good, payload=payload))
    empty = get_compression(name).compress(np.zeros((0, 3), np.float32))
    assert decompress(empty).shape == (0, 3)
    _refused(_with(empty, payload=bytes(empty.payload) + frame))  # an empty frame, then more


@pytest.mark.parametrize("name", ["lz4", "zstd"])
def test_a_frame_must_declare_the_params_size(name):
    raw = bytes(range(256)) * 4
    _refused(_frame_of(name, FRAMES[name](raw), [1023]), "declares 1024")
    _refused(_frame_of(name, FRAMES[name](raw), [1025]), "declares 1024")
    undeclared = (lz4.frame.compress(raw, store_size=False) if name == "lz4"
                  else zstandard.ZstdCompressor(write_content_size=False).compress(raw))
    _refused(_frame_of(name, undeclared, [1024]), "declares")
    assert decompress(_frame_of(name, FRAMES[name](raw), [1024])).tobytes() == raw


def _lz4_header_declaring(num_bytes: int) -> bytes:
    return lz4.frame.LZ4FrameCompressor().begin(source_size=num_bytes)  # the header alone: 15 bytes


def _zstd_header_declaring(num_bytes: int) -> bytes:
    # magic, descriptor (8-byte content size, window descriptor follows), window, size, one empty raw block
    return struct.pack("<IBBQ", 0xFD2FB528, 0xC0, 0x58, num_bytes) + b"\x01\x00\x00"


@pytest.mark.parametrize("name", ["lz4", "zstd"])
def test_a_tiny_frame_declaring_gigabytes_allocates_nothing(name):
    header = (_lz4_header_declaring if name == "lz4" else _zstd_header_declaring)(4 << 30)
    assert len(header) < 20
    assert _peak_bytes(_frame_of(name, header, [4096])) < MiB  # declared size != the params'
    assert _peak_bytes(_frame_of(name, header, [4 << 30])) < MiB  # the params' over max_bytes
    # Declared and params agree, within max_bytes: the receiver allocates at most that, then refuses.
    assert _peak_bytes(_frame_of(name, (_lz4_header_declaring if name == "lz4"
                                        else _zstd_header_declaring)(4 * MiB), [4 * MiB])) < 6 * MiB


def _relabel(name: str, frame: bytes, num_bytes: int) -> bytes:
    """``frame`` with its declared content size replaced by ``num_bytes`` (the data left as it is)."""
    if name == "zstd":
        descriptor = frame[4]
        start = 5 + (0 if descriptor & 0x20 else 1) + (0, 1, 2, 4)[descriptor & 3]
        width = (1 if descriptor & 0x20 else 0, 2, 4, 8)[descriptor >> 6]
        assert width in (4, 8)
        return frame[:start] + num_bytes.to_bytes(width, "little") + frame[start + width:]
    # LZ4: the size is 8 bytes after magic, FLG and BD; the header checksum byte after it is found by
    # trying all 256 (the one the frame parser accepts).
    body = frame[:6] + num_bytes.to_bytes(8, "little")
    for checksum in range(256):
        candidate = body + bytes([checksum]) + frame[15:]
        try:
            if lz4.frame.get_frame_info(candidate)["content_size"] == num_bytes:
                return candidate
        except RuntimeError:
            continue
    raise AssertionError("no header checksum fits")


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """64 MiB of zeros as one frame each: kilobytes that decompress to 64 MiB."""
    zeros = bytes(64 * MiB)
    return {name: make(zeros) for name, make in FRAMES.items()}


@pytest.mark.parametrize("name", ["lz4", "zstd"])
def test_a_decompression_bomb_is_refused_within_bounded_memory(name, bombs):
    bomb = bombs[name]
    assert len(bomb) < MiB
    assert _peak_bytes(_frame_of(name, bomb, [4096])) < MiB  # params say 4 KiB, the frame 64 MiB
    assert _peak_bytes(_frame_of(name, bomb, [64 * MiB]), max_bytes=MiB) < MiB  # over the limit
    # A frame that leaves its size out is refused before decompressing.
    zeros = bytes(64 * MiB)
    undeclared = (lz4.frame.compress(zeros, store_size=False) if name == "lz4" else
                  zstandard.ZstdCompressor(write_content_size=False).compress(zeros))
    assert _peak_bytes(_frame_of(name, undeclared, [4096])) < MiB


@pytest.mark.parametrize("name", ["lz4", "zstd"])
def test_a_frame_that_lies_about_its_size_stops_at_the_declared_size(name, bombs):
    liar = _relabel(name, bombs[name], 4096)
    assert (lz4.frame.get_frame_info(liar)["content_size"] if name == "lz4"
            else zstandard.frame_content_size(liar)) == 4096
    assert _peak_bytes(_frame_of(name, liar, [4096])) < MiB


# ---- fuzzing: whatever arrives, an array within the limit or a malformed TransportError ----------

_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@st.composite
def _mutated(draw) -> Compressed:
    good = GOOD[draw(st.sampled_from(sorted(GOOD)))]
    params = dict(good.params)
    for key in draw(st.lists(st.sampled_from(sorted(params)), max_size=3, unique=True)):
        params[key] = draw(_plain | st.lists(st.integers(-2, 1 << 20), max_size=5))
    if draw(st.booleans()):
        params.pop(draw(st.sampled_from(sorted(params))))
    payload = bytearray(good.payload)
    for _ in range(draw(st.integers(0, 3))):
        if payload:
            payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    payload = payload[: draw(st.integers(0, len(payload)))] if draw(st.booleans()) else payload
    payload += draw(st.binary(max_size=8))
    name = draw(st.sampled_from([*GOOD, "", "NONE"])) if draw(st.booleans()) else good.name
    return Compressed(name, bytes(payload), params)


@given(_mutated())
@settings(max_examples=500)
def test_fuzz_decompress_returns_a_bounded_array_or_a_malformed_error(c):
    try:
        arr = decompress(c, max_bytes=64 * 1024)
    except TransportError as e:
        assert e.code == ErrorCode.MALFORMED
    else:
        assert isinstance(arr, np.ndarray) and arr.nbytes <= 64 * 1024
        assert arr.dtype.name == c.params["dtype"] and list(arr.shape) == list(c.params["shape"])
