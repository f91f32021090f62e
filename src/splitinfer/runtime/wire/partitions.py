"""Putting a partition on a worker by its SHA-256: nothing when the worker holds it already (its cache or
its --model-dir), else its bytes in chunks, from where a broken transfer left off (``partition_status``
says). The worker's side is ``device/_partitions.py``; ``WorkerClient.put_partition`` calls this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from splitinfer.errors import DeadlineError, ErrorCode, TransportError
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.messages import MAX_CHUNK_BYTES, Message
from splitinfer.units import check_number

# A partition this large is timed (profiling) from the worker's cache, put there by hash, not sent inline:
# the worker opens it memory-mapped, as it deploys a stage this large (device/_partition_layout.py's
# MAPPED_MIN_BYTES, the same size), so its memory is measured as a stage will hold it; and a second profile
# sends nothing.
BY_HASH_MIN_BYTES = 1 << 20
MAX_ATTEMPTS = 3  # a transfer that breaks (no answer in time, a chunk damaged on the way) is resumed twice
_MAX_CACHE_BYTES = 1 << 60


class _Requester(Protocol):
    name: str

    def request(self, header: Any, *, blobs: Any = (), timeout_s: float | None = None) -> Message: ...


@dataclass(frozen=True)
class PartitionUpload:
    """A partition the worker holds now: its hash and size, the bytes this upload sent of it (0: the worker
    had it), where a transfer before this one had left it, and where the worker keeps it."""

    sha256: str
    size_bytes: int
    sent_bytes: int
    resumed_from: int
    source: str  # "cache" or "model_dir"


def put_partition(client: _Requester, data: bytes | memoryview, *,
                  timeout_s: float | None = None) -> PartitionUpload | None:
    """Make the worker hold the partition ``data``; None when it cannot (a worker from before partitions
    were kept, or whose cache is off or smaller than the partition): deploy it inline then."""
    view = memoryview(data).cast("B")
    size = int(check_number(view.nbytes, "the partition's size in bytes", low=1, whole=True))
    sha = hashlib.sha256(view).hexdigest()
    sent, resumed_from = 0, None
    for attempt in range(MAX_ATTEMPTS):
        status = _status(client, sha, size, timeout_s)
        if status is None:
            return None
        source, offset, max_chunk_bytes, max_bytes = status
        if resumed_from is None:
            resumed_from = offset
        if source:
            return PartitionUpload(sha, size, sent, resumed_from, source)
        if size > max_bytes:
            return None
        try:
            sent += _send(client, view, sha, offset, max_chunk_bytes, timeout_s)
            return PartitionUpload(sha, size, sent, resumed_from, "cache")
        except (DeadlineError, TransportError) as e:  # the client reconnected: ask where the worker is
            if attempt == MAX_ATTEMPTS - 1 or not (isinstance(e, DeadlineError)
                                                   or e.code == ErrorCode.INTEGRITY):
                raise
    raise AssertionError("unreachable")


def _status(client: _Requester, sha: str, size: int,
            timeout_s: float | None) -> tuple[str, int, int, int] | None:
    """(where the worker holds it or '', bytes pending, its chunk limit, its cache's bound); None for a
    worker that does not take partition requests."""
    try:
        reply = client.request(messages.PartitionStatus(sha256=sha, size_bytes=size), timeout_s=timeout_s)
    except TransportError as e:
        if e.code in (ErrorCode.MALFORMED, ErrorCode.UNKNOWN_KIND):  # an older worker: an unknown kind
            return None
        raise
    data = reply.header.data
    where = f"worker {client.name}'s partition_status reply"
    source = data.get("source") if isinstance(data, dict) else None
    if source not in ("", "cache", "model_dir") or (data.get("have") is True) != bool(source):
        raise TransportError(f"{where} says neither where it holds the partition nor that it does not",
                             "check the worker's splitinfer version")
    offset = _whole(data, "offset", where, 0, size)
    max_chunk_bytes = _whole(data, "max_chunk_bytes", where, 1, MAX_CHUNK_BYTES)
    return source, offset, max_chunk_bytes, _whole(data, "max_bytes", where, 0, _MAX_CACHE_BYTES)


def _send(client: _Requester, view: memoryview, sha: str, offset: int, chunk_bytes: int,
          timeout_s: float | None) -> int:
    """Send chunks from ``offset`` on, where the worker asks, until it has the whole partition; the
    bytes it took."""
    size, sent = view.nbytes, 0
    for _ in range(2 * (size // chunk_bytes) + 4):  # every chunk once, and a few restarts
        if offset >= size:
            break
        piece = view[offset:offset + chunk_bytes]
        header = messages.PartitionChunk(sha256=sha, size_bytes=size, offset=offset,
                                         chunk_sha256=hashlib.sha256(piece).hexdigest())
        data = client.request(header, blobs=[piece], timeout_s=timeout_s).header.data
        where = f"worker {client.name}'s partition_chunk reply"
        held = _whole(data, "offset", where, 0, size)
        if held == offset + piece.nbytes:
            sent += piece.nbytes
        if data.get("complete") is True:
            return sent
        offset = held
    raise TransportError(f"worker {client.name} did not take partition {sha[:12]} ({size} bytes) in as many "
                         "chunks as it has", "check the worker's log and its splitinfer version")


def _whole(data: Any, key: str, where: str, low: int, high: int) -> int:
    value = data.get(key) if isinstance(data, dict) else None
    return int(check_number(value, f"{where}'s {key}", low=low, high=high, whole=True, error=TransportError))
