"""Solving with trade-offs (:mod:`.tradeoffs`): split, placement, precisions and compressions at once.

:func:`solve_tradeoffs` is exact for the additive quality model: the MILP of :mod:`.milp` over
variants (devices with a precision and an outgoing compression), with the quality budget as one
more row, the devices' constraints counted per device (``MilpSpec.groups``) and the seconds spent
compressing and restoring counted as the devices' busy time in the throughput rows. Every answer is
re-evaluated here, exactly, before it becomes a :class:`.Plan`; its ``bound`` is the MILP's, on the
additive objective the MILP minimises (which the exact figures match: :mod:`.proof`).
:func:`brute_force` enumerates every assignment of blocks to variants: the reference the tests
compare with.

Throughput ties go to the faster plan, as in :func:`.solve.solve`: the best bottleneck is found
first, then the fastest plan under it; proofs stay the throughput solve's, by rank.
``objective="pareto"`` gives the latency-quality front (the fastest plan for each quality cost the
budget allows, by tightening the budget step by step; each point's proof is its latency solve's).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from splitinfer.errors import PlanError
from splitinfer.plan.constraint_checks import allowed_matrix, validate_constraints
from splitinfer.plan.cost import throughput_cap_s, violations
from splitinfer.plan.memory import StageMemory
from splitinfer.plan.milp import MilpSpec, solve_milp
from splitinfer.plan.plan import Plan, describe_stages
from splitinfer.plan.problem import Constraints, Problem, prepare
from splitinfer.plan.proof import Proof, by_rank, certify
from splitinfer.plan.tradeoff_cost import TradeoffMetrics, crossing, measure
from splitinfer.plan.tradeoffs import Tradeoffs, Variants, expand, figure_weights

MAX_ASSIGNMENTS = 200_000
TRADEOFF_OBJECTIVES = ("latency", "throughput", "energy", "pareto")
_REL_TOL = 1e-9  # the MILP's answers are re-checked exactly; this much slack absorbs float sums


def _value(m: TradeoffMetrics, objective: str) -> float:
    if objective == "throughput":
        return m.bottleneck_s
    if objective == "energy":
        return math.inf if m.energy_j is None else m.energy_j
    return m.latency_s


def _faults(
    var: Variants,
    cons: Constraints,
    assignment: Sequence[int],
    m: TradeoffMetrics,
    revisits: bool,
    budget: float | None,
) -> list[str]:
    """The constraints an assignment breaks: the devices' own (via :func:`.cost.violations` on the
    device of every block), then the bounds on the trade-off figures."""
    structural = dataclasses.replace(
        cons, max_latency_s=None, min_throughput_rps=None, max_upload_bytes=None, max_energy_j=None
    )
    out = violations(var.inst, structural, [int(var.device[v]) for v in assignment], revisits=revisits)
    out = [f for f in out if f != "no link or no measured time"]
    slack = 1 + _REL_TOL
    if cons.max_latency_s is not None and m.latency_s > cons.max_latency_s * slack:
        out.append(f"--max-latency {cons.max_latency_s}")
    if (
        cons.min_throughput_rps is not None
        and m.bottleneck_s > throughput_cap_s(cons.min_throughput_rps) * slack
    ):
        out.append(f"--min-throughput {cons.min_throughput_rps}")
    if cons.max_upload_bytes is not None and m.upload_bytes > cons.max_upload_bytes:
        out.append(f"--max-upload-bytes {cons.max_upload_bytes}")
    if cons.max_energy_j is not None and m.energy_j is not None and m.energy_j > cons.max_energy_j * slack:
        out.append(f"--max-energy {cons.max_energy_j}")
    if budget is not None and m.quality_cost > budget + _REL_TOL:
        out.append(f"--max-quality-drop {budget}")
    return out


def _plan(m: TradeoffMetrics, objective: str, rank: int, proof: Proof | None, solver: str) -> Plan:
    throughput = math.inf if m.bottleneck_s == 0 else 1.0 / m.bottleneck_s
    bound, gap = certify(_value(m, objective), proof)
    return Plan(
        objective,
        m.stages,
        m.hops,
        m.latency_s,
        m.bottleneck_s,
        throughput,
        sum(h.num_bytes for h in crossing(m.hops)),
        m.upload_bytes,
        m.energy_j,
        rank,
        gap=gap,
        bound=bound,
        solver=solver,
        quality_cost=m.quality_cost,
        energy_split=dict(m.energy_split),
    )


class _Setup(NamedTuple):
    var: Variants
    cons: Constraints
    revisits: bool
    allowed: np.ndarray  # (L, V)
    excluded: frozenset[str]  # plans (as describe_stages writes them) measured to break the budget


def _setup(problem: Problem, tradeoffs: Tradeoffs, objective: str, constraints: Constraints | None) -> _Setup:
    if objective not in TRADEOFF_OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}", f"use one of: {', '.join(TRADEOFF_OBJECTIVES)}")
    inst = prepare(problem)
    if inst.exits:
        raise PlanError("trade-offs (precisions, compressions) are not planned with early exits yet",
                        "plan the trade-offs for full depth (--full-depth; build_problem(full_depth=True))")
    cons = constraints or Constraints()
    validate_constraints(inst, cons, "latency" if objective == "pareto" else objective)
    var = expand(inst, tradeoffs)
    allowed = allowed_matrix(inst, cons)[:, var.device] & np.isfinite(var.compute_s)
    allowed[0] &= np.isfinite(var.upload_s)
    allowed[-1] &= np.isfinite(var.return_s)
    revisits = cons.revisits if cons.revisits is not None else objective != "throughput"
    return _Setup(var, cons, revisits, allowed, tradeoffs.excluded)


def _spec(s: _Setup, objective: str, budget: float | None, cap_s: float) -> MilpSpec:
    var, cons = s.var, s.cons
    figure = "latency" if objective in ("latency", "pareto") else objective
    bounds = [
        (figure_weights(var, s.allowed, name), float(value))
        for name, value in (
            ("latency", cons.max_latency_s),
            ("energy", cons.max_energy_j),
            ("upload", cons.max_upload_bytes),
            ("quality", budget),
        )
        if value is not None
    ]
    times = figure_weights(var, s.allowed, "latency")
    # links carry bytes; codecs keep devices busy (their own rows: arc_busy, upload_busy, busy[0])
    # a hop within a device (the upload on the source, the return on the sink) uses no link
    sink = var.inst.sink
    wire = dataclasses.replace(times, arc_w=var.wire_s,
                               upload_w=np.where(var.device == var.inst.source, 0.0, var.upload_s),
                               return_w=np.where(var.device == sink, 0.0, var.return_s) if sink is not None
                               else var.return_s)
    bottleneck = None
    if objective == "throughput" or math.isfinite(cap_s):
        busy = np.where(s.allowed, times.node_w, 0.0)  # blocks and the joins after them
        busy[0] += var.upload_decompress_s  # restoring the input keeps the first stage's device busy
        bottleneck = (busy, wire, var.inst.source, var.inst.sink)
    apart = var.device[:, None] != var.device[None, :]  # a stage's end gives its last join back:
    ends = 0.0 if times.end_w is None else np.where(apart[None], times.end_w[:, :, None], 0.0)  # sender
    return MilpSpec(
        objective=None if objective == "throughput" else figure_weights(var, s.allowed, figure),
        allowed=s.allowed,
        connected=_connected(var),
        revisits=s.revisits,
        max_stages=cons.max_stages,
        requires=[var.inst.names.index(d) for d in cons.requires],
        memory=StageMemory.of(var.inst),  # raw cut bytes: a compressed hop is restored first
        capacity_bytes=var.inst.capacity_bytes,
        bottleneck=bottleneck,
        bottleneck_cap_s=cap_s,
        bounds=bounds,
        groups=var.device,
        arc_busy=(var.compress_s + ends, var.decompress_s),
        upload_busy=var.upload_compress_s,
    )


def _connected(var: Variants) -> np.ndarray:
    """(V, V): a variant to itself, or to a variant of another device with a link to it."""
    dev = var.device
    linked = ~np.isnan(var.inst.link_bandwidth_bps)[dev[:, None], dev[None, :]]
    return (linked & (dev[:, None] != dev[None, :])) | np.eye(len(dev), dtype=bool)


def _milp(
    s: _Setup, objective: str, budget: float | None, cap_s: float, top_k: int, time_limit_s: float
) -> list[tuple[TradeoffMetrics, tuple[int, ...], Proof]]:
    def accept(assignment: list[int]) -> bool:
        m = measure(s.var, assignment)
        return (
            m is not None
            and not _faults(s.var, s.cons, assignment, m, s.revisits, budget)
            and (m.bottleneck_s <= cap_s * (1 + _REL_TOL))
            and describe_stages(_plan(m, objective, 1, None, "")) not in s.excluded
        )

    result = solve_milp(_spec(s, objective, budget, cap_s), top_k, accept, time_limit_s=time_limit_s)
    if result.timed_out and not result.found:
        raise PlanError(
            f"the MILP found no trade-off plan within {time_limit_s:g} s",
            "allow more time (--time-limit), or offer fewer precisions and compressions",
        )
    found = [(measure(s.var, a), tuple(a), proof) for a, proof in result.found]
    return [(m, a, proof) for m, a, proof in found if m is not None]


def brute_force(
    problem: Problem,
    tradeoffs: Tradeoffs,
    objective: str = "latency",
    constraints: Constraints | None = None,
    top_k: int = 1,
) -> list[Plan]:
    """Every assignment of blocks to variants, the best ``top_k`` first (small problems only)."""
    s = _setup(problem, tradeoffs, objective, constraints)
    total = s.var.num_variants**s.var.inst.num_blocks
    if total > MAX_ASSIGNMENTS:
        raise PlanError(f"brute force would try {total} assignments", "use it only for small problems")
    budget = tradeoffs.max_quality_drop
    scored = []
    for a in itertools.product(range(s.var.num_variants), repeat=s.var.inst.num_blocks):
        m = measure(s.var, a)
        if (
            m is not None
            and all(s.allowed[b, v] for b, v in enumerate(a))
            and not _faults(s.var, s.cons, a, m, s.revisits, budget)
            and describe_stages(_plan(m, objective, 1, None, "")) not in s.excluded
        ):
            scored.append(((_value(m, objective), m.latency_s), m))
    scored.sort(key=lambda t: t[0])
    return [_plan(m, objective, i + 1, None, "bruteforce") for i, (_, m) in enumerate(scored[:top_k])]


def solve_tradeoffs(
    problem: Problem,
    tradeoffs: Tradeoffs,
    objective: str = "latency",
    constraints: Constraints | None = None,
    top_k: int = 1,
    *,
    time_limit_s: float = 60.0,
) -> list[Plan]:
    """The ``top_k`` best plans choosing split, placement, precisions and compressions together,
    with a summed quality cost of at most ``tradeoffs.max_quality_drop``. Plans carry
    ``quality_cost``; stages their ``precision``, hops their ``compression``."""
    if problem.configurations:
        raise PlanError(f"devices {', '.join(problem.configurations)} have configurations, which "
                        "trade-offs do not choose yet",
                        "plan without a quality budget, or without the configurations")
    s = _setup(problem, tradeoffs, objective, constraints)
    budget = tradeoffs.max_quality_drop
    user_cap = throughput_cap_s(s.cons.min_throughput_rps)
    if objective == "pareto":
        return _front(s, budget, user_cap, time_limit_s)
    if objective == "throughput":
        found = _milp(s, "throughput", budget, user_cap, top_k, time_limit_s)
        if found:  # the best bottleneck's plans, fastest first; then the others by bottleneck
            cap = min(found[0][0].bottleneck_s * (1 + _REL_TOL), user_cap)
            fastest = _milp(s, "latency", budget, cap, top_k, time_limit_s)
            seen = {a for _, a, _ in fastest}
            ordered = fastest + sorted(
                (f for f in found if f[1] not in seen), key=lambda t: (t[0].bottleneck_s, t[0].latency_s)
            )
            proofs = by_rank([proof for *_, proof in found], len(ordered))  # about bottlenecks, not latency
            found = [(m, a, proof) for (m, a, _), proof in zip(ordered, proofs, strict=True)]
    else:
        found = _milp(s, objective, budget, user_cap, top_k, time_limit_s)
        found.sort(key=lambda t: _value(t[0], objective))
    if not found:
        _explain_infeasible(problem, objective, s.cons)
    return [_plan(m, objective, i + 1, proof, "milp-tradeoffs")
            for i, (m, _, proof) in enumerate(found[:top_k])]


def _front(s: _Setup, budget: float | None, cap_s: float, time_limit_s: float) -> list[Plan]:
    """The latency-quality front: fastest plan, then the fastest with a smaller quality cost, ..."""
    plans: list[Plan] = []
    limit = budget
    while True:
        found = _milp(s, "latency", limit, cap_s, 1, time_limit_s)
        if not found:
            break
        m = found[0][0]
        plan = _plan(m, "pareto-quality", len(plans) + 1, found[0][2], "milp-tradeoffs")
        if plans and m.latency_s <= plans[-1].latency_s * (1 + _REL_TOL):
            plans[-1] = msgspec.structs.replace(
                plan, rank=len(plans)
            )  # as fast and better: the previous point was not on the front
        else:
            plans.append(plan)
        if m.quality_cost <= _REL_TOL:
            break
        limit = m.quality_cost * (1 - 1e-6) - _REL_TOL  # strictly less than this plan's quality cost
    if not plans:
        raise PlanError("no plan fits the constraints", "relax a constraint")
    return plans


def _explain_infeasible(problem: Problem, objective: str, cons: Constraints) -> None:
    """fp32 with raw hops costs no quality, so only the devices' constraints can leave no plan:
    the plain solver names the one that does."""
    from splitinfer.plan.solve import solve

    solve(problem, "latency" if objective == "pareto" else objective, cons)
    raise PlanError(
        "no trade-off plan fits the constraints although a plain plan does",
        "relax --max-latency, --min-throughput or --max-energy, or allow more trade-offs",
    )
