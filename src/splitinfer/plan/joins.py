"""Joins: what running two adjacent blocks in one stage adds to their two separate times.

A block is profiled as a partition of its own; a stage runs its blocks as one partition. The two
differ at every cut inside the stage: one ONNX Runtime run instead of two (the fixed cost of a run:
feeds, fetches, the thread pool's wake-up), no layout conversion of the cut tensor out of and back
into the kernels' blocked layout, and nodes fused across the cut. The profile times each pair of
adjacent blocks as one partition; the join of cut b on a device is ``pair - block b - block b+1``
there (usually negative). The planner's cost model for a stage of blocks ``i..j`` on device ``d``:

    compute(i..j, d) = sum of block b's time on d, b = i..j  +  sum of join(b, d), b = i..j-1

exact for every stage of one or two blocks, and for longer ones as long as what a cut saves does not
depend on the cuts around it. Solvers see it as node weights ``block + join`` and, at a stage's end,
``-join`` of its last cut on the hop that leaves it (``weights.with_joins``), so every algorithm plans
with it unchanged; throughput counts the join given back as the stage's device's time, and
``cost.measure`` adds it up per stage. Pairs are timed only when asked (``ProfileSettings(pairs=True)``,
``splitinfer profile --pairs``): on a shared 2-core machine the joins measured so came out within the
timing noise of the blocks themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from splitinfer.errors import PlanError


def join_matrix(joins: Mapping[str, Sequence[float | None]], names: tuple[str, ...],
                compute: np.ndarray) -> np.ndarray:
    """(L-1, D) joins by device index; None or a device not given: 0. A join is never positive (two
    blocks run together cost at most what they cost apart: a pair measured slower is noise, and
    solvers' bounds rely on it), takes at most half of the two blocks (each block lends half to the
    join on either side, so no stage, however long, costs less than nothing), and is 0 next to a
    block that cannot run."""
    num_cuts = compute.shape[0] - 1
    out = np.zeros((num_cuts, len(names)))
    for name, values in joins.items():
        if name not in names:
            raise PlanError(f"join_s names unknown device {name!r}", f"use one of: {', '.join(names)}")
        if len(values) != num_cuts:
            raise PlanError(f"join_s[{name!r}] has {len(values)} entries for {num_cuts} cuts",
                            "give one join per cut (None: 0)")
        for b, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise PlanError(f"join_s[{name!r}][{b}] is {v!r}", "give finite seconds (negative: saved)")
            out[b, names.index(name)] = v
    with np.errstate(invalid="ignore"):
        floor = -(compute[:-1] + compute[1:]) / 2
    return np.where(np.isfinite(floor), np.clip(out, floor, 0.0), 0.0)
