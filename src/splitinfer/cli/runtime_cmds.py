"""Runtime commands: ``splitinfer worker`` (a device worker) and ``run`` (one request); ``bench`` is
:mod:`~splitinfer.cli.bench_cmds`'s, on this module's deployment helpers.

The worker's flags are declared once, on :class:`splitinfer.runtime.device.config.WorkerConfig`;
this command hands its arguments to the same parser as ``python -m splitinfer.runtime.device``.
``run`` and ``bench`` deploy a plan with :func:`splitinfer.runtime.coordinator.deploy.deploy` and always
close the deployment on exit (Ctrl-C included).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.table import Table

# format_bench_table moved to _bench_tables; the demo command (and a test) import it from here
from splitinfer.cli._bench_tables import format_bench_table as format_bench_table
from splitinfer.cli._common import check_writable, console, format_bytes
from splitinfer.cli._inputs import read_dataset, read_inputs, single_input, top_k_table
from splitinfer.cli._model import converted
from splitinfer.cluster import Cluster, load_cluster
from splitinfer.errors import (
    CalibrationNeeded,
    ClusterError,
    InputError,
    ModelError,
    ShapeError,
    SplitinferError,
)
from splitinfer.graph import Model, load_model
from splitinfer.plan import Plan, describe_stages
from splitinfer.profile.blocks import load_as_profiled
from splitinfer.profile.files import load_profile
from splitinfer.profile.schema import Profile
from splitinfer.records.plans import load_plan
from splitinfer.units import check_number

if TYPE_CHECKING:  # the runtime (zmq, onnxruntime) loads only when a command runs
    from splitinfer.data import Dataset
    from splitinfer.runtime.coordinator.session import Session
    from splitinfer.runtime.coordinator.timing import RequestTiming

PlanArg = Annotated[Path, typer.Argument(metavar="PLAN", help="plan.json written by `splitinfer plan -o`.",
                                         show_default=False)]
ClusterOpt = Annotated[Path | None, typer.Option(
    "--cluster", help="cluster.yaml (default: the one the plan was made with).", show_default=False)]
ModelOpt = Annotated[Path | None, typer.Option(
    "--model", help="The .onnx model (default: the profile's model path); a framework model is converted "
                    "and verified first.", show_default=False)]
ProfileOpt = Annotated[Path | None, typer.Option(
    "--profile", help="profile.json the plan was made from: block settings and re-planning on failure "
                      "(default: the plan's).", show_default=False)]
RankOpt = Annotated[int, typer.Option("--rank", help="Which plan of the file: 1 = the best.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Deadline of each request, in seconds.")]
CalibrationOpt = Annotated[Path | None, typer.Option(
    "--calibration", metavar="DATA", help="Real inputs a trade-off plan's int8 stages are calibrated on (an "
                                          "image folder, an .npz with x, an .npy); bench defaults to --data.",
    show_default=False)]


@dataclass(frozen=True)
class Deployment:
    """What a command deploys: the plan, the cluster, the loaded model and the profile (if any)."""

    plan: Plan
    cluster: Cluster
    model: Model
    profile: Profile | None


def _existing(text: str | None, near: Path) -> Path | None:
    """A path a plan's provenance names, as given or relative to the plan file's folder, if it exists."""
    if not text:
        return None
    for candidate in (Path(text), near.parent / text):
        if candidate.is_file():
            return candidate
    return None


def resolve_deployment(plan_path: Path, cluster: Path | None, model: Path | None, profile: Path | None,
                       rank: int = 1, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Deployment:
    """Load the plan; missing --cluster / --model / --profile come from what the plan and profile record.
    ``input_shapes`` (--input-shape) load the model where no profile records its shapes; with a profile
    they must be the profile's (its blocks were timed at those)."""
    plan = load_plan(plan_path, rank)
    profile_path = profile or _existing(plan.provenance.profile, plan_path)
    the_profile = load_profile(profile_path) if profile_path is not None else None
    cluster_path = cluster or _existing(plan.provenance.cluster, plan_path)
    if cluster_path is None:
        raise ClusterError("no cluster given and the plan names none", "give --cluster cluster.yaml")
    model_path = model
    if model_path is None and the_profile is not None and profile_path is not None:
        model_path = _existing(the_profile.model.path, profile_path)
    model_path = model_path or _existing(plan.provenance.model, plan_path)
    if model_path is None:
        raise ModelError("no model given and the plan's profile names no model file found here",
                         "give --model MODEL.onnx")
    # a framework model (--model, or the one a plan names): converted and verified first
    model_path = converted(model_path, input_shapes or _profiled_shapes(the_profile))
    # With a profile, the model loads with the input shapes it recorded (a mismatch names the profile).
    if the_profile is None:
        loaded = load_model(model_path, input_shapes=input_shapes or None)
    else:
        loaded = load_as_profiled(model_path, the_profile)
        _check_profiled_shapes(loaded, input_shapes or {}, plan.provenance.input_shapes)
    return Deployment(plan, load_cluster(cluster_path), loaded, the_profile)


