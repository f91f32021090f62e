"""Does a stage's time follow from its blocks? Three predictions against measured segments (issue 15).

For a zoo model on this machine (one ONNX Runtime thread by default), time every block, every pair of
adjacent blocks, a trivial partition (one Identity: the fixed cost of a run) and the whole model, then
random segments; predict each segment as

- ``sum``: the sum of its blocks (what the planner does without pairs),
- ``-overhead``: that, less the trivial run's time once per inner cut,
- ``pairs``: the sum plus the joins at its inner cuts (``plan/joins.py``: pair - block - block),

and print each prediction's error against the segment measured. Not a goal check: it tells whether
``profile --pairs`` should be on by default (it doubles the profiling work).

Usage: ``python benchmarks/bench_joins.py [MODEL] [--num-threads N] [--segments K] [--budget-s S]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

import numpy as np
from onnx import TensorProto, helper

from splitinfer import zoo
from splitinfer.profile.profiler import LocalRunner, prepare_model


def identity_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "trivial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="mobilenetv2")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=0.6, help="timed work per partition")
    parser.add_argument("--max-blocks", type=int, default=24)
    args = parser.parse_args(argv)
    prepared = prepare_model(zoo.build(args.model), max_blocks=args.max_blocks)
    runner = LocalRunner(num_threads=args.num_threads)

    def median_s(model_bytes: bytes, feeds, budget_s: float = args.budget_s) -> float:
        result = runner.profile(
            model_bytes, feeds, num_warmup=3, min_runs=10, max_runs=300, budget_s=budget_s, rel_precision=0.02
        )
        return float(np.median(result.times_s))

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    overhead = median_s(identity_model(), {"x": np.zeros(1, np.float32)})
    num = prepared.num_blocks
    blocks = [median_s(prepared.block_bytes[b], prepared.block_feeds[b]) for b in range(num)]
    pairs = [median_s(*prepared.segment(b, b + 1)) for b in range(num - 1)]
    whole = median_s(prepared.whole_bytes, prepared.whole_feeds, 3 * args.budget_s)
    print(
        f"{args.model}: {num} blocks, a trivial run {overhead * 1e3:.3f} ms, sum of blocks "
        f"{sum(blocks) * 1e3:.2f} ms, whole model {whole * 1e3:.2f} ms",
        flush=True,
    )
    rng = random.Random(0)
    segments = [(0, num - 1)] + [tuple(sorted(rng.sample(range(num), 2))) for _ in range(args.segments)]
    errors: dict[str, list[float]] = {"sum": [], "-overhead": [], "pairs": []}
    for first, last in segments:
        measured = whole if (first, last) == (0, num - 1) else median_s(*prepared.segment(first, last))
        total = sum(blocks[first : last + 1])
        inner = range(first, last)
        predicted = {
            "sum": total,
            "-overhead": total - len(inner) * overhead,
            "pairs": total + sum(min(0.0, pairs[b] - blocks[b] - blocks[b + 1]) for b in inner),
        }
        line = []
        for name, value in predicted.items():
            errors[name].append(abs(value / measured - 1))
            line.append(f"{name} {(value / measured - 1) * 100:+6.1f}%")
        print(
            f"  blocks {first:2}-{last:2}: measured {measured * 1e3:8.2f} ms   " + "   ".join(line),
            flush=True,
        )
    print("median |error|: " + ", ".join(f"{k} {statistics.median(v):.1%}" for k, v in errors.items()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
