"""Additive objectives with revisits allowed: shortest paths over (block, device).

A plan is a path through the layered graph whose layer b holds one state per
device that may run block b; the path cost is upload + compute + cut transfers +
return, O(L * D^2) for the best plan. ``--max-stages`` adds a stage counter to the
state and ``--require`` a mask of the required devices visited so far, both small.
The same code minimises energy: only the weights change (see :mod:`.energy`).
"""

from __future__ import annotations

import numpy as np

from splitinfer.plan.kbest import LayeredGraph, k_best_paths
from splitinfer.plan.weights import Weights


def revisit_graph(
    num_devices: int, weights: Weights, requires: list[int], max_stages: int | None
) -> LayeredGraph:
    """States (device, stages used so far, required devices visited) for paths with revisits."""
    counts = max_stages if max_stages is not None else 1
    counting = max_stages is not None
    num_masks = 1 << len(requires)
    bit = np.zeros(num_devices, dtype=np.int64)
    for j, d in enumerate(requires):
        bit[d] = 1 << j
    dev, cnt, mask = (
        a.ravel()
        for a in np.meshgrid(np.arange(num_devices), np.arange(counts), np.arange(num_masks), indexing="ij")
    )
    num_states = len(dev)

    def index(d: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (d * counts + c) * num_masks + r

    columns = [np.arange(num_states)]  # stay on the device: same state
    for other in range(num_devices):
        prev_c = cnt - 1 if counting else cnt
        ok_c = prev_c >= 0
        b = bit[dev]
        # Entering dev sets its bit; the previous mask had it set already or not.
        for prev_mask, ok_r in ((mask, (mask & b) == b), (mask ^ b, ((mask & b) == b) & (b != 0))):
            ok = ok_c & ok_r & (other != dev)
            col = np.where(
                ok, index(np.full(num_states, other), np.maximum(prev_c, 0), prev_mask), num_states
            )
            columns.append(col)
    in_src = np.stack(columns, axis=1)
    start_w = np.where((cnt == 0) & (mask == bit[dev]), weights.upload_w[dev], np.inf)
    end_w = np.where(mask == num_masks - 1, weights.return_w[dev], np.inf)
    return LayeredGraph(dev, in_src, start_w, end_w)


def solve_revisits(
    weights: Weights, requires: list[int], max_stages: int | None, k: int
) -> list[tuple[float, list[int]]]:
    """k cheapest assignments (revisits allowed) as (cost, device per block)."""
    num_blocks, num_devices = weights.node_w.shape
    if max_stages is not None and max_stages >= num_blocks:
        max_stages = None  # never binding: a plan has at most one stage per block
    graph = revisit_graph(num_devices, weights, requires, max_stages)
    return k_best_paths(graph, weights.node_w, weights.arc_w, k)
