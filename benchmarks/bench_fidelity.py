"""Fidelity: does a plan's prediction hold when the plan is deployed and measured? (issues 5 and 15)

For each zoo model, on the emulated 3-device continuum (camera: slowdown 8, 1 thread;
edge: slowdown 2; cloud: slowdown 1; camera->edge 20 Mbit/s 5 ms, edge->cloud
50 Mbit/s 20 ms, camera->cloud 8 Mbit/s 40 ms; source and sink camera):

1. profile every block on every device through its worker (``profile_cluster``; with
   ``--pairs`` also every pair of adjacent blocks, whose joins the planner then adds),
2. unrefined (the default): plan for latency straight from the profile, the top 3 plans,
   and measure them side by side (``bench_ranked``: deployed at once, requests in turn), so the
   prediction is checked before anything about the plan was measured; refined (``--refined``):
   time the chosen plan's segments and hops as they run, correct the profile, re-plan until
   stable (``refine``), then bench that one plan,
3. report |predicted - measured| / measured of the medians: end to end, per stage, per hop
   the plan predicts (hops within one device are predicted free and left out: their measured
   time is the runtime's own overhead, shown for information); unrefined also each of the top 3
   plans' predicted and measured latency and the regret of the predicted best (how much slower it
   measured than the measured best of the three).

Edge and cloud run 1 intra-op thread by default (``--num-threads 0`` for ONNX Runtime's
default): three workers share 2 cores with whatever else runs, and a 2-thread ONNX
Runtime pool slows down about 3x whenever another process takes one of the cores
(its threads spin at every barrier), which swamps any prediction.

Goals (issue 15): unrefined, end-to-end error median <= 3% and worst <= 8% across the zoo, and
the predicted best within 3% of the best measured of the top 3 for every model; refined, every
item's error median <= 5% and worst <= 10% (issue 5; issue 15 asks worst <= 5% end to end).
Models too slow for 2 shared cores at full size run at a reduced resolution/width; the output
says which. Usage: ``python benchmarks/bench_fidelity.py [MODEL ...] [--refined] [--pairs]
[--requests N] [--budget-s S]``; exit 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from splitinfer import zoo
from splitinfer.cluster import parse_cluster
from splitinfer.plan import describe_stages
from splitinfer.plan.solve import solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings, prepare_model
from splitinfer.runtime.bench import bench, bench_ranked
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.runtime.refine import refine

CONTINUUM = {
    "source": "camera", "sink": "camera",
    "devices": [{"name": "camera", "num_threads": 1, "slowdown": 8}, {"name": "edge", "slowdown": 2},
                {"name": "cloud", "slowdown": 1}],
    "links": [{"from": "camera", "to": "edge", "bandwidth": "20Mbit/s", "latency": "5ms"},
              {"from": "edge", "to": "cloud", "bandwidth": "50Mbit/s", "latency": "20ms"},
              {"from": "camera", "to": "cloud", "bandwidth": "8Mbit/s", "latency": "40ms"}],
}
# name -> (build arguments, why reduced); full size where 50 requests fit in a few minutes on 2 cores.
MODELS: dict[str, tuple[dict, str]] = {
    "mobilenetv2": ({}, ""),
    "resnet18": ({}, ""),
    "resnet50": ({}, ""),
    "vgg16": ({"resolution": 128}, "resolution 128 (full: 224)"),
    "vit_b16": ({"width": 0.5, "depth": 0.5}, "width 0.5, depth 0.5"),
    "bert": ({"width": 0.5, "depth": 0.5}, "width 0.5, depth 0.5"),
    "detector": ({"resolution": 320}, "resolution 320"),
}
GOAL_MEDIAN, GOAL_WORST = 0.05, 0.10  # refined, every item
GOAL_UNREFINED_MEDIAN, GOAL_UNREFINED_WORST, GOAL_REGRET = 0.03, 0.08, 0.03  # unrefined, end to end
TOP = 3


@dataclass
class Row:
    """One model's outcome."""

    model: str
    note: str
    plan: str
    predicted_s: float
    measured_s: float
    errors: dict[str, float]  # item -> |rel error|
    figures: dict[str, tuple[float, float]]  # item -> (predicted s, measured median s)
    overhead_s: float  # measured time of hops the plan predicts free
    seconds: float
    ranked: list[tuple[str, float, float, int]] = field(default_factory=list)  # unrefined top plans:
    regret: float = 0.0  # (stages, predicted s, measured s, measured rank), and the predicted best's regret


def continuum(num_threads: int) -> dict:
    """The emulated continuum with ``num_threads`` intra-op threads on edge and cloud."""
    doc = {**CONTINUUM, "devices": [dict(d) for d in CONTINUUM["devices"]]}
    for d in doc["devices"][1:]:
        d["num_threads"] = num_threads
    return doc


