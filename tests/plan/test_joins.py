"""Joins (plan/joins.py): a stage costs its blocks plus the joins at its inner cuts, in every solver
and in the figures a plan reports."""

from __future__ import annotations

import math

import msgspec
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
    # positive: noise; below -(0.1 + 0.1) / 2: the floor (half of each pair, so no stage goes below 0)
    assert inst.join_s[:, 0].tolist() == [0.0, pytest.approx(-0.1)]
    assert inst.join_s[:, 1].tolist() == [0.0, pytest.approx(-0.07)]


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
    assert joins_of(device, [100, 200, 10]) == [pytest.approx(-0.005), None]


def test_without_pairs_a_join_is_one_run_and_the_cut_bytes_at_the_rate_the_whole_model_shows():
    """Blocks 10 + 20 + 30 ms, a trivial run 1 ms, the whole model 50 ms: 60 - 2 x 1 - 50 = 8 ms over
    the 300 + 100 bytes of the inner cuts, 0.02 ms a byte; a pair measured wins over the fit."""
    blocks = (_stats(0.010), _stats(0.020), _stats(0.030))
    device = DeviceProfile(blocks=blocks, run_overhead=_stats(0.001), whole_model=_stats(0.050))
    cuts = [300, 100, 7]
    assert joins_of(device, cuts) == [pytest.approx(-0.001 - 0.006), pytest.approx(-0.001 - 0.002)]
    slower = msgspec.structs.replace(device, whole_model=_stats(0.070))  # no gap to fit: one run only
    assert joins_of(slower, cuts) == [pytest.approx(-0.001)] * 2
    paired = msgspec.structs.replace(device, pairs=(_stats(0.0285), None))
    assert joins_of(paired, cuts) == [pytest.approx(-0.0015), pytest.approx(-0.003)]
    assert joins_of(msgspec.structs.replace(device, run_overhead=None), cuts) == [None, None]
    huge = msgspec.structs.replace(device, run_overhead=_stats(0.5))  # a run costs at most the fastest block
    assert joins_of(huge, cuts) == [pytest.approx(-0.010), pytest.approx(-0.010)]
    fast_whole = msgspec.structs.replace(device, whole_model=_stats(0.001))  # never below half of both blocks
    assert joins_of(fast_whole, cuts) == [pytest.approx(-0.015), pytest.approx(-0.001 - 0.057 / 400 * 100)]
