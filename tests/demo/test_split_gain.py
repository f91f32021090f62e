"""Which plans the gain of splitting measures (splitinfer.runtime.gain): the best plan, and the single-device
plans to compare it with. Planning only, on the report sample's profile: no worker starts."""

from __future__ import annotations

import pytest
from helpers import report_sample as sample

from splitinfer.cluster import parse_cluster
from splitinfer.errors import PlanError
from splitinfer.plan import Constraints, describe_stages, solve
from splitinfer.profile.problem import build_problem
from splitinfer.runtime.gain import gain_plans, measure_gain, single_device_plans


@pytest.fixture(scope="module")
def problem():
    # On this sample the camera alone is 12 ms, the edge alone 33 ms, the cloud alone 131 ms (latency);
    # the best throughput plan is a split, the best latency plan the camera alone.
    profile = sample.make_profile("mobilenetv2", small=True, max_blocks=16)
    return build_problem(profile, parse_cluster(sample.cluster_dict()))


def _names(plans):
    return [describe_stages(p) for p in plans]


def test_single_device_plans_are_the_best_device_and_those_predicted_close_to_it(problem):
    assert _names(single_device_plans(problem, "latency")) == ["camera[0-15]"]  # the edge is 2.7x slower
    assert _names(single_device_plans(problem, "latency", margin=3.0)) == ["camera[0-15]", "edge[0-15]"]
    assert _names(single_device_plans(problem, "throughput", margin=3.0)) == ["camera[0-15]", "edge[0-15]"]
    every = single_device_plans(problem, "latency", margin=100.0)
    assert _names(every) == ["camera[0-15]", "edge[0-15]", "cloud[0-15]"]
    assert all(len(p.stages) == 1 for p in every)
    with pytest.raises(PlanError, match="margin"):
        single_device_plans(problem, "latency", margin=0.5)


def test_no_single_device_plan_when_the_constraints_need_two_devices(problem):
    assert single_device_plans(problem, "latency", Constraints(pins=((0, "camera"), (15, "edge")))) == []


def test_gain_plans_measure_a_split_against_single_devices_and_a_single_device_alone(problem):
    best, singles = gain_plans(problem, "throughput")
    assert len(best.stages) == 2 and _names(singles) == ["camera[0-15]"]
    best, singles = gain_plans(problem, "latency")
    assert _names([best]) == ["camera[0-15]"] and singles == []  # its own single device: measured once


def test_measure_gain_refuses_a_split_as_a_single_device_plan(problem):
    split, _ = gain_plans(problem, "throughput")
    with pytest.raises(PlanError, match="several stages"):
        measure_gain(split, [split], parse_cluster(sample.cluster_dict()), b"not used")


def test_measure_gain_runs_a_split_side_by_side_with_every_single_device(tmp_path):
    # A real run, small: the small MobileNetV2 on the demo continuum, a split forced through the edge
    # (the planner need not want it: the gain is what was measured, whatever it is) against all three
    # devices alone, three requests each in turn.
    import statistics

    from splitinfer import zoo
    from splitinfer.demo import demo_cluster
    from splitinfer.profile.profiler import prepare_model
    from splitinfer.runtime.profiling import profile_cluster

    model = tmp_path / "small.onnx"
    model.write_bytes(zoo.build_small("mobilenetv2").SerializeToString())
    cluster = demo_cluster()
    prepared = prepare_model(model)
    profile = profile_cluster(None, cluster, budget_s=0.1, prepared=prepared, progress=False)
    problem = build_problem(profile, cluster)
    best, _ = gain_plans(problem, "latency", Constraints(requires=("camera", "edge")))
    singles = solve(problem, "latency", Constraints(max_stages=1), top_k=3)  # every device alone
    assert len(best.stages) >= 2 and len(singles) == 3

    g = measure_gain(best, singles, cluster, prepared.model, profile=profile, num_requests=3, num_warmup=1)
    assert g.objective == "latency" and g.concurrency == 1 and g.interleaved and g.is_split
    assert g.best.bench.plan.stages == best.stages
    assert [s.bench.plan.stages for s in g.singles] == [p.stages for p in singles]  # each one measured
    for entry in (g.best, *g.singles):
        assert entry.bench.num_requests == 3 and entry.measured == statistics.median(entry.bench.latencies_s)
    assert g.single.measured == min(s.measured for s in g.singles)
    assert g.gain == pytest.approx(g.single.measured / g.best.measured)
    if g.best.predicted > 0:  # a negative predicted latency is the profile's fault (joins), not the gain's
        assert g.predicted_gain == pytest.approx(g.single.predicted / g.best.predicted)
