"""Planner speed on seeded random problems, against the goals of issue 3.

Prints the median of several runs of each case and its goal:

- Scission vgg19 query, in process (Scission's own script: ~150-300 ms): < 5 ms
- latency plan, L=1000 blocks x D=16 devices (revisits allowed): < 1 s
- no-revisit exact latency plan, L=200, D=10: < 5 s
- throughput plan (no revisits), L=200, D=8: < 2 s

and, for information, top-5 and memory-limited variants and the MILP on a
mid-size problem. Usage: ``python benchmarks/bench_plan.py``; exit 1 if a goal
is missed.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from splitinfer.plan import Constraints, Link, Problem, prepare, solve
from splitinfer.plan.scission import parse_criteria, rank_scission
from splitinfer.profile.scission import load_benchmarks, load_network_stats

SCISSION = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scission"


def random_problem(num_blocks: int, num_dev: int, seed: int) -> Problem:
    """Devices of different speeds, every pair linked, cuts shrinking along the model like a CNN's."""
    rng = np.random.default_rng(seed)
    names = tuple(f"dev{i}" for i in range(num_dev))
    speed = np.sort(rng.uniform(0.5, 20, num_dev))[::-1]  # dev0 (the source) is the slowest
    base = rng.uniform(1e-4, 2e-3, num_blocks)
    compute = {
        n: (base * s * rng.uniform(0.9, 1.1, num_blocks)).tolist() for n, s in zip(names, speed, strict=True)
    }
    cuts = np.geomspace(8e6, 4e3, num_blocks - 1) * rng.uniform(0.5, 1.5, num_blocks - 1)
    links = [
        Link(a, b, float(rng.uniform(1e6, 2e7)), float(rng.uniform(1e-4, 2e-2)))
        for a in names
        for b in names
        if a != b
    ]
    return Problem(names, compute, cuts.astype(int).tolist(), 2_000_000, 4_000, links)


def median_s(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report(name: str, seconds: float, goal_s: float | None, detail: str) -> bool:
    ok = goal_s is None or seconds < goal_s
    goal = (
        f"goal < {goal_s * 1000:g} ms"
        if goal_s is not None and goal_s < 1
        else (f"goal < {goal_s:g} s" if goal_s is not None else "info")
    )
    verdict = "" if goal_s is None else ("ok" if ok else "MISSED")
    print(f"{name:44s} median {seconds * 1000:10.2f} ms   {goal:14s} {verdict:6s} {detail}", flush=True)
    return ok


def bench_scission() -> bool:
    if not SCISSION.is_dir():
        print(f"Scission data not found at {SCISSION}: skipped")
        return True
    systems = load_benchmarks(SCISSION, "vgg19")
    network = load_network_stats(SCISSION / "network_stats.csv")
    criteria = {"device": parse_criteria("!-1"), "edge": parse_criteria("10"), "cloud": parse_criteria("16")}
    seconds, results = median_s(lambda: rank_scission(systems, network, criteria), 50)
    return report(
        "Scission vgg19 query (README criteria)", seconds, 0.005, f"best {results[0].total_s:.4f} s"
    )


def bench_case(
    name: str,
    num_blocks: int,
    num_dev: int,
    objective: str,
    cons: Constraints,
    goal_s: float | None,
    repeats: int = 3,
    top_k: int = 1,
    memory: bool = False,
    method: str = "auto",
) -> bool:
    problem = random_problem(num_blocks, num_dev, seed=num_blocks * 100 + num_dev)
    if memory:
        problem = dataclasses.replace(
            problem,
            weight_bytes=[1_000_000] * num_blocks,  # a quarter of the weights, and room for cut buffers
            capacity_bytes={n: (num_blocks // 4 + 24) * 1_000_000 for n in problem.devices},
        )
    inst = prepare(problem)  # validation and transfer tables, shared by the runs
    seconds, plans = median_s(lambda: solve(inst, objective, cons, top_k, method=method), repeats)
    best = plans[0]
    figure = best.bottleneck_s if objective == "throughput" else best.latency_s
    return report(name, seconds, goal_s, f"{best.solver}, {len(best.stages)} stages, best {figure:.4f} s")


def main() -> int:
    print(f"planner benchmarks (medians; numpy {np.__version__})")
    ok = [
        bench_scission(),
        bench_case("latency L=1000 D=16 (revisits)", 1000, 16, "latency", Constraints(), 1.0),
        bench_case("no-revisit latency L=200 D=10", 200, 10, "latency", Constraints(revisits=False), 5.0),
        bench_case("throughput L=200 D=8 (no revisits)", 200, 8, "throughput", Constraints(), 2.0),
        bench_case("latency L=1000 D=16 top-10", 1000, 16, "latency", Constraints(), None, top_k=10),
        bench_case("latency L=1000 D=16 max 3 stages", 1000, 16, "latency", Constraints(max_stages=3), None),
        bench_case(
            "no-revisit latency L=200 D=10 memory",
            200,
            10,
            "latency",
            Constraints(revisits=False),
            None,
            memory=True,
        ),
        bench_case(
            "no-revisit latency L=200 D=10 memory top-5",
            200,
            10,
            "latency",
            Constraints(revisits=False),
            None,
            top_k=5,
            memory=True,
            repeats=1,
        ),
        bench_case(
            "throughput L=200 D=8 top-5", 200, 8, "throughput", Constraints(), None, top_k=5, repeats=1
        ),
        bench_case(
            "MILP latency L=60 D=4, upload bound",
            60,
            4,
            "latency",
            Constraints(max_upload_bytes=1_000_000),
            None,
            repeats=1,
        ),
    ]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
