"""The wire codec in one process: round trips, zero copy, MAC, and validation of bad frames."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitinfer.errors import TransportError
from splitinfer.runtime import codec

DTYPES = sorted(codec.ALLOWED_DTYPES)


def _infer() -> codec.Infer:
    return codec.Infer(request_id=7, deployment_id="d", stage=1, deadline_unix_s=1e12)


@given(st.lists(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                      max_side=5)),
                min_size=0, max_size=6))
def test_any_dtype_any_number_of_tensors_round_trips(arrays):
    named = [(f"t{i}", a) for i, a in enumerate(arrays)]
    msg = codec.decode(codec.encode(_infer(), b"k", arrays=named), b"k")
    assert msg.authenticated
    assert list(msg.arrays) == [n for n, _ in named]
    for name, original in named:
        got = msg.arrays[name]
        assert got.dtype == original.dtype and got.shape == original.shape
        np.testing.assert_array_equal(got, original)


def test_decoded_arrays_are_read_only_views_of_the_frame():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    frames = codec.encode(_infer(), None, arrays=[("x", arr)])
    frame = bytearray(memoryview(frames[2]).cast("B"))
    msg = codec.decode([frames[0], frames[1], frame], None)
    assert not msg.arrays["x"].flags.writeable
    frame[0:4] = np.float32(99).tobytes()  # the array sees the frame's memory: no copy was made
    assert msg.arrays["x"][0, 0] == 99


def test_non_contiguous_and_big_endian_arrays_are_sent_as_values():
    arr = np.arange(12, dtype=">i4").reshape(3, 4).T
    msg = codec.decode(codec.encode(_infer(), None, arrays=[("x", arr)]), None)
    np.testing.assert_array_equal(msg.arrays["x"], arr)
    assert msg.arrays["x"].dtype == np.dtype("int32")


def test_blobs_round_trip_beside_tensors():
    frames = codec.encode(codec.Echo(), None, blobs=[b"abc", b""], arrays=[("s", np.array(2.5))])
    msg = codec.decode(frames, None)
    assert [bytes(b) for b in msg.blobs] == [b"abc", b""]
    assert msg.arrays["s"].shape == () and msg.arrays["s"] == 2.5


def test_mac_authenticates_the_header_and_never_carries_the_token():
    frames = codec.encode(_infer(), b"secret-token", arrays=[("x", np.ones(3, np.float32))])
    assert b"secret-token" not in b"".join(bytes(memoryview(f).cast("B")) for f in frames)
    assert codec.decode(frames, b"secret-token").authenticated
    assert not codec.decode(frames, b"other-token").authenticated
    tampered = list(frames)
    tampered[1] = bytes(frames[1]).replace(b"\x01", b"\x02", 1)
    assert not codec.decode(tampered, b"secret-token").authenticated
    unsigned = codec.encode(_infer(), None, arrays=[("x", np.ones(3, np.float32))])
    assert not codec.decode(unsigned, b"secret-token").authenticated


def _code(frames, **kw) -> str:
    with pytest.raises(TransportError) as info:
        codec.decode(frames, None, **kw)
    assert info.value.problem and info.value.fix
    return info.value.code


def test_validation_names_the_fault():
    good = codec.encode(_infer(), None, arrays=[("x", np.ones((2, 3), np.float32))])
    assert _code(good[:1]) == "malformed"  # too few frames
    assert _code([good[0], b"\xc1garbage"]) == "malformed"  # not msgpack
    assert _code(good[:2]) == "malformed"  # tensor frame missing
    assert _code([*good, b"extra"]) == "malformed"
    assert _code([good[0], good[1], b"short"]) == "shape"
    assert _code(good, max_frame_bytes=8) == "oversized"
    bad_dtype = codec.encode(_infer(), None)
    header = codec.msgspec.structs.replace(_infer(), tensors=[codec.TensorMeta("x", "object", (1,))])
    bad_dtype = [b"", codec.msgspec.msgpack.encode(header), b"12345678"]
    assert _code(bad_dtype) == "dtype"
    negative = codec.msgspec.structs.replace(_infer(), tensors=[codec.TensorMeta("x", "uint8", (-1,))])
    assert _code([b"", codec.msgspec.msgpack.encode(negative), b""]) == "shape"
    with pytest.raises(TransportError):
        codec.encode(_infer(), None, arrays=[("c", np.ones(2, np.complex64))])
