"""No revisits: dynamic programming over the set of devices used so far.

With every device hosting at most one stage, a plan is a path whose state is
(current device, set of used devices). The number of stages is the size of the
set, so ``--max-stages`` and ``--require`` are checks on the final set.

Two forms:

- :func:`solve_blocks`: block by block, O(L * D^2 * 2^D), for additive objectives
  without per-stage limits;
- :func:`solve_segments`: stage by stage (a stage is a segment of blocks), for
  per-stage limits (memory capacity, the compute time a throughput bound allows)
  and for the min-max throughput objective, O(L^2 * D * 2^D).

Both keep the k best values per state, so top-k is exact. Practical up to about
12 usable devices; the MILP takes over beyond.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from splitinfer.plan.cost import BOUND_TOLERANCE
from splitinfer.plan.kbest import LayeredGraph, k_best_paths, k_smallest, merge_sorted
from splitinfer.plan.weights import Weights

MAX_SUBSET_DEVICES = 12


@dataclass(frozen=True)
class SubsetStates:
    """States (device, used set) over the usable devices ``usable``; masks index into it."""

    usable: np.ndarray  # (n,) device indices
    state_dev: np.ndarray  # (S,) device index of each state
    state_mask: np.ndarray  # (S,) used-set mask over positions in ``usable``
    switch_src: np.ndarray  # (S, n) states a new stage on this device can follow (padded with S)


def subset_states(usable: np.ndarray, max_stages: int | None) -> SubsetStates:
    """Every (device, set containing it) with at most ``max_stages`` devices."""
    n = len(usable)
    masks = np.arange(1 << n, dtype=np.int64)
    sizes = np.array([bin(m).count("1") for m in range(1 << n)])
    limit = n if max_stages is None else min(max_stages, n)
    index = np.full((n, 1 << n), -1, dtype=np.int64)
    pos_list, mask_list = [], []
    count = 0
    for j in range(n):
        sel = masks[((masks >> j) & 1 == 1) & (sizes <= limit)]
        index[j, sel] = np.arange(count, count + len(sel))
        count += len(sel)
        pos_list.append(np.full(len(sel), j))
        mask_list.append(sel)
    pos = np.concatenate(pos_list)
    mask = np.concatenate(mask_list)
    num_states = len(pos)
    prev = mask ^ (1 << pos)
    switch_src = index[:, prev].T.copy()  # (S, n): state (j, prev) for every j in prev
    switch_src[switch_src < 0] = num_states
    return SubsetStates(usable, usable[pos], mask, switch_src)


def _required_mask(states: SubsetStates, requires: list[int]) -> int:
    where = {int(d): j for j, d in enumerate(states.usable)}
    return sum(1 << where[d] for d in requires)


def solve_blocks(
    weights: Weights, usable: np.ndarray, requires: list[int], max_stages: int | None, k: int
) -> list[tuple[float, list[int]]]:
    """k cheapest assignments without revisits for an additive objective."""
    if any(int(d) not in set(usable.tolist()) for d in requires):
        return []
    states = subset_states(usable, max_stages)
    num_states = len(states.state_dev)
    in_src = states.switch_src.copy()
    own = np.searchsorted(usable, states.state_dev)
    in_src[np.arange(num_states), own] = np.arange(num_states)  # staying keeps the state
    single = states.state_mask == (1 << own)
    start_w = np.where(single, weights.upload_w[states.state_dev], np.inf)
    need = _required_mask(states, requires)
    end_w = np.where(states.state_mask & need == need, weights.return_w[states.state_dev], np.inf)
    graph = LayeredGraph(states.state_dev, in_src, start_w, end_w)
    return k_best_paths(graph, weights.node_w, weights.arc_w, k)


@dataclass(frozen=True)
class StageLimit:
    """A per-stage limit: ``need(j)[i, d]``, what a stage of blocks i..j-1 on device d needs, is at
    most ``cap[d]``. ``need(j)`` answers for every start i < j at once: (j, D), or (j, 1) when it does
    not depend on the device (a memory need: plan/memory.py)."""

    need: Callable[[int], np.ndarray]
    cap: np.ndarray  # (D,)


def sum_limit(per_block: np.ndarray, cap: np.ndarray, end: np.ndarray | None = None) -> StageLimit:
    """The limit on a stage's sum of ``per_block[b, d]`` (L, D), plus ``end[b, d]`` (L-1, D) when it
    ends after block b (Weights.end_w), by prefix sums."""
    prefix = np.vstack([np.zeros((1, per_block.shape[1])), np.cumsum(per_block, 0)])
    return StageLimit(lambda j: prefix[j] - prefix[:j] + _end_row(end, j), cap)


def _end_row(end: np.ndarray | None, j: int) -> np.ndarray | float:
    """What a stage ending before block j (after block j - 1) adds, per device."""
    return 0.0 if end is None or j > len(end) else end[j - 1]


def _segment_tables(weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(weights.node_w)
    prefix = np.vstack([np.zeros((1, finite.shape[1])), np.cumsum(np.where(finite, weights.node_w, 0), 0)])
    bad = np.vstack([np.zeros((1, finite.shape[1]), dtype=np.int64), np.cumsum(~finite, 0)])
    return prefix, bad


def _combine(mode: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b if mode == "sum" else np.maximum(a, b)


def solve_segments(
    weights: Weights,
    usable: np.ndarray,
    requires: list[int],
    max_stages: int | None,
    k: int,
    *,
    mode: str = "sum",
    limits: list[StageLimit] | None = None,
) -> list[tuple[float, list[int]]]:
    """k best assignments without revisits, stage by stage.

    ``mode="sum"``: minimise the sum of all weights; ``mode="max"``: minimise the
    largest stage sum or transfer (the pipeline bottleneck). ``limits`` bound every
    stage's need (memory, compute time).
    """
    if any(int(d) not in set(usable.tolist()) for d in requires):
        return []
    num_blocks = weights.node_w.shape[0]
    states = subset_states(usable, max_stages)
    dev = states.state_dev
    num_states = len(dev)
    prefix, bad = _segment_tables(weights)
    arcs = weights.links() if mode == "max" else weights.arc_w
    src_dev = np.append(dev, 0)[states.switch_src]
    starts = np.full((num_blocks, num_states, k), np.inf)  # a stage on dev(s) begins at block i
    single = states.state_mask == (1 << np.searchsorted(usable, dev))
    starts[0, single, 0] = weights.upload_w[dev][single]
    start_back: list[np.ndarray | None] = [None] * num_blocks
    end_back: list[tuple[int, np.ndarray]] = [(0, np.empty(0))] * (num_blocks + 1)
    ends = np.empty(0)
    for j in range(1, num_blocks + 1):
        ok = (bad[j] - bad[:j]) == 0  # (j, D): blocks i..j-1 all allowed on d
        for limit in limits or []:
            ok &= limit.need(j) <= limit.cap + BOUND_TOLERANCE * np.maximum(1.0, limit.cap)  # as cost.py does
        rows = np.flatnonzero(ok.any(axis=1))
        lo = int(rows[0]) if len(rows) else j - 1
        seg = np.where(ok[lo:], prefix[j] - prefix[lo:j], np.inf)  # (j-lo, D)
        if mode == "max":  # a stage's own time holds the join its end gives back; the hop does not
            seg = seg + _end_row(weights.end_w, j)
        # Combining a sorted k-list with one stage cost keeps it sorted (sum and max are monotone).
        ends, idx = merge_sorted(starts[lo:j].transpose(1, 0, 2), seg[:, dev].T, k, mode)
        end_back[j] = (lo, idx)
        if j < num_blocks:
            cost = arcs[j - 1][src_dev, dev[:, None]]
            ext = np.vstack([ends, np.full((1, k), np.inf)])
            starts[j], start_back[j] = merge_sorted(ext[states.switch_src], cost, k, mode)
    need = _required_mask(states, requires)
    end_w = np.where(states.state_mask & need == need, weights.return_w[dev], np.inf)
    final, idx = k_smallest(_combine(mode, ends, end_w[:, None]).reshape(1, -1), k)
    out = []
    for value, flat in zip(final[0].tolist(), idx[0].tolist(), strict=True):
        if not np.isfinite(value):
            break
        out.append((value, _walk_back(states, end_back, start_back, k, num_blocks, *divmod(flat, k))))
    return out


def _walk_back(
    states: SubsetStates, end_back: list, start_back: list, k: int, num_blocks: int, state: int, rank: int
) -> list[int]:
    assignment = [0] * num_blocks
    j = num_blocks
    while j > 0:
        lo, idx = end_back[j]
        offset, rank = divmod(int(idx[state, rank]), k)
        i = lo + offset
        assignment[i:j] = [int(states.state_dev[state])] * (j - i)
        if i == 0:
            break
        m, rank = divmod(int(start_back[i][state, rank]), k)
        state = int(states.switch_src[state, m])
        j = i
    return assignment
