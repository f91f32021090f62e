"""Trade-offs pay over a slow uplink: the best plan with compression against the best without (issue 14).

The continuum (emulated on this machine): a camera whose uplink is 10 Mbit/s, an edge server
(slowdown 2) and a cloud (slowdown 1): camera->edge 10 Mbit/s 5 ms, camera->cloud 10 Mbit/s 40 ms,
edge->cloud 50 Mbit/s 20 ms; the camera is source and sink. The camera runs one thread at
slowdown 30 by default: a camera board about 15x slower than the edge box (MobileNetV2 in about
0.3 s on its core, as on a Raspberry Pi Zero 2 class board), the case where a frame is worth sending
at all. With a faster camera (``--camera-slowdown 8``, the fidelity benchmark's) small models stay
on the camera whatever the uplink carries, and no compression can change that.

For each CNN classifier of the zoo (the detector has no class-score output, so a top-1 agreement
budget does not apply to it; bench_quality measures its compressed cuts per anchor):

1. profile every block on every device through its worker, with the trade-offs (int8 per tensor
   and per channel, fp16, lz4 and zstd on every cut and on the upload): their quality cost measured
   on the scikit-image photographs (36 views), their seconds on every device (``profile_cluster``);
2. the best plan without trade-offs (the planner's latency optimum), and the best with compression
   allowed under a 1% top-1 agreement budget, whose real drop is measured on the photographs and
   repaired until it holds (``plan_within_budget``);
3. deploy both side by side and send the photographs through them in turn, one request at a time
   (A, B, A, B, ...: both see the same load on the shared cores); medians.

Goal: the compressed plan is at least 1.5x faster end to end than the plan without compression,
for every CNN, and its measured quality drop holds the 1% budget. Both plans are the planner's and
both predictions come before anything ran (no refinement).

Usage: ``python benchmarks/bench_tradeoffs.py [MODEL ...] [--requests N] [--budget-s S]
[--camera-slowdown X]``; exit 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

from _quality_inputs import image_dataset, photographs, views

from splitinfer import zoo
from splitinfer.cluster import parse_cluster
from splitinfer.plan import describe_stages
from splitinfer.plan.solve import solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings, prepare_model
from splitinfer.profile.tradeoff_profile import sensitivity_of, tradeoffs_for_planning
from splitinfer.runtime.bench import bench_ranked
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.runtime.repair import plan_within_budget

CONTINUUM = {
    "source": "camera",
    "sink": "camera",
    "devices": [
        {"name": "camera", "num_threads": 1, "slowdown": 30},
        {"name": "edge", "slowdown": 2},
        {"name": "cloud", "slowdown": 1},
    ],
    "links": [
        {"from": "camera", "to": "edge", "bandwidth": "10Mbit/s", "latency": "5ms"},
        {"from": "camera", "to": "cloud", "bandwidth": "10Mbit/s", "latency": "40ms"},
        {"from": "edge", "to": "cloud", "bandwidth": "50Mbit/s", "latency": "20ms"},
    ],
}
COMPRESSIONS = ("int8", "int8:per_channel", "fp16", "lz4", "zstd")
# name -> build arguments; reduced where 2 shared cores would take too long at full size.
MODELS: dict[str, dict] = {
    "mobilenetv2": {},
    "resnet18": {},
    "resnet50": {},
    "vgg16": {"resolution": 128},
}
BUDGET = 0.01
GOAL_SPEEDUP = 1.5


@dataclass
class Row:
    """One model's outcome."""

    model: str
    plain_plan: str
    plain_predicted_s: float
    plain_measured_s: float
    tradeoff_plan: str
    tradeoff_predicted_s: float
    tradeoff_measured_s: float
    predicted_drop: float
    measured_drop: float
    seconds: float

    @property
    def speedup(self) -> float:
        return self.plain_measured_s / self.tradeoff_measured_s


