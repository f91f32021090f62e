"""One entry point: :func:`solve` picks the fastest exact algorithm the constraints allow.

==============================================  ========================================
case                                            algorithm
==============================================  ========================================
latency / energy, revisits, no memory limit     shortest paths over (block, device)
latency / energy, no revisits                   DP over used-device sets, block by block
... with memory or a throughput bound           DP over used-device sets, stage by stage
throughput, no revisits                         min-max DP over used-device sets
pareto fronts; a bound on another figure        MILP on HiGHS (reports its bound and gap)
(latency, energy, upload); revisits with
memory or throughput; > 12 usable devices
==============================================  ========================================

Throughput ties go to the faster plan: the plans tied with the k-th best
bottleneck are re-ranked by a latency solve under that bottleneck (:mod:`.ties`).
Every answer is re-evaluated by :mod:`.cost` and re-checked against every
constraint before it becomes a :class:`.Plan`, with the ``bound`` and ``gap`` its
solve proved (:mod:`.proof`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from splitinfer.errors import PlanError
from splitinfer.plan import bruteforce, latency, subset_dp
from splitinfer.plan.configurations import solve_configurations
from splitinfer.plan.constraint_checks import allowed_matrix, validate_constraints
from splitinfer.plan.cost import evaluate, measure, objective_value, throughput_cap_s, violations
from splitinfer.plan.diagnose import infeasible_error, local_conflict
from splitinfer.plan.memory import SegmentNeeds, StageMemory, need_bound
from splitinfer.plan.milp import solve_milp, spec_for
from splitinfer.plan.pareto import pareto_front
from splitinfer.plan.plan import Plan
from splitinfer.plan.problem import Constraints, Instance, Problem, prepare
from splitinfer.plan.proof import Candidate
from splitinfer.plan.subset_dp import MAX_SUBSET_DEVICES, StageLimit, sum_limit
from splitinfer.plan.ties import fastest_among_ties
from splitinfer.plan.weights import Weights, energy_weights, latency_weights, link_weights
from splitinfer.units import check_number

MAX_TOP_K = 1000  # more plans than anyone reads; k-best enumeration grows with k
MAX_TIME_LIMIT_S = 86_400.0  # a day per MILP solve

METHODS = ("auto", "dp", "milp", "bruteforce")


@dataclass(frozen=True)
class _Case:
    """A problem with its constraints, ready for the solvers."""

    inst: Instance
    cons: Constraints
    objective: str
    revisits: bool
    allowed: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        return np.flatnonzero(self.allowed.any(axis=0))

    @property
    def requires(self) -> list[int]:
        return [self.inst.names.index(d) for d in dict.fromkeys(self.cons.requires)]

    @property
    def memory_binds(self) -> bool:
        """Can some device's need (plan/memory.py) exceed its capacity? If not, solvers leave it out."""
        need = need_bound(StageMemory.of(self.inst), self.allowed, self.revisits)
        return bool(np.any(need > self.inst.capacity_bytes))


def _case(inst: Instance, cons: Constraints, objective: str) -> _Case:
    validate_constraints(inst, cons, objective)
    revisits = cons.revisits if cons.revisits is not None else objective != "throughput"
    allowed = allowed_matrix(inst, cons)
    # The first block must be reachable from the source, the last must reach the sink.
    allowed[0] &= np.isfinite(inst.upload_s)
    allowed[-1] &= np.isfinite(inst.return_s)
    for e in inst.exits:  # and a block making an exit taken there must reach the sink too
        if e.probability > 0:
            allowed[e.block] &= np.isfinite(e.return_s)
    return _Case(inst, cons, objective, revisits, allowed)


def _capped(weights: Weights, times: Weights, cap_s: float) -> Weights:
    """Drop transfers slower than a throughput bound allows (a per-hop, hence local, limit)."""
    return Weights(
        weights.node_w,
        np.where(times.links() <= cap_s, weights.arc_w, np.inf),
        np.where(times.upload_w <= cap_s, weights.upload_w, np.inf),
        np.where(times.return_w <= cap_s, weights.return_w, np.inf),
        weights.end_w,
    )


def _with(values: np.ndarray, index: int, value: float, *, only: bool = False) -> np.ndarray:
    out = np.full_like(values, np.inf) if only else values.copy()
    out[index] = value
    return out


