"""Report test data: a real model's blocks, plausible per-device timings, real plans, a bench result.

The blocks come from a zoo model analysed by the graph layer; per-block times are
made from FLOPs (a fixed rate per device times its slowdown) with a little seeded
noise, so figures look like a real profile. Plans come from the real planner.
Run as a script to write the inputs of a sample report (full-size MobileNetV2):
``python tests/helpers/report_sample.py /tmp/sample-data``, then
``splitinfer report /tmp/sample-data/profile.json -p /tmp/sample-data/plan.json
-b /tmp/sample-data/bench.json -o /tmp/sample-report``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from splitinfer import zoo
from splitinfer.cluster import parse_cluster
from splitinfer.graph import analyze, load_model
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS
from splitinfer.plan import Plan, solve, with_provenance
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import block_infos
from splitinfer.profile.schema import DeviceProfile, LinkProfile, ModelInfo, Profile, Stats
from splitinfer.records.bench import BenchResult, HopBench, StageBench, rel_error, save_bench

# name: (slowdown, watts busy, watts idle, radio watts, battery)
DEVICES = {
    "camera": (8.0, 4.0, 1.0, 1.5, True),
    "edge": (2.0, 30.0, 10.0, 2.0, False),
    "cloud": (1.0, 150.0, 50.0, 5.0, False),
}
LINKS = [("camera", "edge", "20Mbit/s", "5ms"), ("edge", "cloud", "50Mbit/s", "20ms"),
         ("camera", "cloud", "8Mbit/s", "40ms")]
FLOPS_PER_S = 4e9  # the cloud's rate; the others are slower by their slowdown


def cluster_dict() -> dict:
    """The demo's 3-device continuum, with power figures for the energy objective."""
    devices = [
        {"name": n, "slowdown": s, "power": {"busy_w": b, "idle_w": i, "radio_w": r, "battery": bat}}
        for n, (s, b, i, r, bat) in DEVICES.items()
    ]
    links = [{"from": a, "to": b, "bandwidth": bw, "latency": lat} for a, b, bw, lat in LINKS]
    return {"schema": 1, "devices": devices, "links": links, "source": "camera", "sink": "camera"}


def _stats(median: float, rng: np.random.Generator) -> Stats:
    spread = median * float(rng.uniform(0.02, 0.08))
    return Stats(median_s=median, mean_s=median + spread / 4, p10_s=median - spread, p90_s=median + spread,
                 std_s=spread / 1.5, n=int(rng.integers(10, 40)))


def make_profile(name: str = "mobilenetv2", *, small: bool = True, seed: int = 0,
                 max_blocks: int = DEFAULT_MAX_BLOCKS) -> Profile:
    """A profile of a zoo model on the three devices (times from FLOPs; links declared)."""
    proto = zoo.build_small(name) if small else zoo.build(name)
    model = load_model(proto)
    analysis = analyze(model, max_blocks=max_blocks)
    rng = np.random.default_rng(seed)
    blocks = block_infos(analysis)
    devices = {}
    for dev, (slowdown, *_) in DEVICES.items():
        times = [(2e-5 + b.flops / FLOPS_PER_S) * slowdown * float(rng.uniform(0.8, 1.25)) for b in blocks]
        devices[dev] = DeviceProfile(blocks=tuple(_stats(t, rng) for t in times), num_threads=1,
                                     date="2026-11-23T12:00:00Z", host={"cpu": "emulated"})
    links = []
    cluster = parse_cluster(cluster_dict())
    for link in cluster.links:
        links.append(LinkProfile(src=link.src, dst=link.dst, latency_s=link.latency_s,
                                 bandwidth_bps=link.bandwidth_bps, source="declared"))
    info = ModelInfo(sha256=model.sha256, name=name, max_blocks=max_blocks)
    return Profile(model=info, blocks=blocks, input_bytes=analysis.input_bytes,
                   output_bytes=analysis.output_bytes, devices=devices, links=tuple(links))


def make_plans(profile: Profile, *, top_k: int = 5, pareto: bool = True) -> list[Plan]:
    """Latency top-k, the throughput plan and (optionally) the Pareto fronts, from the real planner."""
    problem = build_problem(profile, parse_cluster(cluster_dict()))
    plans = solve(problem, "latency", top_k=top_k)
    plans += solve(problem, "throughput")
    if pareto:
        plans += solve(problem, "pareto")
    # as `splitinfer plan -o`
    return [with_provenance(p, model=profile.model.name, model_sha256=profile.model.sha256) for p in plans]


def _measured(predicted: float, rng: np.random.Generator) -> tuple[float, float]:
    median = predicted * float(rng.uniform(0.9, 1.3)) + 2e-4
    return median, median * float(rng.uniform(1.05, 1.4))


def make_bench(plan: Plan, profile: Profile, *, num_requests: int = 100, seed: int = 1) -> BenchResult:
    """A bench result of ``plan`` with measured times near the predicted ones (no run: test data)."""
    rng = np.random.default_rng(seed)
    stages = []
    for i, s in enumerate(plan.stages):
        med, p95 = _measured(s.compute_s, rng)
        stages.append(StageBench(i, s.device, s.compute_s, med, p95, rel_error(s.compute_s, med)))
    hops = []
    for h in plan.hops:
        med, p95 = _measured(h.transfer_s, rng)
        hops.append(HopBench(h.src, h.dst, h.kind, h.num_bytes, h.transfer_s, med, p95,
                             rel_error(h.transfer_s, med)))
    total = sum(x.measured_median_s for x in stages) + sum(x.measured_median_s for x in hops)
    lat = np.sort(total * rng.lognormal(0.0, 0.08, num_requests))
    median = float(np.median(lat))
    rps = 1.0 / max(x.measured_median_s for x in [*stages, *hops])
    return BenchResult(
        plan=plan, model_name=profile.model.name, model_sha256=profile.model.sha256,
        cluster=cluster_dict(), num_requests=num_requests, concurrency=4, latency_median_s=median,
        latency_p95_s=float(np.percentile(lat, 95)), latency_mean_s=float(lat.mean()),
        latency_min_s=float(lat[0]), latency_max_s=float(lat[-1]), throughput_rps=rps,
        predicted_latency_s=plan.latency_s, predicted_throughput_rps=plan.throughput_rps,
        latency_rel_error=rel_error(plan.latency_s, median),
        throughput_rel_error=rel_error(plan.throughput_rps, rps),
        stages=tuple(stages), hops=tuple(hops), latencies_s=tuple(float(x) for x in lat),
        date="2026-11-23T12:30:00Z", host={"cpu": "emulated", "cores": "2"})


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sample-data")
    out.mkdir(parents=True, exist_ok=True)
    prof = make_profile(small=False)
    from splitinfer.plan import plan_to_json
    from splitinfer.profile.files import save_profile

    plans = make_plans(prof)
    save_profile(prof, out / "profile.json")
    (out / "plan.json").write_text(plan_to_json(plans))
    save_bench(make_bench(plans[0], prof), out / "bench.json")
    print(out)
