"""Model inputs: generated (seeded, of the right dtype, in a range the model accepts), read from
files, or given to ``load_model`` (real feeds, fixed values) and checked against the model."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from splitinfer.errors import ShapeError, first_line
from splitinfer.graph.topology import list_subgraphs
from splitinfer.types import ONNX_TO_NUMPY, TensorSpec
from splitinfer.units import check_number

# Ops that carry integer ids through unchanged on their way to an embedding Gather.
_ID_CARRIERS = frozenset({"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"})
DEFAULT_INT_HIGH = 100


def _constant_dims(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    dims[node.output[0]] = tuple(attr.t.dims)
    return dims


def find_index_bounds(graph: onnx.GraphProto, names: Sequence[str]) -> dict[str, int]:
    """For each input that ends up as Gather indices into a constant table: the table size.

    Token ids must stay below the vocabulary size, or the embedding Gather fails.
    """
    consumers: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((i, node))
    dims = _constant_dims(graph)
    bounds: dict[str, int] = {}
    for start in names:
        seen, frontier, found = {start}, [start], []
        while frontier:
            tensor = frontier.pop()
            for slot, node in consumers.get(tensor, []):
                if node.op_type == "Gather" and slot == 1 and node.input[0] in dims:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    table = dims[node.input[0]]
                    if table:
                        found.append(table[axis])
                elif node.op_type in _ID_CARRIERS and slot == 0:
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            frontier.append(out)
        if found:
            bounds[start] = max(1, min(found))
    return bounds


# A comparison with a constant, as (op, constant on the right) -> the value that makes it true.
_MAKE_TRUE = {
    "Equal": lambda c: c, "GreaterOrEqual": lambda c: c, "LessOrEqual": lambda c: c,
    "Greater": lambda c: c + 1, "Less": lambda c: c - 1,
}
_MIRRORED = {"Greater": "Less", "Less": "Greater", "GreaterOrEqual": "LessOrEqual",
             "LessOrEqual": "GreaterOrEqual", "Equal": "Equal"}


def _scalar_constants(graphs: Sequence[onnx.GraphProto]) -> dict[str, float]:
    """Initializers and Constant outputs of one number (in any of ``graphs``): their values."""
    values: dict[str, float] = {}

    def keep(name: str, tensor: onnx.TensorProto) -> None:
        if int(np.prod(tensor.dims, dtype=np.int64)) == 1:
            value = numpy_helper.to_array(tensor).ravel()[0]
            if np.issubdtype(value.dtype, np.number):
                values[name] = value.item()

    for g in graphs:
        for t in g.initializer:
            keep(t.name, t)
        for node in g.node:
            for attr in node.attribute if node.op_type == "Constant" and node.output else ():
                if attr.name == "value":
                    keep(node.output[0], attr.t)
                elif attr.name == "value_int":
                    values[node.output[0]] = attr.i
    return values


def _all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every graph nested in its nodes (If branches, Loop and Scan bodies), outer first."""
    graphs = [graph]
    for g in graphs:
        for node in g.node:
            graphs.extend(list_subgraphs(node))
    return graphs


def find_compared_values(graph: onnx.GraphProto, names: Sequence[str]) -> dict[str, int]:
    """For each input compared (Equal, Less, Greater, ...OrEqual) with a one-element constant, on
    its way through ops that carry ids unchanged: a value that makes the first comparison true.

    A model that checks an input (a sample rate: ``If(Equal(sr, 16000))``) runs its real path on
    generated inputs only when the input holds what the check wants. Nested graphs count too,
    after the main graph.
    """
    graphs = _all_graphs(graph)
    constants = _scalar_constants(graphs)
    consumers: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
    for g in graphs:
        for node in g.node:
            for i, name in enumerate(node.input):
                consumers.setdefault(name, []).append((i, node))
    values: dict[str, int] = {}
    for start in names:
        seen, frontier = {start}, [start]
        while frontier and start not in values:
            tensor = frontier.pop(0)
            for slot, node in consumers.get(tensor, []):
                other = node.input[1 - slot] if node.op_type in _MAKE_TRUE and slot < 2 else None
                if other is not None and other in constants:
                    op = node.op_type if slot == 0 else _MIRRORED[node.op_type]
                    values[start] = int(_MAKE_TRUE[op](int(constants[other])))
                    break
                if node.op_type in _ID_CARRIERS and slot == 0:
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            frontier.append(out)
    return values