def _link_variants(case: _Case, weights: Weights, max_mode: bool) -> list[tuple[Weights, Weights]]:
    """(weights, transfer times) to plan with, so that every hop has a link of its own.

    Without revisits, two hops share a link only when the first stage is on the
    sink and the last on the source: upload and return both go source -> sink.
    Those plans are solved apart, with the return counting both transfers.
    """
    inst = case.inst
    times = link_weights(inst, case.allowed)
    src, sink = inst.source, inst.sink
    if sink is None or sink == src:
        return [(weights, times)]
    rep = dataclasses.replace
    apart = (
        rep(weights, upload_w=_with(weights.upload_w, sink, np.inf)),
        rep(times, upload_w=_with(times.upload_w, sink, np.inf)),
    )
    both = float(times.upload_w[sink] + times.return_w[src])
    shared_times = rep(
        times,
        upload_w=_with(times.upload_w, sink, times.upload_w[sink], only=True),
        return_w=_with(times.return_w, src, both),
    )
    shared = rep(weights, upload_w=_with(weights.upload_w, sink, weights.upload_w[sink], only=True))
    if max_mode:
        shared = shared_times
    return [apart, (shared, shared_times)]


def _segments(case: _Case, weights: Weights, top_k: int, mode: str) -> list[tuple[float, list[int]]]:
    cap_s = throughput_cap_s(case.cons.min_throughput_rps)
    limits = _stage_limits(case, cap_s if mode == "sum" else math.inf)
    found = []
    for w, times in _link_variants(case, weights, mode == "max"):
        found += subset_dp.solve_segments(
            _capped(w, times, cap_s),
            case.usable,
            case.requires,
            case.cons.max_stages,
            top_k,
            mode=mode,
            limits=limits,
        )
    return sorted(found, key=lambda f: f[0])[:top_k]


def _stage_limits(case: _Case, cap_s: float) -> list[StageLimit]:
    inst = case.inst
    limits = []
    if case.memory_binds:  # the segment DP runs without revisits: a device's need is its stage's
        limits.append(StageLimit(SegmentNeeds(StageMemory.of(inst)), inst.capacity_bytes))
    if math.isfinite(cap_s):  # a stage's compute: its blocks and inner joins (plan/joins.py), no exit returns
        times = link_weights(inst, case.allowed)
        compute = np.where(case.allowed, times.node_w, 0.0)
        limits.append(sum_limit(compute, np.full(inst.num_devices, cap_s), times.end_w))
    return limits


def _dp(case: _Case, top_k: int) -> tuple[str, list[tuple[float, list[int]]]] | None:
    """The DP answer, or None when a constraint needs the MILP."""
    cons, inst = case.cons, case.inst
    local_cap = math.isfinite(throughput_cap_s(cons.min_throughput_rps))
    few = len(case.usable) <= MAX_SUBSET_DEVICES
    if case.objective == "throughput":
        if (
            case.revisits
            or not few
            or any(v is not None for v in (cons.max_latency_s, cons.max_upload_bytes, cons.max_energy_j))
        ):
            return None
        return "throughput-dp", _segments(case, link_weights(inst, case.allowed), top_k, "max")
    other = cons.max_energy_j if case.objective == "latency" else cons.max_latency_s
    if other is not None or cons.max_upload_bytes is not None:
        return None
    weights = (latency_weights if case.objective == "latency" else energy_weights)(inst, case.allowed)
    if case.revisits:
        if case.memory_binds or local_cap:
            return None
        return "latency-dp", latency.solve_revisits(weights, case.requires, cons.max_stages, top_k)
    if not few:
        return None
    if not case.memory_binds and not local_cap:
        return "subset-dp", subset_dp.solve_blocks(
            weights, case.usable, case.requires, cons.max_stages, top_k
        )
    return "segment-dp", _segments(case, weights, top_k, "sum")


def _accept(case: _Case):
    def accept(assignment: list[int]) -> bool:
        return not violations(case.inst, case.cons, assignment, revisits=case.revisits)

    return accept


def _candidates(case: _Case, top_k: int, method: str, time_limit_s: float) -> list[Candidate]:
    if method == "bruteforce":
        ranked = bruteforce.best_plans(case.inst, case.cons, case.objective, top_k, case.revisits)
        return [(list(a), None, "bruteforce") for _, a in ranked]
    found: list[Candidate] = []
    answer = _dp(case, top_k) if method in ("auto", "dp") else None
    if answer is not None:
        name, paths = answer
        found = [(a, None, name) for _, a in paths]
    elif method == "dp":
        raise PlanError(
            f"no DP handles objective {case.objective} with these constraints", "use method 'auto' or 'milp'"
        )
    else:
        spec = spec_for(case.inst, case.cons, case.allowed, case.revisits, case.objective)
        result = solve_milp(spec, top_k, _accept(case), time_limit_s=time_limit_s)
        if result.timed_out and not result.found:
            raise PlanError(
                f"the MILP found no plan within {time_limit_s:g} s",
                "allow more time (--time-limit) or simplify the constraints",
            )
        found = [(a, proof, "milp") for a, proof in result.found]
    if case.objective == "throughput" and found:
        found = _fastest_among_ties(case, found, top_k, method, time_limit_s)
    return found


