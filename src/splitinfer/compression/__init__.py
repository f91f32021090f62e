"""Compressed cut tensors: the sending worker compresses each cut tensor of a hop, the receiving
worker restores it (issue 14).

A hop's *compression* (not to be confused with the wire codec, which turns messages into frames):

==========  =========================================  ==========================================
name        what travels                               dtypes
==========  =========================================  ==========================================
``none``    the raw bytes                               every dtype the wire carries
``fp16``    float16 values (half of float32)            float32, float64 (restored to it)
``int8``    one uint8 code per value, affine            float32, float64
            (per tensor, or per channel along an axis)
``lz4``     one LZ4 frame of the raw bytes              every dtype, bit-exact
``zstd``    one Zstandard frame of the raw bytes        every dtype, bit-exact
==========  =========================================  ==========================================

``compress(arr)`` gives a :class:`Compressed`: ``payload`` (bytes for a frame) and ``params`` (plain
values for the message header: the original dtype and shape, and what restoring needs). A receiver
calls :func:`decompress`, which checks everything a peer could get wrong before allocating anything
(the restored size against ``max_bytes``, dtype names against an allow-list, the payload's length or
the frame's declared size) and raises only :class:`~splitinfer.errors.TransportError` with code
``malformed``. Nothing is pickled or evaluated. The lossy ones' error bounds are in
:mod:`splitinfer.compression._lossy`; :func:`wire_bytes` is what a hop costs on the link.

At plan or config time, ``compression.accepts(dtype)`` says whether it can carry a tensor, and
``compression.check(dtype, shape, where)`` raises a :class:`~splitinfer.errors.PlanError` that says
what to use instead (a lossy compression on an integer or bool tensor).

This package sits below the runtime (it imports numpy, lz4, zstandard and splitinfer's errors and
types only), so profiling and the planner can use it too.
"""

from splitinfer.compression._base import DEFAULT_MAX_BYTES, Compressed, Compression, wire_bytes
from splitinfer.compression._lossless import Lz4, NoCompression, Zstd
from splitinfer.compression._lossy import Fp16, Int8
from splitinfer.compression.registry import COMPRESSIONS, decompress, get_compression, parse_compression

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MAX_BYTES",
    "Compressed",
    "Compression",
    "Fp16",
    "Int8",
    "Lz4",
    "NoCompression",
    "Zstd",
    "decompress",
    "get_compression",
    "parse_compression",
    "wire_bytes",
]
