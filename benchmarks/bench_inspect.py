"""Time load + analyze of full-size zoo models (goal: ResNet-50 under 3 s).

Prints, per model: the median of 3 runs of ``load_model`` + ``analyze`` from an
.onnx file (the model is built once by the zoo and saved to a temp dir), the
number of candidate cuts (at most 4 tensors) and the max number of live
tensors at an inner position, in the chosen order and in file order.

Usage: ``python benchmarks/bench_inspect.py [NAME ...]`` (default: resnet50).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx

from splitinfer import zoo
from splitinfer.graph import analyze, count_live_tensors, load_model

GOAL_S = 3.0
NUM_RUNS = 3


def _bench(name: str, directory: Path) -> bool:
    path = directory / f"{name}.onnx"
    onnx.save(zoo.build(name), path)
    times_s = []
    for _ in range(NUM_RUNS):
        start = time.perf_counter()
        model = load_model(path)
        analysis = analyze(model)
        times_s.append(time.perf_counter() - start)
    median_s = statistics.median(times_s)
    chosen = count_live_tensors(model, analysis.order)[1:-1]
    in_file = count_live_tensors(model)[1:-1]
    file_candidates = sum(1 for c in in_file if 0 < c <= analysis.max_cut_tensors)
    print(
        f"{name:12s} {path.stat().st_size / 2**20:7.1f} MiB  load+analyze median {median_s:.3f} s "
        f"(runs: {', '.join(f'{t:.3f}' for t in times_s)})\n"
        f"{'':12s} positions {len(analysis.order) - 1}, candidate cuts {len(analysis.candidates)} "
        f"in '{analysis.order_strategy}' order vs {file_candidates} in file order; "
        f"max live tensors {max(chosen, default=0)} vs {max(in_file, default=0)}; "
        f"blocks {len(analysis.blocks)}, GFLOPs {analysis.total_flops / 1e9:.2f}"
    )
    return median_s <= GOAL_S


def main(argv: list[str]) -> int:
    names = argv or ["resnet50"]
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: _bench(name, Path(tmp)) for name in names}
    slow = [n for n, ok in results.items() if not ok]
    if slow:
        print(f"slower than {GOAL_S} s: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
