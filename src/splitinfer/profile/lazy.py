"""What profiling holds of a large model: block partitions read in when timed, calibration tensors on disk.

A model whose weights stay on disk (``Model.external_dir``, models over 2 GB) is profiled without ever
holding its weights at once: :class:`PartitionBytes` gives a block's standalone bytes when asked, read
from the weight files each time (``Partition.blob``), and ``profile/device.py`` times them in sets
of bounded size, so the profiler holds one set's weights at a time. The tensors each block gets from the
calibration input are kept in memory up to a budget and past it written to a temporary folder and
memory-mapped back (:class:`TensorSpill`): a CNN at a large batch hands on gigabytes between blocks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from splitinfer.graph import Partition
from splitinfer.graph.external import external_bytes

CALIBRATION_MEMORY_BYTES = 1 << 30  # calibration tensors between blocks held in memory; the rest on disk


class PartitionBytes(Sequence[bytes]):
    """Each block's partition as standalone ONNX bytes; those whose weights stay on disk read in per
    access (never cached), the others serialized once."""

    def __init__(self, parts: Sequence[Partition]) -> None:
        self._parts = list(parts)
        self._held = [None if p.is_external else p.to_bytes() for p in self._parts]

    def __len__(self) -> int:
        return len(self._parts)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        held = self._held[index]
        if held is not None:
            return held
        # The blob as it is (a bytearray): bytes() of it would be a second copy, and whatever takes
        # partition bytes (a socket, a hash, ONNX Runtime) takes a bytearray alike.
        return self._parts[index].blob()  # type: ignore[return-value]

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def nbytes(self, index: int) -> int:
        """The bytes of block ``index``'s partition, without reading its weights in."""
        held = self._held[index]
        if held is not None:
            return len(held)
        proto = self._parts[index].proto
        return proto.ByteSize() + external_bytes(proto)


class TensorSpill:
    """Arrays kept in memory up to ``budget_bytes`` in all, then saved in a temporary folder (removed when
    this is collected or closed) and memory-mapped read-only."""

    def __init__(self, budget_bytes: int = CALIBRATION_MEMORY_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.held_bytes = 0
        self.spilled_bytes = 0
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._count = 0

    def keep(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``arrays`` as this keeps them: the same arrays, or (past the budget) memory-mapped copies."""
        out = {}
        for name, array in arrays.items():
            array = np.asarray(array)
            if self.held_bytes + array.nbytes <= self.budget_bytes or array.dtype.hasobject:
                self.held_bytes += array.nbytes
                out[name] = array
                continue
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="splitinfer-calibration-")
            path = Path(self._folder.name) / f"{self._count}.npy"
            self._count += 1
            np.save(path, array)
            self.spilled_bytes += array.nbytes
            out[name] = np.load(path, mmap_mode="r")
        return out

    def close(self) -> None:
        """Remove the folder (the memory-mapped arrays must be gone first)."""
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