def _profiled_shapes(profile: Profile | None) -> dict[str, tuple[int, ...]] | None:
    """The input shapes a profile was made at: a framework model given as --model is converted at them."""
    if profile is None:
        return None
    return {name: tuple(dims) for name, dims in profile.model.input_shapes.items()} or None


def _check_profiled_shapes(model: Model, input_shapes: dict[str, tuple[int, ...]],
                           planned: dict[str, tuple[int, ...]]) -> None:
    """Given shapes agree with those the plan was made for (``planned``: a size of a profile of several)
    or else the model was profiled (and so loaded) with."""
    loaded = dict(planned) or {s.name: tuple(s.shape) for s in model.inputs}
    for name, dims in input_shapes.items():
        if name in loaded and tuple(dims) != loaded[name]:
            raise ShapeError(f"--input-shape {name}={','.join(map(str, dims))} differs from the shape the "
                             f"{'plan was made for' if planned else 'profile was made with'} "
                             f"({name}={','.join(map(str, loaded[name]))})",
                             "leave out --input-shape (the profile's shapes are used), or profile again")
        if name not in loaded:
            raise ShapeError(f"--input-shape names {name!r}, which is not an input of the model",
                             f"the inputs are: {', '.join(loaded)}")


def check_request_options(timeout: float, rank: int) -> None:
    """``--timeout`` and ``--rank`` of run and bench, before anything is loaded."""
    from splitinfer.runtime.wire.client import MAX_WAIT_S

    check_number(timeout, "--timeout", low=0, low_open=True, high=MAX_WAIT_S, fix="seconds per request")
    check_number(rank, "--rank", low=1, whole=True, fix="1 = the best plan of the file")


def open_session(dep: Deployment, timeout_s: float, calibration: Dataset | None = None,
                 full_depth: bool = False) -> Session:
    """Deploy ``dep``: workers start, stages load; close the session (``with``) to stop them.
    ``calibration``: the samples a trade-off plan's int8 stages are calibrated on; ``full_depth``:
    no early exit answers, every request runs to the end."""
    from splitinfer.runtime.coordinator.deploy import deploy

    with console.status(f"deploying {describe_stages(dep.plan)} ..."), explain_calibration(calibration):
        return deploy(dep.plan, dep.cluster, dep.model, profile=dep.profile, timeout_s=timeout_s,
                      calibration=calibration, full_depth=full_depth)


@contextmanager
def explain_calibration(calibration: Dataset | None) -> Iterator[None]:
    """A deploy that fails for want of calibration inputs says which flag gives them."""
    try:
        yield
    except CalibrationNeeded:
        if calibration is not None:
            raise
        raise InputError("the plan's int8 stages are calibrated on real inputs, and none were given",
                         "give --calibration DATA (a few hundred samples: an image folder, an .npz "
                         "with x, an .npy)") from None


def read_calibration(path: Path | None, model: Model, preprocess: str | None) -> Dataset | None:
    """--calibration's data set (at most 256 samples), checked against the model's one input."""
    if path is None:
        return None
    spec = single_input(model, "--calibration", path)
    return read_dataset(path, spec, preprocess, "--calibration", limit=256)


# ---- run -------------------------------------------------------------------------------------------
def check_output_path(path: Path, model: Model) -> None:
    """Before any work: an .npy file holds one array, so several outputs need .npz."""
    if path.suffix != ".npz" and len(model.outputs) != 1:
        raise ShapeError(f"the model has {len(model.outputs)} outputs, {path.name} holds one array",
                         f"write them to {path.with_suffix('.npz').name}")


def write_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    """One output to .npy, several to .npz (named)."""
    if path.suffix == ".npz":
        np.savez(path, **outputs)
    else:
        np.save(path, next(iter(outputs.values())))


