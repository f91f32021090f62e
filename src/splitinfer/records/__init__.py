"""The files a run leaves: ``plan.json``, ``bench.json``, ``gain.json``: their records, readers, writers.

Below the runtime, so the report (and anything else that only reads these files)
loads neither ZeroMQ nor ONNX Runtime. Modules: ``plans`` (reading ``plan.json``;
the plan struct and its JSON form are :mod:`splitinfer.plan`'s), ``bench`` (the
bench record, its reader and writer), ``gain`` (what splitting gained: the best plan
measured against the best single device)::

    from splitinfer.records import load_bench, load_plan, read_plans
    best = load_plan("plan.json")            # the plan of rank 1
    result = load_bench("bench.json")        # a BenchResult
    gain = load_gain("gain.json")            # a GainResult
"""

from splitinfer.records.bench import (
    BENCH_SCHEMA,
    BenchResult,
    HopBench,
    StageBench,
    decode_bench,
    encode_bench,
    load_bench,
    rel_error,
    save_bench,
)
from splitinfer.records.gain import GainResult, SplitGain, gain_line, load_gain, save_gain
from splitinfer.records.plans import PlanSource, load_plan, read_plans

__all__ = [
    "BENCH_SCHEMA",
    "BenchResult",
    "GainResult",
    "HopBench",
    "PlanSource",
    "SplitGain",
    "StageBench",
    "decode_bench",
    "encode_bench",
    "gain_line",
    "load_bench",
    "load_gain",
    "load_plan",
    "read_plans",
    "rel_error",
    "save_bench",
    "save_gain",
]
