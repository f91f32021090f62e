"""Every solver reaches the brute-force optimum, and top-k lists match, on random small problems."""

from __future__ import annotations

import itertools
import math

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import Constraints, Link, Messaging, Power, Problem, prepare, solve
from splitinfer.plan.bruteforce import best_plans, feasible_plans, pareto_plans
from splitinfer.plan.exits import ExitMix
from splitinfer.plan.pareto import ENERGY_STEP
from splitinfer.plan.sweep import sweep_latency_budgets

REL = 1e-9
EXAMPLES = 300

# Coarse grids keep distinct plans apart by more than the MILP's tolerances
# while still producing many exact ties (zeros, equal times).
TIMES = st.integers(0, 44).map(lambda i: None if i > 40 else i * 0.0125)  # about 1 in 11 cannot run
BYTES = st.integers(0, 20).map(lambda i: i * 500)
# Memory (plan/memory.py): a block's weights or peak; a device's capacity, on the scale of the cut
# buffers a stage holds too (``in_flight`` x bytes entering and leaving it).
MEMORY = st.integers(0, 6).map(lambda i: i * 500)
CAPACITY = st.integers(4, 60).map(lambda i: i * 500)


# Measured watts per block (Power.busy_w_blocks): each block its own, a join its two blocks'.
BLOCK_WATTS = st.sampled_from([0.0, 1.0, 2.5, 4.0])


@st.composite
def problems(draw, energy: bool = False, block_watts: bool = False) -> Problem:
    num_blocks = draw(st.integers(1, 6))
    num_dev = draw(st.integers(1, 4))
    names = tuple(f"d{i}" for i in range(num_dev))
    compute = {n: draw(st.lists(TIMES, min_size=num_blocks, max_size=num_blocks)) for n in names}
    links = []
    for a in names:
        for b in names:
            if a != b and draw(st.integers(0, 9)) < 8:
                links.append(
                    Link(
                        a,
                        b,
                        draw(st.sampled_from([1000.0, 4000.0, 16000.0, math.inf])),
                        draw(st.sampled_from([0.0, 0.005, 0.02])),
                    )
                )
    per_block = st.none() | st.lists(MEMORY, min_size=num_blocks, max_size=num_blocks)
    memory = draw(st.booleans())
    weights, activations = (draw(per_block), draw(per_block)) if memory else (None, None)
    capacity = {n: draw(st.none() | CAPACITY) for n in names} if memory else {}
    power = {}
    if energy:
        for n in names:
            if draw(st.booleans()) or n == names[0]:
                power[n] = Power(
                    busy_w=draw(st.sampled_from([0.0, 1.0, 4.0])),
                    idle_w=draw(st.sampled_from([0.0, 0.5, 2.0])),
                    radio_w=draw(st.sampled_from([0.0, 1.5, 3.0])),
                    radio_j_per_byte=draw(st.sampled_from([0.0, 0.001])),
                    battery=n == names[0] or draw(st.booleans()),
                    busy_w_blocks=tuple(draw(st.lists(BLOCK_WATTS, min_size=num_blocks, max_size=num_blocks)))
                    if block_watts or draw(st.booleans()) else None,
                )
    source = draw(st.sampled_from(names))
    sink = draw(st.sampled_from(["source", "none", *names]))
    extra = {} if sink == "source" else {"sink": None if sink == "none" else sink}
    # joins (plan/joins.py): what a stage saves (or loses) at an inner cut, on some devices
    join = st.sampled_from([0.0, -0.0125, -0.025, 0.0125, None])
    extra["join_s"] = {n: draw(st.lists(join, min_size=num_blocks - 1, max_size=num_blocks - 1))
                       for n in names if draw(st.booleans())}
    extra["in_flight"] = draw(st.sampled_from([1, 1, 2]))
    # hops within a device (the upload on the source, the return on the sink) cost its messaging
    hop = st.builds(Messaging, st.sampled_from([0.0, 0.0125, 0.1]), st.sampled_from([0.0, 1e-5, 4e-5]))
    extra["messaging"] = {n: draw(hop) for n in names if draw(st.booleans())}
    # early exits (plan/exits.py): some blocks end an exit taken by a share of the requests
    if num_blocks >= 2 and draw(st.booleans()):
        blocks = draw(st.lists(st.integers(0, num_blocks - 2), min_size=1, max_size=2, unique=True))
        shares = [draw(st.sampled_from([0.0, 0.25, 0.5])) for _ in blocks]
        extra["exits"] = tuple(ExitMix(f"exit{b}", b, p, draw(BYTES))
                               for b, p in zip(blocks, shares, strict=True))
    return Problem(
        names,
        compute,
        draw(st.lists(BYTES, min_size=num_blocks - 1, max_size=num_blocks - 1)),
        draw(BYTES),
        draw(BYTES),
        links,
        weights,
        activations,
        capacity,
        power,
        source,
        **extra,
    )


