"""Do two back-to-back profiles of one model agree on a busy machine? (issue 15, item 4)

A process burns one core (a busy loop) while a zoo model is profiled twice in a row on this machine
(``profile_model``: blocks in interleaved rounds, the outlier and spread rules of
``profile/rounds.py``). Prints each profile's sum of block medians, whole model and noise (the
median block's p90/p10), and the two sums' difference. Goal: within 5%.

Usage: ``python benchmarks/bench_noise.py [MODEL] [--budget-s S] [--num-threads N] [--repeats K]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

from splitinfer import zoo
from splitinfer.profile.device import profile_model, sum_of_blocks_s
from splitinfer.profile.profiler import ProfileSettings, prepare_model

GOAL = 0.05


def burn(stop_at: float) -> None:
    """Keep one core busy until ``stop_at`` (time.time())."""
    x = 0
    while time.time() < stop_at:
        x += 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="resnet18")
    parser.add_argument("--budget-s", type=float, default=5.0, help="timed work of each profile")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of back-to-back profiles")
    args = parser.parse_args(argv)
    prepared = prepare_model(zoo.build(args.model))
    settings = ProfileSettings(budget_s=args.budget_s)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    burner = multiprocessing.Process(target=burn, args=(time.time() + 3600,), daemon=True)
    burner.start()
    differences = []
    try:
        for repeat in range(args.repeats):
            sums = []
            for _ in range(2):
                device = profile_model(None, prepared=prepared, num_threads=args.num_threads,
                                       settings=settings).devices["local"]
                sums.append(sum_of_blocks_s(device))
                print(f"  {args.model}: sum of blocks {sums[-1] * 1e3:8.3f} ms, whole model "
                      f"{device.whole_model.median_s * 1e3:8.3f} ms, noise p90/p10 {device.noise:.2f}, "
                      f"blocks re-measured: {device.remeasured}", flush=True)
            differences.append(abs(sums[1] / sums[0] - 1))
            print(f"pair {repeat + 1}: the two sums differ by {differences[-1]:.1%}", flush=True)
    finally:
        burner.terminate()
    worst = max(differences)
    print(f"median difference {statistics.median(differences):.1%}, worst {worst:.1%} (goal <= {GOAL:.0%}): "
          f"{'met' if worst <= GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
