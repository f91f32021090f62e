"""``splitinfer bench``: deploy a plan, run many requests and put the measurement beside the prediction;
with ``--top K``, the K best plans of the file measured interleaved and ranked by measurement.

Deployment (files the plan names, the deploy itself) is :mod:`~splitinfer.cli.runtime_cmds`'s, as
for ``run``; the tables are :mod:`~splitinfer.cli._bench_tables`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from splitinfer.cli import runtime_cmds
from splitinfer.cli._bench_tables import format_bench_table, format_rank_table
from splitinfer.cli._common import check_writable, console, print_json
from splitinfer.cli._inputs import dataset_feeds, read_dataset, single_input
from splitinfer.cli._model import InputShapes, parse_input_shapes
from splitinfer.cli.runtime_cmds import (
    CalibrationOpt,
    ClusterOpt,
    Deployment,
    ModelOpt,
    PlanArg,
    ProfileOpt,
    TimeoutOpt,
    check_request_options,
    explain_calibration,
    read_calibration,
    resolve_deployment,
)
from splitinfer.errors import PlanError, SplitinferError
from splitinfer.plan import Plan
from splitinfer.records.bench import encode_bench, encode_rank, rank_figure, save_bench, save_rank
from splitinfer.records.plans import read_plans
from splitinfer.units import check_number

if TYPE_CHECKING:  # the runtime (zmq, onnxruntime) loads only when a command runs
    from splitinfer.data import Dataset
    from splitinfer.records.bench import BenchResult, RankResult
    from splitinfer.runtime.bench import Feeds


@contextmanager
def _progress(json_out: bool, total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback over ``total`` requests, shown as a bar (none for --json: stdout is the
    JSON alone)."""
    if json_out:
        yield None
        return
    columns = (TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("bench", total=total)
        yield lambda done, _: bar.update(task, completed=done)


def _bench_one(dep: Deployment, timeout: float, calibrated: Dataset | None, json_out: bool,
               options: dict[str, Any]) -> BenchResult:
    from splitinfer.runtime.bench import bench

    # through the module: tests replace runtime_cmds.open_session to prove nothing was deployed
    full_depth = options.pop("full_depth", False)
    with runtime_cmds.open_session(dep, timeout, calibrated, full_depth) as session, \
            _progress(json_out, options["num_requests"]) as progress:
        return bench(session, dep.plan, progress=progress, **options)


def _top_plans(plan_path: Path, top: int) -> list[Plan]:
    """The ``top`` best plans of the file, checked before anything is loaded or deployed."""
    check_number(top, "--top", low=1, whole=True, fix="how many of the file's best plans to bench")
    plans = read_plans(plan_path)
    if top > len(plans):
        raise PlanError(f"--top {top}: plan file {plan_path} has {len(plans)} plan(s)",
                        f"give --top {len(plans)} or less, or plan more: splitinfer plan ... --top {top} -o "
                        f"{plan_path.name}")
    rank_figure(plans[:top])  # energy or Pareto plans have no one measured order
    return plans[:top]


def _bench_top(plans: list[Plan], dep: Deployment, timeout: float, calibrated: Dataset | None,
               json_out: bool, options: dict[str, Any]) -> RankResult:
    from splitinfer.runtime.bench import bench_ranked

    if not json_out:
        console.print(f"deploying {len(plans)} plans ...", highlight=False)
    total = len(plans) * options["num_requests"]
    with explain_calibration(calibrated), _progress(json_out, total) as progress:
        return bench_ranked(plans, dep.cluster, dep.model, profile=dep.profile, calibration=calibrated,
                            timeout_s=timeout, progress=progress, **options)


def bench_command(
    plan: PlanArg,
    cluster: ClusterOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    requests: Annotated[int, typer.Option("--requests", "-n", help="Measured requests (per plan).")] = 50,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests in flight at once.")] = 1,
    num_warmup: Annotated[int, typer.Option("--num-warmup", help="Unmeasured requests first.")] = 5,
    warmup: Annotated[int | None, typer.Option("--warmup", hidden=True, help="Old name of --num-warmup.")]
    = None,
    rank: Annotated[int | None, typer.Option(
        "--rank", help="Which plan of the file: 1 = the best (the default).", show_default=False)] = None,
    top: Annotated[int | None, typer.Option(
        "--top", metavar="K", help="Bench the K best plans of the file, deployed at once and sent "
                                   "requests in turn, and compare their predicted with their measured rank.",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the results to bench.json (with --top: the ranked bench).",
        show_default=False)] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print only the bench JSON (with --top: the ranked bench's).")] = False,
    timeout: TimeoutOpt = 30.0,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Run the requests on this data set's samples, in order and cycled (single-input "
                       "model): an image folder, one image, an .npz (x) or an .npy. Default: seeded "
                       "generated inputs.", show_default=False)] = None,
    preprocess: Annotated[str | None, typer.Option(
        "--preprocess", metavar="SPEC", help="How --data's images become inputs, e.g. resize=256,crop=224,"
                                             "norm=imagenet (default: from the input's shape).",
        show_default=False)] = None,
    calibration: CalibrationOpt = None,
    input_shape: InputShapes = None,
    full_depth: Annotated[bool, typer.Option(
        "--full-depth", help="A model with early exits: run every request to the end (no exit answers), to "
                             "measure what the exits save on the same plan.")] = False,
    resource_interval: Annotated[float, typer.Option(
        "--resource-interval", metavar="SECONDS", help="Each worker samples its CPU %, memory and GPU (NVML) "
                                                       "this often during the bench, kept in bench.json; 0: "
                                                       "off (one plan: not with --top).")] = 0.1,
) -> None:
    """Deploy a plan, run many requests and compare the measured times with the plan's predictions.

    Per stage: predicted compute vs measured compute + emulated slowdown wait.
    Per hop: predicted vs measured transfer. End to end: latency (median, p95) and throughput.
    Errors are (predicted - measured) / measured: negative = the plan is optimistic.
    Compare latency at --concurrency 1, throughput at higher concurrency.
    --top K: the K best plans, ranked by measured median latency (throughput for throughput plans);
    the regret of the predicted best and Kendall's tau between predicted and measured rank.

    Examples:

      splitinfer bench plan.json --cluster cluster.yaml --model r18.onnx --profile profile.json

      splitinfer bench plan.json --requests 200 --concurrency 8 -o bench.json

      splitinfer bench plan.json --rank 2 --json > bench.json

      splitinfer bench plan.json --top 5 --requests 200 -o rank.json

      splitinfer bench plan.json --data val/ --preprocess resize=256,crop=224,norm=imagenet

      splitinfer bench plan.json --model bert.onnx --input-shape input_ids=1,128

    (--input-shape: where the plan's profile, which records the shapes, is not at hand)
    """
    num_warmup = num_warmup if warmup is None else warmup
    from splitinfer.runtime.bench import MAX_CONCURRENCY, MAX_REQUESTS
    from splitinfer.runtime.bench_resources import check_interval

    if top is not None and rank is not None:
        raise SplitinferError("--top and --rank both given: --top benches the K best plans, --rank one plan",
                              "give one of them")
    check_number(requests, "--requests", low=1, high=MAX_REQUESTS, whole=True)
    check_number(concurrency, "--concurrency", low=1, high=MAX_CONCURRENCY, whole=True)
    check_number(num_warmup, "--num-warmup", low=0, high=MAX_REQUESTS, whole=True)
    interval_s = check_interval(resource_interval, "--resource-interval")
    check_request_options(timeout, rank or 1)
    check_writable(output, "-o")
    if preprocess is not None and data is None and calibration is None:
        raise SplitinferError("--preprocess needs --data: it says how the data's images become inputs",
                              "give --data DATA, or leave out --preprocess")

    shapes = parse_input_shapes(input_shape)
    ranked_plans = _top_plans(plan, top) if top is not None else None
    dep = resolve_deployment(plan, cluster, model, profile, rank or 1, input_shapes=shapes)
    feeds: list[Feeds] | None = None
    note, dataset = "", None
    if data is not None:  # loaded and checked against the deployed input before any worker starts
        spec = single_input(dep.model, "--data", data)
        dataset = read_dataset(data, spec, preprocess, "--data")
        feeds = dataset_feeds(dataset, spec, requests + num_warmup)
        note = f"inputs: {len(dataset)} samples of {dataset.source}, cycled"
    calibrated = read_calibration(calibration, dep.model, preprocess) or dataset
    options: dict[str, Any] = {"num_requests": requests, "concurrency": concurrency, "num_warmup": num_warmup,
                               "feeds": feeds}
    if full_depth:
        if top is not None:
            raise PlanError("--full-depth benches one plan", "leave out --top, or --full-depth")
        options["full_depth"] = True
    if ranked_plans is None:
        options["resource_interval_s"] = interval_s
    if ranked_plans is not None:
        ranked = _bench_top(ranked_plans, dep, timeout, calibrated, json_out, options)
        _show(output, json_out, note, ranked, encode_rank, save_rank, format_rank_table)
    else:
        result = _bench_one(dep, timeout, calibrated, json_out, options)
        _show(output, json_out, note, result, encode_bench, save_bench, format_bench_table)


def _show(output: Path | None, json_out: bool, note: str, result: object, encode: Callable, save: Callable,
          table: Callable) -> None:
    """Write -o, then print the JSON (--json) or the note and the table."""
    if output is not None:
        save(result, output)
    if json_out:
        print_json(json.loads(encode(result)))
        return
    if note:
        console.print(note, highlight=False)
    console.print(table(result))
    if output is not None:
        console.print(f"wrote {output}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("bench", no_args_is_help=True)(bench_command)
