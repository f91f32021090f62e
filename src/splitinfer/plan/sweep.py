"""Latency budgets swept: the least energy a plan needs under each budget (DIME's energy-deadline curve).

:func:`sweep_latency_budgets` calls a solver once per budget and keeps what it answers, a plan or none, as
a :class:`SweepPoint`: the budget, the plan's latency, energy and its split (compute, communication,
idle: ``Plan.energy_split`` summed over the battery devices) and its stages in one line. The solver is
any callable from a budget in seconds to the least-energy plan within it (None, or an
:class:`~splitinfer.errors.InfeasibleError`, when no plan meets it), so another planner (one over device
configurations, say) plugs in unchanged. With an exact solver the energy never rises as the budget grows.
:func:`default_budgets` spans the fastest plan's latency to a little beyond the least-energy plan's.

    from splitinfer.plan import Constraints, solve
    points = sweep_latency_budgets(
        lambda b: solve(problem, "energy", Constraints(max_latency_s=b))[0], [0.05, 0.1, 0.2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan.plan import Plan, describe_stages
from splitinfer.units import check_number

MAX_BUDGETS = 1000  # points of one curve: more than a plot shows, each one solve
BEYOND = 0.1  # default_budgets ends this share of the span past the least-energy plan's latency


@dataclass(frozen=True)
class SweepPoint:
    """The least-energy plan within one latency budget; ``plan`` None (and every figure None) when no
    plan meets the budget. The joules are the battery devices' per request (``Plan.energy_split``)."""

    budget_s: float
    plan: Plan | None
    latency_s: float | None = None
    energy_j: float | None = None
    compute_j: float | None = None
    communication_j: float | None = None
    idle_j: float | None = None
    stages: str = ""

    @property
    def feasible(self) -> bool:
        return self.plan is not None


def point_of(budget_s: float, plan: Plan | None) -> SweepPoint:
    """A budget's point from the plan the solver gave for it (None: none meets it)."""
    if plan is None:
        return SweepPoint(budget_s, None)
    if plan.energy_j is None:
        raise PlanError("the solver returned a plan without an energy figure",
                        "give the problem's power a Power(..., battery=True) for a device")
    parts = plan.energy_split.values()
    return SweepPoint(budget_s, plan, plan.latency_s, plan.energy_j,
                      math.fsum(p.compute_j for p in parts), math.fsum(p.communication_j for p in parts),
                      math.fsum(p.idle_j for p in parts), describe_stages(plan))


def sweep_latency_budgets(solve: Callable[[float], Plan | None],
                          budgets_s: Sequence[float]) -> list[SweepPoint]:
    """One :class:`SweepPoint` per budget, by increasing budget: ``solve(budget_s)`` gives the least-energy
    plan whose latency is within the budget, or None (or raises InfeasibleError) when there is none; those
    budgets are kept, marked infeasible. PlanError for a budget that is not a positive number of seconds."""
    budgets = list(budgets_s)
    if not budgets or len(budgets) > MAX_BUDGETS:
        raise PlanError(f"budgets_s has {len(budgets)} budgets", f"give 1 to {MAX_BUDGETS} latency budgets")
    for i, b in enumerate(budgets):
        check_number(b, f"budgets_s[{i}]", low=0, low_open=True, error=PlanError, fix="seconds")
    points = []
    for budget in sorted(float(b) for b in budgets):
        try:
            plan = solve(budget)
        except InfeasibleError:
            plan = None
        points.append(point_of(budget, plan))
    return points


def default_budgets(fastest_latency_s: float, slowest_latency_s: float, n: int) -> list[float]:
    """``n`` budgets evenly from the fastest plan's latency to a little (a tenth of the span; with no span,
    a tenth of the latency) beyond ``slowest_latency_s``, the least-energy plan's, where the curve is flat."""
    check_number(fastest_latency_s, "fastest_latency_s", low=0, low_open=True, error=PlanError, fix="seconds")
    check_number(slowest_latency_s, "slowest_latency_s", low=fastest_latency_s, error=PlanError,
                 fix="the least-energy plan is never faster than the fastest")
    check_number(n, "n", low=1, high=MAX_BUDGETS, whole=True, error=PlanError)
    span = slowest_latency_s - fastest_latency_s
    end = slowest_latency_s + BEYOND * (span if span > 0 else slowest_latency_s)
    if n == 1:
        return [end]
    step = (end - fastest_latency_s) / (n - 1)
    return [fastest_latency_s + i * step for i in range(n - 1)] + [end]