@st.composite
def constraints(draw, problem: Problem, energy: bool = False) -> Constraints:
    names = problem.devices
    blocks = st.integers(0, problem.num_blocks - 1)
    pair = st.tuples(blocks, st.sampled_from(names))
    sparse = st.integers(0, 9)

    def maybe(strategy):
        return draw(strategy) if draw(sparse) < 2 else None

    return Constraints(
        pins=tuple(draw(st.lists(pair, max_size=2))) if draw(sparse) < 2 else (),
        forbids=tuple(draw(st.lists(pair, max_size=3))) if draw(sparse) < 4 else (),
        excludes=tuple(draw(st.lists(st.sampled_from(names), max_size=1))) if draw(sparse) < 2 else (),
        requires=tuple(draw(st.lists(st.sampled_from(names), max_size=2))) if draw(sparse) < 2 else (),
        max_stages=maybe(st.integers(1, 4)),
        revisits=draw(st.sampled_from([None, True, False])),
        private_blocks=draw(st.integers(0, min(2, problem.num_blocks))) if draw(sparse) < 2 else 0,
        max_latency_s=maybe(st.integers(4, 60).map(lambda i: i * 0.05)),
        min_throughput_rps=maybe(st.sampled_from([0.5, 1.0, 2.0])),
        max_upload_bytes=maybe(st.integers(0, 40).map(lambda i: i * 500)),
        max_energy_j=maybe(st.integers(0, 40).map(lambda i: i * 0.1)) if energy else None,
    )


@st.composite
def cases(draw, energy: bool = False, block_watts: bool = False):
    problem = draw(problems(energy, block_watts))
    return problem, draw(constraints(problem, energy)), draw(st.integers(1, 4))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def _same(a: float | tuple, b: float | tuple) -> bool:
    if isinstance(a, tuple):
        return all(_close(x, y) for x, y in zip(a, b, strict=True))
    return _close(a, b)


def _solve_values(problem, objective, cons, k, method, solvers: set[str]) -> list[float] | None:
    """Objective values of a solver's plans ([] if infeasible, None if the method does not apply)."""
    try:
        plans = solve(problem, objective, cons, k, method=method)
    except InfeasibleError:
        return []
    except PlanError as e:
        if method == "dp" and "no DP handles" in e.problem:
            return None
        raise
    assert [p.rank for p in plans] == list(range(1, len(plans) + 1))
    if method == "auto":
        solvers.update(p.solver for p in plans)
    if objective == "throughput":  # ties in the bottleneck go to the faster plan
        return [(p.bottleneck_s, p.latency_s) for p in plans]
    return [getattr(p, {"latency": "latency_s", "energy": "energy_j"}[objective]) for p in plans]


def _throughput_order(inst, cons, k, revisits) -> list[tuple[float, float]]:
    """Brute force: the k best (bottleneck, latency) pairs, bottlenecks equal within REL counted equal."""
    pairs = sorted((m.bottleneck_s, m.latency_s) for _, m in feasible_plans(inst, cons, revisits))
    levelled, level = [], None
    for b, lat in pairs:
        if level is None or not _close(b, level):
            level = b
        levelled.append((level, b, lat))
    return [(b, lat) for _, b, lat in sorted(levelled, key=lambda t: (t[0], t[2]))][:k]


def _check_scalar(problem: Problem, cons: Constraints, k: int, objective: str) -> None:
    inst = prepare(problem)
    revisits = cons.revisits if cons.revisits is not None else objective != "throughput"
    if objective == "throughput":
        expected = _throughput_order(inst, cons, k, revisits)
    else:
        expected = [v for v, _ in best_plans(inst, cons, objective, k, revisits)]
    solvers = set()
    for method in ("auto", "dp", "milp"):
        if method == "milp" and solvers == {"milp"}:
            continue  # auto already was the MILP
        got = _solve_values(problem, objective, cons, k, method, solvers)
        if got is None:
            continue
        assert len(got) == len(expected), (method, got, expected)
        assert all(_same(g, e) for g, e in zip(got, expected, strict=True)), (method, got, expected)


SETTINGS = settings(
    max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@SETTINGS
@given(cases())
def test_latency_matches_bruteforce(case):
    _check_scalar(*case, "latency")


@SETTINGS
@given(cases())
def test_throughput_matches_bruteforce(case):
    _check_scalar(*case, "throughput")


@SETTINGS
@given(cases(energy=True))
def test_energy_matches_bruteforce(case):
    _check_scalar(*case, "energy")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cases(energy=True, block_watts=True))
