"""Fidelity: does a plan's prediction hold when the plan is deployed and measured? (issues 5 and 15)

For each zoo model (and each ONNX file given with ``--model-file``), on the emulated 3-device
continuum (camera: slowdown 8, 1 thread; edge: slowdown 2; cloud: slowdown 1; camera->edge
20 Mbit/s 5 ms, edge->cloud 50 Mbit/s 20 ms, camera->cloud 8 Mbit/s 40 ms; source and sink camera):

1. profile every block on every device through its worker (``profile_cluster``; with
   ``--pairs`` also every pair of adjacent blocks, whose joins the planner then adds),
2. unrefined (the default): plan for latency straight from the profile, the top 3 plans,
   and measure them side by side (``bench_ranked``: deployed at once, requests in turn), so the
   prediction is checked before anything about the plan was measured; refined (``--refined``):
   time the chosen plan's segments and hops as they run, correct the profile, re-plan until
   stable (``refine``, each timing ``--requests`` requests), then bench that one plan,
3. measure each plan in ``--deploys`` fresh deploys (default 3, ``--requests`` each, default 60) and keep
   the deploy whose median latency is the middle one: on this machine a fresh process of one model runs
   several percent faster or slower than the last (mobilenetv2 whole, one thread, plain ONNX Runtime: a
   median of 6.9-8.2 ms over 16 processes in a few minutes), so one deploy is one sample of that, and a
   prediction checked against it is checked against the machine's drift too (pyperf runs several
   worker processes for the same reason); the deploys' medians are printed, so the spread is seen.
   Why 60: within one deploy of mobilenetv2's plan (1,500 requests in a row, about two minutes), the
   medians of 20 consecutive requests ranged 68.7-99.1 ms. Taking one stretch of that series as a
   refined timing and a later one as the bench, a timing of 20 against the middle of 3 x 20 differed
   by more than 5% in 31% of the pairs, one of 60 confirmed as refinement does against 3 x 60 in 1%:
   the sample sizes, not the prediction, decided a 5% goal (``benchmarks/bench_floor.py`` measures
   that floor on the machine at hand),
4. report |predicted - measured| / measured of the medians: end to end, per stage, per hop
   between devices (a hop within one device, the input into a first stage on the source or the
   result out of a last stage on the sink, is predicted as the device's measured messaging,
   which holds encoding and hand-offs that its measured transfer does not: it counts in the end
   to end figure and is shown for information); unrefined also each of the top 3
   plans' predicted and measured latency and the regret of the predicted best (how much slower it
   measured than the measured best of the three).

Edge and cloud run 1 intra-op thread by default (``--num-threads 0`` for ONNX Runtime's
default): three workers share 2 cores with whatever else runs, and a 2-thread ONNX
Runtime pool slows down about 3x whenever another process takes one of the cores
(its threads spin at every barrier), which swamps any prediction.

Goals (issue 15): unrefined, end-to-end error median <= 3% and worst <= 8% across the zoo, and
the predicted best within 3% of the best measured of the top 3 for every model; refined, every
item's error median <= 5% and worst <= 10% (issue 5), and end to end worst <= 5% (issue 15).
Models too slow for 2 shared cores at full size run at a reduced resolution/width; the output
says which.

Usage: ``python benchmarks/bench_fidelity.py [MODEL ...] [--model-file PATH [--input-shape
NAME=D1,D2,...]...] [--refined] [--pairs] [--requests N] [--deploys K] [--budget-s S]``; exit 1 if a goal is
missed. MODEL names zoo models (default: all of them, unless ``--model-file`` is given).
``--model-file`` adds an ONNX file outside the zoo (repeatable), profiled, planned and measured
exactly like the zoo models; ``--input-shape`` fixes its dynamic input dims (one per input,
applied to every file that has an input of that name). Its calibration and request inputs are
splitinfer's seeded generated inputs (token ids kept below the embedding table's size, ``*mask*``
inputs all ones). E.g. the real text encoder the project already uses (a Hugging Face BERT, MiniLM-L6
configuration, exported by torch): in a separate venv with torch and transformers, run
``python benchmarks/export_text_encoder.py`` (writes minilm_opset14_legacy.onnx and
minilm_opset18_dynamo.onnx into the current folder), then::

    python benchmarks/bench_fidelity.py --model-file minilm_opset14_legacy.onnx \
        --input-shape input_ids=1,64 --input-shape attention_mask=1,64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer import zoo
from splitinfer.cli._model import parse_input_shape
from splitinfer.cluster import parse_cluster
from splitinfer.errors import ShapeError
from splitinfer.graph import load_model
from splitinfer.plan import describe_stages
from splitinfer.plan.solve import solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings, prepare_model
from splitinfer.records.bench import BenchResult
from splitinfer.runtime.bench import bench, bench_ranked
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.runtime.refine import middle_of, refine

CONTINUUM = {
    "source": "camera", "sink": "camera",
    "devices": [{"name": "camera", "num_threads": 1, "slowdown": 8}, {"name": "edge", "slowdown": 2},
                {"name": "cloud", "slowdown": 1}],
    "links": [{"from": "camera", "to": "edge", "bandwidth": "20Mbit/s", "latency": "5ms"},
              {"from": "edge", "to": "cloud", "bandwidth": "50Mbit/s", "latency": "20ms"},
              {"from": "camera", "to": "cloud", "bandwidth": "8Mbit/s", "latency": "40ms"}],
}
# name -> (build arguments, why reduced); full size where 60 requests fit in a few minutes on 2 cores.
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
GOAL_REFINED_TOTAL = 0.05  # refined, end to end
GOAL_UNREFINED_MEDIAN, GOAL_UNREFINED_WORST, GOAL_REGRET = 0.03, 0.08, 0.03  # unrefined, end to end
TOP = 3


@dataclass
class Row:
    """One model's outcome."""

    model: str
    note: str  # what was reduced (zoo), or the file and its input shapes
    plan: str
    predicted_s: float
    measured_s: float
    errors: dict[str, float]  # item -> |rel error|
    figures: dict[str, tuple[float, float]]  # item -> (predicted s, measured median s)
    local_s: tuple[float, float]  # hops within a device: predicted (their messaging), measured transfer
    seconds: float
    deploys_s: list[float]  # the plan's median latency in each of its deploys (the middle one is reported)
    ranked: list[tuple[str, float, float, int]] = field(default_factory=list)  # unrefined top plans:
    regret: float = 0.0  # (stages, predicted s, measured s, measured rank), and the predicted best's regret


