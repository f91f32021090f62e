"""A large cached partition kept as ONNX external data, so that ONNX Runtime maps its weights from the file
instead of holding them several times over (device/_partitions.py; issue 21).

Loaded from bytes, a partition of N bytes costs a worker about 3 N at its peak: the bytes read, ONNX
Runtime's parse of them, and its tensors copied out of that. So a partition of at least
:data:`MAPPED_MIN_BYTES` is rewritten once in the cache, after its SHA-256 was checked, into

- ``SHA.onnx``: the graph, each initializer of the main graph over :data:`INLINE_MAX_BYTES` an external
  reference into
- ``SHA.data``: their bytes, each at an offset aligned to the page (and the allocation granularity), which
  ONNX Runtime memory-maps rather than reads: the weights are the file's pages, not copies;
- ``SHA.json``: the record that makes the two an entry, written last (a rewrite that broke off leaves no
  record, and its files are removed): the partition's hash and size, the graph file's SHA-256, the data
  file's size and SHA-256.

The entry stays named by the SHA-256 of the bytes received, which it no longer holds: each load checks
the record instead (:meth:`Mapped.check`: the data file's size, then both files' hashes, read in 1 MiB
pieces, which costs time as the partition's own hash did before, and no memory). Files are never changed
in place (written aside, renamed in, removed), so a deployed stage's mapped weights never change under it.

The rewrite reads the protobuf wire format field by field (the model, its graph, each initializer) and
copies each initializer's bytes in 8 MiB pieces: the partition is never held, only its graph. A blob it
cannot rewrite (not a model, an initializer already external, a field it does not know how to walk)
stays one file, loaded as bytes as before. Only the parser of the wire format is here: no onnx import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from splitinfer.runtime.device._partition_files import sha256_of_file
from splitinfer.runtime.device._partition_optimize import identity

# A partition at least this large is kept as external data: every stage with a sizeable layer. Measured on
# this project's machine (worker peak resident growth at deploy, benchmarks/bench_memory.py), mapping from
# 1 MiB instead of 64 MiB lowered the peaks of resnet18 from 213 to 174 MB, vit_b16 (half width and depth)
# from 164 to 76 MB and the detector from 123 to 94 MB; and profiling times blocks from this size the same
# way (wire/partitions.BY_HASH_MIN_BYTES), so the memory a plan is predicted to need is the mapped one.
MAPPED_MIN_BYTES = 1 << 20
INLINE_MAX_BYTES = 64 * 1024  # initializers up to this stay in the graph (as graph/external.py keeps them)
ALIGN_BYTES = max(4096, mmap.ALLOCATIONGRANULARITY)  # where each initializer's bytes start in SHA.data
_PIECE_BYTES = 1 << 20  # what a rewrite holds at once: a deploy of a small stage peaks by it
_HEX = re.compile(r"[0-9a-f]{64}")
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_SEGMENT, _RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 3, 9, 13, 14  # TensorProto's fields
_LENGTH_DELIMITED = 2


class NotRewritable(Exception):
    """The blob cannot be rewritten (kept as one file); the message says why."""


@dataclass(frozen=True)
class Mapped:
    """The files of the entry ``sha`` kept as external data in ``folder``."""

    folder: Path
    sha: str

    @property
    def graph(self) -> Path:
        return self.folder / f"{self.sha}.onnx"

    @property
    def data(self) -> Path:
        return self.folder / f"{self.sha}.data"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.sha}.json"

    def files(self) -> tuple[Path, Path, Path]:
        return self.record, self.graph, self.data

    def exists(self) -> bool:
        return all(p.is_file() for p in self.files())

    def size(self) -> int:
        """Its bytes on disk, the three files together."""
        return sum(p.stat().st_size for p in self.files())

    def remove(self) -> None:
        """Its files, the record first (the entry is gone at once). A file ONNX Runtime still maps stays on
        disk until that stage goes (POSIX), or, where it cannot be removed while mapped, until a restart."""
        for path in self.files():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def check(self) -> str:
        """'' when the files are those its record describes, else what is wrong with them."""
        try:
            record = json.loads(self.record.read_text())
            graph_sha, data_sha, data_bytes = (record["graph_sha256"], record["data_sha256"],
                                               record["data_bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return "its record cannot be read"
        if record.get("sha256") != self.sha:
            return "its record is another partition's"
        if "optimized_for" in record and record["optimized_for"] != identity():
            return f"its graph was optimized for {str(record['optimized_for'])[:200]}, not {identity()}"
        try:
            size = self.data.stat().st_size
            if size != data_bytes:
                return f"its data file has {size} bytes, not {data_bytes}"
            if sha256_of_file(self.graph) != graph_sha:
                return "its graph file is not the one written"
            if sha256_of_file(self.data) != data_sha:
                return "its data file is not the one written"
        except OSError as e:
            return f"it cannot be read ({e.strerror or e})"
        return ""

    def write(self, source: Path, staging: Path, optimized_for: str | None = None) -> None:
        """Rewrite the partition in ``source`` (checked against its hash, or its graph as ONNX Runtime
        optimized it for ``optimized_for``: device/_partition_optimize.py) into this entry's files, each
        written in ``staging`` first and renamed in, the record last; NotRewritable, or OSError (nothing
        left behind in either case)."""
        tmp = {p.name: staging / f"{p.name}.tmp" for p in self.files()}
        try:
            with open(source, "rb") as f, open(tmp[self.data.name], "wb") as out:
                data = _DataFile(out, self.data.name)
                graph = _model(f, os.fstat(f.fileno()).st_size, data)
            if not data.num_moved:
                raise NotRewritable(f"no initializer over {INLINE_MAX_BYTES} bytes to keep apart")
            tmp[self.graph.name].write_bytes(graph)
            record = {"sha256": self.sha, "size_bytes": source.stat().st_size,
                      "graph_sha256": hashlib.sha256(graph).hexdigest(),
                      "data_sha256": data.digest.hexdigest(), "data_bytes": data.size}
            if optimized_for is not None:
                record["optimized_for"] = optimized_for
            tmp[self.record.name].write_text(json.dumps(record))
            for path in (self.data, self.graph, self.record):  # the record last: it makes the entry
                os.replace(tmp[path.name], path)
        except BaseException:
            self.remove()
            raise
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)


def scan(folder: Path) -> list[tuple[str, int]]:
    """The entries of a cache folder, least recently used first: (hash, bytes on disk). A blob is one file
    named by its hash; an entry rewritten is :class:`Mapped` (the blob it came from, left by a restart
    between the two, is removed; files of a rewrite that broke off are removed)."""
    blobs: set[str] = set()
    mapped: set[str] = set()
    for path in folder.iterdir():
        sha, dot, ext = path.name.partition(".")
        if _HEX.fullmatch(sha) and path.is_file():
            if not dot:
                blobs.add(sha)
            elif ext in ("onnx", "data", "json"):
                mapped.add(sha)
    found: list[tuple[int, str, int]] = []  # (mtime, hash, size)
    for sha in mapped:
        entry = Mapped(folder, sha)
        if not entry.exists():
            entry.remove()
            continue
        if sha in blobs:
            (folder / sha).unlink(missing_ok=True)
            blobs.discard(sha)
        found.append((entry.record.stat().st_mtime_ns, sha, entry.size()))
    for sha in blobs:
        stat = (folder / sha).stat()
        found.append((stat.st_mtime_ns, sha, stat.st_size))
    return [(sha, size) for _, sha, size in sorted(found)]


# ---- the wire format -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # where its key starts
    value_at: int  # where a length-delimited one's value starts (after its length)
    end: int
    value: int = 0  # a varint's value


class _DataFile:
    """SHA.data as it is written: its size, its running hash, the initializers moved there."""

    def __init__(self, out: BinaryIO, location: str) -> None:
        self.out, self.location = out, location  # its name, which the graph's references give
        self.size, self.digest, self.num_moved = 0, hashlib.sha256(), 0

    def _write(self, piece: Any) -> None:
        self.out.write(piece)
        self.digest.update(piece)
        self.size += len(piece)

    def copy(self, f: BinaryIO, offset: int, length: int) -> int:
        """Copy ``length`` bytes at ``offset`` of ``f`` to the next aligned offset; that offset."""
        self._write(bytes(-self.size % ALIGN_BYTES))
        start = self.size
        f.seek(offset)
        left = length
        while left > 0:
            piece = f.read(min(_PIECE_BYTES, left))
            if not piece:
                raise NotRewritable("the file ends inside an initializer")
            self._write(piece)
            left -= len(piece)
        self.num_moved += 1
        return start


def _read_varint(f: BinaryIO) -> int:
    result = shift = 0
    while shift < 64:
        byte = f.read(1)
        if not byte:
            raise NotRewritable("the file ends inside a field")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
    raise NotRewritable("a malformed varint")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(f: BinaryIO, start: int, end: int) -> Iterator[_Field]:
    """The fields of the message in ``f[start:end]``, their values not read (the file may be sought in
    between)."""
    pos = start
    while pos < end:
        f.seek(pos)
        key = _read_varint(f)
        number, wire, value, length = key >> 3, key & 7, 0, 0
        if wire == 0:
            value = _read_varint(f)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        elif wire == _LENGTH_DELIMITED:
            length = _read_varint(f)
            f.seek(length, os.SEEK_CUR)
        else:
            raise NotRewritable(f"wire type {wire} (a group) in field {number}")
        value_at = f.tell() - length
        if number == 0 or f.tell() > end:
            raise NotRewritable("a field runs past its message")
        yield _Field(number, wire, pos, value_at, f.tell(), value)
        pos = f.tell()


def _read(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    data = f.read(end - start)
    if len(data) != end - start:
        raise NotRewritable("the file ends inside a field")
    return data


def _delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _model(f: BinaryIO, size: int, data: _DataFile) -> bytes:
    """The ModelProto in ``f`` with its graph's large initializers moved to ``data``."""
    out = bytearray()
    for field in _fields(f, 0, size):
        if field.number == _MODEL_GRAPH and field.wire == _LENGTH_DELIMITED:
            out += _delimited(_MODEL_GRAPH, _graph(f, field, data))
        else:
            out += _read(f, field.start, field.end)
    return bytes(out)


