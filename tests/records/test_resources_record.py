"""bench.json's resources: the series round-trip, a malformed one is refused, the summary is numpy's."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest

from splitinfer.errors import SchemaError
from splitinfer.plan import Plan, Stage
from splitinfer.records import BenchResult, decode_bench, encode_bench
from splitinfer.records.resources import ResourceSeries, resource_stats

CPU = (50.0, 150.0, 100.0, 120.0)
SERIES = ResourceSeries(interval_s=0.1, num_cpus=4, times_s=(0.1, 0.2, 0.3, 0.4), cpu_percent=CPU,
                        rss_bytes=(100_000_000, 120_000_000, 110_000_000, 90_000_000),
                        gpu_util_percent=(10.0, 20.0, 30.0, 40.0),
                        gpu_memory_bytes=(2_000_000_000,) * 4, gpu="GPU 0")


def _result(**resources: ResourceSeries) -> BenchResult:
    plan = Plan("latency", (Stage("a", 0, 1, 0.25),), (), 0.25, 0.25, 4.0, 0, 0)
    return BenchResult(plan=plan, model_name="m", model_sha256="ab12", cluster={}, num_requests=40,
                       concurrency=1, latency_median_s=0.5, latency_p95_s=0.5, latency_mean_s=0.5,
                       latency_min_s=0.5, latency_max_s=0.5, throughput_rps=2.0, predicted_latency_s=0.25,
                       predicted_throughput_rps=math.inf, latency_rel_error=-0.5, throughput_rel_error=1.0,
                       stages=(), hops=(), latencies_s=(0.5,), date="2026-01-01T00:00:00+00:00", host={},
                       resources=resources)


def test_resources_round_trip_and_old_files_have_none():
    result = _result(a=SERIES, b=ResourceSeries(interval_s=0.1, note="not sampled: no answer"))
    assert decode_bench(encode_bench(result)) == result
    doc = json.loads(encode_bench(result))
    assert doc["resources"]["a"]["cpu_percent"] == list(CPU)
    del doc["resources"]  # as bench.json files from before it
    assert decode_bench(json.dumps(doc)).resources == {}


@pytest.mark.parametrize(("change", "problem"), [
    ({"cpu_percent": [1.0]}, "one value per sample"),
    ({"gpu_memory_bytes": []}, "one value per sample"),
    ({"cpu_percent": [1.0, "nan", 2.0, 3.0]}, "cpu_percent must hold finite numbers"),
    ({"rss_bytes": [1, -2, 3, 4]}, "rss_bytes must hold finite numbers, none negative"),
    ({"times_s": [0.1, "inf", 0.3, 0.4]}, "times_s must be finite"),
    ({"interval_s": 0}, "interval_s positive"),
    ({"surprise": 1}, "unknown field"),
])
def test_a_malformed_series_is_refused_naming_what_is_wrong(change, problem):
    doc = json.loads(encode_bench(_result(a=SERIES)))
    doc["resources"]["a"].update(change)
    with pytest.raises(SchemaError, match="bench file is malformed") as caught:
        decode_bench(json.dumps(doc))
    assert problem in caught.value.problem


def test_the_summary_is_mean_std_median_and_max_in_the_unit():
    cpu = resource_stats(SERIES, "cpu_percent")
    assert (cpu.mean, cpu.std, cpu.median, cpu.max, cpu.num_samples) == pytest.approx(
        (np.mean(CPU), np.std(CPU), np.median(CPU), 150.0, 4))
    rss = resource_stats(SERIES, "rss_bytes")
    assert (rss.mean, rss.median, rss.max) == pytest.approx((105.0, 105.0, 120.0))  # MB
    assert resource_stats(msgspec.structs.replace(SERIES, gpu_util_percent=(), gpu_memory_bytes=()),
                          "gpu_util_percent") is None

