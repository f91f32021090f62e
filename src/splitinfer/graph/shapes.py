"""Input shapes: read the declared ones, fill dynamic dims from the user, check contradictions.

Messages name the API arguments (``input_shapes={'x': (1, 3, <h>, <w>)}``, ``batch=2``): the library
has no flags. :func:`as_flags` rewrites them for the command line (``--input-shape x=1,3,<h>,<w>``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence

import onnx

from splitinfer.errors import ModelError, ShapeError
from splitinfer.types import ONNX_TO_NUMPY, TensorSpec

# A declared dim: a number, a symbol name, or None (unknown).
Dim = int | str | None


def _dtype_name(elem: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem).lower()
    except ValueError:
        return f"ONNX element type {elem}"


def read_spec(tp: onnx.TypeProto, name: str) -> TensorSpec | None:
    """The TensorSpec of a tensor type whose dtype is supported and whose dims are all known."""
    if tp.WhichOneof("value") != "tensor_type":
        return None
    tt = tp.tensor_type
    if tt.elem_type not in ONNX_TO_NUMPY or not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(int(d.dim_value))
    return TensorSpec(name, ONNX_TO_NUMPY[tt.elem_type], tuple(dims))


def _declared_dims(vi: onnx.ValueInfoProto) -> list[Dim] | None:
    """Dims of a graph input; None when even the rank is unknown. 0 and -1 count as dynamic."""
    if vi.type.WhichOneof("value") != "tensor_type":
        raise ModelError(
            f"model input {vi.name!r} is not a tensor (it is a {vi.type.WhichOneof('value')})",
            "splitinfer handles models whose inputs are tensors",
        )
    if vi.type.tensor_type.elem_type not in ONNX_TO_NUMPY:
        elem = vi.type.tensor_type.elem_type
        raise ModelError(
            f"model input {vi.name!r} is a tensor of {_dtype_name(elem)}, which splitinfer cannot feed "
            "(it needs a numpy dtype)",
            "use a model whose inputs are bool, int, uint or float tensors",
        )
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            # '?' is an exporter's "unknown", not a symbol shared between dims.
            dims.append(d.dim_param if d.dim_param not in ("", "?") else None)
    return dims


def _show(dims: Sequence[Dim]) -> str:
    return ",".join(str(d) if isinstance(d, int) else f"<{d or '?'}>" for d in dims)


def _arg(name: str, dims: Sequence[Dim] | None) -> str:
    """``input_shapes={'x': (1, 3, <h>, <w>)}``: one input's shape as the argument is written."""
    items = "D1, D2, ..." if dims is None else _show(dims).replace(",", ", ")
    return f"input_shapes={{{name!r}: ({items}{',' if dims is not None and len(dims) == 1 else ''})}}"


def _fill_in(dims: Sequence[Dim] | None) -> str:
    """What a user must change in ``dims`` shown as an example: only dynamic dims need numbers."""
    return " with numbers for the <...> dims" if dims and not all(isinstance(d, int) for d in dims) else ""


_SHAPE_ARG = re.compile(r"input_shapes=\{('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"): \(([^()]*)\)\}")


# load_model's input arguments as the command line spells them (graph/model.py, graph/feeds.py)
_INPUT_ARGS = (
    (re.compile(r"feeds=\{NAME: ARRAY\}"), "--input NAME=FILE.npy"),
    (re.compile(r"fixed_inputs=\{NAME: VALUE\}"), "--fix-input NAME=VALUE"),
    (re.compile(r"\bfeeds="), "--input"),
    (re.compile(r"\bfixed_inputs="), "--fix-input"),
)


def as_flags(text: str, input_shape: str = "--input-shape", batch: str = "--batch") -> str:
    """``text`` with load_model's arguments spelled as options: ``input_shapes={'x': (1, 3)}`` becomes
    ``--input-shape x=1,3``, ``batch=2`` becomes ``--batch 2``, a bare ``input_shapes=`` / ``batch=``
    the option's name, ``feeds=`` ``--input`` and ``fixed_inputs=`` ``--fix-input``. The command line
    prints the library's messages through this."""
    def shape(m: re.Match[str]) -> str:
        dims = ",".join(d.strip() for d in m[2].split(",") if d.strip())
        return f"{input_shape} {ast.literal_eval(m[1])}={dims}"

    for pattern, option in _INPUT_ARGS:
        text = pattern.sub(option, text)
    text = _SHAPE_ARG.sub(shape, text)
    text = re.sub(r"\binput_shapes=(?!\{)", input_shape, text)
    return re.sub(r"\bbatch=(\w*)", lambda m: f"{batch} {m[1]}" if m[1] else batch, text)


