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

import functools
import hashlib
import hmac
import math
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import msgspec
import numpy as np
import zmq

from splitinfer.errors import (
    AuthError,
    DeadlineError,
    ModelError,
    ShapeError,
    TransportError,
    WorkerError,
)
from splitinfer.types import NUMPY_DTYPES

MAC_BYTES = 32
MAX_HEADER_BYTES = 1 << 20
MAX_NDIM = 32
_PREFIX = struct.Struct("<dI")  # send time, header length
HEAD_PREFIX_BYTES = MAC_BYTES + _PREFIX.size
INLINE_MAX_BYTES = 64 * 1024  # pyzmq's copy threshold: smaller tensors are copied whatever we do
_NO_MAC = bytes(MAC_BYTES)
DEFAULT_MAX_FRAME_BYTES = 1 << 30
ALLOWED_DTYPES = frozenset(NUMPY_DTYPES)
_NAME_OF_DTYPE = {dtype: name for name, dtype in NUMPY_DTYPES.items()}


class TensorMeta(msgspec.Struct, frozen=True, array_like=True):
    """Name, numpy dtype name and shape of one tensor; ``inline``: it rides in the head frame."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    inline: bool = False


class StageStamp(msgspec.Struct, frozen=True, array_like=True):
    """What one stage adds to a request's timing record (wall clock, seconds)."""

    stage: int
    device: str
    inbound_sent_unix_s: float  # the message with this stage's inputs was sent (its head's send time)
    recv_unix_s: float  # ... and arrived at the worker (or was handed over on the same worker)
    start_unix_s: float  # compute began
    compute_s: float  # ONNX Runtime run, perf_counter
    wait_s: float  # emulated slowdown wait after the run


class Route(msgspec.Struct, frozen=True):
    """Where a stage sends its outputs and the link shaping to apply on the way."""

    address: str | None = None  # None: the next stage is on this same worker (free hop)
    to_coordinator: bool = False  # last stage: send a Result instead of an Infer
    bandwidth_bps: float | None = None
    latency_s: float | None = None


class _Base(msgspec.Struct, tag_field="kind", kw_only=True):
    request_id: int = 0
    blobs: list[int] = []
    tensors: list[TensorMeta] = []


# Requests a worker answers.
class Health(_Base, tag="health"):
    """Liveness check; the only kind a worker answers without the token."""


class Info(_Base, tag="info"):
    """Ask for device information (CPU, memory, providers, versions)."""


class Echo(_Base, tag="echo"):
    """Send back the payload blob, or ``num_reply_bytes`` zero bytes if given."""

    num_reply_bytes: int | None = None


class Deploy(_Base, tag="deploy"):
    """Install a stage: blob 0 is the ONNX partition."""

    deployment_id: str
    stage: int
    device: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    route: Route
    reply_to: str  # the coordinator's address, for errors about this stage's requests
    slowdown: float = 1.0
    num_warmup: int = 2


class Undeploy(_Base, tag="undeploy"):
    """Drop every stage of a deployment (or all stages when ``deployment_id`` is empty)."""

    deployment_id: str = ""


class Profile(_Base, tag="profile"):
    """Time an ONNX partition (blob 0) on the given input tensors."""

    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 100
    budget_s: float = 2.0
    rel_precision: float = 0.05
    slowdown: float = 1.0  # the device's emulated slowdown: times_s = compute_times_s x slowdown
    return_outputs: bool = False


class Probe(_Base, tag="probe"):
    """Time echo round trips from this worker to another worker."""

    address: str
    sizes_bytes: list[int]
    num_repeats: int = 5
    timeout_s: float = 5.0


class Shutdown(_Base, tag="shutdown"):
    """Stop the worker process."""


class Infer(_Base, tag="infer"):
    """Tensors for one stage of one request."""

    deployment_id: str
    stage: int
    deadline_unix_s: float
    stamps: list[StageStamp] = []


# Replies.
class Result(_Base, tag="result"):
    """The last stage's outputs, sent to the coordinator."""

    deployment_id: str
    stamps: list[StageStamp] = []


