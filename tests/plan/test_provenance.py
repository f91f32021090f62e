"""A plan's provenance in plan.json: schema 2 round-trips, schema-1 ``meta`` files still load."""

from __future__ import annotations

import json

import msgspec
import pytest

from splitinfer.errors import SchemaError
from splitinfer.plan import (
    Constraints,
    Hop,
    HopOverhead,
    Plan,
    Provenance,
    Stage,
    plan_from_json,
    plan_to_json,
    with_provenance,
)

CONSTRAINTS = Constraints(pins=((0, "camera"), (3, "cloud")), forbids=((1, "edge"),), excludes=("phone",),
                          requires=("camera",), max_stages=2, revisits=False, private_blocks=1,
                          max_latency_s=0.2, min_throughput_rps=5.0, max_upload_bytes=1000, max_energy_j=1.5)

# As the previous version's `splitinfer plan -o` and `profile --refine` wrote it (schema 1).
SCHEMA_1 = """{
  "schema": 1,
  "plans": [{
    "objective": "latency", "rank": 1,
    "stages": [{"device": "camera", "first_block": 0, "last_block": 0, "compute_s": 0.25},
               {"device": "cloud", "first_block": 1, "last_block": 3, "compute_s": 0.5}],
    "hops": [{"src": "camera", "dst": "cloud", "num_bytes": 1000, "transfer_s": 0.125, "kind": "cut"}],
    "latency_s": 0.875, "bottleneck_s": 0.5, "throughput_rps": 2.0, "bytes_sent": 1000,
    "upload_bytes": 0, "energy_j": null, "gap": null, "solver": "latency-dp",
    "meta": {
      "profile": "profile.json", "model": "resnet18", "model_sha256": "ab12", "cluster": "cluster.yaml",
      "constraints": "{\\"pins\\":[[0,\\"camera\\"],[3,\\"cloud\\"]],\\"forbids\\":[[1,\\"edge\\"]],\\"excludes\\":[\\"phone\\"],\\"requires\\":[\\"camera\\"],\\"max_stages\\":2,\\"revisits\\":false,\\"private_blocks\\":1,\\"max_latency_s\\":0.2,\\"min_throughput_rps\\":5.0,\\"max_upload_bytes\\":1000,\\"max_energy_j\\":1.5}",
      "hop_overhead_ms": "camera->cloud 1.50, cloud->camera 0.25",
      "colour": "dropped: not a provenance field"
    }
  }]
}
"""  # noqa: E501

PROVENANCE = Provenance(model="resnet18", model_sha256="ab12", profile="profile.json", cluster="cluster.yaml",
                        constraints=CONSTRAINTS,
                        hop_overheads=(HopOverhead("camera", "cloud", 0.0015),
                                       HopOverhead("cloud", "camera", 0.00025)))


def _plan(**changes) -> Plan:
    plan = Plan("latency", (Stage("camera", 0, 0, 0.25), Stage("cloud", 1, 3, 0.5)),
                (Hop("camera", "cloud", 1000, 0.125, "cut"),), 0.875, 0.5, 2.0, 1000, 0, solver="latency-dp")
    return msgspec.structs.replace(plan, **changes)


def test_a_schema_1_file_loads_with_its_meta_as_provenance():
    (plan,) = plan_from_json(SCHEMA_1)
    assert plan.provenance == PROVENANCE
    assert plan == _plan(provenance=PROVENANCE)
    assert json.loads(plan_to_json(plan))["schema"] == 2  # written back in the current schema


def test_a_schema_1_file_without_meta_loads_with_empty_provenance():
    doc = json.loads(SCHEMA_1)
    del doc["plans"][0]["meta"]
    (plan,) = plan_from_json(json.dumps(doc))
    assert plan.provenance == Provenance()


def test_a_schema_2_file_round_trips_exactly():
    plans = [_plan(provenance=PROVENANCE), _plan(rank=2, throughput_rps=float("inf")),
             _plan(rank=3, provenance=Provenance(model="vgg19", scission_dir="benchmark_data",
                                                 network_stats="network_stats.csv"))]
    text = plan_to_json(plans)
    doc = json.loads(text)
    assert doc["schema"] == 2 and "meta" not in doc["plans"][0]
    assert doc["plans"][0]["provenance"]["constraints"]["pins"] == [[0, "camera"], [3, "cloud"]]
    assert doc["plans"][0]["provenance"]["hop_overheads"][0] == {"src": "camera", "dst": "cloud",
                                                                 "overhead_s": 0.0015}
    assert plan_from_json(text) == plans
    assert plan_to_json(plan_from_json(text)) == text


def test_a_later_schema_is_refused():
    doc = json.loads(plan_to_json(_plan(provenance=PROVENANCE)))
    doc["schema"] = 3
    with pytest.raises(SchemaError, match="plan file has schema 3, this splitinfer reads 1, 2") as info:
        plan_from_json(json.dumps(doc))
    assert info.value.fix == "re-plan with this version of splitinfer"


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"constraints": "{not json"}, "recorded constraints do not parse"),
        ({"constraints": "[1]"}, "not a JSON object"),
        ({"constraints": '{"colour": 1}'}, "unknown constraints: colour"),
        ({"constraints": '{"pins": 3}'}, "invalid plan file"),
        ({"hop_overhead_ms": "camera cloud 1.5"}, "hop_overhead_ms 'camera cloud 1.5' does not parse"),
        ({"hop_overhead_ms": "camera->cloud fast"}, "does not parse"),
        ({"model": 3}, "meta is not a mapping of strings"),
    ],
)
def test_a_schema_1_meta_that_does_not_parse_is_a_schema_error(meta, match):
    doc = json.loads(SCHEMA_1)
    doc["plans"][0]["meta"] = meta
    with pytest.raises(SchemaError, match=match):
        plan_from_json(json.dumps(doc))


@pytest.mark.parametrize(
    ("provenance", "match"),
    [
        ({"constraints": {"colour": 1}}, "unknown constraints: colour"),
        ({"meta": "x"}, "invalid plan file"),
        ({"hop_overheads": [{"src": "a", "dst": "b"}]}, "invalid plan file"),
    ],
)
def test_a_schema_2_provenance_that_does_not_fit_is_a_schema_error(provenance, match):
    doc = json.loads(plan_to_json(_plan()))
    doc["plans"][0]["provenance"] = provenance
    with pytest.raises(SchemaError, match=match):
        plan_from_json(json.dumps(doc))


def test_with_provenance_sets_some_fields_and_keeps_the_others():
    plan = with_provenance(_plan(provenance=PROVENANCE), cluster="other.yaml", constraints=None)
    assert plan.provenance == msgspec.structs.replace(PROVENANCE, cluster="other.yaml", constraints=None)
    with pytest.raises(TypeError):
        with_provenance(plan, colour="red")