def continuum(num_threads: int, camera_slowdown: float) -> dict:
    doc = {**CONTINUUM, "devices": [dict(d) for d in CONTINUUM["devices"]]}
    doc["devices"][0]["slowdown"] = camera_slowdown
    for d in doc["devices"][1:]:
        d["num_threads"] = num_threads
    return doc


def run_model(name: str, args: argparse.Namespace, images: dict) -> Row:
    start = time.perf_counter()
    proto = zoo.build(name, **MODELS[name])
    cluster = parse_cluster(continuum(args.num_threads, args.camera_slowdown))
    prepared = prepare_model(proto, max_blocks=args.max_blocks)
    data = image_dataset(images, prepared.model.inputs[0])
    feeds = [{prepared.model.inputs[0].name: data.x[i : i + 1]} for i in range(len(data))]
    sens = sensitivity_of(prepared, data.x, [], list(COMPRESSIONS), limit=len(data))
    profile = profile_cluster(
        None,
        cluster,
        prepared=prepared,
        settings=ProfileSettings(budget_s=args.budget_s),
        progress=False,
        tradeoffs=sens,
        tradeoffs_source="skimage photographs",
    )
    problem = build_problem(profile, cluster)
    (plain,) = solve(problem, "latency")
    tradeoffs = tradeoffs_for_planning(profile, problem.devices, precisions=[], max_quality_drop=BUDGET)
    repair = plan_within_budget(problem, tradeoffs, prepared.model, data, profile=profile)
    # deployed together, requests in turn: load on the shared cores falls on both alike
    ranked = bench_ranked([plain, repair.plan], cluster, prepared.model, profile=profile, feeds=feeds,
                          num_requests=args.requests, num_warmup=3)
    measured = [r.measured for r in ranked.plans]
    return Row(
        name,
        describe_stages(plain),
        plain.latency_s,
        measured[0],
        describe_stages(repair.plan),
        repair.plan.latency_s,
        measured[1],
        repair.plan.quality_cost or 0.0,
        repair.measured_drop,
        time.perf_counter() - start,
    )


def print_row(row: Row) -> None:
    print(
        f"{row.model:12} without: {row.plain_measured_s * 1000:8.1f} ms (predicted "
        f"{row.plain_predicted_s * 1000:.1f})  with: {row.tradeoff_measured_s * 1000:8.1f} ms (predicted "
        f"{row.tradeoff_predicted_s * 1000:.1f})  speedup {row.speedup:.2f}x  quality drop "
        f"{row.measured_drop:.2%} (predicted {row.predicted_drop:.2%})  [{row.seconds:.0f} s]",
        flush=True,
    )
    print(f"{'':12} without: {row.plain_plan}", flush=True)
    print(f"{'':12} with:    {row.tradeoff_plan}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--requests", type=int, default=36)
    parser.add_argument("--budget-s", type=float, default=10.0, help="profiling budget per device")
    parser.add_argument("--max-blocks", type=int, default=24)
    parser.add_argument("--num-threads", type=int, default=1, help="intra-op threads of edge and cloud")
    parser.add_argument("--camera-slowdown", type=float, default=30.0, help="how much slower the camera runs")
    args = parser.parse_args(argv)
    images = views(photographs())
    print(f"camera slowdown {args.camera_slowdown:g}; load average at start: {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    rows = []
    for name in args.models:
        try:
            rows.append(run_model(name, args, images))
        except Exception as e:  # one model failing should not hide the others' figures
            print(f"{name:12} FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        print_row(rows[-1])
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    if not rows:
        return 1
    speedups = [r.speedup for r in rows]
    held = all(r.measured_drop <= BUDGET for r in rows)
    print(
        f"\nspeedup with compression: median {statistics.median(speedups):.2f}x, worst {min(speedups):.2f}x "
        f"(goal >= {GOAL_SPEEDUP}x on every model); quality budget {BUDGET:.0%} held on every model: {held}"
    )
    ok = min(speedups) >= GOAL_SPEEDUP and held and len(rows) == len(args.models)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