def generate_feeds(
    inputs: Sequence[TensorSpec],
    index_bounds: dict[str, int],
    seed: int = 0,
    batch_size: int | None = None,
    values: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1); ints in [0, bound) where ``index_bounds``
    knows the embedding size, else [0, 100); integer inputs named ``*mask*`` all
    ones; bools all True; an integer input in ``values`` (what
    :func:`find_compared_values` found) holds that value everywhere, unless it is
    an index (token ids compared with a padding id stay ids). ``batch_size``
    replaces the leading dim.
    """
    check_number(seed, "seed", low=0, whole=True)
    values = values or {}
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = tuple(spec.shape)
        if batch_size is not None and shape:
            shape = (batch_size, *shape[1:])
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=bool)
        elif "mask" in spec.name.lower():
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        elif spec.name in values and spec.name not in index_bounds and _fits(values[spec.name], dtype):
            feeds[spec.name] = np.full(shape, values[spec.name], dtype=dtype)
        else:
            high = min(index_bounds.get(spec.name, DEFAULT_INT_HIGH), int(np.iinfo(dtype).max))
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
    return feeds


def _fits(value: float, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def read_arrays(source: str | Path, names: Sequence[str], what: str = "input") -> dict[str, np.ndarray]:
    """Arrays for the model inputs ``names`` from a .npy (a single-input model) or an .npz file
    (one array per input, by name). Never unpickles: a pickled object array is refused."""
    path = Path(source)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ShapeError(f"{what} file {path} does not exist", "check the path") from None
    except (OSError, ValueError) as e:
        raise ShapeError(f"cannot read {what} file {path} as .npy or .npz: {first_line(e)}",
                         "save one input with numpy.save, several with numpy.savez(f, **{name: array})"
                         ) from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise ShapeError(f"{what} file {path} holds one array, the model has inputs {list(names)}",
                             "save an .npz with one array per input: numpy.savez(f, **{name: array})")
        return {names[0]: loaded}
    with loaded:
        return {k: loaded[k] for k in loaded.files}


# ---- inputs given: real feeds and fixed values --------------------------------------------------------
# Messages name the API arguments (feeds=, fixed_inputs=); the command line rewrites them as its flags.
def _declared(vi: onnx.ValueInfoProto) -> tuple[str | None, list[int | None] | None]:
    """A graph input's numpy dtype (None if it has none) and dims (None: dynamic; None: unknown rank)."""
    tt = vi.type.tensor_type
    dtype = ONNX_TO_NUMPY.get(tt.elem_type) if vi.type.HasField("tensor_type") else None
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return dtype, None
    return dtype, [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                   for d in tt.shape.dim]