class ErrorReply(_Base, tag="error"):
    """A refused or failed message; ``code`` is machine-readable."""

    code: str
    problem: str
    fix: str = ""
    deployment_id: str = ""
    stage: int = -1


class Done(_Base, tag="done"):
    """Generic success reply; ``data`` carries plain values (health, info, timings)."""

    data: dict[str, Any] = {}


Header = Union[  # noqa: UP007 (msgspec needs a real Union for tagged decoding)
    Health, Info, Echo, Deploy, Undeploy, Profile, Probe, Shutdown, Infer, Result, ErrorReply, Done
]
NEEDS_NO_AUTH = (Health,)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Header)


@dataclass
class Message:
    """A decoded message: the header, raw blobs and read-only arrays in header order."""

    header: Any
    blobs: list[memoryview] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    authenticated: bool = True
    sent_unix_s: float = 0.0  # when the sender handed it to its socket (from the head)


def wire_error(code: str, problem: str, fix: str) -> TransportError:
    """A TransportError tagged with a machine-readable ``code`` for the error reply."""
    err = TransportError(problem, fix)
    err.code = code  # type: ignore[attr-defined]
    return err


def sign(token: bytes | None, *parts: bytes | memoryview) -> bytes:
    """The MAC of the parts (send time, length, header): keyed BLAKE2b with the token; zeros without."""
    if not token:
        return _NO_MAC
    mac = hashlib.blake2b(key=_mac_key(token), digest_size=MAC_BYTES)
    for part in parts:
        mac.update(part)
    return mac.digest()


@functools.lru_cache(maxsize=8)
def _mac_key(token: bytes) -> bytes:
    # BLAKE2b's keyed mode (a MAC by design, RFC 7693) takes keys of up to 64 bytes and is 3x
    # faster than HMAC-SHA256 on a small header; a token of any length is hashed to one key.
    return hashlib.blake2b(token, digest_size=64, person=b"splitinfer-mac").digest()