def test_energy_with_watts_per_block_matches_bruteforce(case):
    """Every battery device draws its own watts per block (a join its two blocks'): the DP, the MILP and
    brute force (cost.measure) agree, each plan's split adds up to its energy, and no device's compute
    costs less than nothing, whatever its joins save."""
    problem, cons, k = case
    _check_scalar(problem, cons, k, "energy")
    try:
        plans = solve(problem, "energy", cons, k)
    except InfeasibleError:
        return
    for plan in plans:
        assert _close(math.fsum(s.total_j for s in plan.energy_split.values()), plan.energy_j)
        assert all(s.compute_j >= -1e-12 for s in plan.energy_split.values()), plan.energy_split


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems(energy=True), st.lists(st.integers(1, 60).map(lambda i: i * 0.025), min_size=1, max_size=6))
def test_latency_budget_sweep_matches_bruteforce(problem, budgets):
    """At each budget the sweep's plan has the least energy of every plan within it (brute force), a budget
    no plan meets is kept and marked, and the energy never rises as the budget grows."""
    inst = prepare(problem)
    every = feasible_plans(inst, Constraints(), True)
    points = sweep_latency_budgets(
        lambda b: solve(problem, "energy", Constraints(max_latency_s=b))[0], budgets)
    assert [p.budget_s for p in points] == sorted(budgets)
    for p in points:
        within = [m.energy_j for _, m in every if m.latency_s <= p.budget_s * (1 + REL)]
        assert p.feasible == bool(within), (p, within)
        if within:
            assert _close(p.energy_j, min(within)) and p.latency_s <= p.budget_s * (1 + REL)
            assert _close(p.compute_j + p.communication_j + p.idle_j, p.energy_j)
        else:
            assert p.plan is None and p.energy_j is None and p.stages == ""
    energies = [p.energy_j for p in points if p.feasible]
    assert all(b <= a + REL * max(1.0, abs(a)) for a, b in itertools.pairwise(energies))


def _front_ok(
    got: list[tuple[float, float]], expected: list[tuple[float, float]], feasible: list[tuple[float, float]]
) -> None:
    """Fronts agree up to REL in latency and the solver's energy step in the second figure."""

    def tol(x: float, rel: float = REL) -> float:
        return rel * max(1.0, abs(x))

    step = ENERGY_STEP
    for lat, other in got:  # nothing feasible is clearly better on both axes
        assert not any(
            (q_lat < lat - tol(lat) and q_other <= other + tol(other, step))
            or (q_lat <= lat + tol(lat) and q_other < other - tol(other, step))
            for q_lat, q_other in feasible
        ), (lat, other)
    for q_lat, q_other in expected:  # every point of the exact front is matched
        covered = [lat <= q_lat + tol(q_lat) and other <= q_other + tol(q_other, step) for lat, other in got]
        assert any(covered), (q_lat, q_other, got)


@SETTINGS
@given(cases(energy=True))
def test_pareto_fronts_match_bruteforce(case):
    problem, cons, _ = case
    inst = prepare(problem)
    revisits = cons.revisits if cons.revisits is not None else True
    try:
        plans = solve(problem, "pareto", cons)
    except InfeasibleError:
        plans = []
    every = feasible_plans(inst, cons, revisits)
    for second, attr in (("energy", "energy_j"), ("upload", "upload_bytes")):
        exact = pareto_plans(inst, cons, second, revisits, every)
        got = [(p.latency_s, float(getattr(p, attr))) for p in plans if p.objective == f"pareto-{second}"]
        feasible = [
            (m.latency_s, float(m.energy_j if second == "energy" else m.upload_bytes)) for _, m in every
        ]
        _front_ok(got, [(lat, other) for lat, other, _ in exact], feasible)
        lats = [lat for lat, _ in got]
        assert lats == sorted(lats)


@st.composite
def segment_cases(draw):
    """No revisits with memory limits (and sometimes a throughput bound): the stage-by-stage DP."""
    problem = draw(problems(energy=draw(st.booleans())))
    num_blocks = problem.num_blocks
    weights = draw(st.lists(MEMORY, min_size=num_blocks, max_size=num_blocks))
    activations = draw(st.lists(MEMORY, min_size=num_blocks, max_size=num_blocks))
    capacity = {n: draw(st.integers(6, 10 + 12 * num_blocks).map(lambda i: i * 500)) for n in problem.devices}
    problem = Problem(
        problem.devices,
        problem.compute_s,
        problem.cut_bytes,
        problem.input_bytes,
        problem.output_bytes,
        problem.links,
        weights,
        activations,
        capacity,
        problem.power,
        problem.source,
        draw(st.sampled_from([None, problem.source])),
        problem.join_s,
        problem.in_flight,
    )
    cons = Constraints(
        revisits=False,
        max_stages=draw(st.none() | st.integers(1, 3)),
        requires=tuple(draw(st.lists(st.sampled_from(problem.devices), max_size=1))),
        min_throughput_rps=draw(st.none() | st.sampled_from([1.0, 2.0])),
    )
    objective = draw(st.sampled_from(["latency", "throughput"] + (["energy"] if problem.power else [])))
    return problem, cons, draw(st.integers(1, 4)), objective


@SETTINGS
@given(segment_cases())
def test_stage_by_stage_dp_matches_bruteforce(case):
    problem, cons, k, objective = case
    _check_scalar(problem, cons, k, objective)
