"""Topological orders and the tensors live across each position of an order.

Position ``p`` of an order of ``m`` nodes lies between node ``p-1`` and node
``p``. A non-constant tensor is live across ``p`` when it is made before ``p``
(or is a model input) and read at or after ``p`` (or is a model output, which
must reach the end). Constants never count: they travel with the weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.graph.model import Model
from splitinfer.graph.state import StatePair
from splitinfer.graph.topology import GraphIndex


@dataclass(frozen=True)
class Liveness:
    """Lifetimes over one order: tensor ``t`` is live across positions ``birth[t]..death[t]``.

    ``counts[p]`` / ``live_bytes[p]``: number / bytes of tensors live across p;
    ``blocked[p]``: a value that cannot cross a cut (not a tensor, or of
    unknown shape) is live across p, or p lies inside a state pair's nodes (graph/state.py).
    """

    order: tuple[str, ...]
    birth: dict[str, int]
    death: dict[str, int]
    counts: np.ndarray
    live_bytes: np.ndarray
    blocked: np.ndarray

    def tensors_at(self, positions: Iterable[int]) -> dict[int, list[str]]:
        """The tensors live across each given position, in order of birth."""
        wanted = sorted(set(positions))
        born: dict[int, list[str]] = {}
        for t, b in self.birth.items():
            if self.death[t] >= b:
                born.setdefault(b, []).append(t)
        result: dict[int, list[str]] = {}
        active: dict[str, None] = {}
        next_wanted = 0
        for p in range(len(self.order) + 1):
            if next_wanted >= len(wanted):
                break
            active.update(dict.fromkeys(born.get(p, ())))
            if p == wanted[next_wanted]:
                result[p] = [t for t in active if self.death[t] >= p]
                next_wanted += 1
            for t in [t for t in active if self.death[t] <= p]:
                del active[t]
        return result


def compute_liveness(model: Model, order: Sequence[str]) -> Liveness:
    """Lifetimes of every non-constant tensor over ``order`` (cached per model and order)."""
    key = ("liveness", tuple(order))
    cached = model.cache.get(key)
    if isinstance(cached, Liveness):
        return cached
    index = model.graph_index
    m = len(order)
    # A state pair (graph/state.py) lives on its partition's device: its past is fed there, its present
    # kept there, so neither is live across a position.
    pasts = {p.past for p in model.state}
    presents = {p.present for p in model.state}
    birth: dict[str, int] = {t: 0 for t in index.graph_inputs if t not in pasts}
    death: dict[str, int] = {t: -1 for t in index.graph_inputs if t not in pasts}
    for pos, name in enumerate(order):
        for t in index.inputs_of[name]:
            if t in death:
                death[t] = max(death[t], pos)
        for t in index.nodes[name].output:
            if t:
                birth[t] = pos + 1
                death[t] = pos
    for t in index.graph_outputs:
        if t in death and t not in presents:
            death[t] = m
    counts = np.zeros(m + 2, dtype=np.int64)
    live_bytes = np.zeros(m + 2, dtype=np.int64)
    blocked = np.zeros(m + 2, dtype=np.int64)
    specs = model.tensors
    for t, b in birth.items():
        d = death[t]
        if d < b:
            continue
        counts[b] += 1
        counts[d + 1] -= 1
        spec = specs.get(t)
        if spec is None:
            blocked[b] += 1
            blocked[d + 1] -= 1
        else:
            live_bytes[b] += spec.num_bytes
            live_bytes[d + 1] -= spec.num_bytes
    # A cut among the nodes that read a state pair's past, make its present or read that would split
    # that layer's cache over two partitions (graph/partition.py refuses it): not a candidate.
    where = {name: pos for pos, name in enumerate(order)}
    for pair in model.state:
        users = [where[n] for n in state_nodes(index, pair) if n in where]
        if len(users) > 1:
            blocked[min(users) + 1] += 1
            blocked[max(users) + 1] -= 1
    result = Liveness(
        order=tuple(order), birth=birth, death=death,
        counts=np.cumsum(counts)[: m + 1], live_bytes=np.cumsum(live_bytes)[: m + 1],
        blocked=np.cumsum(blocked)[: m + 1] > 0,
    )
    model.cache[key] = result
    return result


def state_nodes(index: GraphIndex, pair: StatePair) -> list[str]:
    """The nodes a state pair's cache is used by: its past's readers, its present's maker and readers."""
    return [*index.consumers.get(pair.past, []), *([index.producer[pair.present]]
            if pair.present in index.producer else []), *index.consumers.get(pair.present, [])]


def _dependencies(index: GraphIndex, name: str) -> list[str]:
    deps = []
    for t in index.inputs_of[name]:
        p = index.producer.get(t)
        if p is not None and p not in index.constant_nodes:
            deps.append(p)
    return list(dict.fromkeys(deps))


def order_depth_first(index: GraphIndex, visit: str = "inputs") -> list[str]:
    """Depth-first post-order from the model outputs over the non-constant nodes.

    Each node comes right after the last of its inputs is made, so a branch is
    finished before the next one starts and few tensors stay live. ``visit``
    is the order in which a node's inputs are explored: ``inputs`` (as listed),
    ``reversed``, or ``deepest`` (longest chain of producers first, as in
    Sethi-Ullman register allocation). Nodes that no output needs (dead code)
    follow, in file order.
    """
    deps = {n: _dependencies(index, n) for n in index.live_nodes()}
    if visit == "reversed":
        deps = {n: d[::-1] for n, d in deps.items()}
    elif visit == "deepest":
        depth: dict[str, int] = {}
        for n in deps:  # file order is topological
            depth[n] = 1 + max((depth[d] for d in deps[n]), default=0)
        deps = {n: sorted(d, key=lambda x: -depth[x]) for n, d in deps.items()}
    roots = [index.producer[t] for t in index.graph_outputs if t in index.producer]
    roots = [r for r in roots if r in deps] + list(deps)
    visited: set[str] = set()
    order: list[str] = []
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:
            node, it = stack[-1]
            for dep in it:
                if dep not in visited:
                    visited.add(dep)
                    stack.append((dep, iter(deps[dep])))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def list_orders(index: GraphIndex) -> dict[str, list[str]]:
    """The candidate orders that :func:`splitinfer.graph.analyze` measures and chooses from."""
    return {
        "depth_first": order_depth_first(index),
        "depth_first_reversed": order_depth_first(index, visit="reversed"),
        "depth_first_deepest": order_depth_first(index, visit="deepest"),
        "file": index.live_nodes(),
    }


def count_live_tensors(model: Model, order: Sequence[str] | None = None) -> list[int]:
    """Number of tensors live across each position of ``order`` (file order if None)."""
    order = model.graph_index.live_nodes() if order is None else order
    return [int(c) for c in compute_liveness(model, order).counts]
