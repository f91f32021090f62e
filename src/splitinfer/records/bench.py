"""The bench record (``bench.json``): a bench run's measured figures beside its plan's predictions.

:func:`splitinfer.runtime.bench.bench` measures; this module only holds and reads the
result, so the report can read a bench file without loading the runtime. Relative
errors are ``(predicted - measured) / measured`` of the medians: negative means the
plan is optimistic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import msgspec

from splitinfer.errors import SchemaError, read_file
from splitinfer.plan import Plan
from splitinfer.plan.plan import upgrade_plan

BENCH_SCHEMA = 2  # 2: the plan's provenance replaced its meta (plan.json schema 2)
OLD_BENCH_SCHEMAS = (1,)  # read, upgraded on the way in


class StageBench(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One stage: predicted compute vs measured busy time (compute + emulated wait)."""

    stage: int
    device: str
    predicted_s: float
    measured_median_s: float
    measured_p95_s: float
    rel_error: float  # (predicted - measured) / measured, of the median
    precision: str = "fp32"  # the plan's (and so the deployed partition's)


class HopBench(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One hop: predicted vs measured transfer time and bytes."""

    src: str
    dst: str
    kind: Literal["upload", "cut", "return"]
    # Measured: the median bytes sent (compressed: payload and params). Files without predicted_bytes
    # recorded the tensors' bytes before compression here.
    num_bytes: int
    predicted_s: float
    measured_median_s: float
    measured_p95_s: float
    rel_error: float
    predicted_bytes: int | None = None  # the plan's num_bytes (0: a hop it does not list); None: not recorded
    compression: str = "none"  # the plan's, as the hop was deployed


class BenchResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A bench run of one plan: measured figures beside the plan's predictions."""

    schema: int = BENCH_SCHEMA
    plan: Plan
    model_name: str
    model_sha256: str
    cluster: dict[str, Any]  # the cluster as plain data (parse_cluster reads it back)
    num_requests: int
    concurrency: int
    latency_median_s: float
    latency_p95_s: float
    latency_mean_s: float
    latency_min_s: float
    latency_max_s: float
    throughput_rps: float  # completed requests / wall time of the measured phase
    predicted_latency_s: float
    predicted_throughput_rps: float
    latency_rel_error: float
    throughput_rel_error: float
    stages: tuple[StageBench, ...]
    hops: tuple[HopBench, ...]
    latencies_s: tuple[float, ...]  # every measured request, in completion order
    date: str  # ISO 8601
    host: dict[str, str]


def rel_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured; 0 when both are 0."""
    if measured <= 0:
        return 0.0 if predicted == 0 else math.copysign(1e9, predicted)
    return (predicted - measured) / measured


def _finite(value: Any) -> Any:
    # JSON has no infinity: write it as the string "inf" (the plan file does the same).
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def encode_bench(result: BenchResult) -> bytes:
    """bench.json text (indented)."""
    doc = _finite(msgspec.to_builtins(result))
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def decode_bench(data: bytes | str, where: str = "bench file") -> BenchResult:
    """Parse bench.json; SchemaError for another schema version or a malformed file."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        raise SchemaError(f"{where} is not valid JSON: {e}",
                          "write it with `splitinfer bench ... -o`") from None
    if not isinstance(raw, dict) or "schema" not in raw:
        raise SchemaError(f"{where} has no schema field", "write it with `splitinfer bench ... -o`")
    schema = raw["schema"]
    if type(schema) is not int or (schema != BENCH_SCHEMA and schema not in OLD_BENCH_SCHEMAS):
        readable = ", ".join(map(str, (*OLD_BENCH_SCHEMAS, BENCH_SCHEMA)))
        raise SchemaError(f"{where} has schema {schema!r}, this splitinfer reads {readable}",
                          "bench again with this version of splitinfer")
    if schema == 1:  # its plan was of plan.json schema 1
        upgrade_plan(raw.get("plan"), 1)
    raw["schema"] = BENCH_SCHEMA  # upgraded above
    try:
        return msgspec.convert(raw, BenchResult, strict=False)  # lax: reads "inf" back as a float
    except msgspec.ValidationError as e:
        raise SchemaError(f"{where} is malformed: {e}", "write it with `splitinfer bench ... -o`") from None


def save_bench(result: BenchResult, path: str | Path) -> None:
    """Write ``result`` to ``path`` as JSON."""
    Path(path).write_bytes(encode_bench(result))


def load_bench(path: str | Path) -> BenchResult:
    """Read a bench.json written by :func:`save_bench`."""
    return decode_bench(read_file(path, "bench file", "check the path", SchemaError), str(path))