def _graph_inputs(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    inits = {t.name for t in graph.initializer}
    return {vi.name: vi for vi in graph.input if vi.name not in inits}


def _not_an_input(arg: str, name: str, inputs: Sequence[str]) -> ShapeError:
    return ShapeError(f"{arg} names {name!r}, which is not an input of the model",
                      f"the inputs are: {', '.join(inputs) or '(none)'}")


def check_given_inputs(graph: onnx.GraphProto, feeds: Mapping[str, object],
                       fixed: Mapping[str, object]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``feeds`` as arrays and ``fixed`` as arrays of their input's dtype, shaped like the input:
    one ShapeError naming the argument for an unknown name, a name in both, a value that is not a
    number of the input's dtype or does not fit its shape. Shapes are checked later (dynamic dims)."""
    inputs = _graph_inputs(graph)
    arrays: dict[str, np.ndarray] = {}
    for name, value in feeds.items():
        if name not in inputs:
            raise _not_an_input("feeds=", name, list(inputs))
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise ShapeError(f"feeds= gives input {name!r} as {arr.dtype.name} values", "give numbers")
        arrays[name] = arr
    values: dict[str, np.ndarray] = {}
    for name, value in fixed.items():
        if name not in inputs:
            raise _not_an_input("fixed_inputs=", name, list(inputs))
        if name in arrays:
            raise ShapeError(f"input {name!r} is both in feeds= and in fixed_inputs=", "give it once")
        dtype, dims = _declared(inputs[name])
        if dtype is None:
            raise ShapeError(f"input {name!r} is not a tensor of numbers: it cannot be fixed",
                             "leave it out of fixed_inputs=")
        values[name] = _fixed_array(name, value, np.dtype(dtype), dims)
    return arrays, values


def _fixed_array(name: str, value: object, dtype: np.dtype, dims: list[int | None] | None) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "biuf" or arr.size == 0:
        raise ShapeError(f"fixed_inputs= gives input {name!r} the value {value!r}, not numbers",
                         "give a number or a list of numbers")
    cast = arr.astype(dtype)
    if dtype.kind in "iub" and not np.array_equal(cast.astype(np.float64), arr.astype(np.float64)):
        kind = "true/false (0 or 1)" if dtype.kind == "b" else f"whole numbers within {dtype.name}"
        raise ShapeError(f"fixed_inputs= gives input {name!r} {_show(arr)}, which is not {dtype.name}",
                         f"give {kind}")
    if dims is None or _matches(cast.shape, dims):
        return cast
    if all(d is not None for d in dims) and cast.size == int(np.prod(dims, dtype=np.int64)):
        return cast.reshape([int(d) for d in dims])  # type: ignore[arg-type]
    if len(dims) == 1 and cast.ndim <= 1:
        return cast.reshape(-1)
    shown = ",".join("?" if d is None else str(d) for d in dims)
    raise ShapeError(f"fixed_inputs= gives input {name!r} {cast.size} value(s) (shape {list(cast.shape)}), "
                     f"the model takes shape [{shown}]", "give one value per element of the input")


def _matches(shape: tuple[int, ...], dims: list[int | None]) -> bool:
    return len(shape) == len(dims) and all(d is None or d == s for s, d in zip(shape, dims, strict=True))


def _show(arr: np.ndarray) -> str:
    flat = arr.ravel().tolist()
    return ",".join(str(v) for v in flat[:4]) + (",..." if len(flat) > 4 else "")


def shapes_of_given(graph: onnx.GraphProto, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shapes of given arrays for the inputs whose declared dims are dynamic (what fixes them)."""
    inputs = _graph_inputs(graph)
    shapes = {}
    for name, arr in arrays.items():
        dims = _declared(inputs[name])[1]
        if (dims is None or any(d is None for d in dims)) and (dims is None or _matches(arr.shape, dims)):
            shapes[name] = tuple(int(d) for d in arr.shape)
    return shapes


def check_feed_specs(feeds: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec]) -> None:
    """Each given feed of the dtype and shape of its input (``inputs``), else one line naming it."""
    specs = {s.name: s for s in inputs}
    for name, arr in feeds.items():
        spec = specs[name]
        if arr.dtype.name != spec.dtype or tuple(arr.shape) != tuple(spec.shape):
            raise ShapeError(f"feeds= gives input {name!r} as {arr.dtype.name}{list(arr.shape)}, the model "
                             f"takes {spec.dtype}{list(spec.shape)}",
                             f"give an array of that shape and dtype (numpy: .astype('{spec.dtype}'))")


def ort_reason(err: BaseException, limit: int = 240) -> str:
    """Why ONNX Runtime failed, in a line: the innermost message first, then the nodes it ran in
    (``... (in Gather, in If 'if_8k')``), cut at a word past ``limit`` characters."""
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    parts = text.split(" Status Message: ")
    if len(parts) > 1:
        where = [re.search(r"running (\w+) node\. Name:'([^']*)'", p) for p in parts[:-1]]
        chain = [f"in {m[1]} {m[2]!r}" if m[2] else f"in {m[1]}" for m in reversed(where) if m]
        text = f"{parts[-1]} ({', '.join(chain)})" if chain else parts[-1]
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return text


def cannot_run_error(err: BaseException, what: str, given: Mapping[str, np.ndarray],
                     feeds: Mapping[str, np.ndarray]) -> ShapeError:
    """ONNX Runtime failed on ``feeds``: one line naming the generated inputs and how to give them."""
    generated = [n for n in feeds if n not in given]
    if not generated:
        return ShapeError(f"ONNX Runtime cannot run {what} on the inputs given: {ort_reason(err)}",
                          "check the values given, and that ONNX Runtime supports every op of the model")
    return ShapeError(
        f"ONNX Runtime cannot run {what} on generated values of input(s) {', '.join(generated)}: "
        f"{ort_reason(err)}",
        "give real values: feeds={NAME: ARRAY}, or fixed_inputs={NAME: VALUE} for an input that picks "
        "the model's path")


def request_arrays(feeds: Mapping[str, object],
                   fixed: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """A request's feeds as arrays, less the inputs the model was specialised to (``fixed``: name ->
    value, :class:`~splitinfer.graph.specialize.Specialization`): a caller may go on sending them, as
    the original model takes them. ShapeError when one holds another value: the deployment computes
    with the fixed one, so that request would get an answer the original model would not give."""
    arrays = {name: np.asarray(value) for name, value in feeds.items()}
    for name, value in (fixed or {}).items():
        given = arrays.pop(name, None)
        if given is None or (given.size == value.size and np.array_equal(given.ravel(), value.ravel())):
            continue
        raise ShapeError(f"input {name!r} is {given.ravel()[:4].tolist()}, the deployment was "
                         f"specialised to {np.asarray(value).ravel()[:4].tolist()}",
                         f"send {name!r} with that value or leave it out, or profile and plan again with "
                         f"fixed_inputs={{{name!r}: ...}} for the other value")
    return arrays
