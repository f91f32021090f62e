"""Weights written to an external data file as the builder draws them.

A model over protobuf's 2 GB limit cannot be one ``ModelProto``, and even under it a proto
holding every weight, then serialised, is the model twice in memory. A :class:`WeightFile`
takes each large weight as it is drawn, appends it to one ``.data`` file and leaves in the
model an external reference (``location``, ``offset``, ``length``) in its place, so that
building holds one weight array at a time. The file is what ``splitinfer.graph.external``
reads: the location is the file's name (relative, beside the ``.onnx``), each offset a
multiple of 4096 bytes (ONNX Runtime then maps the tensor instead of copying it), values
little-endian. Weights of at most 64 KiB stay inline: shape inference reads the small ones
(shapes, axes) from the model itself.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from splitinfer.errors import ModelError

INLINE_MAX_BYTES = 64 * 1024
ALIGN_BYTES = 4096


def is_external(tensor: onnx.TensorProto) -> bool:
    """True when the tensor's values live in an external data file."""
    return external_data_helper.uses_external_data(tensor)


class WeightFile:
    """One external data file, written front to back while a model is built; a context manager
    that closes it (:meth:`close` before anything, ONNX Runtime included, reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.folder = self.path.parent
        try:
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        except OSError as e:
            raise _write_error(self.path, e) from None

    def __enter__(self) -> WeightFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def takes(self, array: np.ndarray) -> bool:
        """Whether ``array`` goes to the file rather than inline."""
        return array.nbytes > INLINE_MAX_BYTES

    def append(self, tensor: onnx.TensorProto, name: str, array: np.ndarray) -> None:
        """Write ``array`` at the next aligned offset and make ``tensor`` the initializer ``name``
        referring to it."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed: weights are appended only while building")
        values = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        try:
            end = self._file.tell()
            offset = -(-end // ALIGN_BYTES) * ALIGN_BYTES
            self._file.write(bytes(offset - end))
            # From the array's own buffer: tobytes() would be a second copy of a weight of 256 MiB.
            self._file.write(memoryview(values).cast("B"))
        except OSError as e:
            raise _write_error(self.path, e) from None
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(values.dtype)
        tensor.dims.extend(values.shape)
        _refer(tensor, self.path.name, offset, values.nbytes)

    def close(self) -> None:
        """Flush and close the file (again: no-op)."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as e:
                raise _write_error(self.path, e) from None

    def read(self, tensor: onnx.TensorProto) -> np.ndarray:
        """A tensor's values, from the file when it is external."""
        return numpy_helper.to_array(tensor, base_dir=str(self.folder))

    def overwrite(self, tensor: onnx.TensorProto, array: np.ndarray) -> None:
        """Replace an external tensor's values in place (same place, same length), after
        :meth:`close`: calibration rescales weights it has measured."""
        entries = {e.key: e.value for e in tensor.external_data}
        offset, length = int(entries["offset"]), int(entries["length"])
        values = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        if values.nbytes != length:
            raise ValueError(f"{tensor.name}: {values.nbytes} bytes cannot replace {length}")
        try:
            with open(self.path, "r+b") as file:
                file.seek(offset)
                file.write(memoryview(values).cast("B"))
        except OSError as e:
            raise _write_error(self.path, e) from None


def _refer(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    # set_external_data insists on a raw_data field, which is then the caller's to clear: an empty
    # one stands in for the bytes that went to the file.
    tensor.raw_data = b""
    external_data_helper.set_external_data(tensor, location, offset=offset, length=length)
    tensor.ClearField("raw_data")


def _write_error(path: Path, error: OSError) -> ModelError:
    return ModelError(f"cannot write {path}: {error.strerror or error}",
                      "choose a writable path with room for the model's weights")
