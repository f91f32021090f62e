"""The main job in one call: build a model, emulate a 3-device continuum, profile, plan, run, report.

``run_demo()`` is what ``splitinfer demo`` (and ``make demo``) runs. Every step is
a public API call, so this module doubles as a worked example of the Python API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer.cluster import Cluster, dump_cluster, parse_cluster

# The continuum of issue 6: a slow single-thread camera, an edge box, a cloud
# server; source and sink are the camera. The camera runs on battery, so the
# energy objective and its Pareto front have something to say.
DEMO_CLUSTER = {
    "schema": 1,
    "backend": "local",
    "source": "camera",
    "sink": "camera",
    "devices": [
        {"name": "camera", "num_threads": 1, "slowdown": 8,
         "power": {"busy_w": 4.0, "idle_w": 1.0, "radio_w": 1.5, "battery": True}},
        {"name": "edge", "num_threads": 1, "slowdown": 2},
        {"name": "cloud", "num_threads": 1, "slowdown": 1},
    ],
    "links": [
        {"from": "camera", "to": "edge", "bandwidth": "20Mbit/s", "latency": "5ms"},
        {"from": "edge", "to": "cloud", "bandwidth": "50Mbit/s", "latency": "20ms"},
        {"from": "camera", "to": "cloud", "bandwidth": "8Mbit/s", "latency": "40ms"},
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
    bench: object = None
    seconds: dict[str, float] = field(default_factory=dict)


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
    """Run the whole loop on an emulated 3-device continuum and write the report.

    ``model``: a zoo name (built at full size) or a path to an .onnx file.
    ``budget_s``: profiling time per block and device (the CI stopping rule may end sooner).
    ``on_step(message)`` is called as each step starts (the CLI prints it).
    """
    from splitinfer.plan import Constraints, plan_to_json, solve, with_provenance
    from splitinfer.profile.problem import build_problem
    from splitinfer.profile.profiler import prepare_model
    from splitinfer.profile.schema import save_profile
    from splitinfer.records.bench import save_bench
    from splitinfer.report import write_report
    from splitinfer.runtime.bench import bench
    from splitinfer.runtime.coordinator.deploy import deploy
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

    def plan_all() -> list:
        problem = build_problem(profile, cluster)
        plans = list(solve(problem, "latency", top_k=top_k))
        plans += solve(problem, "throughput", Constraints())
        plans += solve(problem, "pareto", Constraints())
        return [with_provenance(p, profile=str(profile_path), model=str(model_path),
                                model_sha256=profile.model.sha256, cluster=str(cluster_path)) for p in plans]

    plans = timed("plan", "planning: latency top-k, throughput, Pareto fronts", plan_all)
    plan_path = out / "plan.json"
    plan_path.write_text(plan_to_json(plans))

    chosen = plans[0]

    def run_requests() -> object:
        with deploy(chosen, cluster, prepared.model, profile=profile) as session:
            return bench(session, chosen, num_requests=num_requests)

    result = timed("run", f"deploying the best latency plan, running {num_requests} requests",
                   run_requests)
    bench_path = out / "bench.json"
    save_bench(result, bench_path)

    report_path = timed("report", "writing the report",
                        lambda: write_report(profile, out, plans=plans, bench=result,
                                                     model=prepared.model))
    return DemoResult(out, model_path, cluster_path, profile_path, plan_path, bench_path, Path(report_path),
                      plans, result, seconds)


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
