"""The noise floor of a fidelity check: how far two measurements of one plan disagree, no prediction involved.

``bench_fidelity.py --refined`` checks a prediction made from timings of a plan against a later
bench of that plan. On a shared machine both are samples of a speed that moves, so even a
perfect prediction misses by what two samples of the same thing disagree. This measures that
floor for the sample sizes the check uses:

1. profile a zoo model on ``bench_fidelity``'s emulated continuum (a short budget: only the
   plan is needed), plan for latency, deploy the best plan and run ``--requests`` requests one at
   a time, keeping every request's latency in order;
2. print the medians of consecutive windows of ``--window`` requests: their range and spread,
   beside the spread of the same windows drawn from the shuffled series (what noise independent
   from request to request would give); a wider spread in order than shuffled is drift and bursts;
3. replay the check on the series: a timing of T requests (or the middle of three, as refinement
   keeps a correction) taken at each point, and the middle of three benches of B requests taken
   40 requests later (10 apart, as deploys are): how often they differ by more than ``--goal``,
   and so how often the worst of 8 models, each like this one, would.

Usage: ``python benchmarks/bench_floor.py [MODEL] [--requests N] [--window W] [--goal G]``
(default mobilenetv2, whose stage on the emulated camera is the one that missed most often).
It prints measurements; it has no goal of its own.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from collections.abc import Sequence

import bench_fidelity as fidelity

from splitinfer import zoo
from splitinfer.cluster import parse_cluster
from splitinfer.plan import describe_stages
from splitinfer.plan.solve import solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings, prepare_model
from splitinfer.runtime.bench import bench
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.profiling import profile_cluster

LAG, GAP = 40, 10  # requests between the timing and the benches, and between two samples
CHECKS = ((20, False, 20), (20, True, 20), (60, True, 60))  # (timing size, confirmed, bench size)
NUM_MODELS = 8  # the fidelity check's zoo and text encoder


def window_medians(series: Sequence[float], width: int) -> list[float]:
    """The medians of consecutive, non-overlapping windows of ``width``."""
    return [statistics.median(series[i:i + width]) for i in range(0, len(series) - width + 1, width)]


def spread(values: Sequence[float]) -> float:
    """Standard deviation relative to the mean."""
    return statistics.pstdev(values) / statistics.mean(values)


def replay(series: Sequence[float], timing: int, confirmed: bool, benched: int) -> list[float]:
    """|timing / bench - 1| for every start point where the whole check fits in ``series``."""
    def middle(first: int, size: int) -> tuple[float, int]:  # the middle of three samples, and where they end
        starts = [first + k * (size + GAP) for k in range(3)]
        samples = [statistics.median(series[a:a + size]) for a in starts]
        return statistics.median(samples), starts[-1] + size + GAP

    needed = (3 if confirmed else 1) * (timing + GAP) + LAG + 3 * (benched + GAP)
    out = []
    for start in range(0, len(series) - needed + 1, 7):
        if confirmed:
            predicted, end = middle(start, timing)
        else:
            predicted, end = statistics.median(series[start:start + timing]), start + timing
        measured, _ = middle(end + LAG, benched)
        out.append(abs(predicted / measured - 1))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="mobilenetv2", choices=list(fidelity.MODELS))
    parser.add_argument("--requests", type=int, default=1500, help="requests run in a row, one at a time")
    parser.add_argument("--window", type=int, default=20, help="requests per window median")
    parser.add_argument("--goal", type=float, default=0.05, help="the disagreement to count (relative)")
    args = parser.parse_args(argv)
    if args.requests < 400:
        parser.error("--requests must be at least 400: the replay needs room for the largest check")
    kwargs, _ = fidelity.MODELS[args.model]
    cluster = parse_cluster(fidelity.continuum(1))
    prepared = prepare_model(zoo.build(args.model, **kwargs), max_blocks=32)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    profile = profile_cluster(None, cluster, prepared=prepared, settings=ProfileSettings(budget_s=5),
                              progress=False)
    plan = solve(build_problem(profile, cluster), "latency")[0]
    print(f"{args.model}: {describe_stages(plan)}, {args.requests} requests in one deploy", flush=True)
    with deploy(plan, cluster, prepared.model, profile=profile) as session:
        series = [t * 1e3 for t in bench(session, plan, num_requests=args.requests).latencies_s]
    q = statistics.quantiles(series, n=10)
    print(f"requests: median {statistics.median(series):.1f} ms, p10 {q[0]:.1f}, p90 {q[-1]:.1f}")
    medians = window_medians(series, args.window)
    shuffled = list(series)
    rng = random.Random(0)
    spreads = []
    for _ in range(50):
        rng.shuffle(shuffled)
        spreads.append(spread(window_medians(shuffled, args.window)))
    print(f"medians of {len(medians)} windows of {args.window} in order: "
          f"{min(medians):.1f}-{max(medians):.1f} ms, spread {spread(medians):.1%} "
          f"(shuffled: {statistics.mean(spreads):.1%})")
    for timing, confirmed, benched in CHECKS:
        errors = replay(series, timing, confirmed, benched)
        missed = sum(e > args.goal for e in errors) / len(errors)
        what = f"middle of 3 timings of {timing}" if confirmed else f"one timing of {timing}"
        print(f"{what:28} against the middle of 3 benches of {benched}: median difference "
              f"{statistics.median(errors):.1%}, over {args.goal:.0%} in {missed:.0%} of {len(errors)} "
              f"replays; "
              f"the worst of {NUM_MODELS} models over it: {1 - (1 - missed) ** NUM_MODELS:.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
