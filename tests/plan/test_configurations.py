"""Device configurations (DVFS): the planner chooses one per device with the split, exactly."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import Constraints, Link, Power, Problem, solve
from splitinfer.plan.configurations import DeviceConfiguration, configured, extremes
from splitinfer.plan.plan import describe_stages

# The camera runs fast and hungry, or slow and frugal (a lower clock); the edge has one configuration.
CAM = [DeviceConfiguration("default", [0.010, 0.020, 0.030],
                           power=Power(busy_w=6.0, idle_w=1.0, radio_w=3.0, battery=True)),
       DeviceConfiguration("powersave", [0.018, 0.036, 0.054],
                           power=Power(busy_w=1.5, idle_w=0.5, radio_w=3.0, battery=True))]


def _problem(**kw) -> Problem:
    base = dict(devices=("cam", "edge"), compute_s={"cam": [0.01, 0.02, 0.03], "edge": [0.004, 0.008, 0.012]},
                cut_bytes=[40_000, 20_000], input_bytes=600_000, output_bytes=4_000,
                links=[Link("cam", "edge", 10e6, 0.002), Link("edge", "cam", 10e6, 0.002)],
                power={"cam": CAM[0].power}, source="cam", configurations={"cam": CAM})
    base.update(kw)
    return Problem(**base)


def _brute(problem: Problem, objective: str, cons: Constraints | None = None) -> tuple[float, dict]:
    """The best value over every configuration and every assignment, enumerated."""
    best = (math.inf, {})
    names = {d: [c.name for c in cs] for d, cs in problem.configurations.items()}
    for combo in itertools.product(*names.values()):
        chosen = dict(zip(names, combo, strict=True))
        try:
            plan = solve(configured(problem, chosen), objective, cons, method="bruteforce")[0]
        except InfeasibleError:
            continue
        value = plan.energy_j if objective == "energy" else plan.latency_s
        if value < best[0] - 1e-12:
            best = (value, chosen)
    return best


def test_energy_under_a_latency_budget_picks_the_frugal_clock_and_latency_the_fast_one():
    problem = _problem()
    fast = solve(problem, "latency")[0]
    assert fast.configurations.get("cam", "default") == "default" or "cam" not in fast.configurations
    frugal = solve(problem, "energy", Constraints(max_latency_s=0.2))[0]
    assert frugal.configurations == {"cam": "powersave"}
    # By hand, at the powersave figures: the camera's stages at 1.5 W, its radio at 3 W while its hops
    # cross the link, 0.5 W idle the rest of the request.
    busy = sum(s.compute_s for s in frugal.stages if s.device == "cam")
    radio = sum(h.transfer_s for h in frugal.hops if "cam" in (h.src, h.dst) and h.src != h.dst)
    assert busy > 0 and radio > 0  # it splits: the camera computes and sends
    idle = frugal.latency_s - busy - radio
    assert frugal.energy_j == pytest.approx(1.5 * busy + 3.0 * radio + 0.5 * idle)
    assert frugal.gap == 0.0 and describe_stages(frugal).startswith("cam@powersave[0")
    value, chosen = _brute(problem, "energy", Constraints(max_latency_s=0.2))
    assert frugal.energy_j == pytest.approx(value) and frugal.configurations == chosen


def test_a_tight_budget_forces_the_fast_clock():
    tight = solve(_problem(), "energy", Constraints(max_latency_s=0.042))[0]
    assert tight.latency_s <= 0.042 and tight.configurations.get("cam") == "default"


@pytest.mark.parametrize("seed", range(12))
def test_random_instances_match_a_brute_force_over_configurations(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 4)
    devices = ("a", "b", "c")
    configs = {}
    for d in devices[:2]:
        configs[d] = [DeviceConfiguration(name, [rng.uniform(0.001, 0.05) for _ in range(n)],
                                          power=Power(busy_w=rng.uniform(0.5, 8), idle_w=rng.uniform(0, 1),
                                                      radio_w=rng.uniform(0, 2), battery=True))
                      for name in ("default", "mid", "low")[: rng.randint(1, 3)]]
    links = [Link(x, y, rng.uniform(1e6, 1e8), rng.uniform(0, 0.01))
             for x in devices for y in devices if x != y]
    problem = Problem(devices, {d: [rng.uniform(0.001, 0.05) for _ in range(n)] for d in devices},
                      [rng.randint(1_000, 200_000) for _ in range(n - 1)], 100_000, 1_000, links,
                      power={"c": Power(busy_w=2.0, idle_w=0.2, battery=True)}, source="a",
                      configurations=configs)
    for objective, cons in (("latency", Constraints()), ("energy", Constraints()),
                            ("energy", Constraints(max_latency_s=0.08))):
        try:
            plan = solve(problem, objective, cons)[0]
        except InfeasibleError:
            assert _brute(problem, objective, cons)[0] == math.inf
            continue
        value, _ = _brute(problem, objective, cons)
        got = plan.energy_j if objective == "energy" else plan.latency_s
        assert got == pytest.approx(value, rel=1e-9)
        # every device with configurations is battery-powered here: each counts, in one configuration
        assert set(plan.configurations) == set(configs)
        assert all(name in [c.name for c in configs[d]] for d, name in plan.configurations.items())


def test_top_k_are_distinct_and_ordered_and_pareto_is_one_front():
    plans = solve(_problem(), "latency", top_k=4)
    keys = [(tuple((s.device, s.first_block, s.last_block) for s in p.stages),
             tuple(p.configurations.items())) for p in plans]
    assert len(set(keys)) == len(keys) and [p.rank for p in plans] == [1, 2, 3, 4]
    assert [p.latency_s for p in plans] == sorted(p.latency_s for p in plans)
    front = [p for p in solve(_problem(), "pareto") if p.objective == "pareto-energy"]
    assert [p.latency_s for p in front] == sorted(p.latency_s for p in front)
    assert all(b.energy_j < a.energy_j for a, b in itertools.pairwise(front))  # none dominated


def test_extremes_and_bad_configurations():
    assert extremes(_problem()) == {"fastest": {"cam": "default"}, "slowest": {"cam": "powersave"}}
    with pytest.raises(PlanError, match="unknown device 'phone'"):
        solve(_problem(configurations={"phone": CAM}))
    with pytest.raises(PlanError, match=r"configurations \['default', 'default'\]"):
        solve(_problem(configurations={"cam": [CAM[0], CAM[0]]}))
    many = [DeviceConfiguration(f"c{i}", [0.01] * 3) for i in range(70)]
    with pytest.raises(PlanError, match="4900 combinations"):
        solve(_problem(configurations={"cam": many, "edge": many}))
