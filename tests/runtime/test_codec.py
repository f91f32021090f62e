"""The wire codec in one process: round trips, zero copy, MAC, and validation of bad frames."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitinfer.errors import TransportError
from splitinfer.runtime.wire import auth, codec, messages

DTYPES = sorted(codec.ALLOWED_DTYPES)


def _infer() -> messages.Infer:
    return messages.Infer(request_id=7, deployment_id="d", stage=1, deadline_unix_s=1e12)


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
    big = np.arange(codec.INLINE_MAX_BYTES // 4, dtype=np.float32)  # its own frame
    small = np.arange(12, dtype=np.float32).reshape(3, 4)  # inline, in the head frame
    frames = codec.encode(_infer(), None, arrays=[("big", big), ("small", small)])
    assert len(frames) == 2
    head, frame = bytearray(frames[0]), bytearray(memoryview(frames[1]).cast("B"))
    msg = codec.decode([head, frame], None)
    assert not msg.arrays["big"].flags.writeable and not msg.arrays["small"].flags.writeable
    frame[0:4] = np.float32(99).tobytes()  # the arrays see the frames' memory: no copy was made
    head[-4:] = np.float32(77).tobytes()
    assert msg.arrays["big"][0] == 99 and msg.arrays["small"][2, 3] == 77


def test_small_tensors_ride_in_the_head_frame_and_large_ones_in_their_own():
    tensors = [("a", np.ones(3, np.int8)), ("b", np.ones(codec.INLINE_MAX_BYTES, np.uint8)),
               ("c", np.ones((2, 2), np.float64)), ("d", np.zeros(0, np.float32))]
    frames = codec.encode(_infer(), b"k", arrays=tensors)
    assert len(frames) == 2  # head (with a, c, d) + b
    msg = codec.decode(frames, b"k")
    assert [(m.name, m.inline) for m in msg.header.tensors] == [("a", True), ("b", False), ("c", True),
                                                                ("d", True)]
    for name, original in tensors:
        np.testing.assert_array_equal(msg.arrays[name], original)
    assert msg.arrays["c"].flags.aligned  # float64 at an 8-byte boundary after the int8s


def test_non_contiguous_and_big_endian_arrays_are_sent_as_values():
    arr = np.arange(12, dtype=">i4").reshape(3, 4).T
    msg = codec.decode(codec.encode(_infer(), None, arrays=[("x", arr)]), None)
    np.testing.assert_array_equal(msg.arrays["x"], arr)
    assert msg.arrays["x"].dtype == np.dtype("int32")


def test_the_head_carries_the_send_time_taken_after_encoding():
    before = time.time()
    frames = codec.encode(_infer(), b"k", arrays=[("x", np.ones(1000, np.float32))])
    after = time.time()
    assert before <= codec.decode(frames, b"k").sent_unix_s <= after
    header = codec.msgspec.msgpack.encode(messages.Health())
    assert codec.decode([codec.pack_head(None, header, sent_unix_s=12.5)], None).sent_unix_s == 12.5


def test_blobs_round_trip_beside_tensors():
    frames = codec.encode(messages.Echo(), None, blobs=[b"abc", b""], arrays=[("s", np.array(2.5))])
    msg = codec.decode(frames, None)
    assert [bytes(b) for b in msg.blobs] == [b"abc", b""]
    assert msg.arrays["s"].shape == () and msg.arrays["s"] == 2.5


def test_mac_authenticates_the_header_and_never_carries_the_token():
    frames = codec.encode(_infer(), b"secret-token", arrays=[("x", np.ones(3, np.float32))])
    assert b"secret-token" not in b"".join(bytes(memoryview(f).cast("B")) for f in frames)
    assert codec.decode(frames, b"secret-token").authenticated
    assert not codec.decode(frames, b"other-token").authenticated
    head = bytearray(frames[0])
    head[codec.HEAD_PREFIX_BYTES:] = bytes(head[codec.HEAD_PREFIX_BYTES:]).replace(b"\x07", b"\x08", 1)
    tampered = codec.decode([bytes(head), *frames[1:]], None)
    assert tampered.header.request_id == 8  # still a valid header: only the MAC can tell
    assert not codec.decode([bytes(head), *frames[1:]], b"secret-token").authenticated
    late = bytearray(frames[0])
    late[auth.MAC_BYTES:auth.MAC_BYTES + 8] = np.float64(2e9).tobytes()  # the send time is covered too
    assert not codec.decode([bytes(late), *frames[1:]], b"secret-token").authenticated
    unsigned = codec.encode(_infer(), None, arrays=[("x", np.ones(3, np.float32))])
    assert not codec.decode(unsigned, b"secret-token").authenticated


def _code(frames, **kw) -> str:
    with pytest.raises(TransportError) as info:
        codec.decode(frames, None, **kw)
    assert info.value.problem and info.value.fix
    return info.value.code


def _head(header, *inline: bytes) -> bytes:
    header_bytes = header if isinstance(header, bytes) else codec.msgspec.msgpack.encode(header)
    return codec.pack_head(None, header_bytes) + b"".join(inline)


def test_validation_names_the_fault():
    big = np.ones(codec.INLINE_MAX_BYTES, np.uint8)
    good = codec.encode(_infer(), None, arrays=[("x", big)])
    assert _code([]) == "malformed"  # no frames
    assert _code([b"short"]) == "malformed"  # no room for MAC and header length
    assert _code([good[0][:-1]]) == "malformed"  # header length past the frame
    assert _code([_head(b"\xc1garbage")]) == "malformed"  # not msgpack
    assert _code(good[:1]) == "malformed"  # tensor frame missing
    assert _code([*good, b"extra"]) == "malformed"
    assert _code([good[0], b"short"]) == "shape"
    assert _code(good, max_frame_bytes=8) == "oversized"
    huge = bytes(codec.HEAD_PREFIX_BYTES - 4) + (codec.MAX_HEADER_BYTES + 1).to_bytes(4, "little")
    assert _code([huge]) == "oversized"
    header = codec.msgspec.structs.replace(_infer(), tensors=[messages.TensorMeta("x", "object", (1,))])
    assert _code([_head(header), b"12345678"]) == "dtype"
    negative = codec.msgspec.structs.replace(_infer(), tensors=[messages.TensorMeta("x", "uint8", (-1,))])
    assert _code([_head(negative), b""]) == "shape"
    inline = codec.msgspec.structs.replace(_infer(), tensors=[messages.TensorMeta("x", "uint8", (9,), True)])
    assert _code([_head(inline)]) == "shape"  # inline tensor past the end of the head
    small = codec.encode(_infer(), None, arrays=[("x", np.ones(3, np.float32))])
    assert _code([small[0] + b"tail"]) == "malformed"  # bytes after the last inline tensor
    with pytest.raises(TransportError):
        codec.encode(_infer(), None, arrays=[("c", np.ones(2, np.complex64))])


# ---- what the MAC covers: the head only (default), or every byte (mac_tensors) ---------------------


def _mac_message(mac_tensors: bool) -> list[bytes]:
    """An Echo with a blob, an inline tensor and a framed tensor, as plain bytes frames."""
    framed = np.arange(codec.INLINE_MAX_BYTES // 4, dtype=np.float32)
    frames = codec.encode(messages.Echo(request_id=3), b"k", blobs=[b"model-bytes"],
                          arrays=[("small", np.arange(6, dtype=np.float32)), ("big", framed)],
                          mac_tensors=mac_tensors)
    assert len(frames) == 3  # head (with the inline tensor), blob, framed tensor
    return [bytes(memoryview(f).cast("B")) for f in frames]


def test_mac_tensors_round_trips_and_says_the_tensors_are_covered():
    covered = codec.decode(_mac_message(True), b"k")
    assert covered.authenticated and covered.tensors_authenticated
    assert bytes(covered.blobs[0]) == b"model-bytes"
    np.testing.assert_array_equal(covered.arrays["small"], np.arange(6, dtype=np.float32))
    head_only = codec.decode(_mac_message(False), b"k")
    assert head_only.authenticated and not head_only.tensors_authenticated
    assert not codec.decode(_mac_message(True), b"other").tensors_authenticated  # wrong token
    assert not codec.decode(_mac_message(True), None).tensors_authenticated  # nothing to check it with
    unsigned = codec.encode(messages.Echo(), None, blobs=[b"x"], mac_tensors=True)  # no token: no MAC
    msg = codec.decode(unsigned, None)
    assert msg.authenticated and not msg.tensors_authenticated


def _flip(frames: list[bytes], where: str) -> list[bytes]:
    """The frames with one byte changed in the blob, the inline tensor or the framed tensor."""
    frames = [bytearray(f) for f in frames]
    if where == "blob":
        frames[1][0] ^= 0x01
    elif where == "framed":
        frames[2][1000] ^= 0x01
    else:  # the inline tensor is the last 24 bytes of the head
        frames[0][-3] ^= 0x40
    return [bytes(f) for f in frames]


@pytest.mark.parametrize("where", ["blob", "inline", "framed"])
def test_a_changed_tensor_or_blob_byte_is_caught_only_with_mac_tensors(where):
    original = codec.decode(_mac_message(False), b"k")
    # Header-only MAC (the default): the change goes through as authentic, values silently different.
    changed = codec.decode(_flip(_mac_message(False), where), b"k")
    assert changed.authenticated
    differs = [bytes(changed.blobs[0]) != bytes(original.blobs[0]),
               not np.array_equal(changed.arrays["small"], original.arrays["small"]),
               not np.array_equal(changed.arrays["big"], original.arrays["big"])]
    assert differs == [where == "blob", where == "inline", where == "framed"]
    # mac_tensors: the same change is refused.
    tampered = codec.decode(_flip(_mac_message(True), where), b"k")
    assert not tampered.authenticated and not tampered.tensors_authenticated


def test_the_mac_tensors_flag_is_signed_so_it_cannot_be_stripped_or_forged():
    for mac_tensors in (True, False):
        frames = _mac_message(mac_tensors)
        head = bytearray(frames[0])
        head[codec.HEAD_PREFIX_BYTES - 1] ^= 0x80  # bit 31 of the little-endian header length
        msg = codec.decode([bytes(head), *frames[1:]], b"k")
        assert not msg.authenticated and not msg.tensors_authenticated


# ---- a large tensor in parts (encrypted links: the receiver decrypts one while the sender encrypts) --


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "bool"])
def test_a_tensor_larger_than_part_bytes_travels_in_parts_and_is_joined(dtype):
    big = (np.arange(300_000) % 251).astype(dtype).reshape(100, 3000)
    small = np.arange(20_000, dtype=np.float32)  # 80 KB: a frame of its own, under part_bytes
    frames = codec.encode(_infer(), b"k", arrays=[("big", big), ("small", small), ("tiny", np.ones(3))],
                          part_bytes=100_000)
    parts = -(-big.nbytes // 100_000)
    assert len(frames) == 1 + parts + 1
    assert sum(memoryview(f).nbytes for f in frames[1:1 + parts]) == big.nbytes
    for f in frames[1:1 + parts]:  # views of the array's bytes, not copies
        assert np.shares_memory(np.frombuffer(f, np.uint8), big)
    msg = codec.decode([bytes(f) for f in frames], b"k")
    assert msg.header.tensors[0].parts == parts and msg.header.tensors[1].parts == 1
    np.testing.assert_array_equal(msg.arrays["big"], big)
    np.testing.assert_array_equal(msg.arrays["small"], small)
    assert not msg.arrays["big"].flags.writeable


def test_parts_are_at_most_max_parts_and_a_mac_over_every_byte_covers_each():
    big = np.arange(codec.MAX_PARTS * 3_000, dtype=np.float32)
    frames = codec.encode(_infer(), b"k", arrays=[("big", big)], part_bytes=1_000, mac_tensors=True)
    assert len(frames) == 1 + codec.MAX_PARTS
    assert codec.decode(frames, b"k").tensors_authenticated
    changed = [bytes(f) for f in frames]
    changed[-1] = bytes([changed[-1][0] ^ 1]) + changed[-1][1:]
    assert not codec.decode(changed, b"k").authenticated


def _with_parts(frames: list, parts: int, *, inline: bool = False) -> list:
    """frames with the header's first tensor announcing ``parts`` (and ``inline``), re-signed."""
    msg = codec.decode(frames, b"k")
    meta = msgspec.structs.replace(msg.header.tensors[0], parts=parts, inline=inline)
    header = msgspec.structs.replace(msg.header, tensors=[meta])
    return [codec.pack_head(b"k", msgspec.msgpack.encode(header)), *frames[1:]]


