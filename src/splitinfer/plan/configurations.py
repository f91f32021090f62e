"""Device configurations (DIME's DVFS choice): a device may run in one of several configurations (a clock,
a number of threads, a provider), each with its own block seconds and power; the planner chooses at
most one per device together with the split, exactly.

A plan uses each device in one configuration, so a choice is one configuration per device: a
*combination*. Fixing a combination leaves an ordinary :class:`~splitinfer.plan.problem.Problem` (each
device's seconds, joins and power those of its configuration), which every solver already solves
exactly. :func:`solve_configurations` solves each combination and keeps the best plans over all of
them: exact because it is exhaustive over the combinations, and each solve is exact (or carries its
MILP bound, of which the smallest is kept). A configuration of a device the plan does not use is no
choice at all, so plans are told apart by their stages and the configurations of the devices they use.

The number of combinations is the product of each device's count; at most
:data:`MAX_COMBINATIONS` are solved (a few devices with a handful of clock levels each).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import msgspec

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan.problem import DeviceConfiguration, Problem

if TYPE_CHECKING:
    from splitinfer.plan.plan import Plan

MAX_COMBINATIONS = 4096


def check_choices(problem: Problem) -> None:
    """Each device with configurations is a device of the problem, with named, distinct configurations."""
    count = 1
    for device, configs in problem.configurations.items():
        if device not in problem.devices:
            raise PlanError(f"configurations name unknown device {device!r}",
                            f"use one of: {', '.join(problem.devices)}")
        names = [c.name for c in configs]
        if not names or len(set(names)) != len(names):
            raise PlanError(f"device {device!r} has configurations {names}",
                            "give one or more configurations, each with its own name")
        count *= len(names)
    if count > MAX_COMBINATIONS:
        raise PlanError(f"the devices' configurations make {count} combinations, over {MAX_COMBINATIONS}",
                        "declare fewer configurations (e.g. the lowest, middle and highest clock)")


def configured(problem: Problem, chosen: Mapping[str, str]) -> Problem:
    """``problem`` with each device of ``chosen`` in that configuration, and no further choice."""
    compute = dict(problem.compute_s)
    joins = dict(problem.join_s)
    power = dict(problem.power)
    for device, name in chosen.items():
        configs = problem.configurations.get(device, ())
        config = next((c for c in configs if c.name == name), None)
        if config is None:
            raise PlanError(f"device {device!r} has no configuration {name!r}",
                            f"use one of: {', '.join(c.name for c in configs) or '(none declared)'}")
        compute[device] = config.compute_s
        joins.pop(device, None)
        if config.join_s is not None:
            joins[device] = config.join_s
        power.pop(device, None)
        if config.power is not None:
            power[device] = config.power
    return dataclasses.replace(problem, compute_s=compute, join_s=joins, power=power, configurations={})


def combinations(problem: Problem) -> list[dict[str, str]]:
    """Every choice of one configuration per device that has them."""
    check_choices(problem)
    devices = list(problem.configurations)
    names = [[c.name for c in problem.configurations[d]] for d in devices]
    return [dict(zip(devices, combo, strict=True)) for combo in itertools.product(*names)]


def _sum_s(config: DeviceConfiguration) -> float:
    return math.fsum(float(t) for t in config.compute_s if t is not None and math.isfinite(t))


def extremes(problem: Problem) -> dict[str, dict[str, str]]:
    """DIME's two reference schedules: every device in its fastest configuration (smallest sum of the
    blocks it can run), and every device in its slowest."""
    check_choices(problem)
    out: dict[str, dict[str, str]] = {"fastest": {}, "slowest": {}}
    for device, configs in problem.configurations.items():
        out["fastest"][device] = min(configs, key=_sum_s).name
        out["slowest"][device] = max(configs, key=_sum_s).name
    return out


def _used(plan: Plan, problem: Problem, chosen: Mapping[str, str]) -> dict[str, str]:
    """The configurations that matter to the plan: those of the devices it runs stages on, and of the
    battery devices, whose idle watts count over every request (the others are no choice)."""
    devices = {s.device for s in plan.stages}
    for device, name in chosen.items():
        power = next(c.power for c in problem.configurations[device] if c.name == name)
        if power is not None and power.battery:
            devices.add(device)
    return {d: c for d, c in chosen.items() if d in devices}


def _key(plan: Plan) -> tuple:
    objective = plan.objective
    if objective == "energy":
        return (math.inf if plan.energy_j is None else plan.energy_j, plan.latency_s)
    if objective == "throughput":
        return (plan.bottleneck_s, plan.latency_s)
    return (plan.latency_s,)


def _front(plans: list[Plan]) -> list[Plan]:
    """The plans no other beats on both latency and the front's other figure, by latency."""
    def other(p: Plan) -> float:
        if p.objective == "pareto-energy":
            return math.inf if p.energy_j is None else p.energy_j
        return float(p.upload_bytes)

    kept: list[Plan] = []
    for p in sorted(plans, key=lambda p: (p.latency_s, other(p))):
        if not kept or other(p) < other(kept[-1]):
            kept.append(p)
    return kept


