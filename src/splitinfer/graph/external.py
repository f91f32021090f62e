"""Weights that stay on disk: initializers held as ONNX *external data* references.

A model whose initializers live in external data files is loaded without them
(``Model.external_dir`` is the folder their ``location``\\ s are relative to): loading, analysis and
splitting work on the graph alone. Each reference is checked at load (:func:`check_external`): a
relative location inside the model's folder (no ``..``, not absolute), a file that exists and holds
the tensor's bytes. Small ones (at most :data:`INLINE_MAX_BYTES`, shape tensors and the like that
shape inference reads) are read in at load (:func:`inline_small`).

Values are read only where needed, memory-mapped (:func:`read_array`). ONNX Runtime reads them
itself from the folder (``create_inference_session(..., external_dir=)``). A partition is written
(:func:`save_with_external`) as ``part_<k>.onnx`` plus its own ``part_<k>.data``, each tensor's bytes
copied range by range from the source file (at 4 KiB-aligned offsets, which ONNX Runtime maps
rather than reads), so that no partition's weights are ever held in memory to write it;
:func:`serialize` reads them into one blob where a partition must travel whole (a worker deploy).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import numpy as np
import onnx
from onnx import helper

from splitinfer.errors import ModelError

INLINE_MAX_BYTES = 64 * 1024
ALIGN_BYTES = 4096
PROTOBUF_LIMIT_BYTES = 2**31 - 1
_COPY_BYTES = 8 << 20
_FIX = "keep the external data files in the .onnx file's folder, named by relative paths without '..'"


@dataclass(frozen=True)
class ExternalRef:
    """Where an initializer's bytes are: ``location`` (relative to the model's folder), offset, length."""

    location: str
    offset: int
    length: int


def is_external(t: onnx.TensorProto) -> bool:
    """True when the tensor's data lives in an external data file."""
    return t.data_location == onnx.TensorProto.EXTERNAL


def tensor_nbytes(t: onnx.TensorProto) -> int:
    """The bytes of a numeric tensor's data (from its dims and type)."""
    return math.prod(t.dims) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def ref_of(t: onnx.TensorProto) -> ExternalRef:
    """The tensor's reference (ModelError for a malformed one)."""
    entries = {e.key: e.value for e in t.external_data}
    try:
        offset = int(entries.get("offset", 0))
        length = int(entries["length"]) if "length" in entries else tensor_nbytes(t)
    except ValueError:
        raise ModelError(f"initializer {t.name!r} has a malformed external data offset or length",
                         "export the model again") from None
    return ExternalRef(entries.get("location", ""), offset, length)


def external_initializers(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The main graph's initializers held as external data."""
    return (t for t in proto.graph.initializer if is_external(t))


def uses_external(proto: onnx.ModelProto) -> bool:
    """True when any initializer of the main graph is external data."""
    return any(True for _ in external_initializers(proto))


def external_bytes(proto: onnx.ModelProto) -> int:
    """The bytes of the main graph's external initializers."""
    return sum(ref_of(t).length for t in external_initializers(proto))


def data_path(folder: Path, location: str, label: str, name: str) -> Path:
    """The file a location names, refused (one-line ModelError) when it is absolute or leaves ``folder``."""
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    what = f"cannot read the external data of {label}: initializer {name!r} names {location!r}"
    if not location:
        raise ModelError(f"{what}, an empty location", _FIX)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ModelError(f"{what}, an absolute path", _FIX)
    path = folder / location
    if ".." in posix.parts or ".." in windows.parts or \
            not os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep):
        raise ModelError(f"{what}, which points outside the directory of the model", _FIX)
    return path


def check_external(proto: onnx.ModelProto, folder: Path, label: str) -> None:
    """Every external reference of the main graph is a relative file in ``folder`` holding its bytes."""
    sizes: dict[str, int] = {}
    for t in external_initializers(proto):
        ref = ref_of(t)
        path = data_path(folder, ref.location, label, t.name)
        if ref.location not in sizes:
            try:
                sizes[ref.location] = path.stat().st_size if path.is_file() else -1
            except OSError:
                sizes[ref.location] = -1
        size = sizes[ref.location]
        if size < 0:
            raise ModelError(f"cannot read the external data of {label}: file '{path}' (initializer "
                             f"{t.name!r}) does not exist",
                             "copy the model's .data file(s) next to the .onnx file, named as it names them")
        if ref.offset < 0 or ref.length != tensor_nbytes(t) or ref.offset + ref.length > size:
            at = f"{ref.length} bytes at offset {ref.offset}, file {size} bytes"
            raise ModelError(f"cannot read the external data of {label}: file '{path}' is too short or "
                             f"does not match initializer {t.name!r} ({at})",
                             "copy the .data file again, whole, from where the model came")


