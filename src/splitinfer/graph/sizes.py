"""The input sizes one deployment serves: symbolic dims (batch, sequence) kept open in partitions.

A model exported with a symbolic batch or sequence dim is loaded at one concrete size (``load_model``
fixes every input shape: shapes, FLOPs and bytes are then known). Given further sizes
(``load_model(..., sizes=[...])``), the model is loaded at each of them too and every tensor whose
shape differs between the loads is marked on the axes that differ (``Model.symbolic_dims``). Those
axes stay open (a ``dim_param``) in the loaded model and in its partitions, exactly as the axes whose
size depends on the input values (``Model.dynamic_dims``), so that one partition, one stage and one
deployment take any of the sizes. A single size fixes the dims: the partitions are static.

The two kinds stay apart because they are checked apart: a data-dependent size is found by trying
inputs (:mod:`splitinfer.graph.verify`), a symbolic one by generating inputs at each size given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from splitinfer.errors import ShapeError
from splitinfer.types import TensorSpec

Size = Mapping[str, Sequence[int]]  # input name -> dims, as ``input_shapes=``
Dims = Mapping[str, tuple[int, ...]]  # tensor -> open axes
MAX_SIZES = 16  # each size is a load (and a profile): more is a mistake, not a use


def check_sizes(sizes: Sequence[Size] | None) -> list[dict[str, tuple[int, ...]]]:
    """``sizes=`` as plain dicts; ShapeError for something that is not a list of input shapes."""
    if sizes is None:
        return []
    if isinstance(sizes, Mapping) or not isinstance(sizes, Sequence):
        raise ShapeError("sizes= is not a list of input shapes",
                         "give a list of mappings like input_shapes=, e.g. sizes=[{'x': (8, 3, 224, 224)}]")
    if len(sizes) > MAX_SIZES:
        raise ShapeError(f"sizes= gives {len(sizes)} sizes, more than {MAX_SIZES}",
                         "give the few sizes the deployment must serve (the smallest and the largest, say)")
    out = []
    for size in sizes:
        if not isinstance(size, Mapping) or not size:
            raise ShapeError(f"sizes= holds {size!r}, which is not a mapping of input names to dims",
                             "give a list of mappings like input_shapes=")
        out.append({str(name): tuple(int(d) for d in dims) for name, dims in size.items()})
    return out


def find_symbolic_dims(here: Mapping[str, TensorSpec], there: Mapping[str, TensorSpec]
                       ) -> dict[str, tuple[int, ...]]:
    """Tensor -> the axes whose size differs between two loads of one model (every axis when the rank
    differs). Tensors only one load knows are left out."""
    dims: dict[str, tuple[int, ...]] = {}
    for name, spec in here.items():
        other = there.get(name)
        if other is None:
            continue
        if len(other.shape) != len(spec.shape):
            axes = tuple(range(len(spec.shape)))
        else:
            axes = tuple(a for a, (d, e) in enumerate(zip(spec.shape, other.shape, strict=True)) if d != e)
        if axes:
            dims[name] = axes
    return dims


def merge_dims(*many: Dims) -> dict[str, tuple[int, ...]]:
    """The union of open axes, tensor by tensor."""
    merged: dict[str, set[int]] = {}
    for dims in many:
        for name, axes in dims.items():
            merged.setdefault(name, set()).update(axes)
    return {name: tuple(sorted(axes)) for name, axes in merged.items()}


def at_size(inputs: Sequence[TensorSpec], shapes: Size) -> tuple[TensorSpec, ...]:
    """``inputs`` with the shapes ``shapes`` gives (by name; the others as they are)."""
    return tuple(TensorSpec(s.name, s.dtype, tuple(int(d) for d in shapes[s.name])) if s.name in shapes else s
                 for s in inputs)


def describe_size(shapes: Size) -> str:
    """``x=8x3x32x32, mask=8x16``: a size as the tables and messages show it. Inputs whose names differ
    only in their numbers and whose dims are equal are one entry (a decoder's 24 pasts:
    ``past_key_values.*.key=1x12x16x64 (x12)``), in the place of the first."""
    groups: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for name, dims in shapes.items():
        groups.setdefault((re.sub(r"\d+", "*", name), tuple(dims)), []).append(name)
    return ", ".join(f"{pattern if len(names) > 1 else names[0]}={'x'.join(map(str, dims))}"
                     f"{f' (x{len(names)})' if len(names) > 1 else ''}"
                     for (pattern, dims), names in groups.items())