def _graph(f: BinaryIO, graph: _Field, data: _DataFile) -> bytes:
    out = bytearray()
    for field in _fields(f, graph.value_at, graph.end):
        if field.number == _GRAPH_INITIALIZER and field.wire == _LENGTH_DELIMITED:
            tensor = _initializer(f, field, data)
            if tensor is not None:
                out += _delimited(_GRAPH_INITIALIZER, tensor)
                continue
        out += _read(f, field.start, field.end)
    return bytes(out)


def _initializer(f: BinaryIO, tensor: _Field, data: _DataFile) -> bytes | None:
    """The TensorProto with its raw_data moved to ``data``; None to keep it as it is (small, its values in
    typed fields, raw_data given twice, or in segments)."""
    fields = list(_fields(f, tensor.value_at, tensor.end))
    if any(x.number == _DATA_LOCATION and (x.wire != 0 or x.value != 0) for x in fields):
        # Its bytes would be looked for next to the cached graph: kept as one blob, as it came.
        raise NotRewritable("an initializer refers to external data already")
    raws = [x for x in fields if x.number == _RAW_DATA and x.wire == _LENGTH_DELIMITED]
    if len(raws) != 1 or raws[0].end - raws[0].value_at <= INLINE_MAX_BYTES or \
            any(x.number == _SEGMENT for x in fields):
        return None
    raw = raws[0]
    kept = b"".join(_read(f, x.start, x.end) for x in fields
                    if x.number not in (_RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION))
    length = raw.end - raw.value_at
    offset = data.copy(f, raw.value_at, length)
    refs = b"".join(_delimited(_EXTERNAL_DATA, _delimited(1, key.encode()) + _delimited(2, value.encode()))
                    for key, value in (("location", data.location), ("offset", str(offset)),
                                       ("length", str(length))))
    return kept + refs + _varint(_DATA_LOCATION << 3) + _varint(1)  # data_location = EXTERNAL