def run_model(name: str, args: argparse.Namespace) -> Row:
    start = time.perf_counter()
    kwargs, note = MODELS[name]
    proto = zoo.build(name, **kwargs)
    cluster = parse_cluster(continuum(args.num_threads))
    prepared = prepare_model(proto, max_blocks=args.max_blocks)
    settings = ProfileSettings(budget_s=args.budget_s, pairs=args.pairs)
    profile = profile_cluster(None, cluster, prepared=prepared, settings=settings, progress=False)
    ranked, regret = [], 0.0
    if args.refined:
        plan, profile = refine(profile, cluster, None, prepared=prepared,
                               settings=ProfileSettings(budget_s=args.budget_s / 4))
        with deploy(plan, cluster, prepared.model, profile=profile) as session:
            result = bench(session, plan, num_requests=args.requests)
    else:  # the plans as the profile predicts them, measured side by side
        plans = solve(build_problem(profile, cluster), "latency", top_k=TOP)
        rank = bench_ranked(plans, cluster, prepared.model, profile=profile, num_requests=args.requests)
        plan, result, regret = plans[0], rank.plans[0].bench, rank.regret
        ranked = [(describe_stages(p), r.predicted, r.measured, r.measured_rank)
                  for p, r in zip(plans, rank.plans, strict=True)]
    errors = {"total": abs(result.latency_rel_error)}
    figures = {"total": (result.predicted_latency_s, result.latency_median_s)}
    for s in result.stages:
        errors[f"stage {s.stage} {s.device}"] = abs(s.rel_error)
        figures[f"stage {s.stage} {s.device}"] = (s.predicted_s, s.measured_median_s)
    overhead = 0.0
    for h in result.hops:
        if h.predicted_s > 0:
            errors[f"hop {h.src}->{h.dst}"] = abs(h.rel_error)
            figures[f"hop {h.src}->{h.dst}"] = (h.predicted_s, h.measured_median_s)
        else:
            overhead += h.measured_median_s
    return Row(name, note, describe_stages(plan), result.predicted_latency_s, result.latency_median_s, errors,
               figures, overhead, time.perf_counter() - start, ranked, regret)


def print_row(row: Row) -> None:
    worst_item = max(row.errors, key=row.errors.__getitem__)
    print(f"{row.model:12} predicted {row.predicted_s * 1000:8.1f} ms  "
          f"measured {row.measured_s * 1000:8.1f} ms  "
          f"total err {row.errors['total']:6.1%}  worst {row.errors[worst_item]:6.1%} ({worst_item})  "
          f"[{row.seconds:.0f} s]", flush=True)
    print(f"{'':12} plan {row.plan}; free hops took {row.overhead_s * 1000:.2f} ms"
          + (f"; reduced: {row.note}" if row.note else ""), flush=True)
    for item, err in row.errors.items():
        predicted, measured = row.figures[item]
        print(f"{'':14}{item:24} predicted {predicted * 1000:8.2f} ms  measured {measured * 1000:8.2f} ms  "
              f"error {err:6.1%}", flush=True)
    for k, (stages, predicted, measured, measured_rank) in enumerate(row.ranked, start=1):
        print(f"{'':14}plan #{k} (measured #{measured_rank}) predicted {predicted * 1000:8.2f} ms  measured "
              f"{measured * 1000:8.2f} ms  {stages}", flush=True)
    if row.ranked:
        print(f"{'':14}regret of the predicted best: {row.regret:.1%}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--budget-s", type=float, default=20.0, help="profiling budget per device")
    parser.add_argument("--max-blocks", type=int, default=32)
    parser.add_argument("--num-threads", type=int, default=1, help="intra-op threads of edge and cloud")
    parser.add_argument("--refined", action="store_true", help="refine the plan before measuring it")
    parser.add_argument("--pairs", action="store_true", help="profile pairs of blocks too")
    args = parser.parse_args(argv)
    rows = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    for name in args.models:
        try:
            rows.append(run_model(name, args))
        except Exception as e:  # one model failing should not hide the others' figures
            print(f"{name:12} FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        print_row(rows[-1])
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    if not rows:
        return 1
    every = [e for r in rows for e in r.errors.values()]
    totals = [r.errors["total"] for r in rows]
    median_all, worst_all = statistics.median(every), max(every)
    for kind in ("total", "stage", "hop"):
        some = [e for r in rows for k, e in r.errors.items() if k.startswith(kind)]
        if not some:  # e.g. every plan kept the whole model on one device: no hop to check
            print(f"{kind + 's':7}   0 items")
            continue
        print(f"{kind + 's':7} {len(some):3} items: median error {statistics.median(some):6.1%}, "
              f"worst {max(some):6.1%}")
    print(f"\nacross {len(rows)} models, {len(every)} items (totals, stages, hops): median error "
          f"{median_all:.1%} (goal <= {GOAL_MEDIAN:.0%}), worst {worst_all:.1%} (goal <= {GOAL_WORST:.0%}); "
          f"end-to-end only: median {statistics.median(totals):.1%}, worst {max(totals):.1%}")
    if args.refined:
        ok = median_all <= GOAL_MEDIAN and worst_all <= GOAL_WORST
    else:
        regrets = [r.regret for r in rows]
        print(f"unrefined goals: end to end median {statistics.median(totals):.1%} (goal <= "
              f"{GOAL_UNREFINED_MEDIAN:.0%}), worst {max(totals):.1%} (goal <= {GOAL_UNREFINED_WORST:.0%}); "
              f"regret of the predicted best worst {max(regrets):.1%} (goal <= {GOAL_REGRET:.0%})")
        ok = (statistics.median(totals) <= GOAL_UNREFINED_MEDIAN and max(totals) <= GOAL_UNREFINED_WORST
              and max(regrets) <= GOAL_REGRET)
    return 0 if ok and len(rows) == len(args.models) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
