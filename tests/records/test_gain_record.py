"""gain.json without a runtime: the gain arithmetic, the sentence that says it, the file round trip."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from splitinfer.errors import SchemaError
from splitinfer.plan import Hop, Plan, Stage
from splitinfer.records.bench import BenchResult, RankedBench
from splitinfer.records.gain import (
    GainResult,
    decode_gain,
    encode_gain,
    gain_line,
    gain_ratio,
    load_gain,
    save_gain,
    split_gain,
)

ONE = Plan("latency", (Stage("camera", 0, 3, 0.120),), (), 0.120, 0.120, 8.3, 0, 0, solver="latency-dp")
TWO = Plan("latency", (Stage("camera", 0, 1, 0.040), Stage("edge", 2, 3, 0.010)),
           (Hop("camera", "edge", 100_000, 0.025, "cut"), Hop("edge", "camera", 4_000, 0.004, "return")),
           0.079, 0.050, 25.0, 104_000, 0, solver="latency-dp")


def _entry(plan: Plan, rank: int, predicted: float, measured: float) -> RankedBench:
    bench = BenchResult(plan=plan, model_name="m", model_sha256="ab12", cluster={}, num_requests=3,
                        concurrency=1, latency_median_s=measured, latency_p95_s=measured,
                        latency_mean_s=measured, latency_min_s=measured, latency_max_s=measured,
                        throughput_rps=1 / measured, predicted_latency_s=plan.latency_s,
                        predicted_throughput_rps=plan.throughput_rps, latency_rel_error=0.0,
                        throughput_rel_error=0.0, stages=(), hops=(), latencies_s=(measured,) * 3,
                        date="2026-01-01T00:00:00+00:00", host={})
    return RankedBench(rank=rank, measured_rank=rank, predicted=predicted, measured=measured,
                       rel_error=(predicted - measured) / measured, bench=bench)


def test_the_gain_is_single_over_best_for_latency_and_best_over_single_for_throughput():
    assert gain_ratio("latency", best=0.050, single=0.150) == pytest.approx(3.0)
    assert gain_ratio("throughput", best=30.0, single=10.0) == pytest.approx(3.0)
    assert gain_ratio("latency", best=0.200, single=0.100) == pytest.approx(0.5)  # a worse split says so
    assert gain_ratio("throughput", best=5.0, single=0.0) == math.inf


def test_a_split_gain_is_of_the_measured_figures_and_its_line_quotes_them():
    g = split_gain("latency", _entry(TWO, 1, 0.079, 0.080), [_entry(ONE, 2, 0.120, 0.160)], num_requests=3,
                   concurrency=1)
    assert g.is_split and g.gain == pytest.approx(2.0) and g.predicted_gain == pytest.approx(0.120 / 0.079)
    line = gain_line(g)
    assert line.startswith("split: 2.00x faster than the fastest single device (camera[0-1] -> edge[2-3]")
    assert "measured 80.0 ms vs 160.0 ms on camera[0-3]" in line and "predicted 1.52x" in line


def test_the_gain_is_against_the_single_device_that_measured_best_not_the_predicted_best():
    edge = Plan("latency", (Stage("edge", 0, 3, 0.100),), (), 0.125, 0.100, 8.0, 0, 0, solver="latency-dp")
    predicted_first, measured_first = _entry(ONE, 2, 0.120, 0.160), _entry(edge, 3, 0.125, 0.110)
    g = split_gain("latency", _entry(TWO, 1, 0.079, 0.080), [predicted_first, measured_first], num_requests=3,
                   concurrency=1)
    assert g.single is g.singles[1] and g.gain == pytest.approx(0.110 / 0.080)  # not 0.160 / 0.080
    assert g.predicted_gain == pytest.approx(0.125 / 0.079)  # the same two plans, as predicted
    assert "vs 110.0 ms on edge[0-3], the fastest of 2 measured;" in gain_line(g)
    slow, fast = _entry(ONE, 2, 8.3, 8.0), _entry(edge, 3, 8.0, 9.0)
    g = split_gain("throughput", _entry(TWO, 1, 25.0, 18.0), [slow, fast], num_requests=3, concurrency=4)
    assert g.single is fast and g.gain == pytest.approx(2.0)


def test_a_split_that_measured_slower_says_so():
    g = split_gain("latency", _entry(TWO, 1, 0.079, 0.200), [_entry(ONE, 2, 0.120, 0.100)], num_requests=3,
                   concurrency=1)
    assert g.gain == pytest.approx(0.5)
    assert gain_line(g).startswith("split: 0.50x the speed of the fastest single device: slower (")


def test_a_throughput_gain_line_speaks_of_throughput():
    g = split_gain("throughput", _entry(TWO, 1, 25.0, 20.0), [_entry(ONE, 2, 8.3, 8.0)], num_requests=3,
                   concurrency=4)
    assert g.gain == pytest.approx(2.5)
    assert gain_line(g).startswith("split: 2.50x the throughput of the best single device (camera[0-1] -> "
                                   "edge[2-3], measured 20.00 req/s vs 8.00 req/s on camera[0-3]")


def test_a_best_plan_on_one_device_is_said_honestly_with_no_gain():
    entry = _entry(ONE, 1, 0.120, 0.130)
    g = split_gain("latency", entry, [entry], num_requests=3, concurrency=1)
    assert not g.is_split and g.gain == 1.0
    assert gain_line(g) == ("no split: the best latency plan runs on one device (camera[0-3]), gain 1.0x, "
                            "measured 130.0 ms")


def test_without_a_single_device_plan_there_is_no_gain_to_quote():
    g = split_gain("latency", _entry(TWO, 1, 0.079, 0.080), [], num_requests=3, concurrency=1)
    assert g.gain is None and g.predicted_gain is None and g.single is None
    assert gain_line(g).startswith("split: no single device can run the whole model")


def test_a_gain_file_round_trips_and_a_foreign_file_is_refused(tmp_path):
    g = split_gain("latency", _entry(TWO, 1, 0.079, 0.080), [_entry(ONE, 2, 0.120, 0.160)], num_requests=3,
                   concurrency=1)
    result = GainResult(gains=(g,), date="2026-01-01T00:00:00+00:00", host={"cpu": "x"})
    save_gain(result, tmp_path / "gain.json")
    assert load_gain(tmp_path / "gain.json") == result and result.of("latency") == g
    assert result.of("throughput") is None
    doc = json.loads(encode_gain(result))
    with pytest.raises(SchemaError, match="schema 9"):
        decode_gain(json.dumps({**doc, "schema": 9}))
    with pytest.raises(SchemaError, match="not a gain file"):
        decode_gain(json.dumps({**doc, "kind": "rank"}))
    with pytest.raises(SchemaError, match="malformed"):
        decode_gain(msgspec.json.encode({**doc, "gains": "no"}))
