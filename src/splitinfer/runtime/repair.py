"""The quality repair loop: predict with the additive model, measure, exclude what breaks the budget.

The trade-off planner (:func:`~splitinfer.plan.solve_tradeoffs`) is exact for the additive quality
model: a plan's quality cost is the sum of its precisions' and compressions' costs, each measured
alone. Errors do not always add up (two lossy hops in a row can flip a row neither flips alone), so
:func:`plan_within_budget` measures the chosen plan's real top-1 agreement with the fp32 model on
real data (its stages run in process, quantised and compressed as the workers would run them:
:func:`~splitinfer.runtime.evaluate.chain_runner`). While it breaks the budget, the plan is
excluded and the combination is charged what it really cost: the excess of the measured drop
over the predicted one is spread over its lossy parts (each block run below fp32, each compressed
hop), so plans that share those parts are predicted worse too, and the problem is solved again.
A plan without trade-offs (fp32, raw hops) needs no measurement.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from splitinfer.data import Dataset
from splitinfer.errors import PlanError
from splitinfer.plan import Constraints, Plan, Problem, Tradeoffs, describe_stages, solve_tradeoffs
from splitinfer.profile.blocks import cut_as_profiled
from splitinfer.runtime.coordinator.deploy import (
    Calibration,
    ModelSource,
    ProfileSource,
    _profile,
    build_stages,
)
from splitinfer.runtime.evaluate import Evaluation, chain_runner, evaluate, reference_runner

log = logging.getLogger("splitinfer.repair")
MAX_ROUNDS = 8


@dataclass
class Repair:
    """The plan that holds the budget, its measured quality, and the plans excluded on the way
    (each with its measured drop)."""

    plan: Plan
    evaluation: Evaluation | None  # None: the plan has no trade-offs (nothing to measure)
    measured_drop: float
    rejected: list[tuple[Plan, float]]


def measured_drop(evaluation: Evaluation) -> float:
    """1 - top-1 agreement of the compared output: the classifier output, else the first output of
    class scores (as the sensitivity profile compares)."""
    agreement = evaluation.agreement
    assert agreement is not None
    names = [evaluation.classifier_output] if evaluation.classifier_output else list(agreement.outputs)
    for name in names:
        top1 = agreement[name].top1_agreement
        if top1 is not None:
            return 1.0 - top1
    raise PlanError("no output of the model is class scores (rows x classes)",
                    "a quality budget needs a classifier-like output")


def charge(tradeoffs: Tradeoffs, plan: Plan, excess: float) -> Tradeoffs:
    """``tradeoffs`` with ``excess`` added to the quality costs of ``plan``'s lossy parts, in equal
    shares, so that the additive model predicts for this plan what was measured."""
    blocks = [(s.precision, b) for s in plan.stages if s.precision != "fp32"
              for b in range(s.first_block, s.last_block + 1)]
    cut_hops = [h for h in plan.hops if h.kind == "cut"]
    hops = [(h.compression, s.last_block) for s, h in zip(plan.stages, cut_hops, strict=False)
            if h.compression != "none"]
    if excess <= 0 or not (blocks or hops):
        return tradeoffs
    share = excess / (len(blocks) + len(hops))

    def add(option, parts):
        cost = list(option.quality_cost)
        for name, index in parts:
            if name == option.name:
                cost[index] += share
        return dataclasses.replace(option, quality_cost=cost)

    return dataclasses.replace(tradeoffs, precisions=tuple(add(p, blocks) for p in tradeoffs.precisions),
                               compressions=tuple(add(c, hops) for c in tradeoffs.compressions))


def plan_within_budget(
    problem: Problem,
    tradeoffs: Tradeoffs,
    model: ModelSource,
    data: Dataset,
    *,
    objective: str = "latency",
    constraints: Constraints | None = None,
    profile: ProfileSource | None = None,
    calibration: Calibration | None = None,
    max_rounds: int = MAX_ROUNDS,
    time_limit_s: float = 60.0,
) -> Repair:
    """The best plan whose measured top-1 agreement drop on ``data`` is within
    ``tradeoffs.max_quality_drop``. ``profile``: how the blocks were formed (as for ``deploy``);
    ``calibration``: the inputs int8 stages are calibrated on (default: ``data``)."""
    budget = tradeoffs.max_quality_drop
    if budget is None:
        raise PlanError(
            "tradeoffs.max_quality_drop is None: there is no budget to hold",
            "give max_quality_drop, e.g. 0.01 for 1% of top-1 agreement",
        )
    blocks = cut_as_profiled(model, _profile(profile))
    reference = reference_runner(blocks.model.proto.SerializeToString())
    excluded = set(tradeoffs.excluded)
    rejected: list[tuple[Plan, float]] = []
    for _ in range(max_rounds):
        (plan,) = solve_tradeoffs(
            problem,
            dataclasses.replace(tradeoffs, excluded=frozenset(excluded)),
            objective,
            constraints,
            1,
            time_limit_s=time_limit_s,
        )
        if not plan.has_tradeoffs:
            return Repair(plan, None, 0.0, rejected)
        stages = build_stages(plan, blocks, calibration if calibration is not None else data)
        evaluation = evaluate(reference, chain_runner(stages), data, labels=False)
        drop = measured_drop(evaluation)
        if drop <= budget + 1e-12:
            return Repair(plan, evaluation, drop, rejected)
        log.warning(
            "%s: measured drop %.2f%% breaks the budget %.2f%% (predicted %.2f%%): solving again without it",
            describe_stages(plan),
            drop * 100,
            budget * 100,
            (plan.quality_cost or 0) * 100,
        )
        excluded.add(describe_stages(plan))
        rejected.append((plan, drop))
        tradeoffs = charge(tradeoffs, plan, drop - (plan.quality_cost or 0.0))
    raise PlanError(
        f"{max_rounds} plans in a row broke the quality budget when measured",
        "allow a larger --max-quality-drop, or fewer lossy trade-offs (--precisions, --compressions)",
    )
