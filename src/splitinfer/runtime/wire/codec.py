"""Wire codec: one multipart ZeroMQ message per request, nothing pickled, nothing evaluated.

A message is ``[head, *blobs, *tensors]``:

- ``head``: a 32-byte MAC, the send time (float64 wall clock) and the
  header's length (uint32), both little-endian, the header, then the *inline*
  tensors. The send time is taken once the message is encoded, just before it
  goes to the socket, so a receiver sees a hop's transfer time exactly as a
  raw socket would (encoding and decoding are not part of it). The MAC is
  keyed BLAKE2b of the send time, length and header with the shared token
  (zeros when no token is configured); the token itself never travels. The
  header is a small msgspec-msgpack struct, tagged by ``kind``; it lists the
  byte length of every blob and the name, dtype, shape and placement of every
  tensor.
- ``blobs``: raw bytes (an ONNX partition, an echo payload).
- ``tensors``: one raw C-order frame per tensor of ``INLINE_MAX_BYTES`` or
  more, sent with ``copy=False`` and decoded with :func:`numpy.frombuffer`
  over the received frame (zero copy, read-only). Smaller tensors ride in the
  head, each at an 8-byte boundary, decoded the same way over the head frame:
  ZeroMQ copies frames that small anyway, and every extra frame of a message
  costs more on loopback than the whole copy (see benchmarks/bench_transport.py).

Decoding validates everything before any array exists: the frame count, the
header size, dtypes against an allow-list, non-negative shapes whose byte size
matches the frame (or fits the head, which must end with the last inline
tensor), and a maximum frame size. Any violation raises a
:class:`~splitinfer.errors.TransportError` whose ``code`` attribute names the
kind of fault (``malformed``, ``dtype``, ``shape``, ``oversized``, ...).

What is protected: the MAC authenticates the header (kind, stage, names,
dtypes, shapes, deadline), so a sender without the token cannot deploy models,
run requests or inject results. What is not: tensor bytes (inline or in their
own frames) and model frames are not covered by the MAC and nothing is
encrypted; anyone on the path can read the tensors, and a captured message can
be replayed (infer messages only until their deadline). Use a private network
or a VPN/SSH tunnel between sites.
"""

from __future__ import annotations

import hmac
import math
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import zmq

from splitinfer.errors import ErrorCode, TransportError
from splitinfer.runtime.wire.auth import MAC_BYTES, sign
from splitinfer.runtime.wire.messages import Header, Message, TensorMeta
from splitinfer.types import NUMPY_DTYPES

MAX_HEADER_BYTES = 1 << 20
MAX_NDIM = 32
_PREFIX = struct.Struct("<dI")  # send time, header length
HEAD_PREFIX_BYTES = MAC_BYTES + _PREFIX.size
INLINE_MAX_BYTES = 64 * 1024  # pyzmq's copy threshold: smaller tensors are copied whatever we do
DEFAULT_MAX_FRAME_BYTES = 1 << 30
ALLOWED_DTYPES = frozenset(NUMPY_DTYPES)
_NAME_OF_DTYPE = {dtype: name for name, dtype in NUMPY_DTYPES.items()}
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Header)


def _as_frame(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous, native-order array whose buffer zmq can send without copying."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # Not np.ascontiguousarray: it turns 0-d scalars into 1-d arrays.
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def encode(header: Any, token: bytes | None, *, blobs: Sequence[bytes | memoryview] = (),
           arrays: Sequence[tuple[str, np.ndarray]] = ()) -> list[Any]:
    """Frames for ``header`` plus blobs and named arrays (the header's lists are filled in)."""
    framed: list[np.ndarray] = []
    inline: list[np.ndarray] = []
    metas = []
    for name, value in arrays:
        arr = _as_frame(value if type(value) is np.ndarray else np.asarray(value))
        dtype_name = _NAME_OF_DTYPE.get(arr.dtype)
        if dtype_name is None:
            raise _fault(ErrorCode.DTYPE, f"tensor {name!r} has dtype {arr.dtype.name}, which the wire "
                             "codec does not carry", f"cast it to one of {', '.join(sorted(ALLOWED_DTYPES))}")
        is_inline = arr.nbytes < INLINE_MAX_BYTES
        metas.append(TensorMeta(name, dtype_name, arr.shape, is_inline))
        (inline if is_inline else framed).append(arr)
    header = msgspec.structs.replace(header, blobs=[len(memoryview(b)) for b in blobs], tensors=metas)
    return [pack_head(token, _encoder.encode(header), inline), *blobs, *framed]


def pack_head(token: bytes | None, header_bytes: bytes, inline: Sequence[np.ndarray] = (),
              sent_unix_s: float | None = None) -> bytes:
    """The head frame: MAC, send time (now, by default), header length, header, then each inline
    array at an 8-byte boundary."""
    prefix = _PREFIX.pack(time.time() if sent_unix_s is None else sent_unix_s, len(header_bytes))
    parts: list[Any] = [sign(token, prefix, header_bytes), prefix, header_bytes]
    size = HEAD_PREFIX_BYTES + len(header_bytes)
    for arr in inline:
        pad = -size % 8
        if pad:
            parts.append(bytes(pad))
        parts.append(memoryview(arr))
        size += pad + arr.nbytes
    return b"".join(parts)


def _buffer(frame: Any) -> memoryview:
    return frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame)