def _fastest_among_ties(
    case: _Case, found: list[Candidate], top_k: int, method: str, time_limit_s: float
) -> list[Candidate]:
    """Throughput plans in order of (bottleneck, latency), exactly (:mod:`.ties`)."""

    def fastest_under(min_rps: float, count: int) -> list[Candidate]:
        cons = dataclasses.replace(case.cons, min_throughput_rps=min_rps, revisits=case.revisits)
        return _candidates(_case(case.inst, cons, "latency"), count, method, time_limit_s)

    return fastest_among_ties(case.inst, case.cons, found, top_k, fastest_under)


def _finish(
    case: _Case,
    found: list[Candidate],
    top_k: int,
    objective: str | None = None,
    keep_order: bool = False,
) -> list[Plan]:
    label = objective or case.objective
    scored = []
    seen = set()
    for assignment, proof, solver in found:
        key = tuple(assignment)
        m = measure(case.inst, assignment)
        if (
            key in seen
            or m is None
            or violations(case.inst, case.cons, assignment, m, revisits=case.revisits)
        ):
            continue
        seen.add(key)
        scored.append((objective_value(m, case.objective), key, proof, solver))
    if not keep_order:
        scored.sort(key=lambda s: s[0])  # stable: ties keep the solver's order (fastest first)
    return [
        evaluate(case.inst, a, label, rank=i + 1, proof=proof, solver=solver)
        for i, (_, a, proof, solver) in enumerate(scored[:top_k])
    ]


def _pareto(case: _Case, method: str, time_limit_s: float) -> list[Plan]:
    plans: list[Plan] = []
    seconds = (["energy"] if case.inst.has_energy else []) + ["upload"]
    for second in seconds:
        label = f"pareto-{second}"
        if method == "bruteforce":
            front = [
                (list(a), None, "bruteforce")
                for _, _, a in bruteforce.pareto_plans(case.inst, case.cons, second, case.revisits)
            ]
        else:
            front = [
                (a, proof, "milp-pareto")
                for a, proof in pareto_front(
                    case.inst, case.cons, case.allowed, case.revisits, second, time_limit_s=time_limit_s
                )
            ]
        plans += _finish(case, front, len(front), label, keep_order=True)
    return plans


def solve(
    problem: Problem | Instance,
    objective: str = "latency",
    constraints: Constraints | None = None,
    top_k: int = 1,
    *,
    method: str = "auto",
    time_limit_s: float = 60.0,
) -> list[Plan]:
    """The ``top_k`` best plans for ``objective``, best first (rank 1, 2, ...).

    ``objective``: "latency" (seconds per request), "throughput" (smallest
    bottleneck), "energy" (joules of battery devices) or "pareto" (the whole
    latency-energy front, if there are power figures, then the latency-upload
    front; objectives "pareto-energy" / "pareto-upload", ranked along each front).
    ``method``: "auto" (fastest exact algorithm), "dp", "milp" or "bruteforce".
    Raises PlanError for inconsistent input, InfeasibleError naming the
    conflicting constraint when no plan exists.
    """
    if method not in METHODS:
        raise PlanError(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")
    check_number(top_k, "top_k", low=1, high=MAX_TOP_K, whole=True, error=PlanError)
    check_number(time_limit_s, "time_limit_s", low=0, low_open=True, high=MAX_TIME_LIMIT_S, error=PlanError)
    if isinstance(problem, Problem) and problem.configurations:  # one solve per combination of them
        return solve_configurations(problem, objective, lambda one, k: solve(
            one, objective, constraints, k, method=method, time_limit_s=time_limit_s), top_k)
    inst = problem if isinstance(problem, Instance) else prepare(problem)
    case = _case(inst, constraints or Constraints(), objective)
    conflict = local_conflict(case.inst, case.cons, case.allowed, case.revisits)
    if conflict is not None:
        raise conflict
    if objective == "pareto":
        plans = _pareto(case, method, time_limit_s)
    else:
        # throughput candidates already come in (bottleneck, latency) order with ties
        # judged to a relative tolerance; a plain float sort would undo that
        plans = _finish(
            case, _candidates(case, top_k, method, time_limit_s), top_k, keep_order=objective == "throughput"
        )
    if not plans:
        raise infeasible_error(case.inst, case.cons, objective, case.revisits, _feasible_probe)
    return plans


def _feasible_probe(inst: Instance, cons: Constraints, objective: str) -> bool:
    """Does any plan satisfy ``cons`` (used to find the constraint that makes a problem infeasible)?

    Feasibility does not depend on the objective, so the probe minimises latency,
    the cheapest to solve, keeping the objective's default for revisits.
    """
    if cons.revisits is None:
        cons = dataclasses.replace(cons, revisits=objective != "throughput")
    case = _case(inst, cons, "latency")
    if local_conflict(case.inst, case.cons, case.allowed, case.revisits) is not None:
        return False
    return bool(_finish(case, _candidates(case, 1, "auto", 30.0), 1))
