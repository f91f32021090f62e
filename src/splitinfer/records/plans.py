"""Reading ``plan.json`` files (the format itself is :mod:`splitinfer.plan.plan`'s)."""

from __future__ import annotations

from pathlib import Path

from splitinfer.errors import PlanError, SchemaError, read_file
from splitinfer.plan import Plan, plan_from_json

PlanSource = Plan | str | Path


def read_plans(path: str | Path) -> list[Plan]:
    """Every plan in a plan.json file, best first."""
    return plan_from_json(read_file(path, "plan file",
                                    "check the path (write one with `splitinfer plan ... -o plan.json`)",
                                    PlanError))


def load_plan(source: PlanSource, rank: int = 1) -> Plan:
    """A Plan as is, or the plan of ``rank`` (1 = best) from a plan.json file."""
    if isinstance(source, Plan):
        return source
    path = Path(source)
    plans = read_plans(path)
    if not plans:
        raise SchemaError(f"plan file {path} has no plans", "write it with `splitinfer plan ... -o`")
    chosen = [p for p in plans if p.rank == rank] or (plans[rank - 1:rank] if rank >= 1 else [])
    if not chosen:
        raise PlanError(f"plan file {path} has no plan of rank {rank}",
                        f"pick a rank between 1 and {len(plans)}")
    return chosen[0]