def _dtype_and_size(meta: TensorMeta) -> tuple[np.dtype, int]:
    """The tensor's dtype and byte size, once its dtype name and shape are checked."""
    dtype = NUMPY_DTYPES.get(meta.dtype)
    if dtype is None:
        raise _fault(ErrorCode.DTYPE, f"tensor {meta.name!r} has dtype {meta.dtype!r}",
                         f"use one of {', '.join(sorted(ALLOWED_DTYPES))}")
    if len(meta.shape) > MAX_NDIM or min(meta.shape, default=0) < 0:
        raise _fault(ErrorCode.SHAPE, f"tensor {meta.name!r} has invalid shape {list(meta.shape)}",
                         f"use at most {MAX_NDIM} non-negative dimensions")
    return dtype, dtype.itemsize * math.prod(meta.shape)  # Python ints: a huge shape cannot overflow


def _read_head(frames: Sequence[Any], max_frame_bytes: int) -> tuple[memoryview, memoryview, float]:
    """The head frame, its header bytes and send time, once their sizes are checked."""
    if not frames:
        raise _fault(ErrorCode.MALFORMED, "message has no frames",
                         "send [head, blobs..., tensors...] as one multipart message")
    head = _buffer(frames[0])
    if head.nbytes > max_frame_bytes:
        raise _fault(ErrorCode.OVERSIZED, f"a frame has {head.nbytes} bytes (limit {max_frame_bytes})",
                         "send smaller tensors or raise the worker's --max-frame-bytes")
    if head.nbytes < HEAD_PREFIX_BYTES:
        raise _fault(ErrorCode.MALFORMED, f"the first frame has {head.nbytes} bytes, fewer than the "
                         f"{HEAD_PREFIX_BYTES} of a MAC, a send time and a header length",
                         "start each message with codec.pack_head(token, header)")
    sent_unix_s, header_len = _PREFIX.unpack(head[MAC_BYTES:HEAD_PREFIX_BYTES])
    if header_len > MAX_HEADER_BYTES:
        raise _fault(ErrorCode.OVERSIZED, f"header has {header_len} bytes (limit {MAX_HEADER_BYTES})",
                         "put large data in blobs or tensors, not in the header")
    if HEAD_PREFIX_BYTES + header_len > head.nbytes:
        raise _fault(ErrorCode.MALFORMED, f"the header length says {header_len} bytes but the first frame "
                         f"holds {head.nbytes - HEAD_PREFIX_BYTES}",
                         "start each message with codec.pack_head(token, header)")
    return head, head[HEAD_PREFIX_BYTES:HEAD_PREFIX_BYTES + header_len], sent_unix_s


def decode(frames: Sequence[Any], token: bytes | None, *,
           max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    """Validate and decode frames (bytes or zmq.Frame); raises a coded TransportError."""
    head, header_bytes, sent_unix_s = _read_head(frames, max_frame_bytes)
    try:
        header = _decoder.decode(header_bytes)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise _fault(ErrorCode.MALFORMED, f"header cannot be decoded: {e}",
                         "send a msgspec-msgpack header with a known 'kind'") from None
    authenticated = not token or hmac.compare_digest(
        sign(token, head[MAC_BYTES:HEAD_PREFIX_BYTES], header_bytes), head[:MAC_BYTES])
    num_framed = sum(1 for meta in header.tensors if not meta.inline)
    num_expected = 1 + len(header.blobs) + num_framed
    if len(frames) != num_expected:
        raise _fault(ErrorCode.MALFORMED, f"header announces {num_expected} frames, message has "
                     f"{len(frames)}", "send one frame per blob and per framed tensor, as the header lists")
    views = [_buffer(f) for f in frames[1:]]
    for view in views:
        if view.nbytes > max_frame_bytes:
            raise _fault(ErrorCode.OVERSIZED, f"a frame has {view.nbytes} bytes (limit {max_frame_bytes})",
                             "send smaller tensors or raise the worker's --max-frame-bytes")
    msg = Message(header, authenticated=authenticated, sent_unix_s=sent_unix_s)
    for length, view in zip(header.blobs, views, strict=False):
        if length != view.nbytes:
            raise _fault(ErrorCode.MALFORMED, f"blob announced as {length} bytes has {view.nbytes}",
                             "list each blob's exact byte length in the header")
        msg.blobs.append(view)
    tensor_frames = iter(views[len(header.blobs):])
    position = HEAD_PREFIX_BYTES + header_bytes.nbytes  # where the next inline tensor may start
    for meta in header.tensors:
        dtype, num_bytes = _dtype_and_size(meta)
        if meta.inline:
            position += -position % 8
            if position + num_bytes > head.nbytes:
                raise _fault(ErrorCode.SHAPE, f"inline tensor {meta.name!r} declares {list(meta.shape)} "
                                 f"{meta.dtype} = {num_bytes} bytes, past the end of the first frame",
                                 "send the array's raw C-order bytes with the matching shape")
            view = head[position:position + num_bytes]
            position += num_bytes
        else:
            view = next(tensor_frames)
            if view.nbytes != num_bytes:
                raise _fault(ErrorCode.SHAPE, f"tensor {meta.name!r} declares {list(meta.shape)} "
                             f"{meta.dtype} = {num_bytes} bytes but its frame has {view.nbytes}",
                             "send the array's raw C-order bytes with the matching shape")
        if meta.name in msg.arrays:
            raise _fault(ErrorCode.MALFORMED, f"tensor name {meta.name!r} repeats", "send each tensor once")
        arr = np.frombuffer(view, dtype=dtype).reshape(meta.shape)
        if not arr.flags.aligned:  # a frame whose memory does not start on an 8-byte boundary
            arr = arr.copy()
        arr.setflags(write=False)  # a view of the received frame: never write into it
        msg.arrays[meta.name] = arr
    if position != head.nbytes:
        raise _fault(ErrorCode.MALFORMED, f"the first frame has {head.nbytes - position} bytes after its "
                         "header and inline tensors", "send nothing after the last inline tensor")
    return msg




def _fault(code: ErrorCode, problem: str, fix: str) -> TransportError:
    return TransportError(problem, fix, code=code)
