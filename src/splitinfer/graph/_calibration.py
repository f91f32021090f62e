"""What :mod:`splitinfer.graph.quantize` needs around ONNX Runtime's quantisation tools: reading a model
from any source, the interface of a model (its inputs and outputs as they must stay, and the outputs
that only hand an input on), checking calibration feeds against the inputs, the
``CalibrationDataReader`` over them, and ONNX Runtime's quantisation log kept quiet.
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


def passthrough_outputs(model: onnx.ModelProto) -> list[str]:
    """The outputs no node produces: a graph input (or an initializer) handed on unchanged, as a block
    partition does with a tensor that a later block needs (the digits classifier's probabilities pass
    through the blocks that compute its label)."""
    produced = {name for node in model.graph.node for name in node.output}
    return [vi.name for vi in model.graph.output if vi.name not in produced]


def without_passthrough(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without its pass-through outputs, which the quantisers mishandle: the fp16
    converter's output Cast redefines the input's name ("Duplicate definition of name"), static QDQ
    quantises the tensor both as an input and as an output and wires the two into a cycle ("Graph is
    not a DAG"). :func:`restore_interface` puts them back afterwards, in float32 as they came in.
    An initializer that is also an output is renamed for the nodes that read it, so the original can
    be put back as it was whatever the quantiser does to the copy the nodes read."""
    core = onnx.ModelProto()
    core.CopyFrom(model)
    passed = set(passthrough_outputs(model))
    if not passed:
        return core
    kept = [vi for vi in core.graph.output if vi.name not in passed]
    del core.graph.output[:]
    core.graph.output.extend(kept)
    taken = {n for node in core.graph.node for n in (*node.input, *node.output)} | {
        t.name for t in core.graph.initializer} | {vi.name for vi in core.graph.input}
    for tensor in core.graph.initializer:
        if tensor.name in passed:
            old, tensor.name = tensor.name, _fresh(f"{tensor.name}_read", taken)
            for node in core.graph.node:
                node.input[:] = [tensor.name if n == old else n for n in node.input]
            for vi in core.graph.input:  # an old-style model lists its initializers as inputs too
                if vi.name == old:
                    vi.name = tensor.name
    return core


def _copy(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    return out


def _fresh(name: str, taken: set[str]) -> str:
    out, k = name, 0
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    taken.add(out)
    return out


def restore_interface(original: onnx.ModelProto, out: onnx.ModelProto) -> None:
    """``out`` (quantised from ``without_passthrough(original)``) given back ``original``'s inputs and
    outputs in their order: the pass-through outputs, and any input the quantiser's clean-up dropped
    because, without those outputs, nothing reads it any more."""
    # Copies: a message taken out of a repeated field is not to be relied on after the field is cleared.
    inputs = {vi.name: _copy(vi) for vi in out.graph.input}
    outputs = {vi.name: _copy(vi) for vi in out.graph.output}
    passed, initializers = set(passthrough_outputs(original)), {t.name for t in out.graph.initializer}
    out.graph.initializer.extend(t for t in original.graph.initializer
                                 if t.name in passed and t.name not in initializers)
    restored_inputs = [inputs.pop(vi.name, vi) for vi in input_values(original.graph)]
    restored_outputs = [outputs.get(vi.name, vi) for vi in original.graph.output]
    rest = list(inputs.values())  # old-style initializer inputs, after the real ones as before
    del out.graph.input[:], out.graph.output[:]
    out.graph.input.extend([*restored_inputs, *rest])
    out.graph.output.extend(restored_outputs)


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
