"""bench(): measured figures beside the plan's, on real local workers; the bench file round-trips."""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import Future

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
from helpers import deploy as helpers
from helpers.runtime_models import local_cluster

from splitinfer.cluster import parse_cluster
from splitinfer.errors import SchemaError
from splitinfer.plan import Hop, Plan, Stage
from splitinfer.records import BenchResult, decode_bench, encode_bench, load_bench, rel_error, save_bench
from splitinfer.runtime.bench import bench, compare_hops, compare_stages, describe_host
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.coordinator.timing import HopTiming, RequestTiming, StageTiming


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
        session, num_requests=12, num_warmup=2, progress=lambda done, total: seen.append((done, total))
    )
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert result.num_requests == 12 and len(result.latencies_s) == 12 and result.concurrency == 1
    assert result.plan == plan and result.predicted_latency_s == plan.latency_s
    assert result.model_sha256 == plan.provenance.model_sha256 and result.model_name
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
    assert doc["schema"] == 2 and len(doc["stages"]) == len(plan.stages)


def test_bench_keeps_requests_in_flight_at_higher_concurrency(deployed, monkeypatch):
    session, _ = deployed
    sent: list[Future] = []
    most = 0  # the most requests sent and not yet answered, seen at any submit
    real_submit = session.submit

    def submit(*args, **kwargs) -> Future:
        nonlocal most
        sent.append(real_submit(*args, **kwargs))
        most = max(most, sum(not f.done() for f in sent))
        return sent[-1]

    monkeypatch.setattr(session, "submit", submit)
    result = bench(session, num_requests=24, concurrency=4, num_warmup=0)
    assert result.concurrency == 4 and len(result.latencies_s) == 24
    assert len(sent) == 24 and all(f.done() for f in sent)
    # Never past the asked concurrency, and more than one at once (a loaded machine may finish one
    # request before the fourth is sent, so exactly 4 is not guaranteed).
    assert 2 <= most <= 4


def test_bench_file_of_another_version_or_malformed_is_refused(deployed, tmp_path):
    session, _ = deployed
    result = bench(session, num_requests=2, num_warmup=0)
    doc = json.loads(encode_bench(result))
    assert decode_bench(json.dumps(doc)) == result
    with pytest.raises(SchemaError, match="schema 3, this splitinfer reads 1, 2"):
        decode_bench(json.dumps({**doc, "schema": 3}))
    with pytest.raises(SchemaError, match="malformed"):
        decode_bench(json.dumps({**doc, "surprise": 1}))
    with pytest.raises(SchemaError, match="not valid JSON"):
        decode_bench("{")
    with pytest.raises(SchemaError, match="cannot read"):
        load_bench(tmp_path / "missing.json")


def _tiny_result(host: dict[str, str] | None = None) -> BenchResult:
    plan = Plan("latency", (Stage("a", 0, 0, 0.0),), (), 0.0, 0.0, math.inf, 0, 0)
    return BenchResult(
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
        host=host or {},
    )


def test_infinite_throughput_round_trips():
    result = _tiny_result()
    assert decode_bench(encode_bench(result)) == result


def test_the_bench_host_is_this_machine_in_text_and_old_host_keys_still_load():
    host = describe_host()
    assert host["num_cpus"] == str(os.cpu_count()) and host["onnxruntime"] == ort.__version__
    assert "num_physical_cpus" in host and all(isinstance(v, str) for v in host.values())
    doc = json.loads(encode_bench(_tiny_result(host=host)))
    assert decode_bench(json.dumps(doc)).host == host
    old = {"hostname": "h", "os": "Linux-6.1", "machine": "x86_64", "cpu_count": "2", "python": "3.11.7",
           "onnxruntime": "1.17.1"}  # what bench.json files written before host_info() hold
    assert decode_bench(json.dumps({**doc, "host": old})).host == old


def test_predicted_throughput_is_a_closed_loop_bound():
    from splitinfer.plan import Plan
    from splitinfer.runtime.bench import predicted_throughput

    plan = Plan("latency", (), (), latency_s=0.1, bottleneck_s=0.04, throughput_rps=25.0, bytes_sent=0,
                upload_bytes=0)
    assert predicted_throughput(plan, 1) == pytest.approx(10.0)  # one in flight: 1 / latency
    assert predicted_throughput(plan, 2) == pytest.approx(20.0)
    assert predicted_throughput(plan, 8) == pytest.approx(25.0)  # the bottleneck caps it


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"num_requests": 0}, "num_requests is 0"), ({"num_requests": 10**12}, "num_requests is"),
    ({"num_warmup": -1}, "num_warmup is -1"), ({"concurrency": 0}, "concurrency is 0"),
    ({"concurrency": 10**9}, "concurrency is 1000000000"),
    ({"num_requests": math.nan}, "num_requests is nan"),
])
def test_bench_refuses_counts_out_of_range_before_sending_anything(kwargs, problem):
    from splitinfer.errors import SplitinferError
    from splitinfer.runtime.bench import bench

    with pytest.raises(SplitinferError) as caught:
        bench(None, object(), **kwargs)  # neither session nor plan is read: the counts are checked first
    assert caught.value.problem.startswith(problem) and caught.value.fix.startswith("use a whole number")


def test_bench_samples_each_worker_of_the_plan_during_the_measured_requests(deployed, tmp_path):
    session, plan = deployed
    started = time.time()
    result = bench(session, num_requests=300, num_warmup=2, resource_interval_s=0.02)  # ~0.3 s
    took_s = time.time() - started
    assert set(result.resources) == {s.device for s in plan.stages} == {"a", "b"}
    for device, series in result.resources.items():
        times = np.asarray(series.times_s)
        assert series.note == "" and series.interval_s == 0.02 and series.num_cpus == os.cpu_count()
        assert len(times) >= 3 and (np.diff(times) > 0).all(), device
        assert times[0] > 0 and times[-1] <= took_s + 0.02  # within the measured requests' window
        assert all(0 <= c <= 100 * os.cpu_count() for c in series.cpu_percent)
        assert min(series.rss_bytes) > 10e6 and not series.has_gpu  # a worker with onnxruntime loaded
    assert max(result.resources["a"].cpu_percent) > 0  # a ran stage 0 (3x slowdown waits: not all CPU)
    save_bench(result, tmp_path / "bench.json")
    assert load_bench(tmp_path / "bench.json").resources == result.resources
    assert bench(session, num_requests=1, num_warmup=0, resource_interval_s=0).resources == {}


def test_an_old_bench_file_without_resources_still_loads():
    doc = json.loads(encode_bench(_tiny_result()))
    del doc["resources"]
    assert decode_bench(json.dumps(doc)).resources == {}
