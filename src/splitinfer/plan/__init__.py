"""The planner: optimal split and placement, exactly (see DESIGN.md).

Pure: numbers in, :class:`Plan` s out; no ONNX, no I/O, no clock. Typical use::

    from splitinfer.plan import Constraints, Link, Problem, solve

    problem = Problem(
        devices=("camera", "edge"),
        compute_s={"camera": [0.2, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
        cut_bytes=[800_000, 200_000], input_bytes=150_000, output_bytes=4_000,
        links=[Link("camera", "edge", 2.5e6, 0.005), Link("edge", "camera", 2.5e6, 0.005)])
    best = solve(problem, "latency", Constraints(private_blocks=1), top_k=3)
"""

from splitinfer.plan.plan import Hop, Plan, Stage, describe_stages, plan_from_json, plan_to_json
from splitinfer.plan.problem import (
    AT_SOURCE,
    OBJECTIVES,
    Constraints,
    Instance,
    Link,
    Power,
    Problem,
    constraints_from_json,
    constraints_to_json,
    prepare,
)
from splitinfer.plan.solve import METHODS, solve

__all__ = [
    "AT_SOURCE",
    "METHODS",
    "OBJECTIVES",
    "Constraints",
    "Hop",
    "Instance",
    "Link",
    "Plan",
    "Power",
    "Problem",
    "Stage",
    "constraints_from_json",
    "constraints_to_json",
    "describe_stages",
    "plan_from_json",
    "plan_to_json",
    "prepare",
    "solve",
]
