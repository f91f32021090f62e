"""The cost model by hand, plan.json, input checks, infeasibility messages, solver agreement."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from splitinfer.errors import InfeasibleError, PlanError, SchemaError
from splitinfer.plan import (
    Constraints,
    Link,
    Messaging,
    Power,
    Problem,
    describe_stages,
    plan_from_json,
    plan_to_json,
    prepare,
    solve,
)
from splitinfer.plan.constraint_checks import allowed_matrix
from splitinfer.plan.cost import evaluate, measure
from splitinfer.plan.kbest import merge_sorted
from splitinfer.plan.weights import energy_weights, upload_weights

BW, LAT = 2.5e6, 0.005


def camera_edge(**changes) -> Problem:
    base = Problem(
        devices=("cam", "edge"),
        compute_s={"cam": [0.2, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
        cut_bytes=[800_000, 200_000],
        input_bytes=150_000,
        output_bytes=4_000,
        links=[Link("cam", "edge", BW, LAT), Link("edge", "cam", BW, LAT)],
        power={"cam": Power(busy_w=2.0, idle_w=1.0, radio_w=3.0, battery=True)},
    )
    return dataclasses.replace(base, **changes)


def test_cost_model_by_hand():
    inst = prepare(camera_edge())
    plan = evaluate(inst, [0, 1, 1], "latency")
    cut = LAT + 800_000 / BW
    back = LAT + 4_000 / BW
    assert describe_stages(plan) == "cam[0] -> edge[1-2]"
    assert [(h.kind, h.src, h.dst, h.num_bytes) for h in plan.hops] == [
        ("cut", "cam", "edge", 800_000),
        ("return", "edge", "cam", 4_000),
    ]
    assert plan.latency_s == pytest.approx(0.2 + 0.03 + 0.04 + cut + back, rel=1e-15)
    assert plan.bottleneck_s == pytest.approx(cut) and plan.throughput_rps == pytest.approx(1 / cut)
    assert plan.bytes_sent == 804_000 and plan.upload_bytes == 800_000
    busy, radio = 0.2, cut + back
    expected = 2.0 * busy + 3.0 * radio + 1.0 * (plan.latency_s - busy - radio)
    assert plan.energy_j == pytest.approx(expected, rel=1e-12)
    assert plan.compute_s == pytest.approx(0.27) and plan.transfer_s == pytest.approx(radio)
    assert plan.assignment == ("cam", "edge", "edge")


def test_upload_when_the_first_stage_is_elsewhere_and_no_sink():
    inst = prepare(camera_edge(sink=None))
    plan = evaluate(inst, [1, 1, 1], "latency")
    assert [(h.kind, h.num_bytes) for h in plan.hops] == [("upload", 150_000)]
    assert plan.latency_s == pytest.approx(LAT + 150_000 / BW + 0.09)


def test_hops_within_a_device_cost_its_messaging_and_use_no_link():
    hop = Messaging(fixed_s=1.0, s_per_byte=1e-8)  # slower than any stage: still no bottleneck
    inst = prepare(camera_edge(messaging={"cam": hop}))
    local = evaluate(inst, [0, 0, 0], "latency")
    up, back = 1.0 + 1e-8 * 150_000, 1.0 + 1e-8 * 4_000
    assert [(h.kind, h.src, h.dst, h.num_bytes) for h in local.hops] == [
        ("upload", "cam", "cam", 150_000), ("return", "cam", "cam", 4_000)]
    assert [h.transfer_s for h in local.hops] == [pytest.approx(up), pytest.approx(back)]
    assert local.latency_s == pytest.approx(0.9 + up + back, rel=1e-15)
    # no link: no bytes sent, no radio time (the camera idles through them), not a bottleneck
    assert local.bytes_sent == local.upload_bytes == 0 and local.bottleneck_s == pytest.approx(0.9)
    assert local.energy_j == pytest.approx(2.0 * 0.9 + 1.0 * (up + back), rel=1e-12)
    split = evaluate(inst, [0, 1, 1], "latency")  # the upload stays on the camera, the return crosses
    assert [(h.kind, h.src, h.dst) for h in split.hops] == [
        ("upload", "cam", "cam"), ("cut", "cam", "edge"), ("return", "edge", "cam")]
    # without messaging a hop within a device is free and not listed
    assert [h.kind for h in evaluate(prepare(camera_edge()), [0, 0, 0], "latency").hops] == []
    with pytest.raises(PlanError, match=r"messaging\['cam'\].fixed_s is -1.0"):
        prepare(camera_edge(messaging={"cam": Messaging(-1.0)}))


def test_a_device_hosting_two_stages_counts_their_sum_in_the_bottleneck():
    inst = prepare(
        camera_edge(compute_s={"cam": [0.5, 0.01, 0.5], "edge": [0.3, 0.3, 0.3]}, cut_bytes=[0, 0])
    )
    plan = evaluate(inst, [0, 1, 0], "throughput")
    assert len(plan.stages) == 3 and plan.bottleneck_s == pytest.approx(1.0)


def test_energy_and_upload_weights_add_up_to_the_cost_model():
    rng = np.random.default_rng(3)
    problem = camera_edge(
        power={"cam": Power(2.0, 0.7, 3.0, 1e-6, True), "edge": Power(9.0, 4.0, 1.0, 2e-6, True)},
        sink="edge", messaging={"cam": Messaging(0.002, 1e-8), "edge": Messaging(0.001, 2e-8)},
    )
    inst = prepare(problem)
    allowed = allowed_matrix(inst, Constraints())
    for weights, figure in (
        (energy_weights(inst, allowed), "energy_j"),
        (upload_weights(inst, allowed), "upload_bytes"),
    ):
        for _ in range(20):
            a = rng.integers(0, 2, 3).tolist()
            total = weights.upload_w[a[0]] + weights.return_w[a[-1]]
            total += sum(weights.node_w[b, d] for b, d in enumerate(a))
            total += sum(weights.arc_w[b, a[b], a[b + 1]] for b in range(2))
            assert total == pytest.approx(getattr(measure(inst, a), figure), rel=1e-12, abs=1e-12)


def test_plan_json_round_trips_exactly():
    plans = solve(camera_edge(), "latency", top_k=3)
    text = plan_to_json(plans)
    assert plan_from_json(text) == plans
    assert plan_from_json(plan_to_json(plans[0])) == [plans[0]]
    idle = evaluate(
        prepare(camera_edge(compute_s={"cam": [0.0] * 3, "edge": [0.0] * 3})), [0, 0, 0], "throughput"
    )
    assert math.isinf(idle.throughput_rps) and plan_from_json(plan_to_json(idle)) == [idle]
    odd = evaluate(
        prepare(camera_edge(compute_s={"cam": [0.1, 0.2, 0.30000000000000004], "edge": [1] * 3})),
        [0, 0, 0],
        "latency",
    )
    assert plan_from_json(plan_to_json(odd))[0].latency_s == odd.latency_s


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"schema": 3, "plans": []}', "schema 3, this splitinfer reads 1, 2"),
        ('{"schema": "2", "plans": []}', "schema '2'"),
        ("{not json", "not valid JSON"),
        ('{"plans": []}', "no schema"),
        ('{"schema": 2, "plans": [{"objective": "latency"}]}', "invalid plan file"),
        ('{"schema": 1, "plans": [{"objective": "latency"}]}', "invalid plan file"),
    ],
)
def test_bad_plan_files(text, match):
    with pytest.raises(SchemaError, match=match):
        plan_from_json(text)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"compute_s": {"cam": [0.1, -1.0, 0.1]}}, r"compute_s\['cam'\]\[1\] is -1.0"),
        ({"compute_s": {"cam": [0.1, math.nan, 0.1]}}, r"compute_s\['cam'\]\[1\] is nan"),
        ({"compute_s": {"cam": [0.1, 0.1]}}, "has 2 blocks"),
        ({"compute_s": {"phone": [0.1] * 3}}, "unknown device 'phone'"),
        ({"links": [Link("cam", "cam", 1.0)]}, "to itself"),
        ({"links": [Link("cam", "edge", 1.0), Link("cam", "edge", 2.0)]}, "twice"),
        ({"links": [Link("cam", "edge", 0.0)]}, "zero bandwidth"),
        ({"links": [Link("cam", "tv", 1.0)]}, "unknown device 'tv'"),
        ({"cut_bytes": [1, -5]}, r"cut_bytes\[1\]"),
        ({"source": "tv"}, "source 'tv' is not a device"),
        ({"weight_bytes": [1, 2]}, "weight_bytes has 2 entries"),
        ({"activation_bytes": [1, -2, 3]}, r"activation_bytes\[1\] is -2"),
        ({"in_flight": 0}, "in_flight is 0"),
        ({"in_flight": 1.5}, "in_flight is 1.5"),
        ({"devices": ("cam", "cam")}, "unique"),
    ],
)
def test_inconsistent_problems_name_the_field(changes, match):
    with pytest.raises(PlanError, match=match):
        solve(camera_edge(**changes))


@pytest.mark.parametrize(
    ("objective", "cons", "match"),
    [
        ("latency", Constraints(pins=((1, "tv"),)), "--pin 1=tv names unknown device"),
        ("latency", Constraints(forbids=((7, "cam"),)), "block 7 does not exist"),
        ("latency", Constraints(excludes=("tv",)), "--exclude tv"),
        ("latency", Constraints(max_stages=0), "below 1"),
        ("latency", Constraints(private_blocks=9), "outside 0..3"),
        ("latency", Constraints(max_latency_s=-1.0), "negative"),
        ("speed", Constraints(), "unknown objective"),
    ],
)
def test_unreadable_constraints(objective, cons, match):
    with pytest.raises(PlanError, match=match):
        solve(camera_edge(), objective, cons)


def test_energy_needs_a_battery_device():
    with pytest.raises(PlanError, match="battery-powered"):
        solve(camera_edge(power={}), "energy")


@pytest.mark.parametrize(
    ("problem", "cons", "match"),
    [
        (
            camera_edge(),
            Constraints(pins=((1, "edge"),), excludes=("edge",)),
            "--pin 1=edge conflicts with --exclude",
        ),
        (camera_edge(), Constraints(pins=((1, "edge"), (1, "cam"))), "pinned to cam and edge"),
        (
            camera_edge(compute_s={"cam": [None, 0.1, 0.1], "edge": [0.1] * 3}),
            Constraints(private_blocks=1),
            "the source cam cannot run block 0",
        ),
        (
            camera_edge(
                compute_s={"cam": [None, 0.1, 0.1], "edge": [0.1] * 3}, links=[Link("edge", "cam", BW)]
            ),
            Constraints(),
            "no device that may run block 0 is linked from the source cam",
        ),
        (
            camera_edge(compute_s={"cam": [0.1, 0.1, None], "edge": [None, 0.1, 0.1]}),
            Constraints(max_stages=1),
            "no plan satisfies --max-stages 1",
        ),
        (
            # any plan puts two blocks' weights on one device, in one stage or in two
            camera_edge(weight_bytes=[5_000_000] * 3, capacity_bytes={"cam": 6_000_000, "edge": 6_000_000}),
            Constraints(),
            "memory capacity",
        ),
        (camera_edge(), Constraints(min_throughput_rps=1000.0), "--min-throughput 1000.0"),
        (camera_edge(), Constraints(requires=("edge",), excludes=("edge",)), "--require edge conflicts"),
    ],
)
def test_infeasible_problems_name_the_conflict(problem, cons, match):
    with pytest.raises(InfeasibleError, match=match) as err:
        solve(problem, "latency", cons)
    assert err.value.fix


def test_merge_sorted_equals_a_full_sort():
    rng = np.random.default_rng(0)
    for k in (1, 2, 5):
        lists = np.sort(rng.integers(0, 20, (50, 7, k)).astype(float), axis=2)
        lists[rng.random(lists.shape) < 0.2] = np.inf
        lists = np.sort(lists, axis=2)
        offset = rng.integers(0, 5, (50, 7)).astype(float)
        for mode in ("sum", "max"):
            cand = lists + offset[:, :, None] if mode == "sum" else np.maximum(lists, offset[:, :, None])
            values, flat = merge_sorted(lists, offset, k, mode)
            expected = np.sort(cand.reshape(50, -1), axis=1)[:, :k]
            assert np.array_equal(values, expected)
            picked = np.take_along_axis(cand.reshape(50, -1), flat, axis=1)
            assert np.array_equal(picked, values)


def _random_problem(num_blocks: int, num_dev: int, seed: int, memory: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    names = tuple(f"d{i}" for i in range(num_dev))
    speed = rng.uniform(0.5, 8, num_dev)
    base = rng.uniform(0.001, 0.02, num_blocks)
    links = [
        Link(a, b, float(rng.uniform(1e6, 5e7)), float(rng.uniform(0, 0.01)))
        for a in names
        for b in names
        if a != b
    ]
    extra = (  # about half the blocks' weights, and room for their peak and cut buffers
        {
            "weight_bytes": [1_000_000] * num_blocks,
            "activation_bytes": rng.integers(0, 3_000_000, num_blocks).tolist(),
            "capacity_bytes": {n: (num_blocks // 2 + 7) * 1_000_000 for n in names},
        }
        if memory
        else {}
    )
    return Problem(
        names,
        {n: (base * s).tolist() for n, s in zip(names, speed, strict=True)},
        rng.integers(1000, 2_000_000, num_blocks - 1).tolist(),
        150_000,
        4_000,
        links,
        **extra,
    )


@pytest.mark.parametrize(
    ("num_blocks", "objective", "cons", "memory"),
    [
        (40, "latency", Constraints(), False),
        (40, "latency", Constraints(revisits=False, max_stages=3), False),
        (40, "latency", Constraints(revisits=False), True),
        (12, "throughput", Constraints(), True),
    ],
)
def test_dp_and_milp_agree_beyond_brute_force_sizes(num_blocks, objective, cons, memory):
    problem = _random_problem(num_blocks, 4, seed=num_blocks, memory=memory)
    dp = solve(problem, objective, cons, top_k=3)
    milp = solve(problem, objective, cons, top_k=3, method="milp")
    field = "bottleneck_s" if objective == "throughput" else "latency_s"
    assert dp[0].solver != "milp" and dp[0].gap is None
    assert all(p.solver == "milp" and p.gap == 0.0 for p in milp)
    assert [getattr(p, field) for p in dp] == pytest.approx([getattr(p, field) for p in milp], rel=1e-9)


def test_throughput_ties_go_to_the_faster_plan():
    # The upload dominates every plan's bottleneck; among those the fastest must come first.
    problem = camera_edge(
        input_bytes=10_000_000,
        sink=None,
        links=[Link("cam", "edge", BW, LAT)],
        compute_s={"cam": [None, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
    )
    plans = solve(problem, "throughput", top_k=3)
    assert len({round(p.bottleneck_s, 12) for p in plans}) == 1
    latencies = [p.latency_s for p in plans]
    assert latencies == sorted(latencies) and plans[0].assignment == ("edge", "edge", "edge")


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"top_k": 0}, "top_k is 0"), ({"top_k": 10**9}, "top_k is 1000000000"), ({"top_k": 2.5}, "top_k is 2.5"),
    ({"time_limit_s": math.nan}, "time_limit_s is nan"), ({"time_limit_s": -1.0}, "time_limit_s is -1.0"),
    ({"time_limit_s": math.inf}, "time_limit_s is inf"),
])
def test_solve_refuses_counts_and_limits_out_of_range_naming_the_argument(kwargs, problem):
    with pytest.raises(PlanError) as caught:
        solve(camera_edge(), "latency", **kwargs)
    assert caught.value.problem == problem and caught.value.fix.startswith("use a ")
    assert "--" not in str(caught.value)
