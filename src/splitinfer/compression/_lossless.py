"""The lossless compressions: ``none`` (the raw bytes), ``lz4`` and ``zstd`` (the bytes in one frame).

Every dtype travels bit-exact. A frame declares its content size, which must be the params' tensor
size; decompression then stops at that many bytes, so a small frame cannot make the receiver
allocate more than the params (bounded by ``max_bytes``) say.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import lz4.frame
import numpy as np
import zstandard

from splitinfer.compression._base import (
    ALL_DTYPES,
    DEFAULT_MAX_BYTES,
    Compressed,
    Compression,
    as_bytes,
    base_params,
    check_header,
    check_length,
    fault,
    restore_view,
)

_KEYS = frozenset({"dtype", "shape"})
LZ4_LEVELS = (0, 16)  # lz4.frame: 0-2 the fast compressor, 3-16 high compression (slower)
ZSTD_LEVELS = (-7, 22)  # negative: faster than level 1, and less compression


class _Lossless(Compression):
    lossy = False
    dtypes = ALL_DTYPES

    def _raw(self, arr: np.ndarray) -> tuple[dict[str, Any], memoryview]:
        """The params and the C-order little-endian bytes of ``arr`` (a copy only when it is strided or
        big-endian)."""
        name, dtype = self._dtype_of(arr)
        params = base_params(name, arr)
        return params, as_bytes(np.ascontiguousarray(arr, dtype=dtype))


@dataclass(frozen=True)
class NoCompression(_Lossless):
    """The tensor's bytes as they are: the payload is a view of the array (no copy when it is
    C-contiguous and little-endian), the restored tensor a read-only view of the payload."""

    name = "none"

    def compress(self, arr: np.ndarray) -> Compressed:
        params, raw = self._raw(arr)
        return Compressed(self.name, raw, params)

    def decompress(self, c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        dtype, shape, num_bytes, payload = check_header(c, self.name, _KEYS, self.dtypes, max_bytes)
        check_length(self.name, payload, num_bytes)
        return restore_view(self.name, payload, dtype, shape)


@dataclass(frozen=True)
class Lz4(_Lossless):
    """One LZ4 frame (content size stored, no checksum: the wire's MAC or CURVE guards the bytes).
    Fast on both ends; it gains on tensors with runs and zeros (ReLU outputs), little on dense floats."""

    level: int = 0
    name = "lz4"

    @property
    def spec(self) -> str:
        return self.name if self.level == 0 else f"{self.name}:level={self.level}"

    def compress(self, arr: np.ndarray) -> Compressed:
        params, raw = self._raw(arr)
        frame = lz4.frame.compress(raw, compression_level=self.level, store_size=True)
        return Compressed(self.name, frame, params)

    def decompress(self, c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        dtype, shape, num_bytes, payload = check_header(c, self.name, _KEYS, self.dtypes, max_bytes)
        # lz4 raises RuntimeError, ValueError or others on bad frames: any exception is a bad payload.
        try:
            declared = lz4.frame.get_frame_info(payload)["content_size"]
        except Exception as e:
            raise fault(f"lz4 payload is not an LZ4 frame ({e})") from None
        if declared != num_bytes:  # 0 also when the frame leaves its size out: then it must be empty
            raise fault(f"lz4 frame declares {declared} bytes, its params say {num_bytes}")
        decompressor = lz4.frame.LZ4FrameDecompressor()
        try:
            data = decompressor.decompress(payload, max_length=num_bytes)
        except Exception as e:
            raise fault(f"lz4 frame cannot be decompressed ({e})") from None
        if len(data) != num_bytes or not decompressor.eof or decompressor.unused_data:
            raise fault(f"lz4 frame holds other than {num_bytes} bytes in one frame (got {len(data)}, "
                        f"ended: {decompressor.eof}, trailing bytes: {bool(decompressor.unused_data)})")
        return restore_view(self.name, data, dtype, shape)


_EMPTY_LAST_BLOCK = b"\x01\x00\x00"  # block header: last block, raw, 0 bytes
# A zstd context costs ~15 us to make and may serve one thread at a time: one per thread and level.
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


@dataclass(frozen=True)
class Zstd(_Lossless):
    """One Zstandard frame (content size stored). Slower than lz4 and smaller; level 1-3 keeps pace
    with links under a few Gbit/s."""

    level: int = 1
    name = "zstd"

    @property
    def spec(self) -> str:
        return self.name if self.level == 1 else f"{self.name}:level={self.level}"

    def compress(self, arr: np.ndarray) -> Compressed:
        params, raw = self._raw(arr)
        return Compressed(self.name, _compressor(self.level).compress(raw), params)

    def decompress(self, c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
        dtype, shape, num_bytes, payload = check_header(c, self.name, _KEYS, self.dtypes, max_bytes)
        # zstandard allocates a frame's declared content size whatever max_output_size says: the
        # declared size is checked first, against the params' bounded one.
        try:
            declared = zstandard.frame_content_size(payload)
            header_bytes = zstandard.frame_header_size(payload)
        except Exception as e:
            raise fault(f"zstd payload is not a Zstandard frame ({e})") from None
        if declared != num_bytes:  # -1: the frame does not say
            raise fault(f"zstd frame declares {declared} bytes, its params say {num_bytes}")
        # zstandard (0.25) returns b"" for a frame declaring 0 bytes without reading on, whatever
        # follows: an empty tensor's frame must be its header and one empty last block, nothing more.
        if not num_bytes and payload[header_bytes:] != _EMPTY_LAST_BLOCK:
            raise fault("zstd frame of an empty tensor holds more than one empty block")
        try:
            data = _decompressor().decompress(payload, max_output_size=num_bytes, read_across_frames=False,
                                              allow_extra_data=False)
        except Exception as e:
            raise fault(f"zstd frame cannot be decompressed ({e})") from None
        if len(data) != num_bytes:
            raise fault(f"zstd frame holds {len(data)} bytes, its params say {num_bytes}")
        return restore_view(self.name, data, dtype, shape)
