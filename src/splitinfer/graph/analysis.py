"""Cuts and blocks of a model: the candidate split points and the units of profiling.

``analyze`` folds constants, picks a topological order that keeps few tensors
live (it measures a depth-first post-order from the outputs, the same with
inputs visited in reverse, and the file order, and keeps the one with the most
candidate cuts), lists the candidate cuts (positions with at most K live
tensors) and groups the nodes into at most ``max_blocks`` blocks.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from onnx import helper

from splitinfer.errors import CutError
from splitinfer.graph.blocks import choose_cuts
from splitinfer.graph.liveness import Liveness, compute_liveness, list_orders
from splitinfer.graph.model import Model
from splitinfer.graph.stats import count_node
from splitinfer.graph.topology import GraphIndex
from splitinfer.types import TensorSpec

# How blocks are formed unless asked otherwise, declared once: the commands, the profiler, the
# profile file (which records the values it was made with) and deploy without a profile all use these.
DEFAULT_MAX_CUT_TENSORS = 4
DEFAULT_MAX_BLOCKS = 64


class Cut(msgspec.Struct, frozen=True):
    """A position in the order (number of nodes before it) and the tensors live across it."""

    position: int
    tensors: tuple[TensorSpec, ...]
    num_bytes: int


class Block(msgspec.Struct, frozen=True):
    """The nodes between two consecutive chosen cuts, with their costs.

    ``op_types``: op type -> count, most frequent first. ``num_params`` /
    ``param_bytes``: initializers (and Constant values) the block reads, each
    counted in the first block that reads it (the blocks sum to the model's).
    ``output_bytes``: bytes of the tensors it makes.
    ``cut_bytes``: bytes of the cut after it (the model outputs for the last
    block). ``activation_bytes``: peak bytes of live activations while it runs
    (tensors live across its positions plus the outputs of the running node).
    ``start``: position of its first node in the order.
    """

    index: int
    start: int
    nodes: tuple[str, ...]
    op_types: dict[str, int]
    flops: int
    macs: int
    num_params: int
    param_bytes: int
    output_bytes: int
    cut_bytes: int
    activation_bytes: int


class Analysis(msgspec.Struct, frozen=True):
    """Order, candidate cuts, chosen cuts and blocks of a model, with totals."""

    order: tuple[str, ...]
    order_strategy: str
    max_cut_tensors: int
    candidates: tuple[Cut, ...]
    cuts: tuple[Cut, ...]
    blocks: tuple[Block, ...]
    input_bytes: int
    output_bytes: int
    total_flops: int
    total_macs: int
    num_params: int
    param_bytes: int
    num_nodes: int

    @property
    def num_blocks(self) -> int:
        """Number of blocks (``len(cuts) + 1``)."""
        return len(self.blocks)

    def block_bounds(self) -> list[int]:
        """Positions where blocks start, plus the end: ``[0, c1, ..., len(order)]``."""
        return [b.start for b in self.blocks] + [len(self.order)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data. The order is left out: it is the blocks' nodes, concatenated."""
        data = msgspec.to_builtins(self)
        del data["order"]
        data["num_blocks"] = len(self.blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Analysis:
        """Inverse of :meth:`to_dict`."""
        data = {k: v for k, v in data.items() if k != "num_blocks"}
        data["order"] = [n for b in data["blocks"] for n in b["nodes"]]
        return msgspec.convert(data, cls)


def analyze(model: Model, max_cut_tensors: int = DEFAULT_MAX_CUT_TENSORS,
            max_blocks: int = DEFAULT_MAX_BLOCKS, cuts_at: Sequence[int] | None = None) -> Analysis:
    """Candidate cuts (at most ``max_cut_tensors`` live tensors) and at most ``max_blocks`` blocks.

    ``max_blocks=0`` keeps every candidate cut. See :func:`splitinfer.graph.blocks.choose_cuts`
    for how cuts are chosen when there are more candidates than blocks allow. ``cuts_at``: the
    positions of the cuts to keep instead (each a candidate): the blocks of another load of the same
    model (at another input size, where bytes differ and the choice could too).
    """
    if max_cut_tensors < 1:
        raise CutError(f"max_cut_tensors must be at least 1, not {max_cut_tensors}", "use 1 or more")
    index = model.graph_index
    strategy, live = _choose_order(model, max_cut_tensors)
    order = live.order
    positions = _candidate_positions(live, max_cut_tensors)
    tensors_at = live.tensors_at(positions)
    candidates = tuple(make_cut(model, p, tensors_at[p]) for p in positions)
    stats = _node_stats(model, index, order)
    weights = np.array([s[0] + 4 * s[2] for s in stats], dtype=np.float64)
    by_position = {c.position: c for c in candidates}
    if cuts_at is not None:
        unknown = [p for p in cuts_at if p not in by_position]
        if unknown:
            raise CutError(f"cuts_at= holds position {unknown[0]}, which is not a candidate cut",
                           "give positions of candidate cuts (Analysis.candidates) of the same model")
        chosen = sorted(set(cuts_at))
    else:
        chosen = choose_cuts(
            [c.position for c in candidates], [c.num_bytes for c in candidates], weights, max_blocks
        )
    cuts = tuple(by_position[p] for p in chosen)
    # A decoder's cache stays where it is computed (graph/state.py): neither uploaded nor returned.
    pasts, presents = {p.past for p in model.state}, {p.present for p in model.state}
    output_bytes = sum(s.num_bytes for s in model.outputs if s.name not in presents)
    sources = _param_sources(index)
    blocks = _make_blocks(model, index, live, stats, cuts, output_bytes, sources)
    used = set().union(*(sources.get(t, ()) for n in order for t in index.inputs_of[n]))
    return Analysis(
        order=order, order_strategy=strategy, max_cut_tensors=max_cut_tensors,
        candidates=candidates, cuts=cuts, blocks=blocks,
        input_bytes=sum(s.num_bytes for s in model.inputs if s.name not in pasts), output_bytes=output_bytes,
        total_flops=sum(b.flops for b in blocks), total_macs=sum(b.macs for b in blocks),
        num_params=sum(_param_size(model, index, p)[0] for p in used),
        param_bytes=sum(_param_size(model, index, p)[1] for p in used),
        num_nodes=len(model.proto.graph.node),
    )


def make_cut(model: Model, position: int, tensors: Sequence[str]) -> Cut:
    """A :class:`Cut` at ``position`` with the given live tensors."""
    specs = tuple(model.tensor(t) for t in tensors)
    return Cut(position=position, tensors=specs, num_bytes=sum(s.num_bytes for s in specs))


def _candidate_positions(live: Liveness, k: int) -> list[int]:
    m = len(live.order)
    counts, blocked = live.counts, live.blocked
    return [p for p in range(1, m) if 0 < counts[p] <= k and not blocked[p]]


def _choose_order(model: Model, k: int) -> tuple[str, Liveness]:
    best: tuple[tuple[int, int], str, Liveness] | None = None
    for strategy, order in list_orders(model.graph_index).items():
        live = compute_liveness(model, order)
        # Most candidate cuts first; then fewest live tensors overall.
        score = (len(_candidate_positions(live, k)), -int(live.counts.sum()))
        if best is None or score > best[0]:
            best = (score, strategy, live)
    assert best is not None
    return best[1], best[2]


def _node_stats(model: Model, index: GraphIndex, order: Sequence[str]) -> list[tuple[int, int, int]]:
    """(flops, macs, output bytes) of each node of the order."""
    specs = model.tensors

    def shape_of(name: str) -> tuple[int, ...] | None:
        spec = specs.get(name)
        return spec.shape if spec is not None else None

    result = []
    for name in order:
        node = index.nodes[name]
        flops, macs = count_node(node, shape_of)
        out_bytes = sum(specs[o].num_bytes for o in node.output if o in specs)
        result.append((flops, macs, out_bytes))
    return result


def _param_sources(index: GraphIndex) -> dict[str, frozenset[str]]:
    """For each constant tensor: the initializers and Constant values it is computed from."""
    sources: dict[str, frozenset[str]] = {name: frozenset({name}) for name in index.initializers}
    for name, node in index.nodes.items():
        if name not in index.constant_nodes:
            continue
        outputs = [o for o in node.output if o]
        if node.op_type == "Constant":
            for o in outputs:
                sources[o] = frozenset({o})
        elif outputs and outputs[0] in index.folded:
            sources[outputs[0]] = frozenset()
        else:
            found = frozenset().union(*(sources.get(t, frozenset()) for t in index.inputs_of[name]))
            for o in outputs:
                sources[o] = found
    return sources


def _param_size(model: Model, index: GraphIndex, name: str) -> tuple[int, int]:
    spec = model.tensors.get(name)
    if spec is not None:
        return math.prod(spec.shape), spec.num_bytes
    t = index.initializers.get(name)
    if t is None:
        return 0, 0
    numel = math.prod(t.dims)
    return numel, numel * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _make_blocks(
    model: Model,
    index: GraphIndex,
    live: Liveness,
    stats: list[tuple[int, int, int]],
    cuts: Sequence[Cut],
    output_bytes: int,
    sources: dict[str, frozenset[str]],
) -> tuple[Block, ...]:
    order = live.order
    bounds = [0, *(c.position for c in cuts), len(order)]
    cut_bytes = [c.num_bytes for c in cuts] + [output_bytes]
    blocks = []
    counted: set[str] = set()
    for b, (start, end) in enumerate(itertools.pairwise(bounds)):
        names = order[start:end]
        # Each parameter in the first block that reads it only: the blocks then sum to the model's.
        params = set().union(*(sources.get(t, ()) for n in names for t in index.inputs_of[n])) - counted
        counted |= params
        sizes = [_param_size(model, index, p) for p in params]
        ops = Counter(index.nodes[n].op_type for n in names)
        peak = max(
            (int(live.live_bytes[j]) + stats[j][2] for j in range(start, end)),
            default=0,
        )
        blocks.append(Block(
            index=b, start=start, nodes=tuple(names),
            op_types=dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            flops=sum(s[0] for s in stats[start:end]), macs=sum(s[1] for s in stats[start:end]),
            num_params=sum(s[0] for s in sizes), param_bytes=sum(s[1] for s in sizes),
            output_bytes=sum(s[2] for s in stats[start:end]), cut_bytes=cut_bytes[b],
            activation_bytes=max(peak, int(live.live_bytes[end])),
        ))
    return tuple(blocks)
