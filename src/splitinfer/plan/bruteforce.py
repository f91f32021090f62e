"""The reference: enumerate every assignment of blocks to devices (small L and D only).

Slow on purpose and independent of the solvers' reasoning: it tries all D^L
assignments, keeps those :func:`.cost.violations` finds no fault with, and ranks
them by :func:`.cost.objective_value`. The property tests compare every solver
with it.
"""

from __future__ import annotations

import itertools

from splitinfer.errors import PlanError
from splitinfer.plan.cost import Metrics, measure, objective_value, violations
from splitinfer.plan.problem import Constraints, Instance

MAX_ASSIGNMENTS = 200_000


def feasible_plans(
    inst: Instance, cons: Constraints, revisits: bool
) -> list[tuple[tuple[int, ...], Metrics]]:
    """Every assignment that satisfies ``cons``, with its figures."""
    total = inst.num_devices**inst.num_blocks
    if total > MAX_ASSIGNMENTS:
        raise PlanError(
            f"brute force would try {total} assignments",
            "use it only for small problems (the default solvers are exact)",
        )
    out = []
    for assignment in itertools.product(range(inst.num_devices), repeat=inst.num_blocks):
        m = measure(inst, assignment)
        if m is not None and not violations(inst, cons, assignment, m, revisits=revisits):
            out.append((assignment, m))
    return out


def best_plans(
    inst: Instance, cons: Constraints, objective: str, top_k: int, revisits: bool
) -> list[tuple[float, tuple[int, ...]]]:
    """The ``top_k`` best (value, assignment), best first (ties in enumeration order)."""
    plans = feasible_plans(inst, cons, revisits)
    ranked = sorted(((objective_value(m, objective), a) for a, m in plans), key=lambda p: p[0])
    return ranked[:top_k]


def pareto_plans(
    inst: Instance,
    cons: Constraints,
    second: str,
    revisits: bool,
    plans: list[tuple[tuple[int, ...], Metrics]] | None = None,
) -> list[tuple[float, float, tuple[int, ...]]]:
    """The (latency, second figure) front, one assignment per point, by latency.

    ``second`` is "energy" or "upload" (bytes leaving the source); ``plans``: the
    feasible plans if already enumerated.
    """
    points = []
    for a, m in plans if plans is not None else feasible_plans(inst, cons, revisits):
        other = m.energy_j if second == "energy" else float(m.upload_bytes)
        if other is not None:
            points.append((m.latency_s, other, a))
    points.sort(key=lambda p: (p[0], p[1]))
    front: list[tuple[float, float, tuple[int, ...]]] = []
    for lat, other, a in points:
        if not front or other < front[-1][1]:
            front.append((lat, other, a))
    return front
