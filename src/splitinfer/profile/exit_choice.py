"""Early-exit thresholds chosen with the plan, within a quality budget.

A lower bar lets more requests leave early (faster) but more of them with another answer than the model's
final one (worse). The profile keeps, per exit and calibration sample, the rule's score and whether the
exit's top class agrees with the final output's (``ExitProfile.confidences`` / ``agrees``), so every
threshold's mix and cost are known without measuring again:

- a sample leaves at the first exit whose score passes its threshold (``leave_fractions``);
- the quality cost is the share of samples that leave with a top class the final output does not have
  (an agreement drop with the model run to the end, as ``--max-quality-drop`` counts elsewhere).

The candidates per exit are off (None: the exit never answers) and each distinct score of its samples:
every threshold between two scores lets the same samples leave, so these are all the mixes there are.
Every combination within the budget is planned exactly (the DP or the MILP) and the best plan wins
(ties: the smaller cost): exact. Where the combinations would exceed ``MAX_COMBINATIONS`` (many exits,
many samples), the scores' quantiles at every ``1 / NUM_LEVELS`` stand in for them: exact over that grid.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import Constraints, Plan, Problem, solve
from splitinfer.plan.cost import objective_value
from splitinfer.plan.exits import ExitMix
from splitinfer.profile.exit_profile import leave_fractions
from splitinfer.profile.schema import ExitProfile

NUM_LEVELS = 8  # quantiles of each exit's scores tried as its threshold
MAX_COMBINATIONS = 2000  # solves at most (two exits of 32 samples: 33 x 33)


@dataclass(frozen=True)
class ExitChoice:
    """The thresholds chosen, the mix they give, what they cost in agreement, and the plan."""

    thresholds: dict[str, float | None]  # None: the exit is off
    quality_cost: float
    plan: Plan


def _candidates(e: ExitProfile, coarse: bool) -> list[float | None]:
    scores = np.asarray(e.confidences, dtype=np.float64)
    levels = np.quantile(scores, np.linspace(0, 1, NUM_LEVELS + 1)) if coarse and scores.size else scores
    declared = [] if e.threshold is None else [float(e.threshold)]
    valid = {float(v) for v in [*levels, *declared]
             if (0 < v <= 1 if e.rule == "softmax_max" else v >= 0)}  # what a worker takes
    return [None, *sorted(valid)]


def _passes(e: ExitProfile, threshold: float | None) -> np.ndarray:
    scores = np.asarray(e.confidences, dtype=np.float64)
    if threshold is None:  # the exit is off
        return np.zeros(scores.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return scores >= threshold if e.rule == "softmax_max" else scores <= threshold


def mix_at(exits: Sequence[ExitProfile], thresholds: Sequence[float | None]) -> tuple[list[float], float]:
    """Each exit's share of the samples and the agreement lost, at these thresholds (depth order)."""
    passed = np.stack([_passes(e, t) for e, t in zip(exits, thresholds, strict=True)], axis=1)
    first = np.where(passed.any(axis=1), passed.argmax(axis=1), -1)
    lost = sum(int(np.sum((first == k) & ~np.asarray(e.agrees, dtype=bool))) for k, e in enumerate(exits))
    return leave_fractions(passed), lost / max(1, len(first))


def check_choosable(exits: Sequence[ExitProfile]) -> None:
    """PlanError unless every exit has a threshold rule and one score and answer per sample."""
    if not exits:
        raise PlanError("the profile has no early exits whose thresholds could be chosen",
                        "profile a model with exits (its metadata, or --exits)")
    for e in exits:
        if e.rule == "onnx" or len(e.confidences) != e.num_samples or len(e.agrees) != e.num_samples:
            raise PlanError(f"exit {e.output!r} has no score and answer per calibration sample (rule "
                            f"{e.rule}, or batched samples)", "profile again with this version, one "
                            "sample per request, and a softmax_max or entropy rule")


def choose_thresholds(problem: Problem, exits: Sequence[ExitProfile], max_quality_drop: float,
                      objective: str = "latency", constraints: Constraints | None = None) -> ExitChoice:
    """The best plan over the exits' candidate thresholds whose agreement drop is at most
    ``max_quality_drop`` (a fraction); InfeasibleError when no combination fits the budget and the
    constraints. ``problem``: built from the same profile (its exits are replaced per combination)."""
    check_choosable(exits)
    grids = [_candidates(e, coarse=False) for e in exits]
    if np.prod([len(g) for g in grids]) > MAX_COMBINATIONS:
        grids = [_candidates(e, coarse=True) for e in exits]
    if np.prod([len(g) for g in grids]) > MAX_COMBINATIONS:
        raise PlanError(f"{len(exits)} exits give too many threshold combinations to plan each",
                        "choose the thresholds of at most three exits")
    best: tuple[float, float, dict[str, float], Plan] | None = None
    for combo in itertools.product(*grids):
        shares, cost = mix_at(exits, combo)
        if cost > max_quality_drop + 1e-12:
            continue
        mix = tuple(ExitMix(e.output, e.block, p, e.output_bytes) for e, p in zip(exits, shares, strict=True))
        try:
            (plan,) = solve(dataclasses.replace(problem, exits=mix), objective, constraints, 1)
        except InfeasibleError:
            continue
        key = (objective_value(plan, objective), cost)
        if best is None or key < best[:2]:
            best = (*key, dict(zip((e.output for e in exits), combo, strict=True)), plan)
    if best is None:
        raise InfeasibleError(f"no thresholds of the exits keep the agreement drop within "
                              f"{max_quality_drop:.2%} under the constraints",
                              "allow a larger drop, or relax the constraints")
    _, cost, thresholds, plan = best
    return ExitChoice(thresholds, cost, msgspec.structs.replace(plan, exit_thresholds=thresholds,
                                                                quality_cost=cost))
