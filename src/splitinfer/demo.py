"""The main job in one call: build a model, emulate a 3-device continuum, profile, plan, run, report.

``run_demo()`` is what ``splitinfer demo`` (and ``make demo``) runs. Every step is
a public API call, so this module doubles as a worked example of the Python API.
It ends by measuring what splitting gains: the best plan against the best plan on a
single device, side by side, for latency and for throughput (``gain.json``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer.cluster import Cluster, dump_cluster, parse_cluster

# A continuum where splitting pays (README, "Set up and go"): a Raspberry-Pi-class battery camera
# 10x slower than an edge box with a desktop CPU core (this machine's core, unscaled), on a
# 40 Mbit/s WiFi link; a cloud server one WAN hop further. Source and sink are the camera.
# Why these numbers: MobileNetV2's fp32 input is 602 kB, 120 ms on this link, about what the
# whole model takes on the camera; its first blocks cut the tensor to 100 kB for 40% of the
# compute, so doing them on the camera and the rest on the edge beats either device alone, in
# latency and (pipelined) in throughput. On faster WiFi (100 Mbit/s) the upload is cheap and
# the edge alone is the fastest. The camera runs on battery, so the energy objective and its
# Pareto front have something to say. One thread per device: the demo machine may have 2 cores.
DEMO_CLUSTER = {
    "schema": 1,
    "backend": "local",
    "source": "camera",
    "sink": "camera",
    "devices": [
        {"name": "camera", "num_threads": 1, "slowdown": 10,
         "power": {"busy_w": 4.0, "idle_w": 1.0, "radio_w": 1.5, "battery": True}},
        {"name": "edge", "num_threads": 1, "slowdown": 1},
        {"name": "cloud", "num_threads": 1, "slowdown": 1},
    ],
    "links": [
        {"from": "camera", "to": "edge", "bandwidth": "40Mbit/s", "latency": "3ms"},
        {"from": "edge", "to": "cloud", "bandwidth": "50Mbit/s", "latency": "20ms"},
        {"from": "camera", "to": "cloud", "bandwidth": "20Mbit/s", "latency": "30ms"},
    ],
}


def demo_cluster(backend: str = "local", address: str | None = None) -> Cluster:
    """The demo's emulated continuum (``backend: ray`` puts the same devices on Ray nodes)."""
    raw = dict(DEMO_CLUSTER, backend=backend)
    if address:
        raw["address"] = address
    return parse_cluster(raw)


@dataclass
class DemoResult:
    """What the demo produced: paths and the objects behind them."""

    out_dir: Path
    model_path: Path
    cluster_path: Path
    profile_path: Path
    plan_path: Path
    bench_path: Path
    report_path: Path
    plans: list = field(default_factory=list)  # latency top-k, then the throughput plan, then pareto
    bench: object = None  # the best latency plan's BenchResult (bench.json)
    seconds: dict[str, float] = field(default_factory=dict)
    gain_path: Path | None = None
    gain: object = None  # the GainResult (gain.json): best plan against best single device, measured


Step = Callable[[str], None]