def continuum(num_threads: int) -> dict:
    """The emulated continuum with ``num_threads`` intra-op threads on edge and cloud."""
    doc = {**CONTINUUM, "devices": [dict(d) for d in CONTINUUM["devices"]]}
    for d in doc["devices"][1:]:
        d["num_threads"] = num_threads
    return doc


@dataclass
class Target:
    """A model to check: a zoo name, or an ONNX file with the input shapes to fix."""

    label: str
    zoo_name: str | None = None
    path: Path | None = None
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def run_model(target: Target, args: argparse.Namespace) -> Row:
    start = time.perf_counter()
    if target.zoo_name is not None:
        kwargs, reduced = MODELS[target.zoo_name]
        model = zoo.build(target.zoo_name, **kwargs)
        note = f"reduced: {reduced}" if reduced else ""
    else:  # the same path as the zoo from here on, only the loading differs
        shapes = {n: d for n, d in target.input_shapes.items()
                  if n in {i.name for i in _graph_inputs(target.path)}}
        model = load_model(target.path, input_shapes=shapes)
        dims = " ".join(f"{s.name}={','.join(map(str, s.shape))}" for s in model.inputs)
        note = f"file {target.path}, inputs {dims}"
    name = target.label
    cluster = parse_cluster(continuum(args.num_threads))
    prepared = prepare_model(model, max_blocks=args.max_blocks)
    settings = ProfileSettings(budget_s=args.budget_s, pairs=args.pairs)
    profile = profile_cluster(None, cluster, prepared=prepared, settings=settings, progress=False)
    ranked, regret = [], 0.0
    if args.refined:
        plan, profile = refine(profile, cluster, None, prepared=prepared, num_requests=args.requests,
                               settings=ProfileSettings(budget_s=args.budget_s / 4))
        deploys = []
        for _ in range(args.deploys):
            with deploy(plan, cluster, prepared.model, profile=profile) as session:
                deploys.append(bench(session, plan, num_requests=args.requests))
        result = middle_of(deploys, key=_latency)
    else:  # the plans as the profile predicts them, measured side by side
        plans = solve(build_problem(profile, cluster), "latency", top_k=TOP)
        ranks = [bench_ranked(plans, cluster, prepared.model, profile=profile, num_requests=args.requests)
                 for _ in range(args.deploys)]
        middles = [middle_of([r.plans[k].bench for r in ranks], key=_latency) for k in range(len(plans))]
        measured = [m.latency_median_s for m in middles]
        order = sorted(range(len(plans)), key=measured.__getitem__)
        plan, result, regret = plans[0], middles[0], measured[0] / measured[order[0]] - 1
        deploys = [r.plans[0].bench for r in ranks]
        ranked = [(describe_stages(p), m.predicted_latency_s, m.latency_median_s, order.index(k) + 1)
                  for k, (p, m) in enumerate(zip(plans, middles, strict=True))]
    errors = {"total": abs(result.latency_rel_error)}
    figures = {"total": (result.predicted_latency_s, result.latency_median_s)}
    for s in result.stages:
        errors[f"stage {s.stage} {s.device}"] = abs(s.rel_error)
        figures[f"stage {s.stage} {s.device}"] = (s.predicted_s, s.measured_median_s)
    local = [0.0, 0.0]
    for h in result.hops:
        if h.src != h.dst:
            errors[f"hop {h.src}->{h.dst}"] = abs(h.rel_error)
            figures[f"hop {h.src}->{h.dst}"] = (h.predicted_s, h.measured_median_s)
        else:  # its prediction holds encoding and hand-offs; its measured transfer does not
            local[0] += h.predicted_s
            local[1] += h.measured_median_s
    return Row(name, note, describe_stages(plan), result.predicted_latency_s, result.latency_median_s, errors,
               figures, (local[0], local[1]), time.perf_counter() - start,
               [d.latency_median_s for d in deploys], ranked, regret)


