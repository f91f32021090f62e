"""The planner: optimal split and placement, exactly.

Pure: numbers in, :class:`Plan` s out; no ONNX, no I/O, no clock (import-linter
keeps it so). Modules:

- ``problem``: :class:`Problem`, :class:`Constraints`, links, power; checked and prepared.
- ``plan``: :class:`Plan` (stages, hops, predictions) and its ``plan.json`` form;
  ``provenance``: what a plan was made from.
- ``solve``: :func:`solve` for latency, throughput, energy or the Pareto front, top-k;
  it picks among ``latency`` (DP), ``subset_dp``, ``kbest``, ``milp`` (HiGHS),
  ``pareto``, and ``bruteforce`` (the reference the tests compare with); ``ties``: throughput
  ties to the faster plan; ``proof``: what a solve proved, as a plan's ``bound`` and ``gap``
  (``Plan.certificate`` says it in words).
- ``cost``: a plan's predicted latency, throughput, bytes and energy (split per battery device into
  compute, communication and idle: :class:`EnergySplit`); ``weights``: energy weights;
  ``sweep``: the least energy under each latency budget;
  ``memory``: a stage's memory need (weights, peak activation, in-flight cut buffers) and its
  forms for the segment DP and the MILP; ``constraint_checks``: constraints read against an instance.
- ``diagnose``: which constraint makes a problem infeasible; ``scission``: Scission's ranking.
- ``tradeoffs`` and ``tradeoff_solve``: precision per stage and compression per hop chosen with the
  split under a quality budget (:func:`solve_tradeoffs`, exact for the additive quality model).

Typical use::

    from splitinfer.plan import Constraints, Link, Problem, solve

    problem = Problem(
        devices=("camera", "edge"),
        compute_s={"camera": [0.2, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
        cut_bytes=[800_000, 200_000], input_bytes=150_000, output_bytes=4_000,
        links=[Link("camera", "edge", 2.5e6, 0.005), Link("edge", "camera", 2.5e6, 0.005)])
    best = solve(problem, "latency", Constraints(private_blocks=1), top_k=3)
"""

from splitinfer.plan.plan import (
    EnergySplit,
    Hop,
    Plan,
    Stage,
    describe_stages,
    plan_from_json,
    plan_to_json,
    with_provenance,
)
from splitinfer.plan.problem import (
    AT_SOURCE,
    OBJECTIVES,
    Constraints,
    Instance,
    Link,
    Messaging,
    Power,
    Problem,
    prepare,
)
from splitinfer.plan.provenance import HopOverhead, Provenance
from splitinfer.plan.solve import METHODS, solve
from splitinfer.plan.tradeoff_solve import solve_tradeoffs
from splitinfer.plan.tradeoffs import CompressionOption, PrecisionOption, Tradeoffs

__all__ = [
    "AT_SOURCE",
    "METHODS",
    "OBJECTIVES",
    "CompressionOption",
    "Constraints",
    "EnergySplit",
    "Hop",
    "HopOverhead",
    "Instance",
    "Link",
    "Messaging",
    "Plan",
    "Power",
    "PrecisionOption",
    "Problem",
    "Provenance",
    "Stage",
    "Tradeoffs",
    "describe_stages",
    "plan_from_json",
    "plan_to_json",
    "prepare",
    "solve",
    "solve_tradeoffs",
    "with_provenance",
]