def run_demo(
    model: str = "mobilenetv2",
    *,
    out_dir: str | Path = "splitinfer-report",
    num_requests: int = 100,
    top_k: int = 5,
    backend: str = "local",
    address: str | None = None,
    budget_s: float = 1.0,
    on_step: Step | None = None,
) -> DemoResult:
    """Run the whole loop on an emulated 3-device continuum, measure the gain of splitting, write the report.

    ``model``: a zoo name (built at full size) or a path to an .onnx file.
    ``budget_s``: profiling time per block and device (the CI stopping rule may end sooner).
    ``on_step(message)`` is called as each step starts (the CLI prints it).
    """
    from splitinfer.plan import Constraints, Plan, plan_to_json, solve, with_provenance
    from splitinfer.profile.files import save_profile
    from splitinfer.profile.problem import build_problem
    from splitinfer.profile.profiler import prepare_model
    from splitinfer.records.bench import save_bench
    from splitinfer.records.gain import save_gain
    from splitinfer.report import write_report
    from splitinfer.runtime.gain import GAIN_OBJECTIVES, measure_gains, single_device_plans
    from splitinfer.runtime.profiling import profile_cluster
    from splitinfer.runtime.refine import refine

    say = on_step or (lambda _m: None)
    out = Path(out_dir)
    _check_model(model)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def timed(name: str, message: str, fn: Callable[[], object]) -> object:
        say(message)
        started = time.perf_counter()
        value = fn()
        seconds[name] = time.perf_counter() - started
        return value

    model_path = timed("model", f"building {model}", lambda: _model_file(model, out))
    cluster = demo_cluster(backend, address)
    cluster_path = out / "cluster.yaml"
    cluster_path.write_text(dump_cluster(cluster))

    # Loaded, cut into blocks and run on the calibration input once; every later step reuses it.
    prepared = timed("prepare", "cutting the model into blocks", lambda: prepare_model(model_path))
    profile = timed("profile", "profiling every block on camera, edge and cloud, probing links",
                    lambda: profile_cluster(None, cluster, budget_s=budget_s, prepared=prepared))
    # Segment refinement: time the best plan's segments as they really run, re-plan until stable.
    _, profile = timed("refine", "refining: timing the best plan's segments in a running pipeline",
                       lambda: refine(profile, cluster, None, "latency", prepared=prepared))
    profile_path = out / "profile.json"
    save_profile(profile, profile_path)

    def provenance(plan: Plan) -> Plan:
        return with_provenance(plan, profile=str(profile_path), model=str(model_path),
                               model_sha256=profile.model.sha256, cluster=str(cluster_path))

    problem = build_problem(profile, cluster)

    def plan_all() -> list:
        plans = list(solve(problem, "latency", top_k=top_k))
        plans += solve(problem, "throughput", Constraints())
        plans += solve(problem, "pareto", Constraints())
        return [provenance(p) for p in plans]

    plans = timed("plan", "planning: latency top-k, throughput, Pareto fronts", plan_all)
    plan_path = out / "plan.json"
    plan_path.write_text(plan_to_json(plans))

    # The gain of splitting: each objective's best plan (the ones just planned) against the best plans
    # on one device, deployed together and sent requests in turn. The best latency plan's part of it
    # is the demo's bench (bench.json): no other run of the same plan.
    pairs = {}
    for objective in GAIN_OBJECTIVES:
        best = next(p for p in plans if p.objective == objective)
        pairs[objective] = (best, [provenance(p) for p in single_device_plans(problem, objective)])

    def on_objective(objective: str) -> None:
        best, singles = pairs[objective]
        count = 1 if len(best.stages) == 1 else 1 + len(singles)
        say(f"  {objective}: {count} plan{'s' if count > 1 else ''} deployed, requests in turn")

    gain = timed("run", f"measuring the best plans against single devices: {num_requests} requests each, "
                        "side by side", lambda: measure_gains(profile, cluster, prepared.model, plans=pairs,
                                                              num_requests=num_requests,
                                                              on_objective=on_objective))
    gain_path = out / "gain.json"
    save_gain(gain, gain_path)
    latency = gain.of("latency")
    assert latency is not None  # measured above
    result = latency.best.bench
    bench_path = out / "bench.json"
    save_bench(result, bench_path)

    report_path = timed("report", "writing the report",
                        lambda: write_report(profile, out, plans=plans, bench=result, model=prepared.model,
                                             gain=gain))
    return DemoResult(out, model_path, cluster_path, profile_path, plan_path, bench_path, Path(report_path),
                      plans, result, seconds, gain_path, gain)


def _check_model(model: str) -> None:
    from splitinfer import zoo
    from splitinfer.errors import ModelError

    path = Path(model)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelError(f"model file {model} does not exist",
                             "give a path to an .onnx file or a zoo name")
    elif model not in zoo.names():
        raise ModelError(f"{model!r} is neither an .onnx file nor a zoo model",
                         f"use one of: {', '.join(zoo.names())}, or a path ending in .onnx")


def _model_file(model: str, out: Path) -> Path:
    """A zoo name is built at full size into ``out``; a path is used as it is."""
    from splitinfer import zoo

    if Path(model).suffix == ".onnx":
        return Path(model)
    target = out / f"{model}.onnx"
    target.write_bytes(zoo.build(model).SerializeToString())
    return target