def _latency(deploy: BenchResult) -> float:
    """What picks one of a plan's deploys (``middle_of``): its median latency; its stages and hops are
    reported with it, as measured together."""
    return deploy.latency_median_s


def print_row(row: Row) -> None:
    worst_item = max(row.errors, key=row.errors.__getitem__)
    print(f"{row.model:12} predicted {row.predicted_s * 1000:8.1f} ms  "
          f"measured {row.measured_s * 1000:8.1f} ms  "
          f"total err {row.errors['total']:6.1%}  worst {row.errors[worst_item]:6.1%} ({worst_item})  "
          f"[{row.seconds:.0f} s]", flush=True)
    print(f"{'':12} plan {row.plan}; hops within a device: predicted {row.local_s[0] * 1000:.2f} ms, "
          f"transfer measured {row.local_s[1] * 1000:.2f} ms"
          + (f"; {row.note}" if row.note else ""), flush=True)
    print(f"{'':12} deploys: " + " / ".join(f"{t * 1000:.1f}" for t in row.deploys_s) + " ms "
          "(median latency of each; the middle one is reported)", flush=True)
    for item, err in row.errors.items():
        predicted, measured = row.figures[item]
        print(f"{'':14}{item:24} predicted {predicted * 1000:8.2f} ms  measured {measured * 1000:8.2f} ms  "
              f"error {err:6.1%}", flush=True)
    for k, (stages, predicted, measured, measured_rank) in enumerate(row.ranked, start=1):
        print(f"{'':14}plan #{k} (measured #{measured_rank}) predicted {predicted * 1000:8.2f} ms  measured "
              f"{measured * 1000:8.2f} ms  {stages}", flush=True)
    if row.ranked:
        print(f"{'':14}regret of the predicted best: {row.regret:.1%}", flush=True)


