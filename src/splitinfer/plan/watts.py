"""The watts a device draws computing, per block and per join, for the energy figures
(``Power.busy_w_blocks``: measured per block, e.g. a power meter's trace joined with the profile)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitinfer.errors import PlanError
from splitinfer.units import check_number


def block_watts(busy_w: float, busy_w_blocks: object, where: str, num_blocks: int) -> np.ndarray | float:
    """A device's watts for each of its blocks: ``busy_w_blocks`` checked (one figure >= 0 per block;
    PlanError naming ``where``), or ``busy_w`` for all when None."""
    if busy_w_blocks is None:
        return busy_w
    listed = isinstance(busy_w_blocks, Sequence | np.ndarray) and not isinstance(busy_w_blocks, str | bytes)
    if not listed or len(busy_w_blocks) != num_blocks:  # type: ignore[arg-type]
        raise PlanError(f"{where} is {busy_w_blocks!r}, not one figure per block",
                        f"give {num_blocks} watts, one per block (or None: busy_w for every block)")
    return np.array([float(check_number(w, f"{where}[{b}]", low=0, error=PlanError, fix="watts"))
                     for b, w in enumerate(busy_w_blocks)])  # type: ignore[arg-type]


def join_watts(busy_w: np.ndarray, compute: np.ndarray) -> np.ndarray:
    """(L-1, D) the watts a join (``plan/joins.py``) is charged at, from each block's (``busy_w``, (L, D)):
    the mean of its two blocks' weighted by their seconds (their power as they run apart). A join saves at
    most half of the two blocks' seconds (``joins.join_matrix``), so it saves at most half of their joules:
    no stage costs less than nothing (a plain mean would charge a saving at a fast block's high watts to a
    slow block's time). The plain mean where both take no time or one cannot run (the join is 0 there)."""
    first, second = compute[:-1], compute[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = (busy_w[:-1] * first + busy_w[1:] * second) / (first + second)
    out = np.where(np.isfinite(weighted), weighted, (busy_w[:-1] + busy_w[1:]) / 2)
    out.setflags(write=False)
    return out
