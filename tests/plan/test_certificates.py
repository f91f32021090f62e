"""Every plan says how it is known to be optimal: the bound, gap and certificate each solver gives it,
a MILP stopped by its time limit, and plan.json files written before plans had a bound."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from splitinfer.errors import PlanError
from splitinfer.plan import (
    Constraints,
    Link,
    Plan,
    Power,
    Problem,
    Stage,
    plan_from_json,
    plan_to_json,
    prepare,
    solve,
)
from splitinfer.plan.cost import measure, objective_value
from splitinfer.plan.proof import Proof, by_rank, certify
from splitinfer.plan.ties import fastest_among_ties
from splitinfer.plan.tradeoff_solve import brute_force, solve_tradeoffs
from splitinfer.plan.tradeoffs import CompressionOption, PrecisionOption, Tradeoffs

EXACT_DP = ("exact (dynamic programming)", "exact DP")
EXHAUSTIVE = ("exhaustive (brute force)", "exhaustive")
OPTIMAL = ("optimal (MILP, gap 0.00%)", "MILP gap 0.00%")
# The optimum of the hard instances below, from solves run to the end (about 40 s each): every bound a
# stopped solve reports must be at most this.
HARD_OPTIMUM_S = 0.044308354311559
HARD_TRADEOFF_OPTIMUM_S = 0.03209905069889898


def _problem(num_blocks: int, num_dev: int, seed: int, *, memory: bool = False,
             power: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    names = tuple(f"d{i}" for i in range(num_dev))
    speed = rng.uniform(0.5, 8, num_dev)
    base = rng.uniform(0.001, 0.02, num_blocks)
    links = [Link(a, b, float(rng.uniform(1e6, 5e7)), float(rng.uniform(0, 0.01)))
             for a in names for b in names if a != b]
    extra = {}
    if memory:
        extra |= {"weight_bytes": [1_000_000] * num_blocks,  # and the cut buffers: plan/memory.py
                  "capacity_bytes": {n: (num_blocks // 2 + 4) * 1_000_000 for n in names}}
    if power:
        extra |= {"power": {names[0]: Power(busy_w=4.0, idle_w=1.0, radio_w=2.0, battery=True)}}
    return Problem(names, {n: (base * s).tolist() for n, s in zip(names, speed, strict=True)},
                   rng.integers(1000, 2_000_000, num_blocks - 1).tolist(), 150_000, 4_000, links, **extra)


def _assert_proven(plans: list[Plan], objective: str, words: tuple[str, str], gap: float | None) -> None:
    for p in plans:
        assert p.bound == objective_value(p, objective), p  # exactly: the value is proven
        assert p.gap == gap
        assert (p.certificate, p.certificate_label) == words


@pytest.mark.parametrize(
    ("objective", "cons", "memory", "method", "solver"),
    [
        ("latency", Constraints(), False, "auto", "latency-dp"),
        ("latency", Constraints(revisits=False), False, "auto", "subset-dp"),
        ("latency", Constraints(revisits=False), True, "auto", "segment-dp"),
        ("throughput", Constraints(), False, "auto", "throughput-dp"),
        ("energy", Constraints(revisits=False), False, "auto", "subset-dp"),
        ("latency", Constraints(), True, "bruteforce", "bruteforce"),
        ("throughput", Constraints(), False, "bruteforce", "bruteforce"),
    ],
)
def test_exact_methods_prove_every_rank_with_its_value_as_bound(objective, cons, memory, method, solver):
    plans = solve(_problem(6, 4, seed=3, memory=memory, power=True), objective, cons, top_k=3, method=method)
    assert len(plans) == 3 and {p.solver for p in plans} == {solver}
    _assert_proven(plans, objective, EXHAUSTIVE if solver == "bruteforce" else EXACT_DP, None)


@pytest.mark.parametrize(("objective", "cons"), [("latency", Constraints()), ("throughput", Constraints()),
                                                 ("energy", Constraints(revisits=False))])
def test_a_milp_that_ends_proves_the_kth_best_value(objective, cons):
    problem = _problem(10, 4, seed=5, power=True)
    milp = solve(problem, objective, cons, top_k=3, method="milp")
    assert {p.solver for p in milp} == {"milp"}
    _assert_proven(milp, objective, OPTIMAL, 0.0)
    exact = solve(problem, objective, cons, top_k=3)  # the k-th best values, by DP
    assert [p.bound for p in milp] == pytest.approx([p.bound for p in exact], rel=1e-9)


def test_each_pareto_point_is_proven_fastest_for_its_budget():
    problem = _problem(5, 3, seed=7, power=True)
    front = solve(problem, "pareto")
    assert {p.solver for p in front} == {"milp-pareto"} and {p.objective for p in front} == {
        "pareto-energy", "pareto-upload"}
    for p in front:
        assert p.bound == p.latency_s and p.gap == 0.0 and p.certificate == OPTIMAL[0]
    reference = solve(problem, "pareto", method="bruteforce")
    _assert_proven(reference, "pareto", EXHAUSTIVE, None)


def _tradeoffs_problem() -> tuple[Problem, Tradeoffs]:
    links = [Link("cam", "edge", 1.25e6, 0.005), Link("edge", "cam", 1.25e6, 0.005)]
    problem = Problem(("cam", "edge"), {"cam": [0.2, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
                      [800_000, 200_000], 600_000, 4_000, links)
    int8 = PrecisionOption("int8", {"cam": [0.1, 0.15, 0.2], "edge": [0.01, 0.02, 0.02]}, [0.01, 0.02, 0.005])
    cut = CompressionOption("int8", [200_000, 50_000], {"cam": [0.01, 0.003]}, {"edge": [0.002, 0.001]},
                            [0.004, 0.003])
    return problem, Tradeoffs((int8,), (cut,), 0.02)


@pytest.mark.parametrize("objective", ["latency", "throughput", "pareto"])
def test_trade_off_plans_are_proven_on_the_figure_their_objective_minimises(objective):
    problem, tradeoffs = _tradeoffs_problem()
    top_k = 1 if objective == "pareto" else 3
    plans = solve_tradeoffs(problem, tradeoffs, objective, top_k=top_k)
    assert {p.solver for p in plans} == {"milp-tradeoffs"} and len(plans) >= 2
    figure = "bottleneck_s" if objective == "throughput" else "latency_s"  # a front: the fastest per budget
    for p in plans:
        assert p.bound == getattr(p, figure) and p.gap == 0.0 and p.certificate == OPTIMAL[0]
    if objective != "pareto":
        reference = brute_force(problem, tradeoffs, objective, top_k=top_k)
        _assert_proven(reference, objective, EXHAUSTIVE, None)
        assert [p.bound for p in plans] == pytest.approx([p.bound for p in reference], rel=1e-9)


def _assert_stopped(plans: list[Plan], optimum_s: float) -> None:
    for p in plans:
        assert p.gap is not None and p.gap > 0, p
        assert p.bound is not None and p.bound < p.bottleneck_s
        assert p.bound <= optimum_s * (1 + 1e-9)  # a lower bound on every plan, the best included
        assert (p.bottleneck_s - p.bound) / p.bottleneck_s == pytest.approx(p.gap, rel=1e-12)
        assert p.certificate == f"within {p.gap:.2%} (MILP stopped by the time limit)"
        assert p.certificate_label == f"MILP gap {p.gap:.2%} (time limit)"


def test_a_milp_stopped_by_the_time_limit_reports_its_bound_and_gap():
    # Throughput with revisits on 14 devices: the MILP, and far from proven within a second.
    hard = _problem(30, 14, seed=0)
    try:
        plans = solve(hard, "throughput", Constraints(revisits=True), top_k=2, time_limit_s=1.0)
    except PlanError as e:  # no incumbent yet on a slow machine: said so, not a plan without proof
        assert "the MILP found no plan within 1 s" in str(e)
        return
    assert {p.solver for p in plans} == {"milp"}
    _assert_stopped(plans, HARD_OPTIMUM_S)


def test_a_trade_off_milp_stopped_by_the_time_limit_keeps_the_throughput_bound():
    # The ties are re-ranked by a latency solve: its proofs are about latency, and must not be used.
    problem = _problem(12, 4, seed=0)
    rng = np.random.default_rng(1)
    compute = {d: [t * 0.5 for t in times] for d, times in problem.compute_s.items()}
    int8 = PrecisionOption("int8", compute, rng.uniform(0, 0.003, 12).tolist())
    codec_s = {d: [0.001] * 11 for d in problem.devices}
    cut = CompressionOption("int8", [c // 4 for c in problem.cut_bytes], codec_s, codec_s,
                            rng.uniform(0, 0.003, 11).tolist())
    try:
        plans = solve_tradeoffs(problem, Tradeoffs((int8,), (cut,), 0.01), "throughput",
                                Constraints(revisits=True), top_k=2, time_limit_s=1.0)
    except PlanError as e:
        assert "the MILP found no trade-off plan within 1 s" in str(e)
        return
    _assert_stopped(plans, HARD_TRADEOFF_OPTIMUM_S)


def test_throughput_ties_keep_the_throughput_solves_proofs_by_rank():
    # The upload dominates every plan's bottleneck, so all tie; the tie-break's latency proofs must
    # not replace what the throughput solve proved about each rank's bottleneck.
    links = [Link("cam", e, 2.5e6, 0.005) for e in ("e1", "e2")] + [Link("e1", "e2", 1e9, 0.0),
                                                                     Link("e2", "e1", 1e9, 0.0)]
    edge = [0.02, 0.03, 0.04]
    problem = Problem(("cam", "e1", "e2"), {"cam": [None] * 3, "e1": edge, "e2": edge}, [1000, 1000],
                      10_000_000, 4_000, links, sink=None)
    inst = prepare(problem)
    found = [([1, 1, 1], Proof(False, 3.0), "milp"), ([2, 2, 2], Proof(False, 3.5), "milp")]

    def fastest_under(min_rps: float, count: int) -> list:
        assert min_rps == pytest.approx(1 / measure(inst, [1, 1, 1]).bottleneck_s)
        return [([1, 2, 2], Proof(True, 0.1), "milp"), ([2, 1, 1], Proof(True, 0.2), "milp")][:count]

    ranked = fastest_among_ties(inst, Constraints(), found, 3, fastest_under)
    assert [a for a, _, _ in ranked] == [[1, 2, 2], [2, 1, 1], [1, 1, 1]]
    assert [proof for _, proof, _ in ranked] == [Proof(False, 3.0), Proof(False, 3.5), Proof(False, 3.5)]


def test_certify_turns_what_a_solve_proved_into_bound_and_gap():
    assert certify(2.0, None) == (2.0, None)  # exact methods have no gap
    assert certify(2.0, Proof(True, 1.9999999)) == (2.0, 0.0)
    assert certify(2.0, Proof(False, 1.5)) == (1.5, 0.25)
    assert certify(2.0, Proof(False, 2.0 + 1e-15)) == (2.0, 0.0)  # the model's last bits: never above
    assert certify(2.0, Proof(False, None)) == (None, None)
    assert certify(2.0, Proof(False, float("-inf"))) == (None, None)
    assert certify(0.0, Proof(False, -1.0)) == (-1.0, None)


def test_proofs_follow_ranks_and_beyond_the_solve_keep_only_the_bound():
    proofs = [Proof(True, 1.0), Proof(False, 1.5)]
    assert by_rank(proofs, 3) == [Proof(True, 1.0), Proof(False, 1.5), Proof(False, 1.5)]
    assert by_rank([Proof(True, 1.0)], 2) == [Proof(True, 1.0), Proof(False, 1.0)]
    assert by_rank([None, None], 2) == [None, None]


PLAN = Plan("latency", (Stage("a", 0, 1, 0.25),), (), 0.25, 0.25, 4.0, 0, 0, solver="milp")


@pytest.mark.parametrize(
    ("solver", "gap", "words"),
    [
        ("milp", 0.013, ("within 1.30% (MILP stopped by the time limit)", "MILP gap 1.30% (time limit)")),
        ("milp-tradeoffs", 1e-7,
         ("within <0.01% (MILP stopped by the time limit)", "MILP gap <0.01% (time limit)")),
        ("milp-pareto", 0.0, OPTIMAL),
        ("milp", None, ("heuristic (MILP stopped by the time limit without a bound)", "heuristic")),
        ("segment-dp", None, EXACT_DP),
        ("bruteforce", None, EXHAUSTIVE),
        ("", None, ("heuristic", "heuristic")),
    ],
)
def test_the_certificate_in_words(solver, gap, words):
    plan = msgspec.structs.replace(PLAN, solver=solver, gap=gap)
    assert (plan.certificate, plan.certificate_label) == words


def test_plan_json_carries_the_bound_and_files_written_before_it_still_load():
    problem = _problem(6, 3, seed=2)
    plans = solve(problem, "latency", top_k=2, method="milp") + solve(problem, "latency", top_k=1)
    text = plan_to_json(plans)
    doc = json.loads(text)
    assert doc["schema"] == 2 and [p["bound"] for p in doc["plans"]] == [p.latency_s for p in plans]
    assert plan_from_json(text) == plans
    for p in doc["plans"]:
        del p["bound"]
    old = plan_from_json(json.dumps(doc))
    assert [p.bound for p in old] == [None] * 3
    assert [p.certificate for p in old] == [OPTIMAL[0], OPTIMAL[0], EXACT_DP[0]]  # from solver and gap
