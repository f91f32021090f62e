"""Joins (plan/joins.py): a stage costs its blocks plus the joins at its inner cuts, in every solver
and in the figures a plan reports."""

from __future__ import annotations

import math

import pytest

from splitinfer.errors import PlanError
from splitinfer.plan import describe_stages
from splitinfer.plan.problem import Link, Problem, prepare
from splitinfer.plan.solve import solve
from splitinfer.profile.problem import joins_of
from splitinfer.profile.schema import DeviceProfile, Stats


def _problem(**joins) -> Problem:
    # free links: only compute matters
    links = [Link("a", "b", math.inf, 0.0), Link("b", "a", math.inf, 0.0)]
    return Problem(
        ("a", "b"),
        {"a": [0.1, 0.1, 0.1], "b": [0.2, 0.01, 0.13]},
        [100, 100],
        100,
        100,
        links,
        source="a",
        sink=None,
        join_s=joins,
    )


def test_a_stage_costs_its_blocks_and_its_inner_joins():
    problem = _problem(a=[-0.05, -0.05])
    (plan,) = solve(problem, "latency", method="dp")
    assert describe_stages(plan) == "a[0-2]"
    assert plan.stages[0].compute_s == pytest.approx(0.3 - 0.1)
    assert plan.latency_s == pytest.approx(0.2)
    (milp,) = solve(problem, "latency", method="milp")
    assert milp.latency_s == pytest.approx(0.2)


@pytest.mark.parametrize("method", ["dp", "milp", "bruteforce"])
def test_throughput_counts_the_join_a_stage_gives_back_on_its_device(method):
    # a[0-1] -> b[2]: a is busy 0.1 + 0.1 - 0.05 = 0.15 (its last join is not made), b 0.13;
    # a[0] -> b[1-2]: a 0.1, b 0.14. Without the join given back, the first would look like 0.13.
    (plan,) = solve(_problem(a=[-0.05, -0.05]), "throughput", method=method)
    assert describe_stages(plan) == "a[0] -> b[1-2]"
    assert plan.bottleneck_s == pytest.approx(0.14)


def test_joins_are_kept_within_what_a_pair_can_save_and_never_add():
    inst = prepare(_problem(a=[0.02, -5.0], b=[None, -0.1]))
    assert inst.join_s[:, 0].tolist() == [0.0, -0.2]  # positive: noise; below -(0.1 + 0.1): the floor
    assert inst.join_s[:, 1].tolist() == [0.0, -0.1]


@pytest.mark.parametrize(
    ("joins", "words"),
    [
        ({"c": [0, 0]}, "unknown device 'c'"),
        ({"a": [0]}, "1 entries for 2 cuts"),
        ({"a": [0, math.nan]}, "finite seconds"),
    ],
)
def test_bad_joins_name_the_field(joins, words):
    with pytest.raises(PlanError, match=words):
        prepare(_problem(**joins))


def _stats(median: float) -> Stats:
    return Stats(median_s=median, mean_s=median, p10_s=median, p90_s=median, std_s=0.0, n=5)


def test_the_profile_pairs_give_the_joins():
    device = DeviceProfile(blocks=(_stats(0.01), _stats(0.02), None), pairs=(_stats(0.025), None))
    assert joins_of(device) == [pytest.approx(-0.005), None]