def _graph_inputs(path: Path) -> list:
    """The graph inputs of the ONNX file at ``path`` (not its initializers), read without weights."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in inits]


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    try:
        return parse_input_shape(text)
    except ShapeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def targets(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Target]:
    """The zoo models and files to check, in the order given (zoo first)."""
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; the zoo models are {', '.join(MODELS)} "
                     "(give an ONNX file with --model-file)")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in args.input_shape or []:
        if name in shapes:
            parser.error(f"--input-shape gives input {name!r} twice")
        shapes[name] = dims
    if shapes and not args.model_file:
        parser.error("--input-shape fixes the inputs of a --model-file; give the file too")
    files = [Path(f) for f in args.model_file or []]
    for f in files:
        if not f.is_file():
            parser.error(f"--model-file {f} does not exist")
    used = {vi.name for f in files for vi in _graph_inputs(f)}
    stray = sorted(set(shapes) - used)
    if stray:
        parser.error(f"--input-shape names {', '.join(stray)}, not an input of any --model-file "
                     f"(their inputs: {', '.join(sorted(used)) or 'none'})")
    names = args.models if args.models or files else list(MODELS)
    return ([Target(n, zoo_name=n) for n in names]
            + [Target(f.stem, path=f, input_shapes=shapes) for f in files])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The project's text encoder: run benchmarks/export_text_encoder.py (needs torch and "
               "transformers, in a separate venv), then --model-file minilm_opset14_legacy.onnx "
               "--input-shape input_ids=1,64 --input-shape attention_mask=1,64.")
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"zoo models to check (default: all, unless --model-file is given): "
                             f"{', '.join(MODELS)}")
    parser.add_argument("--model-file", action="append", metavar="PATH",
                        help="also check this ONNX file (external data next to it), the same way as the zoo "
                             "models; repeat for several")
    parser.add_argument("--input-shape", action="append", type=_input_shape, metavar="NAME=D1,D2,...",
                        help="fix the shape of a --model-file input, e.g. input_ids=1,64; repeat for each "
                             "input with dynamic dims (applies to every file with an input of that name)")
    parser.add_argument("--requests", type=int, default=60,
                        help="requests measured per plan and deploy, and per timing of a refined plan")
    parser.add_argument("--deploys", type=int, default=3,
                        help="fresh deploys per plan; the one with the middle median latency is reported")
    parser.add_argument("--budget-s", type=float, default=20.0, help="profiling budget per device")
    parser.add_argument("--max-blocks", type=int, default=32, help="most blocks a model is split into")
    parser.add_argument("--num-threads", type=int, default=1, help="intra-op threads of edge and cloud")
    parser.add_argument("--refined", action="store_true", help="refine the plan before measuring it")
    parser.add_argument("--pairs", action="store_true", help="profile pairs of blocks too")
    args = parser.parse_args(argv)
    todo = targets(args, parser)
    rows = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    for target in todo:
        try:
            rows.append(run_model(target, args))
        except Exception as e:  # one model failing should not hide the others' figures
            print(f"{target.label:12} FAILED: {type(e).__name__}: {e}", flush=True)
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
        print(f"refined goal: end to end worst {max(totals):.1%} (goal <= {GOAL_REFINED_TOTAL:.0%})")
        ok = median_all <= GOAL_MEDIAN and worst_all <= GOAL_WORST and max(totals) <= GOAL_REFINED_TOTAL
    else:
        regrets = [r.regret for r in rows]
        print(f"unrefined goals: end to end median {statistics.median(totals):.1%} (goal <= "
              f"{GOAL_UNREFINED_MEDIAN:.0%}), worst {max(totals):.1%} (goal <= {GOAL_UNREFINED_WORST:.0%}); "
              f"regret of the predicted best worst {max(regrets):.1%} (goal <= {GOAL_REGRET:.0%})")
        ok = (statistics.median(totals) <= GOAL_UNREFINED_MEDIAN and max(totals) <= GOAL_UNREFINED_WORST
              and max(regrets) <= GOAL_REGRET)
    return 0 if ok and len(rows) == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