def _bind(symbols: dict[str, int], symbol: str, value: int, where: str) -> None:
    if symbols.setdefault(symbol, value) != value:
        raise ShapeError(
            f"dim {symbol!r} gets {symbols[symbol]} from one input and {value} from {where}",
            "give the same value to every input dim with that name",
        )


def _apply_given(
    name: str, dims: list[Dim] | None, given: Sequence[int], symbols: dict[str, int], empty_ok: bool = False
) -> list[int]:
    given = [int(g) for g in given]
    if any(g < 0 or (g == 0 and not empty_ok) for g in given):
        raise ShapeError(f"{_arg(name, given)} has a dim <= 0", "give positive dims")
    if dims is not None and len(dims) != len(given):
        raise ShapeError(
            f"input {name!r} has {len(dims)} dims [{_show(dims)}] in the model, "
            f"but {_arg(name, given)} gives {len(given)}",
            f"give {len(dims)} dims: {_arg(name, dims)}{_fill_in(dims)}",
        )
    for i, (d, g) in enumerate(zip(dims or [], given, strict=False)):
        if isinstance(d, int) and d != g:
            raise ShapeError(
                f"{_arg(name, given)} contradicts the model, where input {name!r} "
                f"is [{_show(dims or [])}] (dim {i} is fixed to {d})",
                f"keep the fixed dims: {_arg(name, dims or [])}{_fill_in(dims)}" if _fill_in(dims)
                else f"give {_arg(name, dims or [])}, or leave {name!r} out: the model fixes its shape",
            )
        if isinstance(d, str):
            _bind(symbols, d, g, _arg(name, given))
    return given


def _apply_batch(name: str, dims: list[Dim], batch: int | None, symbols: dict[str, int]) -> list[Dim]:
    if batch is None or not dims:
        return dims
    if isinstance(dims[0], int) and dims[0] != batch:
        raise ShapeError(
            f"batch={batch} contradicts the model: input {name!r} has a fixed leading dim {dims[0]}",
            f"drop batch=, or use batch={dims[0]}",
        )
    if isinstance(dims[0], str):
        _bind(symbols, dims[0], batch, f"batch={batch}")
    return [batch, *dims[1:]]


def _missing_error(missing: list[str], dims: list[Dim] | None) -> ShapeError:
    name = missing[0]
    shown = f"[{_show(dims)}]" if dims is not None else "of unknown rank"
    return ShapeError(
        f"model input {name!r} has dynamic dims {shown}"
        + (f" (and {len(missing) - 1} more input(s))" if len(missing) > 1 else ""),
        f"add {_arg(name, dims)}{_fill_in(dims)}"
        + (" (batch=N fixes a leading batch dim)" if dims and not isinstance(dims[0], int) else ""),
    )


def fix_input_shapes(
    graph: onnx.GraphProto, input_shapes: Mapping[str, Sequence[int]], batch: int | None,
    empty_ok: frozenset[str] = frozenset(),
) -> dict[str, tuple[int, ...]]:
    """Make every graph input's shape concrete, in place; return the shapes. The inputs in ``empty_ok``
    may have a dim of 0 (a decoder's past at its first step: an empty cache, graph/state.py).

    Order of sources: ``input_shapes`` by name; then ``batch`` for a dynamic
    leading dim; then dims that share a symbol name with a dim already known.
    """
    inits = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in inits]
    names = [vi.name for vi in inputs]
    for name in input_shapes:
        if name not in names:
            raise ShapeError(
                f"input_shapes= names {name!r}, which is not an input of the model",
                f"the inputs are: {', '.join(names) or '(none)'}",
            )
    if batch is not None and batch <= 0:
        raise ShapeError(f"batch={batch} is not a positive number", "give batch=1 or more")
    symbols: dict[str, int] = {}
    declared = {vi.name: _declared_dims(vi) for vi in inputs}
    resolved: dict[str, list[Dim]] = {}
    for name in names:
        if name in input_shapes:
            resolved[name] = list(_apply_given(name, declared[name], input_shapes[name], symbols,
                                               name in empty_ok))
    for name in names:
        if name not in resolved and declared[name] is not None:
            resolved[name] = _apply_batch(name, list(declared[name] or []), batch, symbols)
    missing = []
    for name in names:
        dims = resolved.get(name)
        if dims is not None:
            dims = [symbols.get(d, d) if isinstance(d, str) else d for d in dims]
            resolved[name] = dims
        if dims is None or not all(isinstance(d, int) for d in dims):
            missing.append(name)
    if missing:
        raise _missing_error(missing, declared[missing[0]])
    for vi in inputs:
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for d in resolved[vi.name]:
            shape.dim.add().dim_value = int(d)  # type: ignore[arg-type]
    return {n: tuple(int(d) for d in resolved[n]) for n in names}  # type: ignore[arg-type]
