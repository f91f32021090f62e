"""A plan's stages and the early exits each evaluates: a stage that makes an exit before its last block
runs as parts, split right after that exit's block (runtime/device/_exits.py), so that a request that
leaves there computes nothing past it, as the planner predicts (plan/exits.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

from splitinfer.graph.exit_cuts import exit_blocks
from splitinfer.graph.exits import DEFAULT_THRESHOLD, Exit
from splitinfer.plan import Plan
from splitinfer.profile.blocks import Blocks
from splitinfer.runtime.coordinator.pipeline import StageExit


def part_ranges(first: int, last: int, split_after: list[int]) -> list[tuple[int, int]]:
    """The block ranges of a stage's parts: split after each of ``split_after``."""
    bounds = [first - 1, *split_after, last]
    return [(a + 1, b) for a, b in itertools.pairwise(bounds)]


def stage_exits(plan: Plan, blocks: Blocks) -> list[tuple[list[int], tuple[StageExit, ...]]]:
    """Per plan stage: the blocks after which its partition is split (exits made before its last
    block), and the exits it evaluates, each after its part."""
    made = exit_blocks(blocks.model, blocks.exits, blocks.analysis) if blocks.exits else {}
    out = []
    for s in plan.stages:
        on = [e for e in blocks.exits if _threshold(plan, e) is not None]  # the plan may turn one off
        inside = sorted(((made[e.output], e) for e in on if s.first_block <= made[e.output] <= s.last_block),
                        key=lambda pair: pair[0])
        cuts = [b for b, _ in inside if b < s.last_block]
        rules = tuple(StageExit(e.output, e.rule, _threshold(plan, e),
                                cuts.index(b) if b in cuts else len(cuts), _rule_graph(e))
                      for b, e in inside)
        out.append((cuts, rules))
    return out


def _threshold(plan: Plan, e: Exit) -> float | None:
    """The plan's choice (``plan --exit-quality-drop``; None: off), else the exit's own, else the rule's
    default."""
    if e.output in plan.exit_thresholds:
        return plan.exit_thresholds[e.output]
    return DEFAULT_THRESHOLD if e.threshold is None else e.threshold


def _rule_graph(e: Exit) -> bytes:
    return Path(e.rule_path).read_bytes() if e.rule == "onnx" and e.rule_path else b""
