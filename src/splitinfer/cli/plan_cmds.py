"""``splitinfer plan``: the best split and placement from a profile, or from Scission's files."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import typer

from splitinfer.cli import _scission as sc
from splitinfer.cli._common import check_writable, console, parse_flag
from splitinfer.cli._configurations import compared_tables
from splitinfer.cli._model import converted, parse_input_shapes
from splitinfer.cli._plan_tables import energy_tables, format_plans
from splitinfer.cluster import load_cluster
from splitinfer.errors import PlanError, ShapeError
from splitinfer.graph.shapes import as_flags
from splitinfer.graph.sizes import describe_size
from splitinfer.plan import (
    OBJECTIVES,
    Constraints,
    Plan,
    Provenance,
    describe_stages,
    plan_to_json,
    solve,
)
from splitinfer.plan.problem import AT_SOURCE, MAX_IN_FLIGHT, AtSource, Problem
from splitinfer.plan.solve import MAX_TIME_LIMIT_S, MAX_TOP_K
from splitinfer.plan.tradeoff_solve import solve_tradeoffs
from splitinfer.plan.tradeoffs import Tradeoffs
from splitinfer.profile.exit_choice import choose_thresholds
from splitinfer.profile.files import load_profile
from splitinfer.profile.generation import GENERATION_OBJECTIVES, generation_problem
from splitinfer.profile.problem import build_problem
from splitinfer.profile.schema import Profile
from splitinfer.profile.sizes import profile_at
from splitinfer.profile.tradeoff_profile import tradeoffs_for_planning
from splitinfer.units import check_number, parse_size_bytes, parse_time_s

HELP = """Find the best split and placement of a profiled model, exactly.

[bold]Examples[/]

  splitinfer plan profile.json --cluster cluster.yaml --top 3 -o plan.json

  splitinfer plan profile.json --cluster cluster.yaml --objective throughput --max-stages 3

  splitinfer plan profile.json --pin 0-6=camera --exclude cloud --max-latency 200ms

  splitinfer plan profile.json --cluster cluster.yaml --objective pareto

  splitinfer plan profile.json --cluster cluster.yaml --max-quality-drop 1% --check-quality val/

  splitinfer plan profile.json --cluster cluster.yaml --objective pareto --compressions int8,lz4

  splitinfer plan --scission benchmark_data network_stats.csv vgg19 -d "!-1" -e 10 -c 16

  splitinfer plan --scission benchmark_data network_stats.csv vgg19 --device-upload 0.5 --edge-time 20%

  splitinfer plan --scission benchmark_data network_stats.csv vgg19 --general --top 5

Without --cluster the devices are the profile's (the first is the source) \
and the links are the profile's measurements. Blocks are numbered from 0, as \
in `splitinfer inspect`. Ties in throughput go to the faster plan.

