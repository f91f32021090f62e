"""The trade-off planner (precision per stage, compression per hop, quality budget) reaches the
brute-force optimum over every assignment of blocks to variants, on random small problems."""

from __future__ import annotations

import dataclasses
import itertools
import math

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import Constraints, Link, Messaging, Power, Problem, describe_stages
from splitinfer.plan.tradeoff_solve import brute_force, solve_tradeoffs
from splitinfer.plan.tradeoffs import CompressionOption, PrecisionOption, Tradeoffs

REL = 1e-7
TIMES = st.integers(0, 22).map(lambda i: None if i > 20 else i * 0.0125)
BYTES = st.integers(0, 20).map(lambda i: i * 500)
QUALITY = st.integers(0, 6).map(lambda i: i * 0.002)  # agreement drops: whole samples out of 500


@st.composite
def cases(draw, objective: str):
    num_blocks = draw(st.integers(1, 3))
    num_dev = draw(st.integers(1, 2 if num_blocks == 3 else 3))
    names = tuple(f"d{i}" for i in range(num_dev))
    compute = {n: draw(st.lists(TIMES, min_size=num_blocks, max_size=num_blocks)) for n in names}
    links = [
        Link(a, b, draw(st.sampled_from([1000.0, 4000.0, math.inf])), draw(st.sampled_from([0.0, 0.005])))
        for a in names
        for b in names
        if a != b and draw(st.integers(0, 9)) < 8
    ]
    cuts = num_blocks - 1
    raw = draw(st.lists(BYTES, min_size=cuts, max_size=cuts))
    power = {}
    if objective == "energy":
        power = {
            names[0]: Power(
                busy_w=draw(st.sampled_from([1.0, 4.0])),
                idle_w=0.5,
                radio_w=draw(st.sampled_from([0.0, 3.0])),
                radio_j_per_byte=0.001,
                battery=True,
                # measured watts per block (and a join its two blocks'), at every precision
                busy_w_blocks=draw(st.none() | st.lists(st.sampled_from([0.5, 2.0, 6.0]), min_size=num_blocks,
                                                        max_size=num_blocks).map(tuple)),
            )
        }
    memory = draw(st.booleans())  # plan/memory.py: weights, a peak, in_flight x the raw cut buffers
    per_block = st.lists(st.integers(0, 6).map(lambda i: i * 500), min_size=num_blocks, max_size=num_blocks)
    join = st.sampled_from([0.0, -0.0125, 0.0125, None])
    problem = Problem(
        names,
        compute,
        raw,
        draw(BYTES),
        draw(BYTES),
        links,
        draw(per_block) if memory else None,
        draw(per_block) if memory else None,
        {n: draw(st.none() | st.integers(4, 40).map(lambda i: i * 500)) for n in names} if memory else {},
        power,
        draw(st.sampled_from(names)),
        join_s={n: draw(st.lists(join, min_size=cuts, max_size=cuts)) for n in names if draw(st.booleans())},
        in_flight=draw(st.sampled_from([1, 2])),
        messaging={n: Messaging(draw(st.sampled_from([0.0, 0.0125, 0.1])), draw(st.sampled_from([0.0, 4e-5])))
                   for n in names if draw(st.booleans())},  # a hop within a device
    )
    precision = PrecisionOption(
        "int8",
        {
            n: [None if t is None else t * draw(st.sampled_from([0.25, 0.5, 1.0])) for t in compute[n]]
            for n in names
        },
        draw(st.lists(QUALITY, min_size=num_blocks, max_size=num_blocks)),
    )
    codec = st.lists(st.sampled_from([0.0, 0.0125, 0.025]), min_size=cuts, max_size=cuts)
    one_codec = st.sampled_from([0.0, 0.0125, 0.025])
    compression = CompressionOption(
        "int8",
        [b // 4 for b in raw],
        {n: draw(codec) for n in names},
        {n: draw(codec) for n in names},
        draw(st.lists(QUALITY, min_size=cuts, max_size=cuts)),
        input_bytes=draw(st.none() | st.just(problem.input_bytes // 4)),
        input_compress_s={n: draw(one_codec) for n in names},
        input_decompress_s={n: draw(one_codec) for n in names},
        input_quality_cost=draw(st.sampled_from([0.0, 0.0, 0.01])),
    )
    lossless = CompressionOption(
        "lz4",
        [b // 2 for b in raw],
        {n: draw(codec) for n in names},
        {},
        [0.0] * cuts,
        input_bytes=problem.input_bytes // 2,
        input_compress_s={n: draw(one_codec) for n in names},
    )
    budget = draw(st.none() | QUALITY)
    tradeoffs = Tradeoffs((precision,), (compression, lossless)[: draw(st.integers(1, 2))], budget)
    cons = Constraints(
        max_stages=draw(st.none() | st.integers(1, 2)), revisits=draw(st.none() | st.booleans())
    )
    return problem, tradeoffs, cons


def _check_against_brute_force(problem, tradeoffs, cons, objective):
    try:
        expected = brute_force(problem, tradeoffs, objective, cons, top_k=3)
    except PlanError:
        expected = []
    try:
        got = solve_tradeoffs(problem, tradeoffs, objective, cons, top_k=3)
    except (InfeasibleError, PlanError):
        got = []
    assert bool(got) == bool(expected), (got, expected)
    if not got:
        return
    key = {"throughput": lambda p: p.bottleneck_s, "energy": lambda p: p.energy_j}.get(
        objective, lambda p: p.latency_s
    )
    assert key(got[0]) == pytest.approx(key(expected[0]), rel=REL, abs=1e-12)
    if objective == "throughput":  # ties on the bottleneck go to the faster plan
        assert got[0].latency_s == pytest.approx(expected[0].latency_s, rel=REL, abs=1e-12)
    for g, e in zip(got, expected, strict=False):
        assert key(g) == pytest.approx(key(e), rel=REL, abs=1e-12)
    for plan in got:
        if plan.energy_j is not None:  # the battery device's split adds up to the plan's energy
            assert math.fsum(s.total_j for s in plan.energy_split.values()) == pytest.approx(plan.energy_j)
        budget = tradeoffs.max_quality_drop
        assert budget is None or plan.quality_cost <= budget + 1e-9
        assert plan.latency_s == pytest.approx(plan.compute_s + plan.transfer_s + plan.codec_s, rel=1e-12)


@pytest.mark.parametrize("objective", ["latency", "throughput", "energy"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_milp_matches_brute_force(objective, data):
    problem, tradeoffs, cons = data.draw(cases(objective))
    _check_against_brute_force(problem, tradeoffs, cons, objective)


def _two_devices(budget):
    problem = Problem(
        ("cam", "edge"),
        {"cam": [0.2, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
        [800_000, 200_000],
        600_000,
        4_000,
        [Link("cam", "edge", 1.25e6, 0.005), Link("edge", "cam", 1.25e6, 0.005)],
    )
    int8 = PrecisionOption("int8", {"cam": [0.1, 0.15, 0.2], "edge": [0.01, 0.02, 0.02]}, [0.01, 0.02, 0.005])
    cut = CompressionOption(
        "int8", [200_000, 50_000], {"cam": [0.01, 0.003]}, {"edge": [0.002, 0.001]}, [0.004, 0.003]
    )
    return problem, Tradeoffs((int8,), (cut,), budget)


def test_a_budget_buys_a_compressed_cut_and_no_budget_keeps_fp32():
    problem, tradeoffs = _two_devices(0.01)
    (best,) = solve_tradeoffs(problem, tradeoffs)
    assert describe_stages(best) == "cam[0] =int8=> edge[1-2]"
    assert best.quality_cost == pytest.approx(0.004)
    cut = next(h for h in best.hops if h.kind == "cut")
    assert (cut.compression, cut.num_bytes, cut.codec_s) == ("int8", 200_000, pytest.approx(0.012))
    (strict,) = solve_tradeoffs(problem, _two_devices(0.0)[1])
    assert strict.quality_cost == 0 and not strict.has_tradeoffs
    assert strict.latency_s > best.latency_s


def test_the_pareto_front_trades_latency_for_quality():
    problem, tradeoffs = _two_devices(None)
    front = solve_tradeoffs(problem, tradeoffs, "pareto")
    assert len(front) >= 2
    assert [p.rank for p in front] == list(range(1, len(front) + 1))
    for a, b in itertools.pairwise(front):
        assert a.latency_s < b.latency_s and a.quality_cost > b.quality_cost
    assert front[-1].quality_cost == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (dict(max_quality_drop=-0.1), "max_quality_drop"),
        (dict(max_quality_drop=math.nan), "max_quality_drop"),
        (dict(precisions=(PrecisionOption("fp32", {}, [0, 0, 0]),)), "'fp32'"),
        (dict(precisions=(PrecisionOption("int8", {"gpu": [1, 1, 1]}, [0, 0, 0]),)), "unknown device 'gpu'"),
        (dict(precisions=(PrecisionOption("int8", {}, [0, 0]),)), "quality_cost"),
        (dict(compressions=(CompressionOption("lz4", [1], {}, {}, [0, 0]),)), "cut_bytes"),
        (dict(compressions=(CompressionOption("lz4", [1, 1], {}, {}, [-1, 0]),)), "negative"),
    ],
)
def test_bad_tradeoffs_name_the_field(change, words):
    problem, tradeoffs = _two_devices(0.01)

    with pytest.raises(PlanError, match=words):
        solve_tradeoffs(problem, dataclasses.replace(tradeoffs, **change))


def test_the_budget_is_a_row_of_the_milp_not_a_filter_afterwards():
    # Blocks alternate between two devices (each is fast on every other block): 11 hops, and 2^11
    # ways to compress them, almost all over budget. Rejecting answers one by one would give up long
    # before the optimum (the MILP's re-check stops after 50 rejects).
    num_blocks = 12
    fast, slow = 0.01, 10.0
    compute = {
        "a": [fast if b % 2 == 0 else slow for b in range(num_blocks)],
        "b": [slow if b % 2 == 0 else fast for b in range(num_blocks)],
    }
    links = [Link("a", "b", 1e6, 0.0), Link("b", "a", 1e6, 0.0)]
    problem = Problem(("a", "b"), compute, [100_000 + b for b in range(num_blocks - 1)], 100, 100, links)
    cut = CompressionOption("int8", [25_000] * (num_blocks - 1), {}, {}, [0.01] * (num_blocks - 1))
    (best,) = solve_tradeoffs(problem, Tradeoffs((), (cut,), 0.025))
    compressed = [h for h in best.hops if h.compression == "int8"]
    assert len(compressed) == 2 and best.quality_cost == pytest.approx(0.02)
    assert {h.num_bytes for h in best.hops if h.kind == "cut"} == {
        25_000,
        *(100_000 + b for b in range(9)),
    }  # the two largest


def test_an_excluded_plan_is_never_chosen_again():
    problem, tradeoffs = _two_devices(0.01)
    (best,) = solve_tradeoffs(problem, tradeoffs)
    again = dataclasses.replace(tradeoffs, excluded={describe_stages(best)})
    (second,) = solve_tradeoffs(problem, again)
    assert describe_stages(second) != describe_stages(best)
    assert second.latency_s >= best.latency_s
    assert describe_stages(brute_force(problem, again)[0]) == describe_stages(second)


def _upload_option(quality_cost):
    return CompressionOption(
        "int8",
        [200_000, 50_000],
        {"cam": [0.01, 0.003]},
        {"edge": [0.002, 0.001]},
        [0.004, 0.003],
        input_bytes=150_000,
        input_compress_s={"cam": 0.01},
        input_decompress_s={"edge": 0.002},
        input_quality_cost=quality_cost,
    )


def test_the_upload_is_compressed_when_that_costs_no_quality():
    problem, tradeoffs = _two_devices(0.01)
    free = dataclasses.replace(tradeoffs, compressions=(_upload_option(0.0),))
    (best,) = solve_tradeoffs(problem, free)
    # by hand: 0.005 + 150 kB / 1.25 MB/s + 0.012 codec = 0.137 s up, 0.09 s on edge, 0.0082 s back
    assert describe_stages(best) == "cam =int8=> edge[0-2]"
    upload = next(h for h in best.hops if h.kind == "upload")
    assert (upload.compression, upload.num_bytes) == ("int8", 150_000)
    assert upload.transfer_s == pytest.approx(0.125) and upload.codec_s == pytest.approx(0.012)
    assert best.latency_s == pytest.approx(0.137 + 0.09 + 0.005 + 4_000 / 1.25e6)
    assert best.quality_cost == 0.0 and best.upload_bytes == 150_000
    # the link carries 0.125 s per request; cam compresses for 0.01 s, edge computes for 0.092 s
    assert best.bottleneck_s == pytest.approx(0.125)
    (through,) = solve_tradeoffs(problem, free, "throughput")
    assert describe_stages(through) == "cam =int8=> edge[0-2]"


def test_an_upload_compression_that_costs_quality_is_not_used():
    problem, tradeoffs = _two_devices(0.01)
    costly = dataclasses.replace(tradeoffs, compressions=(_upload_option(0.001),))
    (best,) = solve_tradeoffs(problem, costly)
    assert all(h.compression == "none" for h in best.hops if h.kind == "upload")
    assert describe_stages(best) == "cam[0] =int8=> edge[1-2]"
