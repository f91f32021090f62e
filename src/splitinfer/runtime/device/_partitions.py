"""A worker's partitions on disk: a content-addressed cache, transfers in chunks, and a model folder.

A deploy may name its partition's parts by SHA-256 (``Deploy.parts_sha256``) instead of carrying them:
the worker loads each from

- its **cache** (``--cache-dir``, bounded by ``--cache-max-bytes``): files named by their SHA-256 (64
  lowercase hex digits, so no name reaches outside the folder), filled by ``partition_chunk`` messages
  and emptied least recently used first. A transfer appends to ``pending/SHA-SIZE.part`` (the temporary
  file), each chunk checked against its own hash first; the last chunk's whole-file hash decides: a match
  is renamed into the cache (atomic), a mismatch deleted. A broken transfer resumes: ``partition_status``
  says how many bytes are pending (kept across a worker restart too);
- its **model folder** (``--model-dir``): the ``*.onnx`` files there, indexed by their SHA-256 at start
  and again (only the files added or changed) when a hash is not found.

A partition of at least 1 MiB is rewritten once installed into ONNX external data (``SHA.onnx``,
``SHA.data``, ``SHA.json``: device/_partition_layout.py), whose weights ONNX Runtime maps, not copies: a
deploy then peaks near the partition plus its largest layer, not three times the partition. With
``--optimize-ahead``, on the CPU provider alone, the graph kept is the one ONNX Runtime optimized for this
CPU, made once in a child process (device/_partition_optimize.py): a deploy then has nothing left to
rewrite, and the worker peaks at what the stage holds.

Space: a transfer reserves its whole size when it starts, so the cache and the pending transfers never
hold more than ``--cache-max-bytes``; room is made by evicting cached partitions (least recently used
first), then by dropping the pending transfers least recently sent to; at most ``MAX_PENDING`` are kept.
A rewrite needs room for a second copy while it is written (else the partition stays one file). Every
entry is checked again when a deploy loads it (a file against its hash, a rewrite against its record).
The default folder is ``partitions/NAME`` in ``$SPLITINFER_CACHE_DIR`` (else
``$XDG_CACHE_HOME/splitinfer``, else ``~/.cache/splitinfer``), or, when that cannot be used (not
writable, another worker's), a temporary folder removed at exit; a ``--cache-dir`` that cannot be
written ends the worker at start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from splitinfer.errors import ErrorCode, TransportError, WorkerError
from splitinfer.host import returning_freed_memory
from splitinfer.runtime.device._partition_files import (
    ModelDir,
    Pending,
    pending_transfers,
    read_bytes,
    sha256_of_file,
)
from splitinfer.runtime.device._partition_layout import MAPPED_MIN_BYTES, Mapped, NotRewritable, scan
from splitinfer.runtime.device._partition_optimize import identity, optimize
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.messages import MAX_CHUNK_BYTES, Message
from splitinfer.units import check_number

log = logging.getLogger("splitinfer.worker")
MAX_PENDING = 4  # transfers kept pending at once (each resumable); a fifth drops the one idle longest
MAX_PARTITION_BYTES = 1 << 50  # 1 PiB: a size_bytes beyond any partition
_HEX = re.compile(r"[0-9a-f]{64}")


def check_sha256(text: object, what: str) -> str:
    """``text`` when it is a SHA-256 in hex (64 lowercase digits), else a malformed TransportError."""
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        shown = repr(text[:80]) if isinstance(text, str) else f"a {type(text).__name__}"
        raise _malformed(f"{what} {shown} is not a SHA-256", "give the 64 lowercase hex digits of one")
    return text


class PartitionStore:
    """A worker's cache of partitions, its pending transfers and its model folder (thread-safe)."""

    def __init__(self, folder: Path, max_bytes: int, *, model_dir: Path | None = None,
                 max_chunk_bytes: int = MAX_CHUNK_BYTES, temporary: bool = False, lock: Any = None,
                 mapped_min_bytes: int = MAPPED_MIN_BYTES, optimize: bool = False) -> None:
        self.folder = folder
        self.optimize = optimize  # large partitions cached as ONNX Runtime optimized them for this CPU
        self.max_bytes = max_bytes
        self.mapped_min_bytes = mapped_min_bytes  # partitions this large are kept as external data
        self.max_chunk_bytes = max(1, min(max_chunk_bytes, MAX_CHUNK_BYTES))
        self.model_dir = ModelDir(model_dir) if model_dir is not None else None
        self._temporary = temporary  # a folder of our own: removed at close
        self._lock_file = lock
        self._lock = threading.Lock()
        self._pending_dir = folder / "pending"
        self._pending_dir.mkdir(exist_ok=True)
        # sha256 -> bytes on disk (one file, or a Mapped entry's three), least recently used first
        self._entries: OrderedDict[str, int] = OrderedDict(scan(folder))
        self._whole: set[str] = set()  # large partitions that cannot be rewritten: loaded as bytes
        self._pending = pending_transfers(self._pending_dir)  # least recently sent to first
        self._make_room(0)

    @property
    def cached_bytes(self) -> int:
        return sum(self._entries.values())

    def _reserved_bytes(self) -> int:
        return sum(p.size_bytes for p in self._pending.values())

    def cached(self) -> list[str]:
        """The hashes in the cache, least recently used first."""
        with self._lock:
            return list(self._entries)

    # ---- requests ------------------------------------------------------------------------------
    def status(self, header: messages.PartitionStatus) -> dict[str, Any]:
        """Whether this worker holds the partition, and how many of its bytes a transfer left pending."""
        sha = check_sha256(header.sha256, "partition_status sha256")
        size = _check_size(header.size_bytes, "partition_status size_bytes")
        with self._lock:
            source = ""
            if self._holds(sha):
                self._touch(sha)
                source = "cache"
            elif self.model_dir is not None and self.model_dir.find(sha) is not None:
                source = "model_dir"
            pending = self._pending.get(sha)
            offset = pending.held if pending is not None and pending.size_bytes == size and not source else 0
            return {"have": bool(source), "source": source, "offset": offset,
                    "max_chunk_bytes": self.max_chunk_bytes, "max_bytes": self.max_bytes}

    def chunk(self, header: messages.PartitionChunk, msg: Message) -> dict[str, Any]:
        """Append a chunk at the bytes held (one sent from elsewhere is not written: the reply says
        where to send from); the last one checks the whole file and puts it in the cache."""
        sha = check_sha256(header.sha256, "partition_chunk sha256")
        size = _check_size(header.size_bytes, "partition_chunk size_bytes")
        _number(header.offset, "partition_chunk offset", low=0, high=size - 1, whole=True,
                fix="bytes from the partition's start, before its end (size_bytes)")
        if len(msg.blobs) != 1:
            raise _malformed(f"partition_chunk carries {len(msg.blobs)} blobs", "send one: the chunk's bytes")
        blob = msg.blobs[0]
        num_bytes = memoryview(blob).nbytes
        if num_bytes > self.max_chunk_bytes:
            raise TransportError(f"partition_chunk has {num_bytes} bytes (limit {self.max_chunk_bytes})",
                                 "send chunks of at most the max_chunk_bytes partition_status gives",
                                 code=ErrorCode.OVERSIZED)
        if num_bytes == 0 or header.offset + num_bytes > size:
            raise _malformed(f"partition_chunk of {num_bytes} bytes at offset {header.offset} does not "
                             f"end within the partition's {size} bytes",
                             "send 1 or more bytes, none past its end")
        check_sha256(header.chunk_sha256, "partition_chunk chunk_sha256")
        if hashlib.sha256(blob).hexdigest() != header.chunk_sha256:
            raise _integrity(f"the chunk at offset {header.offset} of partition {sha[:12]} does not match "
                             "its chunk_sha256: nothing written", "send the chunk again")
        if size > self.max_bytes:
            raise TransportError(f"partition {sha[:12]} has {size} bytes, more than this worker's cache "
                                 f"holds ({self.max_bytes}, --cache-max-bytes)",
                                 "send it inline in the deploy, or give the worker more --cache-max-bytes",
                                 code=ErrorCode.OVERSIZED)
        with self._lock:
            if self._holds(sha):
                return {"offset": size, "complete": True}
            pending = self._pending_for(sha, size)
            if header.offset != pending.held:
                return {"offset": pending.held, "complete": False}
            self._append(pending, blob)
            if pending.held < size:
                return {"offset": pending.held, "complete": False}
            self._install(sha, pending)
            return {"offset": size, "complete": True}

    def load(self, sha256: str) -> bytes | Path:
        """The partition ``sha256`` (checked against it) from the cache or the model folder: its bytes, or
        the path of its graph file when the cache keeps it as external data (``create_inference_session``
        opens either); WorkerError (code missing_partition) when it holds none."""
        sha = check_sha256(sha256, "a parts_sha256 entry")
        damaged = ""
        with self._lock:
            if self._holds(sha):
                part, damaged = self._cached(sha)
                if part is not None:
                    self._touch(sha)
                    return part
                log.warning("cached partition %s is damaged (%s): removed", sha[:12], damaged)
                self._evict(sha)
            path = self.model_dir.find(sha) if self.model_dir is not None else None
            data = read_bytes(path) if path is not None else None
            if data is not None and hashlib.sha256(data).hexdigest() == sha:
                return data
            if data is not None:
                self.model_dir.scan()  # type: ignore[union-attr]  # changed since it was hashed
        held = f" (its cached copy was damaged: {damaged}; removed)" if damaged else ""
        raise WorkerError(f"this worker holds no partition {sha}{held}", "upload it first (partition_chunk), "
                          "or deploy it inline", code=ErrorCode.MISSING_PARTITION)

    def _cached(self, sha: str) -> tuple[bytes | Path | None, str]:
        """The cached partition as :meth:`load` gives it, or None and what is wrong with it."""
        mapped, blob = Mapped(self.folder, sha), self.folder / sha
        if not mapped.exists() and self._entries[sha] >= self.mapped_min_bytes and sha not in self._whole:
            if sha256_of_file(blob) != sha:  # a large one kept whole before (no room, an older worker)
                return None, "its bytes do not match its hash"
            self._rewrite(sha)
        if mapped.exists():
            problem = mapped.check()
            return (None, problem) if problem else (mapped.graph, "")
        data = read_bytes(blob)
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            return None, "its bytes do not match its hash"
        return data, ""

    # ---- the cache -----------------------------------------------------------------------------
    def _holds(self, sha: str) -> bool:
        if sha not in self._entries:
            return False
        if (self.folder / sha).is_file() or Mapped(self.folder, sha).exists():
            return True
        self._evict(sha)  # removed by hand (what is left of it too)
        return False

    def _touch(self, sha: str) -> None:
        self._entries.move_to_end(sha)
        blob = self.folder / sha
        with contextlib.suppress(OSError):  # the order survives a restart
            os.utime(blob if blob.is_file() else Mapped(self.folder, sha).record)

    def _evict(self, sha: str) -> None:
        self._entries.pop(sha, None)
        (self.folder / sha).unlink(missing_ok=True)
        Mapped(self.folder, sha).remove()

    def _drop_pending(self, sha: str) -> None:
        pending = self._pending.pop(sha)
        pending.path.unlink(missing_ok=True)

    def _over(self, num_bytes: int) -> bool:
        return self.cached_bytes + self._reserved_bytes() + num_bytes > self.max_bytes

    def _make_room(self, num_bytes: int, keep: str = "", transfers: bool = True) -> bool:
        """Evict cached partitions but ``keep``, least recently used first, then (unless not ``transfers``)
        pending transfers, until ``num_bytes`` more fit within the bound (and one more transfer within the
        count, when ``num_bytes``); whether they fit."""
        while self._entries.keys() - {keep} and self._over(num_bytes):
            sha = next(s for s in self._entries if s != keep)
            log.info("evicting partition %s (least recently used)", sha[:12])
            self._evict(sha)
        while transfers and self._pending and (self._over(num_bytes)
                                               or len(self._pending) + bool(num_bytes) > MAX_PENDING):
            self._drop_pending(next(iter(self._pending)))
        return not self._over(num_bytes)

    def _pending_for(self, sha: str, size: int) -> Pending:
        pending = self._pending.get(sha)
        if pending is not None and pending.size_bytes != size:
            self._drop_pending(sha)
            pending = None
        if pending is None:
            self._make_room(size)
            path = self._pending_dir / f"{sha}-{size}.part"
            path.write_bytes(b"")
            pending = self._pending[sha] = Pending(size, path, 0, hashlib.sha256())
        self._pending.move_to_end(sha)
        return pending

    def _append(self, pending: Pending, blob: Any) -> None:
        try:
            with open(pending.path, "ab") as f:
                f.write(blob)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.truncate(pending.path, pending.held)
            raise WorkerError(f"cannot write a pending partition in {self._pending_dir}: {e.strerror or e}",
                              "free disk space there, or give the worker another --cache-dir") from None
        pending.held += memoryview(blob).nbytes
        if pending.digest is not None:
            pending.digest.update(blob)

    def _install(self, sha: str, pending: Pending) -> None:
        digest = pending.digest.hexdigest() if pending.digest is not None else sha256_of_file(pending.path)
        if digest != sha:
            self._drop_pending(sha)
            raise _integrity(f"the {pending.size_bytes} bytes received as partition {sha} hash to {digest}: "
                             "nothing installed, the transfer dropped", "send the partition again")
        os.replace(pending.path, self.folder / sha)  # atomic: the cache has a whole file or none
        del self._pending[sha]
        self._entries[sha] = pending.size_bytes
        self._touch(sha)
        if pending.size_bytes >= self.mapped_min_bytes:
            self._rewrite(sha)

    def _rewrite(self, sha: str) -> None:
        """Keep the cached partition ``sha`` (one file, its hash checked) as external data instead, when
        there is room for both while it is written."""
        mapped, source, optimized_for = Mapped(self.folder, sha), self.folder / sha, None
        if not self._make_room(self._entries[sha] * (2 if self.optimize else 1), keep=sha, transfers=False):
            log.info("partition %s stays one file: no room to rewrite it within --cache-max-bytes", sha[:12])
            return
        optimized = self._pending_dir / f"{sha}.optimized"
        if self.optimize:  # its graph as ONNX Runtime optimizes it here, made once in a child process
            why = optimize(source, optimized)
            if why:
                log.warning("partition %s cached as it came (its deploys optimize it): %s", sha[:12], why)
            else:
                source, optimized_for = optimized, identity()
        try:
            mapped.write(source, self._pending_dir, optimized_for)
        except (NotRewritable, OSError) as e:
            log.warning("partition %s stays one file, loaded as bytes: %s", sha[:12], e)
            self._whole.add(sha)
            return
        finally:
            optimized.unlink(missing_ok=True)
        (self.folder / sha).unlink(missing_ok=True)
        self._entries[sha] = mapped.size()
        self._touch(sha)
        self._make_room(0, keep=sha)  # its graph and the alignment may make it a little larger

    def close(self) -> None:
        """Release the folder (removed when it was a temporary one)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


def handle_partition(store: PartitionStore | None, header: Any, msg: Message) -> dict[str, Any]:
    """Answer a ``partition_status`` or ``partition_chunk`` request."""
    if store is None:
        raise TransportError("this worker keeps no partitions", "deploy them inline",
                             code=ErrorCode.UNKNOWN_KIND)
    if isinstance(header, messages.PartitionStatus):
        if msg.blobs:
            raise _malformed(f"partition_status carries {len(msg.blobs)} blobs", "send none")
        return store.status(header)
    return store.chunk(header, msg)


def with_parts(store: PartitionStore | None, header: messages.Deploy | messages.TimePartition,
               msg: Message, max_parts: int = 0) -> Message:
    """The deploy's (or time_partition's: at most ``max_parts``, each once) message with the parts it names
    by hash loaded in front of its blobs (the exits' rule graphs), as if it had carried them: each one's
    bytes, or the path of a large one's graph file (:meth:`PartitionStore.load`), which
    ``create_inference_session`` opens as it opens bytes."""
    named = header.parts_sha256
    kind = "deploy" if isinstance(header, messages.Deploy) else "time_partition"
    if not named:
        return msg
    if isinstance(header, messages.Deploy) and len(named) != header.num_parts:
        raise _malformed(f"deploy names {len(named)} parts by hash and has num_parts {header.num_parts}",
                         "give one SHA-256 per part, or none and the parts as blobs")
    if kind == "time_partition" and (len(named) > max_parts or len(set(named)) < len(named)):
        raise _malformed(f"time_partition names {len(named)} partitions by hash, {len(set(named))} distinct",
                         f"name at most {max_parts}, each once")
    if store is None:
        raise WorkerError("this worker keeps no partitions", f"send them inline in the {kind}",
                          code=ErrorCode.MISSING_PARTITION)
    with returning_freed_memory():  # checking a file against its hash reads it: the buffers go back
        parts = [store.load(sha) for sha in named]
    return dataclasses.replace(msg, blobs=[*parts, *msg.blobs])  # type: ignore


def _check_size(value: object, what: str) -> int:
    return int(_number(value, what, low=1, high=MAX_PARTITION_BYTES, whole=True,
                       fix="the partition's size in bytes"))


def _number(value: object, what: str, **limits: Any) -> float:
    return check_number(value, what, error=TransportError, **limits)


def _malformed(problem: str, fix: str) -> TransportError:
    return TransportError(problem, fix, code=ErrorCode.MALFORMED)


def _integrity(problem: str, fix: str) -> TransportError:
    return TransportError(problem, fix, code=ErrorCode.INTEGRITY)