Trade-offs (a profile made with `splitinfer profile --tradeoffs`): with \
--max-quality-drop, --precisions or --compressions the planner also chooses \
each stage's precision and each hop's compression, exactly, keeping the summed \
quality cost (top-1 agreement drops measured alone on calibration data) within \
the budget; `--objective pareto` then gives the latency-quality front. With \
--check-quality DATA the chosen plan's real drop is measured on DATA (its stages \
quantised and compressed as deployed, run in process) and, while it breaks the \
budget, the plan is excluded, its parts charged what they really cost, and the \
problem solved again.
"""


def _block_pairs(texts: list[str], flag: str, num_blocks: int) -> tuple[tuple[int, str], ...]:
    pairs = []
    for text in texts:
        m = re.fullmatch(r"\s*(\d+)(?:\s*-\s*(\d+))?\s*=\s*(\S+)\s*", text)
        if not m:
            raise PlanError(
                f"--{flag} {text!r} is not BLOCK=DEVICE",
                f"write it like --{flag} 3=edge or --{flag} 0-6=camera",
            )
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise PlanError(
                f"--{flag} {text!r}: the range {first}-{last} is empty", "write the range low-high"
            )
        if last >= num_blocks:
            raise PlanError(
                f"--{flag} {text!r}: block {last} does not exist",
                f"blocks are numbered 0 to {num_blocks - 1}",
            )
        pairs += [(b, m.group(3)) for b in range(first, last + 1)]
    return tuple(pairs)


def _sink(text: str | None) -> str | AtSource | None:
    if text is None:
        return AT_SOURCE
    return None if text.lower() == "none" else text


def _write(plans: list[Plan], output: Path | None, provenance: Provenance) -> None:
    if output is None:
        return
    stamped = [msgspec.structs.replace(p, provenance=provenance) for p in plans]
    try:
        output.write_text(plan_to_json(stamped))
    except OSError as e:
        raise PlanError(f"cannot write {output}: {e.strerror}", "pick a writable path for -o") from None
    console.print(f"wrote {output}", highlight=False)


def _check_args(args: list[str], scission: bool, objective: str) -> None:
    want = 3 if scission else 1
    if len(args) != want:
        form = "DIR NETWORK_CSV MODEL" if scission else "PROFILE"
        raise PlanError(
            f"plan takes {want} argument{'s' if want > 1 else ''} ({form}), got {len(args)}",
            "give a profile.json, or --scission DIR NETWORK_CSV MODEL",
        )
    if objective not in OBJECTIVES and objective not in GENERATION_OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}",
                        f"use one of: {', '.join([*OBJECTIVES, *GENERATION_OBJECTIVES])}")


def _check_numbers(top: int, time_limit: float, bounds: dict[str, float | None], in_flight: int) -> None:
    """Every numeric option in its range before any file is read; else one line naming the flag."""
    check_number(top, "--top", low=1, high=MAX_TOP_K, whole=True, error=PlanError)
    check_number(time_limit, "--time-limit", low=0, low_open=True, high=MAX_TIME_LIMIT_S, error=PlanError,
                 fix="seconds per MILP solve")
    for flag, value in bounds.items():
        if value is not None:
            check_number(value, flag, low=0, error=PlanError)
    check_number(in_flight, "--in-flight", low=1, high=MAX_IN_FLIGHT, whole=True, error=PlanError,
                 fix="requests a stage holds at once, e.g. the --concurrency you will bench at")


def _profile_problem(
    path: str, cluster: Path | None, stat: str, sink: str | None, tradeoffs: dict[str, Any], in_flight: int,
    input_shape: list[str] | None, full_depth: bool = False, context: int = 0, objective: str = "latency",
) -> tuple[Problem, Provenance, Tradeoffs | None, Profile]:
    everything = load_profile(path)
    devices = load_cluster(cluster) if cluster is not None else None
    if objective in GENERATION_OBJECTIVES:  # the decoder's size is the objective's: prefill or decode
        if input_shape:
            raise PlanError(f"--objective {objective} plans at the decoder's own sizes",
                            "drop --input-shape (--context sets the tokens per sequence)")
        chosen = generation_problem(everything, devices, objective, context=context, in_flight=in_flight,
                                    stat=stat, sink=_sink(sink), full_depth=full_depth)
        problem, profile = chosen.problem, chosen.profile
    else:
        try:
            profile = profile_at(everything, parse_input_shapes(input_shape))
        except ShapeError as e:
            raise ShapeError(as_flags(e.problem), e.fix) from None
        problem = build_problem(profile, devices, stat=stat, sink=_sink(sink), in_flight=in_flight,
                                full_depth=full_depth, context=context)
    chosen = None
    if any(v is not None for v in tradeoffs.values()):
        chosen = tradeoffs_for_planning(profile, problem.devices, stat=stat, **tradeoffs)
    elif profile.tradeoffs is not None:
        console.print("the profile has trade-offs measured: plan with them with --max-quality-drop 1%",
                      highlight=False)
    provenance = Provenance(model=profile.model.name, model_sha256=profile.model.sha256, profile=path,
                            cluster=str(cluster) if cluster is not None else "", in_flight=in_flight,
                            input_shapes=dict(profile.model.input_shapes) if everything.other_sizes else {})
    return problem, provenance, chosen, profile


def _repaired(problem: Problem, tradeoffs: Tradeoffs | None, objective: str, cons: Constraints,
              profile_path: str, data_path: Path, calibration: Path | None, preprocess: str | None,
              model: Path | None, time_limit: float) -> Plan:
    """The repair loop (runtime/repair.py) from the command line: the plan whose measured drop holds."""
    if tradeoffs is None or tradeoffs.max_quality_drop is None:
        raise PlanError("--check-quality measures a plan against a quality budget, and none was given",
                        "add --max-quality-drop, e.g. 1%")
    if objective not in ("latency", "throughput", "energy"):
        raise PlanError(f"--check-quality repairs one plan; --objective {objective} gives several",
                        "use --objective latency, throughput or energy")
    from splitinfer.data import load_dataset
    from splitinfer.runtime.repair import plan_within_budget

    profile = load_profile(profile_path)
    model_path = converted(model) if model else (Path(profile.model.path) if profile.model.path else None)
    if model_path is None:
        raise PlanError("the profile does not say where its model file is", "give it with --model")
    shape = next(iter(profile.model.input_shapes.values()), None)
    data = load_dataset(data_path, preprocess, input_shape=shape)
    calib = load_dataset(calibration, preprocess, input_shape=shape) if calibration is not None else None
    with console.status(f"planning, then measuring quality on {len(data)} samples ..."):
        repair = plan_within_budget(problem, tradeoffs, model_path, data, objective=objective,
                                    constraints=cons, profile=profile, calibration=calib,
                                    time_limit_s=time_limit)
    for plan, drop in repair.rejected:
        console.print(f"excluded {describe_stages(plan)}: measured drop {drop:.2%} (predicted "
                      f"{plan.quality_cost or 0:.2%})", highlight=False)
    console.print(f"measured drop {repair.measured_drop:.2%} on {len(data)} samples of {data_path} "
                  f"(budget {tradeoffs.max_quality_drop:.2%})", highlight=False)
    return repair.plan


def _chosen_thresholds(profile: Profile | None, problem: Problem, budget: str, objective: str,
                       cons: Constraints, full_depth: bool) -> Plan:
    """``--exit-quality-drop``: the exits' thresholds chosen with the plan (profile/exit_choice.py), on
    the profile (at the size) the problem was built from."""
    if profile is None or full_depth or objective not in ("latency", "throughput", "energy"):
        raise PlanError("--exit-quality-drop chooses exit thresholds of a profile for one objective with "
                        "the exits on", "give profile.json, --objective latency, throughput or energy, and "
                        "no --full-depth")
    drop = parse_quality_drop(budget, "--exit-quality-drop")
    exits = profile.exits
    with console.status(f"planning each combination of {len(exits)} exits' thresholds ..."):
        choice = choose_thresholds(problem, exits, drop or 0.0, objective, cons)
    shown = ", ".join(f"{name} {'off' if t is None else f'{t:.4g}'}" for name, t in choice.thresholds.items())
    console.print(f"exit thresholds chosen: {shown} (agreement drop {choice.quality_cost:.2%} of the "
                  f"profile's samples, budget {drop:.2%})", highlight=False)
    return choice.plan


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def parse_quality_drop(text: str | None, flag: str = "--max-quality-drop") -> float | None:
    """``1%`` or ``0.01``: a fraction of top-1 agreement, 0 to 1."""
    if text is None:
        return None
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise PlanError(f"{flag} {text!r} is not a fraction",
                        "give a percentage like 1% or a fraction like 0.01") from None
    return check_number(value, flag, low=0, high=1, error=PlanError,
                        fix="give a percentage like 1% (0 to 100%)")


def _quantity(parse: Callable[[str], float], text: str | None, flag: str) -> Any:
    return None if text is None else parse_flag(parse, text, flag, PlanError)


def plan_command(
    args: list[str] = typer.Argument(
        ...,
        metavar="PROFILE | DIR NETWORK_CSV MODEL",
        help="profile.json; with --scission: benchmark folder, network csv, model.",
    ),
    cluster: Path | None = typer.Option(
        None, "--cluster", help="cluster.yaml: devices, links, power, source, sink."
    ),
    objective: str = typer.Option(
        "latency", "--objective", help="latency | throughput | energy | pareto; a decoder: ttft (time to "
        "first token) | tpot (time per output token) | tokens (tokens/s of --in-flight sequences), at "
        "--context tokens per sequence."),
    top: int = typer.Option(1, "--top", "-k", help="How many best plans to list."),
    pin: list[str] = typer.Option([], "--pin", help="BLOCK=DEVICE or FIRST-LAST=DEVICE: run there."),
    forbid: list[str] = typer.Option([], "--forbid", help="BLOCK=DEVICE or FIRST-LAST=DEVICE: never there."),
    exclude: list[str] = typer.Option([], "--exclude", help="A device that hosts no stage."),
    require: list[str] = typer.Option([], "--require", help="A device that must host a stage."),
    max_stages: int | None = typer.Option(None, "--max-stages", help="At most N stages."),
    revisits: bool | None = typer.Option(
        None,
        "--revisits/--no-revisits",
        help="May a device host several stages (default: yes, except for throughput).",
    ),
    private_blocks: int = typer.Option(0, "--private-blocks", help="Keep the first K blocks on the source."),
    max_latency: str | None = typer.Option(None, "--max-latency", help="Latency bound, e.g. 200ms."),
    min_throughput: float | None = typer.Option(None, "--min-throughput", help="Requests/s bound."),
    max_upload_bytes: str | None = typer.Option(
        None, "--max-upload-bytes", help="Bound on bytes leaving the source, e.g. 2MB."
    ),
    max_energy: float | None = typer.Option(None, "--max-energy", help="Joules bound (battery devices)."),
    sink: str | None = typer.Option(None, "--sink", help="Where the result goes: a device, or none."),
    in_flight: int = typer.Option(
        1, "--in-flight", help="Requests a stage holds at once (the one it runs and those queued: the "
        "concurrency you will run at); its memory counts that many input and output buffers."),
    context: int = typer.Option(
        0, "--context", help="A decoder: tokens per sequence (prompt and generated); a stage's memory holds "
        "its layers' cache for that many tokens of each of --in-flight sequences."),
    stat: str = typer.Option("median_s", "--stat", help="Timing statistic: median_s, mean_s, p10_s, p90_s."),
    method: str = typer.Option("auto", "--method", help="auto | dp | milp | bruteforce."),
    time_limit: float = typer.Option(60.0, "--time-limit", help="Seconds the MILP may take per solve."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the plans to this plan.json."),
    max_quality_drop: str | None = typer.Option(
        None, "--max-quality-drop", help="Trade-offs: the summed quality cost allowed, e.g. 1% (top-1)."
    ),
    precisions: str | None = typer.Option(
        None, "--precisions", help="Trade-offs: precisions a stage may use, e.g. int8,fp16 (default: all)."
    ),
    compressions: str | None = typer.Option(
        None, "--compressions", help="Trade-offs: compressions a hop may use, e.g. int8,lz4 (default: all)."
    ),
    check_quality: Path | None = typer.Option(
        None, "--check-quality", help="Trade-offs: measure the plan's real drop on this data set; repair it."
    ),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="With --check-quality: calibrate int8 stages on this data (default: it)."
    ),
    preprocess: str | None = typer.Option(None, "--preprocess", help="With --check-quality: for images."),
    model: Path | None = typer.Option(
        None, "--model", help="With --check-quality: the model file (default: the profile's)."
    ),
    scission: bool = sc.SCISSION, general: bool = sc.GENERAL, input_mb: float | None = sc.INPUT,
    result_count: int | None = sc.RESULT_COUNT, device_criteria: str | None = sc.DEVICE,
    device_upload: float | None = sc.DEVICE_UPLOAD, device_time: str | None = sc.DEVICE_TIME,
    edge_criteria: str | None = sc.EDGE, edge_upload: float | None = sc.EDGE_UPLOAD,
    edge_time: str | None = sc.EDGE_TIME, cloud_criteria: str | None = sc.CLOUD,
    cloud_time: str | None = sc.CLOUD_TIME,
    input_shape: list[str] | None = typer.Option(
        None, "--input-shape", metavar="NAME=D1,D2,...", show_default=False,
        help="A profile made at several input sizes: the size to plan for, e.g. x=8,3,224,224 (default: "
             "the profile's first). One deployment of the plan serves every profiled size."),
    full_depth: bool = typer.Option(
        False, "--full-depth", help="A model with early exits: plan as if every request ran to the end "
                                    "(default: for the exit mix the profile measured)."),
    exit_quality_drop: str | None = typer.Option(
        None, "--exit-quality-drop", help="A model with early exits: choose their thresholds with the plan, "
        "the best plan whose early answers differ from the model's final one on at most this share of the "
        "profile's calibration samples, e.g. 2%."),
) -> None:
    _check_args(args, scission, objective)
    _check_numbers(top, time_limit, {"--min-throughput": min_throughput, "--max-energy": max_energy},
                   in_flight)
    check_number(context, "--context", low=0, high=1 << 30, whole=True, error=PlanError)
    scission_options = sc.ScissionOptions(device_criteria, device_upload, device_time, edge_criteria,
                                          edge_upload, edge_time, cloud_criteria, cloud_time, input_mb,
                                          result_count, general)
    scission_options.check(scission)
    check_writable(output, "-o")
    wanted = {"max_quality_drop": parse_quality_drop(max_quality_drop), "precisions": _names(precisions),
              "compressions": _names(compressions)}
    tradeoffs, profile = None, None
    asked = objective
    label, objective = GENERATION_OBJECTIVES.get(asked, (asked, asked))  # what the planner solves
    if scission:
        scission_run = sc.run_scission(args, scission_options)
        if scission_run is None:  # Scission's own ranking, printed
            return
        problem, provenance = scission_run
        if sink is not None:
            problem = dataclasses.replace(problem, sink=_sink(sink))
    else:
        problem, provenance, tradeoffs, profile = _profile_problem(args[0], cluster, stat, sink, wanted,
                                                                   in_flight, input_shape, full_depth,
                                                                   context, asked)
    cons = Constraints(
        pins=_block_pairs(pin, "pin", problem.num_blocks),
        forbids=_block_pairs(forbid, "forbid", problem.num_blocks),
        excludes=tuple(exclude),
        requires=tuple(require),
        max_stages=max_stages,
        revisits=revisits,
        private_blocks=private_blocks,
        max_latency_s=_quantity(parse_time_s, max_latency, "--max-latency"),
        min_throughput_rps=min_throughput,
        max_upload_bytes=_quantity(parse_size_bytes, max_upload_bytes, "--max-upload-bytes"),
        max_energy_j=max_energy,
    )
    if exit_quality_drop is not None:
        plans = [_chosen_thresholds(profile, problem, exit_quality_drop, objective, cons, full_depth)]
    elif check_quality is not None:
        plans = [_repaired(problem, tradeoffs, objective, cons, args[0], check_quality, calibration,
                           preprocess, model, time_limit)]
    elif tradeoffs is not None:
        plans = solve_tradeoffs(problem, tradeoffs, objective, cons, top, time_limit_s=time_limit)
    else:
        plans = solve(problem, objective, cons, top, method=method, time_limit_s=time_limit)
    # Recorded so that a re-plan after a failure respects them too.
    provenance = msgspec.structs.replace(provenance, constraints=cons)
    size = f" at {describe_size(provenance.input_shapes)}" if provenance.input_shapes else ""
    title = f"{label} plans of {provenance.model}{size} ({plans[0].solver})"
    console.print(format_plans(plans, title), *energy_tables(plans),  # the split per battery device
                  *compared_tables(problem, plans, objective, cons, method=method, time_limit_s=time_limit))
    if any(p.quality_cost is not None for p in plans):  # long lines, and the table may squeeze them
        for p in plans:
            console.print(f"#{p.rank}  {describe_stages(p)}", highlight=False, soft_wrap=True)
    _write(plans, output, provenance)


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the main app."""
    app.command("plan", help=HELP, no_args_is_help=True)(plan_command)