def read_token(path: str | None) -> bytes | None:
    """The shared token from a file ('-' = one line from stdin); None without a path."""
    if path is None:
        return None
    if path == "-":
        text = sys.stdin.readline()
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise WorkerError(f"cannot read token file {path}: {e.strerror}",
                              "check the path given to --token-file") from None
    token = text.strip().encode()
    if not token:
        raise WorkerError(f"token file {path} is empty", "put a long random string in it "
                          "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    return token


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
            raise wire_error("dtype", f"tensor {name!r} has dtype {arr.dtype.name}, which the wire "
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
        raise wire_error("dtype", f"tensor {meta.name!r} has dtype {meta.dtype!r}",
                         f"use one of {', '.join(sorted(ALLOWED_DTYPES))}")
    if len(meta.shape) > MAX_NDIM or min(meta.shape, default=0) < 0:
        raise wire_error("shape", f"tensor {meta.name!r} has invalid shape {list(meta.shape)}",
                         f"use at most {MAX_NDIM} non-negative dimensions")
    return dtype, dtype.itemsize * math.prod(meta.shape)  # Python ints: a huge shape cannot overflow


def _read_head(frames: Sequence[Any], max_frame_bytes: int) -> tuple[memoryview, memoryview, float]:
    """The head frame, its header bytes and send time, once their sizes are checked."""
    if not frames:
        raise wire_error("malformed", "message has no frames",
                         "send [head, blobs..., tensors...] as one multipart message")
    head = _buffer(frames[0])
    if head.nbytes > max_frame_bytes:
        raise wire_error("oversized", f"a frame has {head.nbytes} bytes (limit {max_frame_bytes})",
                         "send smaller tensors or raise the worker's --max-frame-bytes")
    if head.nbytes < HEAD_PREFIX_BYTES:
        raise wire_error("malformed", f"the first frame has {head.nbytes} bytes, fewer than the "
                         f"{HEAD_PREFIX_BYTES} of a MAC, a send time and a header length",
                         "start each message with codec.pack_head(token, header)")
    sent_unix_s, header_len = _PREFIX.unpack(head[MAC_BYTES:HEAD_PREFIX_BYTES])
    if header_len > MAX_HEADER_BYTES:
        raise wire_error("oversized", f"header has {header_len} bytes (limit {MAX_HEADER_BYTES})",
                         "put large data in blobs or tensors, not in the header")
    if HEAD_PREFIX_BYTES + header_len > head.nbytes:
        raise wire_error("malformed", f"the header length says {header_len} bytes but the first frame "
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
        raise wire_error("malformed", f"header cannot be decoded: {e}",
                         "send a msgspec-msgpack header with a known 'kind'") from None
    authenticated = not token or hmac.compare_digest(
        sign(token, head[MAC_BYTES:HEAD_PREFIX_BYTES], header_bytes), head[:MAC_BYTES])
    num_framed = sum(1 for meta in header.tensors if not meta.inline)
    num_expected = 1 + len(header.blobs) + num_framed
    if len(frames) != num_expected:
        raise wire_error("malformed", f"header announces {num_expected} frames, message has {len(frames)}",
                         "send one frame per blob and per tensor not inline, as listed in the header")
    views = [_buffer(f) for f in frames[1:]]
    for view in views:
        if view.nbytes > max_frame_bytes:
            raise wire_error("oversized", f"a frame has {view.nbytes} bytes (limit {max_frame_bytes})",
                             "send smaller tensors or raise the worker's --max-frame-bytes")
    msg = Message(header, authenticated=authenticated, sent_unix_s=sent_unix_s)
    for length, view in zip(header.blobs, views, strict=False):
        if length != view.nbytes:
            raise wire_error("malformed", f"blob announced as {length} bytes has {view.nbytes}",
                             "list each blob's exact byte length in the header")
        msg.blobs.append(view)
    tensor_frames = iter(views[len(header.blobs):])
    position = HEAD_PREFIX_BYTES + header_bytes.nbytes  # where the next inline tensor may start
    for meta in header.tensors:
        dtype, num_bytes = _dtype_and_size(meta)
        if meta.inline:
            position += -position % 8
            if position + num_bytes > head.nbytes:
                raise wire_error("shape", f"inline tensor {meta.name!r} declares {list(meta.shape)} "
                                 f"{meta.dtype} = {num_bytes} bytes, past the end of the first frame",
                                 "send the array's raw C-order bytes with the matching shape")
            view = head[position:position + num_bytes]
            position += num_bytes
        else:
            view = next(tensor_frames)
            if view.nbytes != num_bytes:
                raise wire_error("shape", f"tensor {meta.name!r} declares {list(meta.shape)} {meta.dtype} "
                                 f"= {num_bytes} bytes but its frame has {view.nbytes}",
                                 "send the array's raw C-order bytes with the matching shape")
        if meta.name in msg.arrays:
            raise wire_error("malformed", f"tensor name {meta.name!r} repeats", "send each tensor once")
        arr = np.frombuffer(view, dtype=dtype).reshape(meta.shape)
        if not arr.flags.aligned:  # a frame whose memory does not start on an 8-byte boundary
            arr = arr.copy()
        arr.setflags(write=False)  # a view of the received frame: never write into it
        msg.arrays[meta.name] = arr
    if position != head.nbytes:
        raise wire_error("malformed", f"the first frame has {head.nbytes - position} bytes after its "
                         "header and inline tensors", "send nothing after the last inline tensor")
    return msg


def error_reply(request_id: int, err: Exception, **where: Any) -> ErrorReply:
    """An ErrorReply for an exception (coded TransportError, SplitinferError or any other)."""
    code = getattr(err, "code", None)
    if code is None:
        # The first matching class wins: ShapeError is a ModelError, AuthError a WorkerError.
        kinds = [(ShapeError, "input"), (ModelError, "model"), (AuthError, "auth"),
                 (DeadlineError, "deadline")]
        code = next((c for cls, c in kinds if isinstance(err, cls)), "failed")
    problem = getattr(err, "problem", None) or f"{type(err).__name__}: {err}"
    fix = getattr(err, "fix", None) or ""
    return ErrorReply(request_id=request_id, code=code, problem=problem, fix=fix, **where)
