"""k-best dynamic programming over a layered graph of (block, state), vectorised with numpy.

A path visits one state per block; every state belongs to a device. Moving from
state s (block b) to state t (block b+1) costs ``arc_w[b, dev(s), dev(t)] +
node_w[b+1, dev(t)]`` (arc weights are 0 on the diagonal: staying on a device is
free). Every state keeps the k best paths that reach it, which is exact for the
k best paths overall because path costs are sums (a monotone composition).

Solvers describe their state space (which states exist, their predecessors, where
paths may start and end) and call :func:`k_best_paths`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def k_smallest(cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise k smallest of ``cand`` (N, M), ascending: (values, column indices), inf-padded."""
    rows, cols = cand.shape
    if cols < k:
        cand = np.concatenate([cand, np.full((rows, k - cols), np.inf)], axis=1)
        cols = k
    if k == 1:
        idx = np.argmin(cand, axis=1)[:, None]
    elif cols <= 4 * k:
        idx = np.argsort(cand, axis=1, kind="stable")[:, :k]
    else:
        part = np.argpartition(cand, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(cand, part, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(cand, idx, axis=1), idx


def merge_sorted(
    lists: np.ndarray, offset: np.ndarray, k: int, combine: str = "sum"
) -> tuple[np.ndarray, np.ndarray]:
    """k smallest of ``combine(lists[n, i, r], offset[n, i])`` per row n: values (N, k), flat i * k + r.

    Every ``lists[n, i]`` is an ascending k-list and sum/max with one offset keeps
    it sorted, so only the k lists with the smallest heads can contribute; a k-step
    merge of those gives the answer in O(N * (m + k^2)) instead of sorting m * k.
    """

    def comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b if combine == "sum" else np.maximum(a, b)

    rows, num_lists, _ = lists.shape
    heads = comb(lists[:, :, 0], offset)
    if k == 1:
        i = np.argmin(heads, axis=1)[:, None]
        return np.take_along_axis(heads, i, axis=1), i
    if num_lists > k:
        top = np.argpartition(heads, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(num_lists), (rows, num_lists))
    r = np.arange(rows)[:, None]
    chosen = np.full((*top.shape, k + 1), np.inf)  # a sentinel column ends each list
    chosen[:, :, :k] = comb(lists[r, top], offset[r, top][:, :, None])
    pos = np.zeros(top.shape, dtype=np.int64)
    values = np.empty((rows, k))
    flat = np.empty((rows, k), dtype=np.int64)
    every = np.arange(rows)
    for t in range(k):
        cur = chosen[r, np.arange(top.shape[1]), pos]
        j = np.argmin(cur, axis=1)
        pj = pos[every, j]
        values[:, t] = cur[every, j]
        flat[:, t] = top[every, j] * k + pj
        pos[every, j] = np.minimum(pj + 1, k)
    return values, flat


@dataclass(frozen=True)
class LayeredGraph:
    """A state space repeated at every block.

    ``in_src[t]`` lists the states a path may come from into state t (the index
    ``num_states`` pads the rows). ``start_w``/``end_w``: cost to begin/finish in a
    state (inf: not allowed).
    """

    state_dev: np.ndarray  # (S,) device of each state
    in_src: np.ndarray  # (S, M) predecessor states, padded with S
    start_w: np.ndarray  # (S,)
    end_w: np.ndarray  # (S,)

    @property
    def num_states(self) -> int:
        return len(self.state_dev)


def k_best_paths(
    graph: LayeredGraph, node_w: np.ndarray, arc_w: np.ndarray, k: int
) -> list[tuple[float, list[int]]]:
    """The k cheapest paths as (cost, device of every block), cheapest first; only finite ones."""
    num_blocks = node_w.shape[0]
    num_states, _num_in = graph.in_src.shape
    dev = graph.state_dev
    src_dev = np.append(dev, 0)[graph.in_src]
    values = np.full((num_states + 1, k), np.inf)
    values[:num_states, 0] = graph.start_w + node_w[0, dev]
    backs = []
    for b in range(1, num_blocks):
        cost = arc_w[b - 1][src_dev, dev[:, None]]
        # Adding one arc cost to a sorted k-list keeps it sorted: merge the lists.
        best, idx = merge_sorted(values[graph.in_src], cost, k)
        values[:num_states] = best + node_w[b, dev][:, None]
        backs.append(idx)
    final = (values[:num_states] + graph.end_w[:, None]).reshape(1, num_states * k)
    best, idx = k_smallest(final, k)
    out = []
    for value, flat in zip(best[0].tolist(), idx[0].tolist(), strict=True):
        if not np.isfinite(value):
            break
        state, rank = divmod(flat, k)
        path = [int(dev[state])]
        for b in range(num_blocks - 2, -1, -1):
            m, rank = divmod(int(backs[b][state, rank]), k)
            state = int(graph.in_src[state, m])
            path.append(int(dev[state]))
        out.append((value, path[::-1]))
    return out
