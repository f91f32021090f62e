"""``plan``'s comparison of the chosen configurations with DIME's reference schedules."""

from __future__ import annotations

from rich.table import Table

from splitinfer.plan import Constraints, Plan, Problem, solve
from splitinfer.plan.configurations import compare_extremes
from splitinfer.plan.plan import describe_stages


def compared_tables(problem: Problem, plans: list[Plan], objective: str, cons: Constraints, *, method: str,
                    time_limit_s: float) -> list[Table]:
    """With device configurations and a latency or energy objective: the chosen plan next to the best
    plan with every device in its fastest configuration and with every one in its slowest (solved as
    the chosen one was: ``method``, ``time_limit_s``)."""
    if not problem.configurations or objective not in ("latency", "energy") or not plans:
        return []
    others = compare_extremes(problem, lambda one, k: solve(one, objective, cons, k, method=method,
                                                            time_limit_s=time_limit_s))
    table = Table(title=f"configurations compared ({objective}, same constraints)", title_justify="left")
    for column in ("schedule", "latency s", "energy J", "stages"):
        table.add_column(column, justify="left" if column in ("schedule", "stages") else "right")
    for label, plan in (("chosen", plans[0]), ("fastest everywhere", others["fastest"]),
                        ("slowest everywhere", others["slowest"])):
        if plan is None:
            table.add_row(label, "-", "-", "no plan meets the constraints")
            continue
        energy = "-" if plan.energy_j is None else f"{plan.energy_j:.4f}"
        table.add_row(label, f"{plan.latency_s:.4f}", energy, describe_stages(plan))
    return [table]
