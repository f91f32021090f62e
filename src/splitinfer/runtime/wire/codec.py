"""Wire codec: one multipart ZeroMQ message per request, nothing pickled, nothing evaluated.

A message is ``[head, *blobs, *tensors]``:

- ``head``: a 32-byte MAC, the send time (float64 wall clock), the sender's
  nonce and sequence number (uint64 each, :mod:`.replay`) and the header's
  length (uint32), all little-endian, the header, then the *inline* tensors.
  The send time is taken once the message is encoded, just before it goes to
  the socket, so a receiver sees a hop's transfer time exactly as a raw socket
  would (encoding and decoding are not part of it). The MAC is keyed BLAKE2b
  of these four fields and the header with the shared token (zeros when no
  token is configured), or HMAC-SHA256 of every byte of the message when the
  sender covers tensors too (``mac_tensors``); the token itself never travels. The header is a small
  msgspec-msgpack struct, tagged by ``kind``; it lists the byte length of
  every blob and the name, dtype, shape and placement of every tensor.
- ``blobs``: raw bytes (an ONNX partition, an echo payload).
- ``tensors``: one raw C-order frame per tensor of ``INLINE_MAX_BYTES`` or
  more, sent with ``copy=False`` and decoded with :func:`numpy.frombuffer`
  over the received frame (zero copy, read-only); or, on an encrypted link,
  a large tensor's bytes in several frames (``parts``, up to ``MAX_PARTS``),
  joined by the receiver. CurveZMQ encrypts and decrypts each frame whole in
  the two ends' IO threads, so one frame is encrypted, then decrypted: in
  parts, the receiver decrypts one while the sender encrypts the next (a raw
  pyzmq round trip of 3.2 MB: 11.4 ms in one frame, 7.5-9.3 ms in 2-16 here);
  a plain link gains nothing from parts and keeps one frame. Smaller tensors ride in the
  head, each at an 8-byte boundary, decoded the same way over the head frame:
  ZeroMQ copies frames that small anyway, and every extra frame of a message
  costs more on loopback than the whole copy (see benchmarks/bench_transport.py).

Decoding validates everything before any array exists: the frame count, the
header size and nesting depth (``MAX_HEADER_DEPTH``, checked before msgspec
recurses into it), dtypes against an allow-list, non-negative shapes whose byte
size matches the frame (or fits the head, which must end with the last inline
tensor), and a maximum frame size. Any violation raises a
:class:`~splitinfer.errors.TransportError` whose ``code`` attribute names the
kind of fault (``malformed``, ``dtype``, ``shape``, ``oversized``, ...); no
other exception leaves :func:`decode`, whatever the frames hold.

What is protected: the MAC authenticates the header (kind, stage, names,
dtypes, shapes, deadline) and the send time, sender nonce and sequence number,
so a sender without the token cannot deploy models, run requests or inject
results, and receivers refuse a captured signed message sent again
(:mod:`.replay`: each message once, within a time window, not from before the
receiver started). Tensor bytes (inline or in their own frames) and blobs are
covered too only when the sender asks (``mac_tensors``, the top bit of the
header length says so, and it is signed): then a changed byte anywhere is
refused, at the cost of hashing every byte (HMAC-SHA256, about 0.7 GB/s on one core here). Nothing here
encrypts: for confidentiality use CurveZMQ (:mod:`.curve`), which also
authenticates every byte, so ``mac_tensors`` adds nothing on top of it.
"""

from __future__ import annotations

import hmac
import itertools
import math
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import zmq

from splitinfer.compression import Compressed, decompress, wire_bytes
from splitinfer.errors import ErrorCode, SplitinferError, TransportError, first_line
from splitinfer.runtime.wire.auth import MAC_BYTES, sign, sign_all
from splitinfer.runtime.wire.messages import Header, Message, TensorMeta
from splitinfer.runtime.wire.replay import DEFAULT_SENDER, Sender
from splitinfer.types import NUMPY_DTYPES

MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_DEPTH = 32  # nested arrays and maps in a header (ours nest 4 deep; Done.data a few more)
MAX_NDIM = 32
_MAX_ARRAY_BYTES = 1 << 62  # numpy refuses shapes whose size (zeros aside) does not fit an intp
_PREFIX = struct.Struct("<dQQI")  # send time, sender nonce, sequence number, header length
_COVERS_ALL = 1 << 31  # in the header length: the MAC covers every byte of the message, not the head only
HEAD_PREFIX_BYTES = MAC_BYTES + _PREFIX.size
INLINE_MAX_BYTES = 64 * 1024  # pyzmq's copy threshold: smaller tensors are copied whatever we do
DEFAULT_MAX_FRAME_BYTES = 1 << 30
MAX_PARTS = 64  # frames of one tensor (encrypted links: codec.encode's part_bytes)
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
           arrays: Sequence[tuple[str, np.ndarray | Compressed]] = (), sender: Sender | None = None,
           mac_tensors: bool = False, part_bytes: int | None = None) -> list[Any]:
    """Frames for ``header`` plus blobs and named arrays (the header's lists are filled in), numbered
    by ``sender`` (the socket's own; a process-wide one by default); ``mac_tensors``: the MAC covers
    the blobs' and tensors' bytes too. An array may be :class:`~splitinfer.compression.Compressed`:
    its payload travels, and the receiver restores it. ``part_bytes`` (encrypted links: the link's
    :attr:`~.link.LinkSender.part_bytes`): a tensor larger than that travels in frames of about that
    size (at most ``MAX_PARTS``), views of its bytes, not copies."""
    framed: list[Any] = []
    inline: list[np.ndarray] = []
    metas = []
    for name, value in arrays:
        if type(value) is Compressed:
            arr = np.frombuffer(value.payload, np.uint8)
            meta = TensorMeta(name, "uint8", arr.shape, arr.nbytes < INLINE_MAX_BYTES, value.name,
                              value.params)
        else:
            arr = _as_frame(value if type(value) is np.ndarray else np.asarray(value))
            dtype_name = _NAME_OF_DTYPE.get(arr.dtype)
            if dtype_name is None:
                raise _fault(ErrorCode.DTYPE, f"tensor {name!r} has dtype {arr.dtype.name}, which the wire "
                             "codec does not carry", f"cast it to one of {', '.join(sorted(ALLOWED_DTYPES))}")
            meta = TensorMeta(name, dtype_name, arr.shape, arr.nbytes < INLINE_MAX_BYTES)
        if meta.inline:
            inline.append(arr)
        elif part_bytes and arr.nbytes > part_bytes:
            parts = min(MAX_PARTS, -(-arr.nbytes // part_bytes))
            flat = memoryview(arr.reshape(-1).view(np.uint8))  # C-contiguous: a view, never a copy
            bounds = [arr.nbytes * k // parts for k in range(parts + 1)]
            framed += [flat[a:b] for a, b in itertools.pairwise(bounds)]
            meta = msgspec.structs.replace(meta, parts=parts)
        else:
            framed.append(arr)
        metas.append(meta)
    header = msgspec.structs.replace(header, blobs=[len(memoryview(b)) for b in blobs], tensors=metas)
    covered = [*blobs, *framed] if mac_tensors and token else None
    return [pack_head(token, _encoder.encode(header), inline, sender=sender, covered=covered),
            *blobs, *framed]


def pack_head(token: bytes | None, header_bytes: bytes, inline: Sequence[np.ndarray] = (),
              sent_unix_s: float | None = None, sender: Sender | None = None,
              covered: Sequence[Any] | None = None) -> bytes:
    """The head frame: MAC, send time (now, by default), sender nonce and next sequence number,
    header length, header, then each inline array at an 8-byte boundary. ``covered`` (the other
    frames): the MAC covers the inline arrays and those frames too."""
    sender = DEFAULT_SENDER if sender is None else sender
    seq = sender.next_seq()
    length = len(header_bytes) | (_COVERS_ALL if covered is not None else 0)
    prefix = _PREFIX.pack(time.time() if sent_unix_s is None else sent_unix_s, sender.nonce, seq, length)
    body: list[Any] = [header_bytes]
    size = HEAD_PREFIX_BYTES + len(header_bytes)
    for arr in inline:
        pad = -size % 8
        if pad:
            body.append(bytes(pad))
        body.append(memoryview(arr))
        size += pad + arr.nbytes
    mac = sign_all(token, prefix, *body, *map(_buffer, covered)) if covered is not None else \
        sign(token, prefix, header_bytes)
    return b"".join([mac, prefix, *body])


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
    num_bytes = dtype.itemsize * math.prod(meta.shape)  # Python ints: a huge shape cannot overflow
    # A non-empty tensor's size is checked against its bytes; an empty one's other dimensions are not.
    if not num_bytes and dtype.itemsize * math.prod(d or 1 for d in meta.shape) > _MAX_ARRAY_BYTES:
        raise _fault(ErrorCode.SHAPE, f"empty tensor {meta.name!r} has shape {list(meta.shape)}, too "
                     "large for an array", "send dimensions an array of this machine can have")
    return dtype, num_bytes


def _read_head(frames: Sequence[Any], max_frame_bytes: int) -> tuple[memoryview, bytes, tuple]:
    """The head frame, its header bytes and (send time, sender nonce, sequence number, header length,
    whether the MAC covers every byte), once the sizes of every frame are checked."""
    if not frames:
        raise _fault(ErrorCode.MALFORMED, "message has no frames",
                         "send [head, blobs..., tensors...] as one multipart message")
    head = _buffer(frames[0])
    if head.nbytes > max_frame_bytes:
        raise _fault(ErrorCode.OVERSIZED, f"a frame has {head.nbytes} bytes (limit {max_frame_bytes})",
                         "send smaller tensors or raise the worker's --max-frame-bytes")
    if head.nbytes < HEAD_PREFIX_BYTES:
        raise _fault(ErrorCode.MALFORMED, f"the first frame has {head.nbytes} bytes, fewer than the "
                         f"{HEAD_PREFIX_BYTES} of a MAC, a send time, a sender, a sequence number and "
                         "a header length",
                         "start each message with codec.pack_head(token, header)")
    sent_unix_s, sender, seq, length = _PREFIX.unpack(head[MAC_BYTES:HEAD_PREFIX_BYTES])
    header_len = length & ~_COVERS_ALL
    prefix = (sent_unix_s, sender, seq, header_len, bool(length & _COVERS_ALL))
    if header_len > MAX_HEADER_BYTES:
        raise _fault(ErrorCode.OVERSIZED, f"header has {header_len} bytes (limit {MAX_HEADER_BYTES})",
                         "put large data in blobs or tensors, not in the header")
    if HEAD_PREFIX_BYTES + header_len > head.nbytes:
        raise _fault(ErrorCode.MALFORMED, f"the header length says {header_len} bytes but the first frame "
                         f"holds {head.nbytes - HEAD_PREFIX_BYTES}",
                         "start each message with codec.pack_head(token, header)")
    for frame in frames[1:]:  # before any byte is hashed: a MAC over every byte reads them all
        if _buffer(frame).nbytes > max_frame_bytes:
            raise _fault(ErrorCode.OVERSIZED, f"a frame has {_buffer(frame).nbytes} bytes (limit "
                         f"{max_frame_bytes})", "send smaller tensors or raise the receiver's frame limit")
    # bytes, not a view: the depth check below needs bytes.translate (a header is small; its copy cheap)
    return head, bytes(head[HEAD_PREFIX_BYTES:HEAD_PREFIX_BYTES + header_len]), prefix


def decode(frames: Sequence[Any], token: bytes | None, *,
           max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    """Validate and decode frames (bytes or zmq.Frame); raises a coded TransportError, and nothing
    else whatever the frames hold: a peer's message must never end the process that reads it."""
    try:
        return _decode(frames, token, max_frame_bytes)
    except SplitinferError:
        raise
    except Exception as e:  # a fault no check above names (numpy, msgspec, memory): still the sender's
        raise _fault(ErrorCode.MALFORMED, f"message cannot be decoded: {first_line(e)}",
                     "send frames as codec.encode writes them") from None


def _decode(frames: Sequence[Any], token: bytes | None, max_frame_bytes: int) -> Message:
    head, header_bytes, (sent_unix_s, sender, seq, _, covers_all) = _read_head(frames, max_frame_bytes)
    if covers_all:
        mac = sign_all(token, head[MAC_BYTES:], *map(_buffer, frames[1:]))
    else:
        mac = sign(token, head[MAC_BYTES:HEAD_PREFIX_BYTES], header_bytes)
    authenticated = not token or hmac.compare_digest(mac, head[:MAC_BYTES])
    _check_depth(header_bytes, authenticated)
    try:
        header = _decoder.decode(header_bytes)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise _fault(ErrorCode.MALFORMED, f"header cannot be decoded: {e}",
                         "send a msgspec-msgpack header with a known 'kind'") from None
    if any(not 1 <= meta.parts <= MAX_PARTS or (meta.inline and meta.parts != 1) for meta in header.tensors):
        raise _fault(ErrorCode.MALFORMED, f"a tensor announces a number of frames outside 1-{MAX_PARTS}",
                     f"send each tensor in 1 to {MAX_PARTS} frames (an inline one in none)")
    num_framed = sum(meta.parts for meta in header.tensors if not meta.inline)
    num_expected = 1 + len(header.blobs) + num_framed
    if len(frames) != num_expected:
        raise _fault(ErrorCode.MALFORMED, f"header announces {num_expected} frames, message has "
                     f"{len(frames)}", "send one frame per blob and per framed tensor, as the header lists")
    views = [_buffer(f) for f in frames[1:]]
    msg = Message(header, authenticated=authenticated, sent_unix_s=sent_unix_s, sender=sender, seq=seq,
                  tensors_authenticated=bool(token) and authenticated and covers_all)
    for length, view in zip(header.blobs, views, strict=False):
        if length != view.nbytes:
            raise _fault(ErrorCode.MALFORMED, f"blob announced as {length} bytes has {view.nbytes}",
                             "list each blob's exact byte length in the header")
        msg.blobs.append(view)
    tensor_frames = iter(views[len(header.blobs):])
    position = HEAD_PREFIX_BYTES + len(header_bytes)  # where the next inline tensor may start
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
            view = next(tensor_frames) if meta.parts == 1 else _join(meta, tensor_frames, num_bytes)
            if view.nbytes != num_bytes:
                raise _fault(ErrorCode.SHAPE, f"tensor {meta.name!r} declares {list(meta.shape)} "
                             f"{meta.dtype} = {num_bytes} bytes but its frame has {view.nbytes}",
                             "send the array's raw C-order bytes with the matching shape")
        if meta.name in msg.arrays:
            raise _fault(ErrorCode.MALFORMED, f"tensor name {meta.name!r} repeats", "send each tensor once")
        if meta.compression:
            arr = _restore(meta, view, max_frame_bytes)
        else:
            arr = np.frombuffer(view, dtype=dtype).reshape(meta.shape)
            if not arr.flags.aligned:  # a frame whose memory does not start on an 8-byte boundary
                arr = arr.copy()
        arr.setflags(write=False)  # a view of the received frame: never write into it
        msg.arrays[meta.name] = arr
    if position != head.nbytes:
        raise _fault(ErrorCode.MALFORMED, f"the first frame has {head.nbytes - position} bytes after its "
                         "header and inline tensors", "send nothing after the last inline tensor")
    return msg


def _join(meta: TensorMeta, frames: Any, num_bytes: int) -> memoryview:
    """The bytes of a tensor sent in ``meta.parts`` frames, copied into one buffer (checked to add up
    to ``num_bytes`` before the buffer is allocated)."""
    views = [next(frames) for _ in range(meta.parts)]
    total = sum(v.nbytes for v in views)
    if total != num_bytes:
        raise _fault(ErrorCode.SHAPE, f"tensor {meta.name!r} declares {list(meta.shape)} {meta.dtype} = "
                     f"{num_bytes} bytes but its {meta.parts} frames have {total}",
                     "send the array's raw C-order bytes with the matching shape")
    return memoryview(b"".join(views))


def _restore(meta: TensorMeta, view: memoryview, max_bytes: int) -> np.ndarray:
    """A compressed tensor, restored: its payload must be one dimension of uint8, and ``decompress``
    checks the params (from the peer) before it allocates at most ``max_bytes``."""
    if meta.dtype != "uint8" or len(meta.shape) != 1:
        raise _fault(ErrorCode.MALFORMED, f"compressed tensor {meta.name!r} is {meta.dtype} "
                     f"{list(meta.shape)}", "send a compressed payload as one dimension of uint8")
    return decompress(Compressed(meta.compression, view, meta.params), max_bytes=max_bytes)


def payload_bytes(arrays: Sequence[tuple[str, np.ndarray | Compressed]]) -> int:
    """What the tensors of a message weigh on a link: their bytes, or their compressed payloads'."""
    return sum(len(memoryview(v.payload)) if type(v) is Compressed else int(np.asarray(v).nbytes)
               for _, v in arrays)


def sent_bytes(arrays: Sequence[tuple[str, np.ndarray | Compressed]]) -> int:
    """The bytes a hop counts as sent, what a plan's hop predicts (``Hop.num_bytes``): a tensor's bytes,
    or a compressed one's payload and params (:func:`splitinfer.compression.wire_bytes`)."""
    return sum(wire_bytes(v) if type(v) is Compressed else int(np.asarray(v).nbytes) for _, v in arrays)


# Bytes that may open an array or a map in msgpack (fixmap, fixarray, array16/32, map16/32).
_NOT_CONTAINER = bytes(c for c in range(256) if not (0x80 <= c <= 0x9f or 0xdc <= c <= 0xdf))
_FIXED_SIZE = {0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1,
               0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
_SIZED = {0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0), 0xd9: (1, 0), 0xda: (2, 0), 0xdb: (4, 0),
          0xc7: (1, 1), 0xc8: (2, 1), 0xc9: (4, 1)}  # bin, str, ext: width of the length, type byte
_COUNTED = {0xdc: (2, 1), 0xdd: (4, 1), 0xde: (2, 2), 0xdf: (4, 2)}  # array/map: width of the count


def _check_depth(header: bytes, authenticated: bool) -> None:
    """Refuse a header that nests arrays and maps deeper than MAX_HEADER_DEPTH, before msgspec sees it.

    msgspec recurses once per level, even to skip an unknown field, and the interpreter's recursion
    limit is all that stops it. Each level needs a byte that opens it, so a header with at most
    MAX_HEADER_DEPTH such bytes (ours have about 10) needs no closer look: one C call. Others are
    walked here, in Python (for a long Done, ~100 us per KB); so only when signed: unsigned, only
    health goes through, and it is small.
    """
    if len(header.translate(None, _NOT_CONTAINER)) <= MAX_HEADER_DEPTH:
        return
    if not authenticated:
        raise _fault(ErrorCode.AUTH, f"an unsigned header has more than {MAX_HEADER_DEPTH} bytes that "
                     "may open an array or a map", "sign messages with the shared token (only health "
                     "goes unsigned)")
    if _depth_exceeds(header, MAX_HEADER_DEPTH):
        raise _fault(ErrorCode.MALFORMED, f"header nests arrays and maps deeper than {MAX_HEADER_DEPTH} "
                     "levels", "send a flat header: put data in blobs or tensors")


def _depth_exceeds(data: bytes, limit: int) -> bool:
    """True when msgpack ``data`` opens more than ``limit`` nested arrays or maps; anything else
    (truncated, invalid) is left for msgspec to name."""
    remaining = [1]  # objects still to read at each open level, the outermost first
    i, n = 0, len(data)
    while remaining:
        if not remaining[-1]:
            remaining.pop()
            continue
        if i >= n:
            return False
        remaining[-1] -= 1
        c = data[i]
        i += 1
        if c < 0x80 or c >= 0xe0:  # positive and negative fixint
            continue
        if c < 0xa0:  # fixmap, fixarray
            count = (c & 0x0f) * (2 if c < 0x90 else 1)
        elif c < 0xc0:  # fixstr
            i += c & 0x1f
            continue
        elif c in _FIXED_SIZE:
            i += _FIXED_SIZE[c]
            continue
        elif c in _SIZED:
            width, extra = _SIZED[c]
            i += width + extra + int.from_bytes(data[i:i + width], "big")
            continue
        elif c in _COUNTED:
            width, per_item = _COUNTED[c]
            count = per_item * int.from_bytes(data[i:i + width], "big")
            i += width
        else:  # 0xc1, never used
            return False
        if len(remaining) > limit:
            return True
        remaining.append(count)
    return False


def _fault(code: ErrorCode, problem: str, fix: str) -> TransportError:
    return TransportError(problem, fix, code=code)
