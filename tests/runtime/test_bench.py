"""bench(): measured figures beside the plan's, on real local workers; the bench file round-trips."""

from __future__ import annotations

import json
import math

import deploy_helpers as helpers  # registered by tests/conftest.py
import msgspec
import pytest
from runtime_test_models import local_cluster

from splitinfer.cluster import parse_cluster
from splitinfer.errors import SchemaError
from splitinfer.plan import Hop, Plan, Stage
from splitinfer.runtime.bench import (
    BenchResult,
    bench,
    compare_hops,
    compare_stages,
    decode_bench,
    encode_bench,
    load_bench,
    rel_error,
    save_bench,
)
from splitinfer.runtime.deploy import deploy
from splitinfer.runtime.timing import HopTiming, RequestTiming, StageTiming


def _timing(rid: int, scale: float) -> RequestTiming:
    stages = (
        StageTiming(0, "a", 0.0, 0.010 * scale, 0.030 * scale),
        StageTiming(1, "b", 0.0, 0.005 * scale, 0.0),
    )
    hops = (
        HopTiming("a", "a", 0, 1000, 0.001 * scale),
        HopTiming("a", "b", 1, 500, 0.004 * scale),
        HopTiming("b", "a", 2, 40, 0.002 * scale),
    )
    return RequestTiming(rid, 0.05 * scale, stages, hops)


def test_stages_and_hops_pair_with_the_plan_by_position():
    plan = Plan(
        "latency",
        (Stage("a", 0, 1, 0.04), Stage("b", 2, 3, 0.005)),
        (Hop("a", "b", 500, 0.003, "cut"), Hop("b", "a", 40, 0.002, "return")),
        0.05,
        0.04,
        25.0,
        540,
        0,
    )
    timings = [_timing(i, s) for i, s in enumerate([1.0, 1.0, 2.0])]
    stages = compare_stages(plan, timings)
    assert [s.device for s in stages] == ["a", "b"]
    assert stages[0].measured_median_s == pytest.approx(0.04) and stages[0].rel_error == pytest.approx(0.0)
    assert stages[0].measured_p95_s == pytest.approx(0.076)  # 95th percentile of 0.04, 0.04, 0.08
    hops = compare_hops(plan, timings)
    assert [(h.src, h.dst, h.kind) for h in hops] == [
        ("a", "a", "upload"),
        ("a", "b", "cut"),
        ("b", "a", "return"),
    ]
    assert hops[0].predicted_s == 0.0 and hops[0].rel_error == pytest.approx(-1.0)  # same device: free
    assert hops[1].predicted_s == 0.003 and hops[1].rel_error == pytest.approx((0.003 - 0.004) / 0.004)
    assert hops[2].num_bytes == 40 and hops[2].rel_error == pytest.approx(0.0)
    wrong = msgspec.structs.replace(plan, hops=(Hop("a", "c", 500, 0.003, "cut"),))
    with pytest.raises(Exception, match="were not measured"):
        compare_hops(wrong, timings)
    assert rel_error(0.0, 0.0) == 0.0 and rel_error(2.0, 1.0) == 1.0


@pytest.fixture(scope="module")
def deployed():
    data = helpers.model_bytes("resnet18")
    cluster = local_cluster(["a", "b", "c"], slowdown={"a": 3.0})
    profile = helpers.fake_profile(data, cluster)
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (len(profile.blocks) - 1, "b")])
    with deploy(plan, cluster, data, profile=profile, timeout_s=10.0) as session:
        yield session, plan


def test_bench_measures_every_request_and_stage_of_a_deployed_plan(deployed, tmp_path):
    session, plan = deployed
    seen = []
    result = bench(
        session, num_requests=12, warmup=2, progress=lambda done, total: seen.append((done, total))
    )
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert result.num_requests == 12 and len(result.latencies_s) == 12 and result.concurrency == 1
    assert result.plan == plan and result.predicted_latency_s == plan.latency_s
    assert result.model_sha256 == plan.meta["model_sha256"] and result.model_name
    assert result.latency_min_s <= result.latency_median_s <= result.latency_p95_s <= result.latency_max_s
    assert result.throughput_rps > 0 and result.latency_rel_error == pytest.approx(
        (plan.latency_s - result.latency_median_s) / result.latency_median_s
    )
    assert [s.predicted_s for s in result.stages] == [s.compute_s for s in plan.stages]
    assert result.stages[0].measured_median_s > 0 and all(h.measured_median_s > 0 for h in result.hops)
    assert [h.kind for h in result.hops] == ["upload", "cut", "return"]
    assert parse_cluster(result.cluster) == session.cluster

    path = tmp_path / "bench.json"
    save_bench(result, path)
    assert load_bench(path) == result
    doc = json.loads(path.read_text())
    assert doc["schema"] == 1 and len(doc["stages"]) == len(plan.stages)


def test_bench_keeps_requests_in_flight_at_higher_concurrency(deployed):
    session, _ = deployed
    result = bench(session, num_requests=24, concurrency=4, warmup=0)
    assert result.concurrency == 4 and len(result.latencies_s) == 24
    assert result.throughput_rps > 0


def test_bench_file_of_another_version_or_malformed_is_refused(deployed, tmp_path):
    session, _ = deployed
    result = bench(session, num_requests=2, warmup=0)
    doc = json.loads(encode_bench(result))
    assert decode_bench(json.dumps(doc)) == result
    with pytest.raises(SchemaError, match="schema 2"):
        decode_bench(json.dumps({**doc, "schema": 2}))
    with pytest.raises(SchemaError, match="malformed"):
        decode_bench(json.dumps({**doc, "surprise": 1}))
    with pytest.raises(SchemaError, match="not valid JSON"):
        decode_bench("{")
    with pytest.raises(SchemaError, match="cannot read"):
        load_bench(tmp_path / "missing.json")


def test_infinite_throughput_round_trips():
    plan = Plan("latency", (Stage("a", 0, 0, 0.0),), (), 0.0, 0.0, math.inf, 0, 0)
    result = BenchResult(
        plan=plan,
        model_name="m",
        model_sha256="",
        cluster={},
        num_requests=1,
        concurrency=1,
        latency_median_s=0.001,
        latency_p95_s=0.001,
        latency_mean_s=0.001,
        latency_min_s=0.001,
        latency_max_s=0.001,
        throughput_rps=1000.0,
        predicted_latency_s=0.0,
        predicted_throughput_rps=math.inf,
        latency_rel_error=-1.0,
        throughput_rel_error=1e9,
        stages=(),
        hops=(),
        latencies_s=(0.001,),
        date="2026-01-01T00:00:00+00:00",
        host={},
    )
    assert decode_bench(encode_bench(result)) == result


def test_predicted_throughput_is_a_closed_loop_bound():
    from splitinfer.plan import Plan
    from splitinfer.runtime.bench import predicted_throughput

    plan = Plan("latency", (), (), latency_s=0.1, bottleneck_s=0.04, throughput_rps=25.0, bytes_sent=0,
                upload_bytes=0)
    assert predicted_throughput(plan, 1) == pytest.approx(10.0)  # one in flight: 1 / latency
    assert predicted_throughput(plan, 2) == pytest.approx(20.0)
    assert predicted_throughput(plan, 8) == pytest.approx(25.0)  # the bottleneck caps it
