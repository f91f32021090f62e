"""Cuts at exits: where a split of a model with exits cuts so that each exit ends a partition.

A partition *ends at* exit k when it makes exit k's output (so its head, every node the exit
needs, runs before the cut), the trunk above the exit continues in the next partition, and
exit k+1 is made later. In an order (the analysis's), exit k made by the node at position
``b_k - 1`` ends the partition before any candidate cut in ``[b_k, b_{k+1})``; the first such cut
leaves the least trunk in the exit's partition. The exit's tensor, a model output, then passes
through the later partitions to the end, as every early model output does (``partition``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from splitinfer.errors import CutError
from splitinfer.graph.analysis import Analysis, analyze
from splitinfer.graph.exits import Exit
from splitinfer.graph.liveness import Liveness, compute_liveness
from splitinfer.graph.model import Model
from splitinfer.graph.partition import Partition


class ExitCut(msgspec.Struct, frozen=True):
    """Where exit ``output`` can end a partition: ``positions``, the candidate cuts of the
    analysis's order after its head and before the next exit (first: the tightest). ``made_at``:
    the position right after the node that makes it."""

    output: str
    made_at: int
    positions: tuple[int, ...]

    @property
    def position(self) -> int:
        """The cut right after the exit's head, or the first candidate after it."""
        return self.positions[0]


def _names(exits: Sequence[Exit | str]) -> list[str]:
    return [e.output if isinstance(e, Exit) else str(e) for e in exits]


def exit_cuts(model: Model, exits: Sequence[Exit | str],
              analysis: Analysis | None = None) -> tuple[ExitCut, ...]:
    """For each exit, in depth order (the order the model makes them, whatever the order given),
    the candidate cuts of ``analysis`` (default ``analyze(model)``) at which it ends a partition.

    ``split(model, [c.position for c in exit_cuts(...)], analysis)`` then makes one partition per
    exit and one for the rest: partition k makes exit k. Raises :class:`CutError` for an exit that
    no cut lets end a partition: made by the same node as the next exit, made by the model's last
    node, or with only positions between it and the next exit where more than ``max_cut_tensors``
    tensors, or a value that cannot cross a cut, are live.
    """
    analysis = analysis if analysis is not None else analyze(model)
    order = analysis.order
    live = compute_liveness(model, order)
    made = {name: _made_at(model, live, name) for name in _names(exits)}
    ranked = sorted(made, key=made.__getitem__)
    candidates = [c.position for c in analysis.candidates]
    result = []
    for k, name in enumerate(ranked):
        low = made[name]
        following = ranked[k + 1] if k + 1 < len(ranked) else None
        high = made[following] if following is not None else len(order)
        positions = tuple(p for p in candidates if low <= p < high)
        if not positions:
            _explain(model, analysis, live, name, following, low, high)
        result.append(ExitCut(name, low, positions))
    return tuple(result)


def _made_at(model: Model, live: Liveness, name: str) -> int:
    index = model.graph_index
    if name not in index.graph_outputs:
        raise CutError(f"exit {name!r} is not an output of the model",
                       f"give outputs of the model as exits: {', '.join(index.graph_outputs[:-1]) or 'none'}")
    if name in index.constants or name in index.graph_inputs or name not in live.birth:
        raise CutError(f"exit {name!r} is not computed from the inputs (a constant or an input)",
                       "declare as exits only outputs that nodes compute from the inputs")
    return live.birth[name]


def _explain(model: Model, analysis: Analysis, live: Liveness, name: str, following: str | None,
             low: int, high: int) -> None:
    """Raise the CutError that says why no candidate cut lies in ``[low, high)``."""
    order = analysis.order
    node = order[low - 1]
    if following is not None and high <= low:
        raise CutError(f"exits {name!r} and {following!r} are made by the same node {node!r}: no cut "
                       "separates them", "declare only one of them as an exit")
    if following is None and low >= len(order):
        raise CutError(f"exit {name!r} is made by the model's last node {node!r}: no cut after it leaves "
                       "anything to skip", "declare as exits only outputs made before the final one")
    where = f"between exit {name!r} and {f'exit {following!r}' if following else 'the end'}"
    counts = [int(live.counts[p]) for p in range(low, high) if not live.blocked[p]]
    if not counts:
        raise CutError(f"no cut lies {where}: a value that cannot cross a cut (not a tensor, or of unknown "
                       "shape) is live at every position there", "declare other outputs as exits")
    fewest = min(counts)
    raise CutError(f"no cut lies {where}: at least {fewest} tensors are live at every position there "
                   f"(exits passing through count), more than max_cut_tensors={analysis.max_cut_tensors}",
                   f"give max_cut_tensors={fewest} or more")


def exit_partitions(model: Model, exits: Sequence[Exit | str],
                    partitions: Sequence[Partition]) -> dict[str, int]:
    """Exit name -> the index of the partition that makes it (in depth order), for a chain of
    ``partitions`` from :func:`~splitinfer.graph.partition.split` (cut anywhere: at
    :func:`exit_cuts`, at blocks, at tensor names).

    Raises :class:`CutError` for an exit made in the last partition (no cut follows it) and for
    two exits made in one partition (no cut between them): each exit must end a partition.
    """
    index = model.graph_index
    where = {node: part.index for part in partitions for node in part.nodes}
    last = max((p.index for p in partitions), default=0)
    found: dict[str, int] = {}
    for name in _names(exits):
        producer = index.producer.get(name)
        if name not in index.graph_outputs or producer not in where:
            raise CutError(f"exit {name!r} is not made by a node of these partitions",
                           "give outputs of the model computed from its inputs as exits")
        k = where[producer]
        if k == last:
            raise CutError(f"exit {name!r} is made in the last partition ({k}): no cut follows it",
                           "cut after it (exit_cuts gives the positions where it ends a partition)")
        other = next((n for n, j in found.items() if j == k), None)
        if other is not None:
            raise CutError(f"exits {other!r} and {name!r} are both made in partition {k}",
                           "cut between them (exit_cuts gives the positions where each ends a partition)")
        found[name] = k
    return dict(sorted(found.items(), key=lambda item: item[1]))


def analyze_at_exits(model: Model, exits: Sequence[Exit | str], max_cut_tensors: int, max_blocks: int
                     ) -> Analysis:
    """:func:`~splitinfer.graph.analyze` with a cut right after each exit's head as well (a block ends
    at every exit: the planner weighs the blocks after it by the requests that stay), so up to
    ``len(exits)`` blocks more than ``max_blocks``."""
    analysis = analyze(model, max_cut_tensors=max_cut_tensors, max_blocks=max_blocks)
    if not exits:
        return analysis
    at = {c.position for c in analysis.cuts} | {c.position for c in exit_cuts(model, exits, analysis)}
    return analyze(model, max_cut_tensors=max_cut_tensors, max_blocks=max_blocks, cuts_at=sorted(at))


def exit_blocks(model: Model, exits: Sequence[Exit | str], analysis: Analysis) -> dict[str, int]:
    """Exit name -> the block that makes it (whose nodes include its producer)."""
    producer = model.graph_index.producer
    block_of = {node: b.index for b in analysis.blocks for node in b.nodes}
    found = {}
    for name in _names(exits):
        node = producer.get(name)
        if node not in block_of:
            raise CutError(f"exit {name!r} is made by no block of the analysis (a constant?)",
                           "declare as exits outputs the model computes")
        found[name] = block_of[node]
    return found