def read_array(t: onnx.TensorProto, folder: Path) -> np.ndarray:
    """An external initializer's values, memory-mapped read-only (no copy until used)."""
    ref = ref_of(t)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(t.dims)
    if ref.length == 0:
        return np.zeros(shape, dtype)
    return np.memmap(folder / ref.location, dtype=dtype, mode="r", offset=ref.offset, shape=shape)


def _inline(t: onnx.TensorProto, folder: Path) -> None:
    data = read_array(t, folder).tobytes()
    t.ClearField("external_data")
    t.data_location = onnx.TensorProto.DEFAULT
    t.raw_data = data


def inline_small(proto: onnx.ModelProto, folder: Path, max_bytes: int = INLINE_MAX_BYTES) -> None:
    """Read the external initializers of at most ``max_bytes`` into the model."""
    for t in list(external_initializers(proto)):
        if ref_of(t).length <= max_bytes:
            _inline(t, folder)


def serialize(proto: onnx.ModelProto, folder: Path, label: str) -> bytearray:
    """``proto`` serialized as one standalone blob, each external initializer's bytes read from its file
    straight into place; ModelError when it passes protobuf's 2 GB.

    Building the inlined ModelProto and serializing it holds the weights three times (the file's bytes,
    the proto's copy, the serialization). Protobuf merges a message field that occurs more than once, so
    the blob is the model without its external initializers followed, per initializer, by a ``graph``
    field holding only that initializer: encoded here, into one buffer of the final size.
    """
    external = list(external_initializers(proto))
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(proto)
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(t for t in proto.graph.initializer if not is_external(t))
    pieces: list[tuple[bytes, onnx.TensorProto]] = []
    for t in external:
        bare = onnx.TensorProto()
        bare.CopyFrom(t)
        bare.ClearField("external_data")
        bare.ClearField("data_location")
        length = ref_of(t).length
        tensor = bare.SerializeToString() + _RAW_DATA_TAG + _varint(length)
        initializer = _INITIALIZER_TAG + _varint(len(tensor) + length)
        graph = _GRAPH_TAG + _varint(len(initializer) + len(tensor) + length)
        pieces.append((graph + initializer + tensor, t))
    head = skeleton.SerializeToString()
    total = len(head) + sum(len(p) + ref_of(t).length for p, t in pieces)
    if total > PROTOBUF_LIMIT_BYTES:
        raise ModelError(f"{label} holds {total / 1e9:.2f} GB with its weights, over protobuf's 2 GB "
                         "limit for one blob", "cut it into more, smaller partitions (a larger --blocks N)")
    out = bytearray(total)
    view = memoryview(out)
    view[:len(head)] = head
    at = len(head)
    for prefix, t in pieces:
        view[at:at + len(prefix)] = prefix
        at += len(prefix)
        ref = ref_of(t)
        _read_into(folder / ref.location, ref.offset, view[at:at + ref.length])
        at += ref.length
    return out


# Protobuf tags (field number << 3 | 2, length-delimited): ModelProto.graph = 7,
# GraphProto.initializer = 5, TensorProto.raw_data = 9.
_GRAPH_TAG, _INITIALIZER_TAG, _RAW_DATA_TAG = b"\x3a", b"\x2a", b"\x4a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_into(source: Path, offset: int, target: memoryview) -> None:
    with open(source, "rb") as f:
        f.seek(offset)
        _fill(f, target, source)


def _fill(f: BinaryIO, target: memoryview, source: Path) -> None:
    """``target`` filled from ``f`` where it stands, in pieces of at most _COPY_BYTES."""
    at = 0
    while at < len(target):
        got = f.readinto(target[at:at + _COPY_BYTES])
        if not got:
            raise ModelError(f"external data file '{source}' ended early", "copy the .data file again, whole")
        at += got


def save_with_external(proto: onnx.ModelProto, folder: Path, path: Path) -> Path:
    """Write ``proto`` to ``path`` and its external initializers to ``path`` with suffix ``.data``,
    copied range by range from their files in ``folder``; the tensors refer to the new file."""
    data_file = path.with_suffix(".data")
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    with open(data_file, "wb") as out:
        for t in external_initializers(copy):
            ref = ref_of(t)
            start = -(-out.tell() // ALIGN_BYTES) * ALIGN_BYTES
            out.seek(start)
            _copy_range(folder / ref.location, ref.offset, ref.length, out)
            del t.external_data[:]
            for key, value in (("location", data_file.name), ("offset", str(start)),
                               ("length", str(ref.length))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
    path.write_bytes(copy.SerializeToString())
    return path


def _copy_range(source: Path, offset: int, length: int, out: BinaryIO) -> None:
    buffer = memoryview(bytearray(min(_COPY_BYTES, length)))
    with open(source, "rb") as f:
        f.seek(offset)
        for start in range(0, length, len(buffer) or 1):
            piece = buffer[:min(len(buffer), length - start)]
            _fill(f, piece, source)
            out.write(piece)
