"""The bench records: a bench run's measured figures beside its plan's predictions (``bench.json``),
and a ranked bench of the k best plans of a file, predicted rank against measured rank.

:func:`splitinfer.runtime.bench.bench` and :func:`~splitinfer.runtime.bench.bench_ranked`
measure; this module only holds and reads the results, so the report can read a bench
file without loading the runtime. Relative errors are ``(predicted - measured) / measured``
of the medians: negative means the plan is optimistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from splitinfer.errors import PlanError, SchemaError, read_file
from splitinfer.plan import Plan
from splitinfer.plan.plan import upgrade_plan
from splitinfer.records.resources import ResourceSeries

BENCH_SCHEMA = 2  # 2: the plan's provenance replaced its meta (plan.json schema 2)
OLD_BENCH_SCHEMAS = (1,)  # read, upgraded on the way in
RANK_SCHEMA = 1
RankFigure = Literal["latency", "throughput"]


class StageBench(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One stage: predicted compute vs measured busy time (compute + emulated wait)."""

    stage: int
    device: str
    predicted_s: float
    measured_median_s: float
    measured_p95_s: float
    rel_error: float  # (predicted - measured) / measured, of the median
    precision: str = "fp32"  # the plan's (and so the deployed partition's)


class ExitBench(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One early exit (``""``: the model's end): how many requests it answered, against the plan's
    fraction, and their latencies."""

    output: str
    count: int
    fraction: float
    predicted_fraction: float
    latency_median_s: float
    latency_p95_s: float
    latency_mean_s: float


class HopBench(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One hop: predicted vs measured transfer time and bytes."""

    src: str
    dst: str
    kind: Literal["upload", "cut", "return", "exit"]
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
    # A plan with early exits: each exit's share and latencies (the end last). Its stages and hops are
    # then compared as expected values (means over every request, 0 where a request did not reach
    # them), and its latency error is the mean's: the plan predicts an expected latency.
    exits: tuple[ExitBench, ...] = ()
    # Per device of the plan: its worker's CPU, memory and GPU use during the measured requests
    # (records/resources.py); empty when not sampled (files from before it, --resource-interval 0).
    resources: dict[str, ResourceSeries] = {}


def rel_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured; 0 when both are 0."""
    if measured <= 0:
        return 0.0 if predicted == 0 else math.copysign(1e9, predicted)
    return (predicted - measured) / measured


T = TypeVar("T", bound=msgspec.Struct)


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
    if raw.get("kind") == "rank":  # the two files look alike from afar: name the command that wrote it
        raise SchemaError(f"{where} holds a ranked bench of several plans (`splitinfer bench --top`)",
                          "read it with splitinfer.records.bench.load_rank")
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


# ---- a ranked bench (`splitinfer bench --top K`) ---------------------------------------------------
class RankedBench(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One plan of a ranked bench: where the plan file put it and where its measurement does."""

    rank: int  # predicted: its place in the plan file, 1 = the predicted best
    measured_rank: int  # 1 = the measured best
    predicted: float  # the ranked figure: latency (s) or throughput (requests/s), as the plan predicts
    measured: float  # the same figure measured: the median latency, or completed requests per second
    rel_error: float
    bench: BenchResult  # the whole comparison of this plan (stages, hops), as bench.json holds it


class RankResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The k best plans of a plan file, measured under the same conditions: predicted against
    measured rank, the regret of the predicted best and Kendall's tau between the two orders."""

    schema: int = RANK_SCHEMA
    kind: Literal["rank"] = "rank"  # tells this file from a bench.json of one plan
    figure: RankFigure  # what ranks the plans: latency (lower is better) or throughput (higher)
    num_requests: int  # measured requests per plan
    concurrency: int
    interleaved: bool  # all plans deployed at once, requests sent to each in turn
    note: str  # why the plans were measured one after another ("" when interleaved)
    plans: tuple[RankedBench, ...]  # in predicted order
    measured_best: int  # the predicted rank of the measured best plan
    # How much longer a request took on the predicted best than on the measured best (0: they are
    # one): latency ratio, or inverse throughput ratio, minus 1.
    regret: float
    kendall_tau: float | None  # between predicted and measured ranks; None for a single plan
    num_discordant_pairs: int  # pairs of plans the measurement orders the other way round
    date: str  # ISO 8601
    host: dict[str, str]


def rank_figure(plans: Sequence[Plan]) -> RankFigure:
    """What ranks ``plans``: latency or throughput (energy is not measured; a Pareto front is not
    one order). PlanError for another objective or a mix."""
    objectives = sorted({p.objective for p in plans})
    if len(objectives) != 1 or objectives[0] not in ("latency", "throughput"):
        raise PlanError(f"a ranked bench orders plans by latency or throughput, these plans are ranked "
                        f"by {' and '.join(objectives)}",
                        "plan with --objective latency or --objective throughput")
    return "latency" if objectives[0] == "latency" else "throughput"


def measured_ranks(figures: Sequence[float], figure: RankFigure) -> list[int]:
    """1 = best, per plan in predicted order: the lowest latency or the highest throughput. A tie
    keeps the predicted order, so the ranks are always a permutation of 1..k."""
    sign = 1.0 if figure == "latency" else -1.0
    order = sorted(range(len(figures)), key=lambda k: (sign * figures[k], k))
    ranks = [0] * len(figures)
    for place, k in enumerate(order, start=1):
        ranks[k] = place
    return ranks


def discordant_pairs(ranks: Sequence[int]) -> int:
    """Pairs of plans (in predicted order) that ``ranks`` orders the other way round."""
    return sum(ranks[i] > ranks[j] for i in range(len(ranks)) for j in range(i + 1, len(ranks)))


def kendall_tau(ranks: Sequence[int]) -> float | None:
    """Kendall's tau between the predicted order (1..k) and ``ranks`` (a permutation, so no ties):
    1 the same order, -1 reversed; None for fewer than two plans."""
    num_pairs = len(ranks) * (len(ranks) - 1) // 2
    if num_pairs == 0:
        return None
    return 1.0 - 2.0 * discordant_pairs(ranks) / num_pairs


def regret(figures: Sequence[float], figure: RankFigure) -> float:
    """How much longer a request took on the predicted best (the first) than on the measured best."""
    if figure == "latency":
        best = min(figures)
        return figures[0] / best - 1.0 if best > 0 else 0.0
    best = max(figures)
    return best / figures[0] - 1.0 if figures[0] > 0 else math.inf


def encode_record(record: msgspec.Struct) -> bytes:
    """A record's JSON text (indented; infinities as "inf")."""
    doc = _finite(msgspec.to_builtins(record))
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def decode_record(data: bytes | str, where: str, kind: str, schema: int, cls: type[T], fix: str,
                  again: str) -> T:
    """Parse a record with ``kind`` and ``schema`` fields into ``cls``; SchemaError naming ``where``
    for invalid JSON, another kind (``fix``: how to write one), another schema (``again``: what to
    redo) or a malformed file."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        raise SchemaError(f"{where} is not valid JSON: {e}", fix) from None
    if not isinstance(raw, dict) or raw.get("kind") != kind:
        raise SchemaError(f"{where} is not a {kind} file (no kind: {kind})", fix)
    if raw.get("schema") != schema:
        raise SchemaError(f"{where} has schema {raw.get('schema')!r}, this splitinfer reads {schema}",
                          f"{again} with this version of splitinfer")
    try:
        return msgspec.convert(raw, cls, strict=False)  # lax: reads "inf" back as a float
    except msgspec.ValidationError as e:
        raise SchemaError(f"{where} is malformed: {e}", fix) from None


def encode_rank(result: RankResult) -> bytes:
    """The ranked bench's JSON text (indented)."""
    return encode_record(result)


def decode_rank(data: bytes | str, where: str = "rank file") -> RankResult:
    """Parse a ranked bench's JSON; SchemaError for another schema or a malformed file."""
    return decode_record(data, where, "rank", RANK_SCHEMA, RankResult,
                         "write it with `splitinfer bench PLAN --top K -o`", "bench again")


def save_rank(result: RankResult, path: str | Path) -> None:
    """Write ``result`` to ``path`` as JSON."""
    Path(path).write_bytes(encode_rank(result))


def load_rank(path: str | Path) -> RankResult:
    """Read a ranked bench written by :func:`save_rank`."""
    return decode_rank(read_file(path, "rank file", "check the path", SchemaError), str(path))
