"""The record files without a runtime: bench.json of every readable schema, plan.json by rank."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from splitinfer.errors import PlanError, SchemaError
from splitinfer.plan import Constraints, Plan, Provenance, Stage, plan_to_json, with_provenance
from splitinfer.records import BenchResult, decode_bench, encode_bench, load_plan, read_plans

PLAN = Plan("latency", (Stage("a", 0, 1, 0.25),), (), 0.25, 0.25, 4.0, 0, 0, solver="latency-dp")


def _result(plan: Plan) -> BenchResult:
    return BenchResult(plan=plan, model_name="m", model_sha256="ab12", cluster={}, num_requests=1,
                       concurrency=1, latency_median_s=0.5, latency_p95_s=0.5, latency_mean_s=0.5,
                       latency_min_s=0.5, latency_max_s=0.5, throughput_rps=2.0, predicted_latency_s=0.25,
                       predicted_throughput_rps=math.inf, latency_rel_error=-0.5, throughput_rel_error=1.0,
                       stages=(), hops=(), latencies_s=(0.5,), date="2026-01-01T00:00:00+00:00", host={})


def test_a_bench_file_round_trips_in_schema_2():
    result = _result(with_provenance(PLAN, model="m.onnx", constraints=Constraints(max_stages=1)))
    doc = json.loads(encode_bench(result))
    assert doc["schema"] == 2 and doc["plan"]["provenance"]["constraints"]["max_stages"] == 1
    assert decode_bench(encode_bench(result)) == result


def test_a_schema_1_bench_file_loads_with_its_plan_meta_as_provenance():
    expected = _result(with_provenance(PLAN, model="m.onnx", model_sha256="ab12",
                                       constraints=Constraints(max_stages=1)))
    doc = json.loads(encode_bench(expected))
    doc["schema"] = 1  # as the previous version wrote it: the plan's provenance as meta strings
    doc["plan"]["meta"] = {"model": "m.onnx", "model_sha256": "ab12", "constraints": '{"max_stages": 1}'}
    del doc["plan"]["provenance"]
    assert decode_bench(json.dumps(doc)) == expected


def test_a_later_bench_schema_is_refused():
    doc = json.loads(encode_bench(_result(PLAN)))
    with pytest.raises(SchemaError, match="bench file has schema 3, this splitinfer reads 1, 2"):
        decode_bench(json.dumps({**doc, "schema": 3}))


def test_plans_load_by_rank_from_a_file(tmp_path):
    path = tmp_path / "plan.json"
    second = msgspec.structs.replace(PLAN, rank=2, provenance=Provenance(model="m.onnx"))
    path.write_text(plan_to_json([PLAN, second]))
    assert read_plans(path) == [PLAN, second]
    assert load_plan(path) == PLAN and load_plan(path, rank=2) == second and load_plan(PLAN) is PLAN
    with pytest.raises(PlanError, match="no plan of rank 3"):
        load_plan(path, rank=3)
    with pytest.raises(PlanError, match="cannot read plan file"):
        read_plans(tmp_path / "missing.json")
