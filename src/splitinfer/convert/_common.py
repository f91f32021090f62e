"""What every converter shares: the inputs a framework model declares and the shapes it is converted at,
the names of the converted graph's values, and a quiet conversion (the frameworks print and warn)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from splitinfer.errors import ModelError, ShapeError

# The converters' own loggers, quieted while they run (their progress is not the user's business).
_LOGGERS = ("tf2onnx", "absl", "tensorflow", "keras", "torch", "torch.onnx", "torch.export", "onnxscript",
            "onnx_ir", "h5py")


@dataclass(frozen=True)
class Declared:
    """An input as the framework model declares it: ``shape`` None when it says nothing (a PyTorch
    module), a dim None where it varies."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str = "float32"


@dataclass
class Exported:
    """A converter's result: the ONNX graph, the shapes it was converted at, and the framework's own
    outputs on given inputs (``reference``: name -> array in the order of the ONNX outputs)."""

    proto: onnx.ModelProto
    converter: str
    input_shapes: dict[str, tuple[int, ...]]
    run: object  # Callable[[dict[str, np.ndarray]], list[np.ndarray]]: the framework on named inputs
    notes: list[str] = field(default_factory=list)


def shapes_for(declared: Sequence[Declared], input_shapes: Mapping[str, Sequence[int]] | None,
               batch: int | None, what: str,
               defaults: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """The shapes to convert at: ``input_shapes`` where given, else ``defaults`` (an exported program's
    example inputs), else the declared shape with a varying leading (batch) dim set to ``batch`` (1 when
    not given). ShapeError for a name the model does not take, a rank or fixed dim that contradicts it,
    and a shape still unknown."""
    given = {name: tuple(int(d) for d in dims) for name, dims in (input_shapes or {}).items()}
    names = [d.name for d in declared]
    for name in given:
        if name not in names:
            raise ShapeError(f"input_shapes= names {name!r}, which is not an input of {what}",
                             f"the inputs are: {', '.join(names) or '(none)'}")
    if batch is not None and batch <= 0:
        raise ShapeError(f"batch={batch} is not a positive number", "give batch=1 or more")
    shapes: dict[str, tuple[int, ...]] = {}
    for d in declared:
        if d.name in given:
            shapes[d.name] = _check_given(d, given[d.name], what)
            continue
        if defaults and d.name in defaults:
            dims = list(defaults[d.name])
            if batch is not None and dims and d.shape and d.shape[0] is None:
                dims[0] = batch
            shapes[d.name] = tuple(int(v) for v in dims)
            continue
        if d.shape is None:
            raise ShapeError(f"{what} does not say the shape of its input {d.name!r}",
                             f"give it, e.g. input_shapes={{{d.name!r}: (1, 3, 224, 224)}}")
        dims = [(batch or 1) if (k == 0 and v is None) else v for k, v in enumerate(d.shape)]
        if any(v is None for v in dims):
            shown = ",".join("?" if v is None else str(v) for v in dims)
            raise ShapeError(f"input {d.name!r} of {what} has dims that vary ({shown})",
                             f"give its shape, e.g. input_shapes={{{d.name!r}: ({_example(dims)})}}")
        shapes[d.name] = tuple(int(v) for v in dims)  # type: ignore[arg-type]
    return shapes


def _example(dims: Sequence[int | None]) -> str:
    return ", ".join(str(v) if v is not None else "8" for v in dims)


def _check_given(d: Declared, dims: tuple[int, ...], what: str) -> tuple[int, ...]:
    if any(v <= 0 for v in dims):
        raise ShapeError(f"input_shapes= gives {d.name!r} a dim <= 0", "give positive dims")
    if d.shape is None:
        return dims
    shown = ",".join("?" if v is None else str(v) for v in d.shape)
    if len(d.shape) != len(dims) or any(v is not None and v != g for v, g in zip(d.shape, dims, strict=True)):
        raise ShapeError(f"input_shapes= gives {d.name!r} the shape {','.join(map(str, dims))}, but {what} "
                         f"declares ({shown})", "give a shape that fits it (? = any size)")
    return dims


def example_inputs(declared: Sequence[Declared], shapes: Mapping[str, tuple[int, ...]],
                   seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs to trace or export with (floats ~ N(0, 1), integers in [0, 10), bools True)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for d in declared:
        dtype = np.dtype(d.dtype)
        if dtype.kind == "f":
            arrays[d.name] = rng.standard_normal(shapes[d.name]).astype(dtype)
        elif dtype.kind == "b":
            arrays[d.name] = np.ones(shapes[d.name], dtype=bool)
        else:
            arrays[d.name] = rng.integers(0, 10, shapes[d.name]).astype(dtype)
    return arrays


def rename_values(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    """Rename values of ``graph`` (and of the subgraphs that read them), in place."""
    names = {old: new for old, new in names.items() if old != new}
    if not names:
        return
    taken = {n for node in graph.node for n in node.output} | {v.name for v in graph.input}
    clash = [new for new in names.values() if new in taken and new not in names]
    if clash:
        raise ModelError(f"the converted graph has a value named {clash[0]!r} already",
                         "rename the model's inputs or outputs")
    _rename_in(graph, names)


def _rename_in(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = names.get(value.name, value.name)
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _rename_in(sub, names)


_COUNTED = re.compile(r"^(.*?)__\d+(:\d+)?$")


def canonical_names(graph: onnx.GraphProto) -> None:
    """Names a converter numbered with a counter of its process (``conv__57:0``, tf2onnx's) numbered
    again in graph order (``conv:0``, then ``conv__1:0`` where taken): the same model converted twice
    gives the same bytes."""
    # in order of first use by the nodes (a converter may list initializers in any order)
    values = list(dict.fromkeys([n for node in graph.node for n in (*node.input, *node.output) if n]
                                + sorted(t.name for t in graph.initializer)))
    taken = {n for n in values if not _COUNTED.match(n)} | {v.name for v in graph.input}
    taken |= {v.name for v in graph.output}
    renames: dict[str, str] = {}
    for name in values:
        m = _COUNTED.match(name)
        if m is None or name in renames or name in {v.name for v in graph.output}:
            continue
        renames[name] = _free(m[1], m[2] or "", taken)
    rename_values(graph, renames)
    graph.initializer.sort(key=lambda t: t.name)
    node_names = {n.name for n in graph.node if not _COUNTED.match(n.name)}
    for node in graph.node:
        m = _COUNTED.match(node.name)
        if m is not None:
            node.name = _free(m[1], "", node_names)
    symbols: dict[str, str] = {}  # dims named by the counter (unk__44), named in order of appearance
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            m = _COUNTED.match(dim.dim_param) if dim.HasField("dim_param") else None
            if m is not None:
                dim.dim_param = symbols.setdefault(dim.dim_param, f"{m[1]}_{len(symbols)}")


def _free(base: str, port: str, taken: set[str]) -> str:
    name, k = f"{base}{port}", 0
    while name in taken:
        k += 1
        name = f"{base}__{k}{port}"
    taken.add(name)
    return name


def output_names(count: int, keys: Sequence[str] | None = None) -> list[str]:
    """Names for a converted model's outputs: a dict's keys, else ``output`` or ``output_0``, ..."""
    if keys is not None and len(keys) == count and len(set(keys)) == count:
        return [str(k) for k in keys]
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """The frameworks' prints (Python's and their C++ libraries'), warnings and log records kept from
    the user while a conversion runs; the StringIO holds what Python code printed. TensorFlow's C++
    logging is quieted before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    buffer = io.StringIO()
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    try:
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), \
                contextlib.redirect_stderr(buffer), _native_output_dropped():
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _native_output_dropped() -> Iterator[None]:
    """File descriptors 1 and 2 to /dev/null (C++ code writes there past Python's sys.stdout)."""
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors (an embedded interpreter): nothing to quiet
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def missing_framework(package: str, extra: str, what: str) -> ModelError:
    """The error for a framework that is not installed."""
    return ModelError(f"{what} needs {package}, which is not installed",
                      f"pip install 'splitinfer[{extra}]' (or convert it to ONNX where {package} is)")