def timing_table(timing: RequestTiming, plan: Plan) -> Table:
    """One request's time per stage and hop, beside the plan's prediction."""
    title = f"request timing: {timing.latency_s * 1e3:.2f} ms (plan: {plan.latency_s * 1e3:.2f} ms)"
    table = Table(title=title, title_justify="left")
    for name in ("part", "where", "bytes", "queue ms", "compute ms", "wait ms", "total ms", "plan ms"):
        table.add_column(name, justify="left" if name in ("part", "where") else "right")
    hops = {(h.src, h.dst): h for h in plan.hops}
    for k, hop in enumerate(timing.hops):
        predicted = hops[(hop.src, hop.dst)].transfer_s if (hop.src, hop.dst) in hops else 0.0
        table.add_row(f"hop {k}", f"{hop.src} -> {hop.dst}", format_bytes(hop.num_bytes), "", "", "",
                      f"{hop.transfer_s * 1e3:.3f}", f"{predicted * 1e3:.3f}")
        if k < len(timing.stages):
            s = timing.stages[k]
            planned = plan.stages[k].compute_s if k < len(plan.stages) else math.nan
            table.add_row(f"stage {k}", s.device, "", f"{s.queue_s * 1e3:.3f}", f"{s.compute_s * 1e3:.3f}",
                          f"{s.wait_s * 1e3:.3f}", f"{s.busy_s * 1e3:.3f}", f"{planned * 1e3:.3f}")
    return table


def run_command(
    plan: PlanArg,
    cluster: ClusterOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    input_path: Annotated[Path | None, typer.Option(
        "--input", "-i", help="Inputs: an image (JPEG, PNG, ...: single-input model), .npy (single-input "
                              "model) or .npz (by input name). Default: seeded generated inputs.",
        show_default=False)] = None,
    preprocess: Annotated[str | None, typer.Option(
        "--preprocess", help="How an image becomes the input, e.g. resize=256,crop=224,norm=imagenet,"
                             "layout=NCHW (default: from the input's shape).", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Class names (one per line, or JSON): print the top-5 of the class scores.",
        show_default=False)] = None,
    calibration: CalibrationOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the outputs: .npy (one output) or .npz.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of generated inputs.")] = 0,
    rank: RankOpt = 1,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Deploy a plan, run one request through its stages, show the outputs and where the time went.

    Local devices of the cluster run as worker processes on this machine; they stop when the command ends.
    --cluster, --model and --profile default to what the plan and its profile record.

    Examples:

      splitinfer run plan.json --cluster cluster.yaml --model r18.onnx --profile profile.json

      splitinfer run plan.json --input image.npy -o logits.npy

      splitinfer run plan.json --input cat.jpg --labels imagenet.txt

      splitinfer run plan.json --rank 2 --input feeds.npz -o outputs.npz
    """
    check_request_options(timeout, rank)
    check_number(seed, "--seed", low=0, whole=True)
    check_writable(output, "-o")  # before anything is deployed
    dep = resolve_deployment(plan, cluster, model, profile, rank)
    if labels is not None:
        from splitinfer.data import read_labels

        read_labels(labels)  # a bad label file fails before anything is deployed
    feeds = read_inputs(input_path, dep.model, preprocess) if input_path is not None else \
        dep.model.make_feeds(seed)
    if output is not None:
        check_output_path(output, dep.model)
    calibrated = read_calibration(calibration, dep.model, preprocess)
    with open_session(dep, timeout, calibrated) as session:
        values = session.run(None, feeds)
        timing = session.last_timing
    outputs = {s.name: v for s, v in zip(dep.model.outputs, values, strict=True)}
    table = Table(title="outputs", title_justify="left")
    for name in ("name", "dtype", "shape", "min", "max"):
        table.add_column(name, justify="left" if name in ("name", "dtype", "shape") else "right")
    for name, value in outputs.items():
        numeric = value.size and value.dtype.kind in "fiub"
        lo, hi = (f"{value.min():.4g}", f"{value.max():.4g}") if numeric else ("", "")
        table.add_row(name, value.dtype.name, str(list(value.shape)), lo, hi)
    console.print(table)
    if labels is not None:
        console.print(top_k_table(outputs, labels))
    assert timing is not None
    console.print(timing_table(timing, dep.plan))
    if output is not None:
        try:
            write_outputs(output, outputs)
        except OSError as e:  # checked before deploying; gone or full since
            raise SplitinferError(f"cannot write -o {output}: {e.strerror or e}",
                                  "pick a writable path for -o") from None
        console.print(f"wrote {output}", highlight=False)


# ---- worker ----------------------------------------------------------------------------------------
def worker(ctx: typer.Context) -> None:
    """Run a device worker: hosts stages, answers health, info, profile and echo requests.

    Example: splitinfer worker --name edge --listen tcp://0.0.0.0:5555 --token-file token.txt
    (run with --help for all flags).
    """
    from splitinfer.runtime.device.config import parse_config
    from splitinfer.runtime.device.process import serve_worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(message)s")
    try:
        config = parse_config(list(ctx.args))
    except SystemExit as e:  # argparse's --help (0) and usage errors (2): already printed
        raise typer.Exit(int(e.code or 0)) from None
    serve_worker(config)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                            "help_option_names": []})(worker)
    app.command("run", no_args_is_help=True)(run_command)