def solve_configurations(problem: Problem, objective: str, solve_one: Callable[[Problem, int], list[Plan]],
                         top_k: int = 1) -> list[Plan]:
    """The ``top_k`` best plans over every combination of configurations (``solve_one(problem, k)``
    solves one combination's plain problem), each plan with the configurations it uses. InfeasibleError
    when no combination has a plan (the default combination's, which names the constraint)."""
    found: dict[tuple, Plan] = {}
    errors: list[InfeasibleError] = []
    combos = combinations(problem)
    bounds: list[float | None] = []
    for chosen in combos:
        try:
            plans = solve_one(configured(problem, chosen), top_k)
        except InfeasibleError as e:
            errors.append(e)
            continue
        bounds.append(plans[0].bound)
        for plan in plans:
            used = _used(plan, problem, chosen)
            tagged = msgspec.structs.replace(plan, configurations=used)
            key = (plan.objective, tuple((s.device, s.first_block, s.last_block) for s in plan.stages),
                   tuple(sorted(used.items())))
            found.setdefault(key, tagged)
    if not found:
        raise errors[0]
    plans = list(found.values())
    if objective == "pareto":
        ranked = [p for kind in sorted({p.objective for p in plans})
                  for p in _front([q for q in plans if q.objective == kind])]
        return [msgspec.structs.replace(p, rank=i + 1) for i, p in enumerate(ranked)]
    ranked = sorted(plans, key=_key)[:top_k]
    out = [msgspec.structs.replace(p, rank=i + 1) for i, p in enumerate(ranked)]
    # What is proven of the best: no combination can beat the smallest of their bounds (every
    # combination that has a plan was solved; one without has nothing to beat it with).
    if all(b is not None for b in bounds):
        bound = min(b for b in bounds if b is not None)
        best = out[0]
        value = _key(best)[0]
        gap = None if best.gap is None else max(0.0, (value - bound) / abs(value)) if value else 0.0
        out[0] = msgspec.structs.replace(best, bound=bound, gap=gap)
    return out


def compare_extremes(problem: Problem,
                     solve_one: Callable[[Problem, int], list[Plan]]) -> dict[str, Plan | None]:
    """The best plan with every device in its fastest configuration, and in its slowest (DIME's "fast only"
    and "slow only" schedules), each with its configurations; None where that choice has no plan."""
    out: dict[str, Plan | None] = {}
    for label, chosen in extremes(problem).items():
        try:
            plan = solve_one(configured(problem, chosen), 1)[0]
        except InfeasibleError:
            out[label] = None
            continue
        out[label] = msgspec.structs.replace(plan, configurations=_used(plan, problem, chosen))
    return out