def test_parts_that_do_not_add_up_or_are_out_of_range_are_refused():
    big = np.arange(100_000, dtype=np.float32)
    frames = codec.encode(_infer(), b"k", arrays=[("big", big)], part_bytes=100_000)  # 4 parts
    assert len(frames) == 5
    with pytest.raises(TransportError, match="announces 5 frames") as info:  # one part missing
        codec.decode(frames[:-1], b"k")
    assert info.value.code == "malformed"
    short = [*frames[:-1], bytes(memoryview(frames[-1]))[:-4]]
    with pytest.raises(TransportError, match="its 4 frames have") as info:
        codec.decode(short, b"k")
    assert info.value.code == "shape"
    for parts in (0, codec.MAX_PARTS + 1, -1):
        with pytest.raises(TransportError, match="number of frames outside") as info:
            codec.decode(_with_parts(frames, parts), b"k")
        assert info.value.code == "malformed"
    with pytest.raises(TransportError, match="number of frames outside"):  # an inline tensor has none
        codec.decode(_with_parts(frames, 2, inline=True), b"k")


def test_only_an_encrypted_link_sends_in_parts():
    import zmq

    from splitinfer.runtime.wire import curve as curve_keys
    from splitinfer.runtime.wire.link import CURVE_PART_BYTES, LinkSender

    context = zmq.Context()
    try:
        plain = LinkSender(context, "tcp://127.0.0.1:9")
        public, secret = zmq.curve_keypair()
        encrypted = LinkSender(context, "tcp://127.0.0.1:9",
                               curve=curve_keys.Curve(curve_keys.KeyPair(public, secret), public))
        assert plain.part_bytes is None and encrypted.part_bytes == CURVE_PART_BYTES
        plain.close()
        encrypted.close()
    finally:
        context.destroy(linger=0)
