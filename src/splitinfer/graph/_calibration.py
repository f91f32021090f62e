"""What :mod:`splitinfer.graph.quantize` needs around ONNX Runtime's quantisation tools: reading a model
from any source, the interface of a model (its inputs and outputs as they must stay), checking
calibration feeds against the inputs, the ``CalibrationDataReader`` over them, and ONNX Runtime's
quantisation log kept quiet.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from splitinfer.errors import InputError, ModelError, first_line
from splitinfer.types import ONNX_TO_NUMPY

Feeds = Mapping[str, np.ndarray]
# One value of a graph input or output as it must stay: name, element type, dims (an int, or None
# for a dynamic one).
Signature = tuple[tuple[str, int, tuple[int | None, ...] | None], ...]


def read_model(source: onnx.ModelProto | bytes | str | Path) -> onnx.ModelProto:
    """A copy of ``source`` (a ModelProto, serialized bytes, or a path with its external data next to
    it); ModelError when it is not an ONNX model."""
    fix = "give an ONNX model (a path to an .onnx file, its bytes, or an onnx.ModelProto)"
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        return proto
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            return onnx.load_from_string(bytes(source))
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"model file '{path}' does not exist", "check the path")
        return onnx.load(str(path))  # external data is read from the model's folder
    except ModelError:
        raise
    except TypeError:
        raise ModelError(f"cannot read a model from a {type(source).__name__}", fix) from None
    except Exception as e:  # protobuf's DecodeError, OSError, onnx's ValidationError
        raise ModelError(f"cannot read the model: {first_line(e)}", fix) from None


def input_values(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds (not the initializers an old-style model also lists)."""
    initializers = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in initializers]


def _dims(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)


def signature(model: onnx.ModelProto) -> tuple[Signature, Signature]:
    """(inputs, outputs): what a caller of ``model`` sees, which quantising must not change."""
    def values(vis: Iterable[onnx.ValueInfoProto]) -> Signature:
        return tuple((vi.name, vi.type.tensor_type.elem_type, _dims(vi)) for vi in vis)

    return values(input_values(model.graph)), values(model.graph.output)


def _shape_text(dims: tuple[int | None, ...] | None) -> str:
    return "any shape" if dims is None else "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def check_feeds(feeds: list[dict[str, np.ndarray]], model: onnx.ModelProto, argument: str) -> None:
    """InputError unless every calibration feed gives exactly the model's inputs, with their dtypes
    and fixed dims (a dynamic dim takes any size). ``argument`` names where the feeds came from."""
    if not feeds:
        raise InputError(f"{argument} holds no samples", f"give {argument} at least one feed (ideally "
                                                        "a few hundred real samples)")
    inputs, _ = signature(model)
    names = sorted(name for name, _, _ in inputs)
    for i, feed in enumerate(feeds):
        if not isinstance(feed, Mapping) or sorted(feed) != names:
            got = sorted(feed) if isinstance(feed, Mapping) else type(feed).__name__
            raise InputError(f"{argument} feed {i} gives {got}, the model takes inputs {names}",
                             "give one dict per batch, input name -> array, for every model input")
        for name, elem, dims in inputs:
            arr = feed[name]
            want = np.dtype(ONNX_TO_NUMPY[elem]) if elem in ONNX_TO_NUMPY else None
            if not isinstance(arr, np.ndarray) or (want is not None and arr.dtype != want):
                have = arr.dtype.name if isinstance(arr, np.ndarray) else type(arr).__name__
                raise InputError(f"{argument} feed {i}: input {name!r} is {have}, the model takes "
                                 f"{want.name if want is not None else elem}",
                                 f"cast it, e.g. x.astype('{want.name if want is not None else 'float32'}')")
            if dims is not None and (arr.ndim != len(dims) or any(
                    d is not None and d != a for d, a in zip(dims, arr.shape, strict=True))):
                raise InputError(f"{argument} feed {i}: input {name!r} has shape {list(arr.shape)}, the "
                                 f"model takes {_shape_text(dims)}",
                                 "give calibration data shaped as the model's input (the same "
                                 "preprocessing as at inference)")


def feed_reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """ONNX Runtime's ``CalibrationDataReader`` over ``feeds``, one batch per ``get_next``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

        def rewind(self) -> None:
            self._feeds = iter(feeds)

    return _Reader()


class _DropOrtAdvice(logging.Filter):
    """ONNX Runtime's quantisation tools log advice (run pre-processing, ...) on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def quiet_ort_logging() -> Iterator[None]:
    """ONNX Runtime's quantisation warnings dropped while the block runs (splitinfer says what it did)."""
    root, drop = logging.getLogger(), _DropOrtAdvice()
    ort_logger = logging.getLogger("onnxruntime")  # its modules' loggers: pre-processing's own errors
    level = ort_logger.level
    import onnxruntime as ort

    root.addFilter(drop)
    ort_logger.setLevel(logging.CRITICAL + 1)
    # The quantiser's own inference sessions use the default C++ logger: its warnings (unused
    # initialisers it leaves behind) are not the user's to act on.
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.removeFilter(drop)
        ort_logger.setLevel(level)
        ort.set_default_logger_severity(2)
