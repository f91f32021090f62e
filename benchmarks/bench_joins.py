"""Does a stage's time follow from its blocks? Four predictions against measured segments (issue 15).

For a zoo model on this machine (one ONNX Runtime thread by default), profile it as ``splitinfer
profile --pairs`` does (blocks, a trivial run, the whole model, then every pair of adjacent blocks,
in interleaved rounds), then time random segments; predict each segment as its blocks plus the
joins at its inner cuts (``profile/segments.joins_of``), the joins taken

- ``sum``: as 0 (every block's own run counted),
- ``-overhead``: as minus the trivial run (one run per stage),
- ``fitted``: as minus the trivial run and minus the cut's bytes times a rate fitted on the whole
  model (what ``profile`` without ``--pairs`` gives the planner),
- ``pairs``: as each pair's time less its two blocks' (``profile --pairs``),

and print each prediction's error against the segment measured. Not a goal check: it tells which
join model the planner should use by default.

Usage: ``python benchmarks/bench_joins.py [MODEL] [--num-threads N] [--segments K] [--budget-s S]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

import msgspec

from splitinfer import zoo
from splitinfer.profile.device import profile_device, profile_segments
from splitinfer.profile.profiler import LocalRunner, ProfileSettings, prepare_model
from splitinfer.profile.segments import joins_of


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="mobilenetv2")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=20.0, help="timed work of the profile")
    parser.add_argument("--max-blocks", type=int, default=24)
    args = parser.parse_args(argv)
    prepared = prepare_model(zoo.build(args.model), max_blocks=args.max_blocks)
    runner = LocalRunner(num_threads=args.num_threads)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    settings = ProfileSettings(budget_s=args.budget_s, pairs=True, rel_precision=0.02)
    device = profile_device(runner, prepared, settings).to_device_profile((), args.num_threads)
    num = prepared.num_blocks
    cuts = [b.cut_bytes for b in prepared.blocks]
    blocks = [b.median_s for b in device.blocks]
    overhead = device.run_overhead.median_s
    # Each way of predicting the joins, as the profile would hold it:
    variants = {
        "sum": msgspec.structs.replace(device, run_overhead=None, pairs=(), whole_model=None),
        "-overhead": msgspec.structs.replace(device, pairs=(), whole_model=None),
        "fitted": msgspec.structs.replace(device, pairs=()),
        "pairs": device,
    }
    joins = {name: joins_of(dev, cuts) for name, dev in variants.items()}
    print(f"{args.model}: {num} blocks, a trivial run {overhead * 1e3:.3f} ms, sum of blocks "
          f"{sum(blocks) * 1e3:.2f} ms, whole model {device.whole_model.median_s * 1e3:.2f} ms", flush=True)
    rng = random.Random(0)
    segments = [tuple(sorted(rng.sample(range(num), 2))) for _ in range(args.segments)]
    measured = profile_segments(runner, prepared, segments, ProfileSettings(budget_s=args.budget_s / 2))
    errors: dict[str, list[float]] = {name: [] for name in variants}
    for seg in measured:
        first, last = seg.first_block, seg.last_block
        line = []
        for name, js in joins.items():
            value = sum(blocks[first:last + 1]) + sum(j or 0.0 for j in js[first:last])
            errors[name].append(abs(value / seg.stats.median_s - 1))
            line.append(f"{name} {(value / seg.stats.median_s - 1) * 100:+6.1f}%")
        print(f"  blocks {first:2}-{last:2}: measured {seg.stats.median_s * 1e3:8.2f} ms   "
              + "   ".join(line), flush=True)
    print("median |error|: " + ", ".join(f"{k} {statistics.median(v):.1%}" for k, v in errors.items()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
