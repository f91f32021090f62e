"""Measured watts per block, the energy split (compute, communication, idle) by hand, and the latency-budget
sweep's edges (its agreement with brute force is in test_plan_properties.py)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import msgspec
import numpy as np
import pytest

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import (
    Constraints,
    Link,
    Messaging,
    Power,
    Problem,
    plan_from_json,
    plan_to_json,
    prepare,
    solve,
    tradeoff_cost,
)
from splitinfer.plan.constraint_checks import allowed_matrix
from splitinfer.plan.cost import evaluate, measure
from splitinfer.plan.plan import EnergySplit
from splitinfer.plan.sweep import SweepPoint, default_budgets, point_of, sweep_latency_budgets
from splitinfer.plan.tradeoffs import Tradeoffs, expand, figure_weights
from splitinfer.plan.weights import energy_weights

BW, LAT = 2.5e6, 0.005
CAM = Power(busy_w=2.0, idle_w=1.0, radio_w=3.0, radio_j_per_byte=1e-6, battery=True,
            busy_w_blocks=(3.0, 5.0, 7.0))
EDGE = Power(busy_w=9.0, idle_w=4.0, radio_w=1.0, battery=True)


def camera_edge(**changes) -> Problem:
    """3 blocks on a battery camera (its own watts per block, a join saving 0.1 s at cut 0) and an edge."""
    base = Problem(
        devices=("cam", "edge"),
        compute_s={"cam": [0.2, 0.3, 0.4], "edge": [0.02, 0.03, 0.04]},
        cut_bytes=[800_000, 200_000],
        input_bytes=150_000,
        output_bytes=4_000,
        links=[Link("cam", "edge", BW, LAT), Link("edge", "cam", BW, LAT)],
        power={"cam": CAM, "edge": EDGE},
        join_s={"cam": [-0.1, -0.05]},
    )
    return dataclasses.replace(base, **changes)


def test_energy_split_by_hand():
    plan = evaluate(prepare(camera_edge()), [0, 0, 1], "energy")  # cam[0-1] -> edge[2] -> back to cam
    cut, back = LAT + 200_000 / BW, LAT + 4_000 / BW  # 0.085 s, 0.0066 s
    latency = (0.2 + 0.3 - 0.1) + cut + 0.04 + back
    assert plan.latency_s == pytest.approx(latency, rel=1e-12) and latency == pytest.approx(0.5316)
    # camera: blocks 0 and 1 at 3 W and 5 W; the join (-0.1 s) at their mean weighted by their seconds,
    # (3 x 0.2 + 5 x 0.3) / 0.5 = 4.2 W
    cam_compute = 3.0 * 0.2 + 5.0 * 0.3 - 0.1 * 4.2
    cam_radio = 3.0 * (cut + back) + 1e-6 * (200_000 + 4_000)
    cam_idle = 1.0 * (latency - 0.4 - (cut + back))
    assert (cam_compute, cam_radio, cam_idle) == pytest.approx((1.68, 0.4788, 0.04))
    edge = (9.0 * 0.04, 1.0 * (cut + back), 4.0 * (latency - 0.04 - (cut + back)))
    assert edge == pytest.approx((0.36, 0.0916, 1.6))
    split = plan.energy_split
    assert list(split) == ["cam", "edge"]
    got = [(s.compute_j, s.communication_j, s.idle_j) for s in split.values()]
    assert got[0] == pytest.approx((cam_compute, cam_radio, cam_idle), rel=1e-12)
    assert got[1] == pytest.approx(edge, rel=1e-12)
    assert plan.energy_j == pytest.approx(4.2504, rel=1e-12)
    assert math.fsum(s.total_j for s in split.values()) == pytest.approx(plan.energy_j, rel=1e-12)
    assert measure(prepare(camera_edge()), [0, 0, 1]).energy_split == ((0, split["cam"]), (1, split["edge"]))


def test_watts_per_block_equal_to_busy_w_change_nothing():
    same = dataclasses.replace(CAM, busy_w_blocks=(2.0, 2.0, 2.0))
    plain = dataclasses.replace(CAM, busy_w_blocks=None)
    for a in itertools.product(range(2), repeat=3):
        one = measure(prepare(camera_edge(power={"cam": same, "edge": EDGE})), a)
        other = measure(prepare(camera_edge(power={"cam": plain, "edge": EDGE})), a)
        assert one.energy_j == pytest.approx(other.energy_j, rel=1e-12)
    # and with them, a block's own watts count: moving 5 W off block 1 onto block 2 changes the camera's
    watts = measure(prepare(camera_edge()), [0, 0, 0]).energy_split[0][1].compute_j
    moved = dataclasses.replace(CAM, busy_w_blocks=(3.0, 7.0, 5.0))
    other = measure(prepare(camera_edge(power={"cam": moved, "edge": EDGE})), [0, 0, 0]).energy_split[0][1]
    assert watts != pytest.approx(other.compute_j)


def test_no_power_no_split():
    plan = evaluate(prepare(camera_edge(power={})), [0, 0, 1], "latency")
    assert plan.energy_j is None and plan.energy_split == {}
    not_counted = {"edge": dataclasses.replace(EDGE, battery=False), "cam": CAM}
    counted = evaluate(prepare(camera_edge(power=not_counted)), [0, 1, 1], "energy").energy_split
    assert list(counted) == ["cam"]


def test_energy_weights_add_up_to_the_cost_model_with_watts_per_block():
    problem = camera_edge(sink="edge", messaging={"cam": Messaging(0.002, 1e-8)},
                          join_s={"cam": [-0.1, -0.05], "edge": [-0.01, 0.0]})
    inst = prepare(problem)
    weights = energy_weights(inst, allowed_matrix(inst, Constraints()))
    for a in itertools.product(range(2), repeat=3):
        total = weights.upload_w[a[0]] + weights.return_w[a[-1]]
        total += sum(weights.node_w[b, d] for b, d in enumerate(a))
        total += sum(weights.arc_w[b, a[b], a[b + 1]] for b in range(2))
        assert total == pytest.approx(measure(inst, a).energy_j, rel=1e-12, abs=1e-12), a


def test_trade_off_cost_model_and_weights_agree_with_the_plain_one():
    """Without precisions or compressions the variants are the devices: same joules, same split."""
    inst = prepare(camera_edge(join_s={"cam": [-0.1, -0.05], "edge": [-0.01, 0.0]}))
    var = expand(inst, Tradeoffs())
    weights = figure_weights(var, np.ones((3, var.num_variants), dtype=bool), "energy")
    for a in itertools.product(range(2), repeat=3):
        plain, traded = measure(inst, a), tradeoff_cost.measure(var, a)
        assert traded.energy_j == pytest.approx(plain.energy_j, rel=1e-12)
        expected = {inst.names[d]: (s.compute_j, s.communication_j, s.idle_j) for d, s in plain.energy_split}
        got = {name: (s.compute_j, s.communication_j, s.idle_j) for name, s in traded.energy_split}
        assert got.keys() == expected.keys() == {"cam", "edge"}
        assert all(got[n] == pytest.approx(expected[n], rel=1e-12) for n in got)
        total = weights.upload_w[a[0]] + weights.return_w[a[-1]]
        total += sum(weights.node_w[b, v] for b, v in enumerate(a))
        total += sum(weights.arc_w[b, a[b], a[b + 1]] for b in range(2))
        assert total == pytest.approx(plain.energy_j, rel=1e-12)


@pytest.mark.parametrize(("watts", "match"), [
    ((3.0, 5.0), r"power\['cam'\].busy_w_blocks is \(3.0, 5.0\), not one figure per block"),
    ((3.0, -1.0, 5.0), r"power\['cam'\].busy_w_blocks\[1\] is -1.0"),
    ((3.0, math.nan, 5.0), r"power\['cam'\].busy_w_blocks\[1\] is nan"),
    ((3.0, "5", 5.0), r"power\['cam'\].busy_w_blocks\[1\] is '5'"),
    ("345", r"power\['cam'\].busy_w_blocks is '345'"),
])
def test_bad_watts_per_block_name_the_field(watts, match):
    with pytest.raises(PlanError, match=match):
        prepare(camera_edge(power={"cam": dataclasses.replace(CAM, busy_w_blocks=watts)}))


def test_plan_files_keep_the_split_and_old_ones_load():
    plans = solve(camera_edge(), "energy", top_k=2)
    assert all(p.energy_split for p in plans)
    assert plan_from_json(plan_to_json(plans)) == plans
    old = msgspec.json.decode(plan_to_json(plans))
    for p in old["plans"]:
        del p["energy_split"]
    assert plan_from_json(msgspec.json.encode(old))[0].energy_split == {}


def test_sweep_keeps_infeasible_budgets_and_sorts():
    # a frugal camera with a costly radio: offloading is fastest, running at home uses least energy
    problem = camera_edge(power={"cam": Power(busy_w=0.5, idle_w=0.1, radio_w=20.0, battery=True)})
    fastest = solve(problem, "latency")[0]
    least = solve(problem, "energy")[0]
    assert least.latency_s > fastest.latency_s and least.energy_j < fastest.energy_j  # a real trade-off

    def cheapest(budget_s: float):
        return solve(problem, "energy", Constraints(max_latency_s=budget_s))[0]  # InfeasibleError: kept

    budgets = [least.latency_s * 2, fastest.latency_s / 2, fastest.latency_s]
    points = sweep_latency_budgets(cheapest, budgets)
    assert [p.budget_s for p in points] == sorted(budgets)
    assert not points[0].feasible and points[0].energy_j is None and points[0].stages == ""
    assert points[1].plan is not None and points[1].latency_s == pytest.approx(fastest.latency_s)
    assert points[2].energy_j == pytest.approx(least.energy_j) and points[2].energy_j < points[1].energy_j
    split = least.energy_split.values()
    assert points[2].compute_j == pytest.approx(sum(s.compute_j for s in split))
    assert points[2].communication_j == pytest.approx(sum(s.communication_j for s in split))
    assert sweep_latency_budgets(lambda _b: None, [0.1]) == [SweepPoint(0.1, None)]


def test_sweep_and_budgets_refuse_bad_input():
    with pytest.raises(PlanError, match=r"budgets_s\[1\] is 0"):
        sweep_latency_budgets(lambda _b: None, [0.1, 0])
    with pytest.raises(PlanError, match=r"budgets_s\[0\] is nan"):
        sweep_latency_budgets(lambda _b: None, [math.nan])
    with pytest.raises(PlanError, match="budgets_s has 0 budgets"):
        sweep_latency_budgets(lambda _b: None, [])
    with pytest.raises(PlanError, match="without an energy figure"):
        point_of(0.1, solve(camera_edge(power={}), "latency")[0])
    with pytest.raises(PlanError, match=r"slowest_latency_s is 0\.1"):
        default_budgets(0.2, 0.1, 5)
    with pytest.raises(PlanError, match="n is 0"):
        default_budgets(0.1, 0.2, 0)


def test_default_budgets_span_fastest_to_a_little_beyond_the_least_energy_plan():
    assert default_budgets(0.1, 0.5, 5) == pytest.approx([0.1, 0.21, 0.32, 0.43, 0.54])
    assert default_budgets(0.2, 0.2, 3) == pytest.approx([0.2, 0.21, 0.22])  # one plan: a tenth of it
    assert default_budgets(0.1, 0.5, 1) == pytest.approx([0.54])


def test_sweep_passes_infeasible_error_through_as_a_marked_row():
    def never(_budget_s: float):
        raise InfeasibleError("no plan", "relax")

    assert [p.feasible for p in sweep_latency_budgets(never, [0.1, 0.2])] == [False, False]
    assert isinstance(EnergySplit(1.0, 2.0, 3.0).total_j, float) and EnergySplit(1.0, 2.0, 3.0).total_j == 6.0
