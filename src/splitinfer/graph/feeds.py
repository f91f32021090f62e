"""Generated model inputs: seeded, of the right dtype, in a range the model accepts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from splitinfer.errors import ShapeError, first_line
from splitinfer.types import TensorSpec
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


def generate_feeds(
    inputs: Sequence[TensorSpec],
    index_bounds: dict[str, int],
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1); ints in [0, bound) where ``index_bounds``
    knows the embedding size, else [0, 100); integer inputs named ``*mask*`` all
    ones; bools all True. ``batch_size`` replaces the leading dim.
    """
    check_number(seed, "seed", low=0, whole=True)
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
        else:
            high = min(index_bounds.get(spec.name, DEFAULT_INT_HIGH), int(np.iinfo(dtype).max))
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
    return feeds


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
