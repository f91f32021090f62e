"""``splitinfer eval``: a model, or a plan's stages, on a data set: agreement with the whole model, accuracy.

The library does the work (:mod:`splitinfer.runtime.evaluate`); a plan resolves and deploys as ``run``
and ``bench`` do it (:func:`~splitinfer.cli.runtime_cmds.resolve_deployment`, ``open_session``). Every
flag, the data and the plan are checked before a worker starts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from splitinfer.cli._common import check_writable, console, print_json
from splitinfer.cli._model import ModelPath, converted
from splitinfer.cli.runtime_cmds import ClusterOpt, Deployment, ProfileOpt, open_session, resolve_deployment
from splitinfer.errors import InputError, PlanError, SplitinferError
from splitinfer.units import check_number

if TYPE_CHECKING:  # the runtime (zmq, onnxruntime) loads only when the command runs
    from splitinfer.data import Dataset
    from splitinfer.runtime.coordinator.session import Session
    from splitinfer.runtime.evaluate import Evaluation

MAX_TOP_K = 1000


def parse_top_k(text: str) -> tuple[int, ...]:
    """``--top-k 1,5`` -> (1, 5): whole numbers from 1, comma-separated."""
    fix = "give whole numbers from 1, comma-separated, e.g. --top-k 1,5"
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"--top-k {text!r} is not a list of whole numbers", fix) from None
    for k in values:
        check_number(k, "--top-k", low=1, high=MAX_TOP_K, whole=True, error=InputError, fix=fix)
    return values


def _check_compress(spec: str | None) -> None:
    from splitinfer.compression import parse_compression

    if spec is None:
        return
    try:
        parse_compression(spec)
    except PlanError as e:
        raise PlanError(f"--compress: {e.problem}", e.fix) from None


def _without_plan(plan: Path | None, **flags: object) -> None:
    """Flags that say how a plan runs are an error without one (rather than silently ignored)."""
    if plan is not None:
        return
    given = next((flag for flag, value in flags.items() if value not in (None, False)), None)
    if given is not None:
        raise SplitinferError(f"{given} needs --plan: it says how a plan's stages run",
                              f"give --plan plan.json, or leave {given} out")


def _load_data(path: Path, preprocess: str | None, labels: Path | None, limit: int | None,
               input_shape: tuple[int, ...], input_dtype: str) -> Dataset:
    from splitinfer.data import load_dataset, read_labels

    shape = [d if d > 0 else None for d in input_shape]
    data = load_dataset(path, preprocess, input_shape=shape, input_dtype=input_dtype, limit=limit)
    if labels is not None:  # the label file's names replace the data's (checked against its labels)
        data = dataclasses.replace(data, class_names=read_labels(labels))
    return data


def summary_table(result: Evaluation) -> Table:
    """The headline numbers: what ran, on what, the accuracy of both and how much they agree."""
    table = Table(title="eval", title_justify="left", show_header=False)
    table.add_column("what", justify="left")
    table.add_column("value", justify="left")
    if result.model_sha256:
        table.add_row("model", f"{result.model or 'bytes'} (sha256 {result.model_sha256[:12]})")
    table.add_row("data", result.data)
    padded = f", {result.num_padded} padding dropped" if result.num_padded else ""
    table.add_row("samples", f"{result.num_samples} (batch {result.batch_size}{padded})")
    table.add_row("reference", f"{result.reference} ({result.reference_s:.2f} s)")
    if result.candidate is not None:
        table.add_row("candidate", f"{result.candidate} ({result.candidate_s:.2f} s)")
    if result.classification is not None:
        table.add_section()
        ref = result.reference_classification
        if ref is not None:
            table.add_row("accuracy, reference", f"{ref.accuracy:.4f}")
        name = "accuracy, candidate" if result.candidate is not None else "accuracy"
        table.add_row(name, f"{result.classification.accuracy:.4f}")
        if result.accuracy_drop is not None:
            table.add_row("accuracy drop", f"{result.accuracy_drop * 100:+.2f} points")
    if result.agreement is not None:
        table.add_section()
        for out in result.agreement.outputs.values():
            top1 = f", top-1 agreement {out.top1_agreement:.4f}" if out.top1_agreement is not None else ""
            table.add_row(f"output {out.name}", f"SNR {out.snr_db:.1f} dB, cosine {out.cosine:.6f}{top1}")
    return table


def eval_command(
    model: ModelPath,
    data: Annotated[Path, typer.Option(
        "--data", help="The data set: an image folder (one sub-folder per class), an .npz (x, y, "
                       "class_names), an .npy, or one image.", show_default=False)],
    plan: Annotated[Path | None, typer.Option(
        "--plan", help="plan.json: evaluate its stages against the whole model (default: the model alone, "
                       "its own accuracy).", show_default=False)] = None,
    rank: Annotated[int | None, typer.Option("--rank", help="Which plan of the file: 1 = the best.",
                                             show_default=False)] = None,
    cluster: ClusterOpt = None,
    profile: ProfileOpt = None,
    in_process: Annotated[bool, typer.Option(
        "--in-process", help="Run the plan's stages in this process, not on workers (fast; same numbers, "
                             "hops compressed the same way).")] = False,
    compress: Annotated[str | None, typer.Option(
        "--compress", metavar="SPEC", help="Compress every hop between the plan's stages (not the uplink), "
                                           "e.g. int8, fp16, int8:per_channel, zstd.", show_default=False)]
    = None,
    preprocess: Annotated[str | None, typer.Option(
        "--preprocess", metavar="SPEC", help="How images become inputs, e.g. "
                                             "resize=256,crop=224,norm=imagenet (default: fit the model's "
                                             "input).", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Class names: one per line, or JSON (replaces the data's).", show_default=False)]
    = None,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", help="At most N samples.",
                                              show_default=False)] = None,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="A plan with int8 stages: the data their quantisation is calibrated on "
                              "(default: --data itself; give held-out data for an honest figure).",
        show_default=False)] = None,
    top_k: Annotated[str, typer.Option("--top-k", metavar="K,...", help="The k of top-k agreement and "
                                                                      "accuracy.")] = "1,5",
    timeout: Annotated[float, typer.Option("--timeout", help="Deadline of each request on workers, in "
                                                             "seconds.")] = 30.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the JSON.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the results to eval.json.",
                                                show_default=False)] = None,
) -> None:
    """Run a data set through a plan's stages and the whole model: agreement, accuracy, and its drop.

    Without --plan: the model's own accuracy on the data.
    With --plan: the plan's stages (on local workers, or --in-process) against the whole model.
    Agreement: top-1/top-k, SNR and cosine of every output.
    Classification (the first 2-D float output): accuracy, precision, sensitivity, confusion matrix.
    A fixed batch is kept: the last batch is padded, and the padding is not counted.

    Examples:

      splitinfer eval digits.onnx --data digits.npz

      splitinfer eval r18.onnx --data val/ --preprocess resize=256,crop=224,norm=imagenet --limit 500

      splitinfer eval r18.onnx --data val/ --plan plan.json --profile profile.json -o eval.json

      splitinfer eval r18.onnx --data val/ --plan plan.json --in-process --compress int8 --json
    """
    from splitinfer.runtime.wire.client import MAX_WAIT_S

    # Every flag first: nothing is loaded, and no worker starts, for a command that cannot run.
    _without_plan(plan, **{"--rank": rank, "--cluster": cluster, "--profile": profile,
                           "--in-process": in_process, "--compress": compress})
    _check_compress(compress)
    ks = parse_top_k(top_k)
    if limit is not None:
        check_number(limit, "--limit", low=1, whole=True, error=InputError, fix="the most samples to take")
    check_number(rank or 1, "--rank", low=1, whole=True, fix="1 = the best plan of the file")
    check_number(timeout, "--timeout", low=0, low_open=True, high=MAX_WAIT_S, fix="seconds per request")
    check_writable(output, "-o")

    from splitinfer.runtime import evaluate as ev

    model = converted(model)  # a framework model: converted and verified first
    reference = ev.reference_runner(model)
    dep = resolve_deployment(plan, cluster, model, profile, rank or 1) if plan is not None else None
    # Images are made to fit the deployed input (the profile fixes its shape), else the model's own.
    specs = dep.model.inputs if dep is not None else reference.inputs
    shape, dtype = (specs[0].shape, specs[0].dtype) if specs else ((), "float32")  # no input: check_data says
    dataset = _load_data(data, preprocess, labels, limit, shape, dtype)
    ev.check_data(reference, dep.model if dep is not None else None, dataset)
    calib = None
    if dep is not None and any(s.precision == "int8" for s in dep.plan.stages):
        calib = _load_data(calibration, preprocess, None, None, shape, dtype) if calibration else dataset
        if calibration is None and not json_out:
            console.print("int8 stages are calibrated on the evaluated data (--calibration: held-out data)",
                          highlight=False)
    if dep is None:
        result = _evaluate(reference, None, dataset, ks, json_out)
    elif in_process:
        result = _evaluate(reference, ev.chain_runner(_stages(dep, compress, calib)), dataset, ks, json_out)
    else:
        with _deploy(dep, compress, timeout, calib) as session:
            result = _evaluate(reference, ev.session_runner(session), dataset, ks, json_out)
    # The model's sha256 beside its path, as a plan's provenance records it: the result names its model.
    doc = {"model": str(model), "model_sha256": result.model_sha256,
           "plan": None if plan is None else str(plan), "rank": None if plan is None else rank or 1,
           "in_process": in_process, "compress": compress, **result.to_dict()}
    if output is not None:
        try:
            output.write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as e:  # checked before any work; gone or full since
            raise SplitinferError(f"cannot write -o {output}: {e.strerror or e}",
                                  "pick a writable path for -o") from None
    if json_out:
        print_json(doc)
        return
    _print(result, dataset)
    if output is not None:
        console.print(f"wrote {output}", highlight=False)


def _stages(dep: Deployment, compress: str | None, calibration: Dataset | None) -> list[Any]:
    from splitinfer.runtime.evaluate import plan_stages, with_hop_compression

    stages = plan_stages(dep.plan, dep.cluster, dep.model, profile=dep.profile, calibration=calibration)
    return stages if compress is None else with_hop_compression(stages, compress)


def _deploy(dep: Deployment, compress: str | None, timeout_s: float, calibration: Dataset | None) -> Session:
    # Full depth: quality is the model's outputs on every sample, not an early exit's answer on some.
    if compress is None and not dep.plan.has_tradeoffs:
        return open_session(dep, timeout_s, full_depth=True)
    from splitinfer.plan import describe_stages
    from splitinfer.runtime import deploy_stages

    # The stages are built here (with --compress, or a trade-off plan's quantised stages), so this
    # session does not re-plan when a device fails: a re-planned pipeline would lose them.
    stages = _stages(dep, compress, calibration)
    hops = f" with {compress} hops" if compress else ""
    with console.status(f"deploying {describe_stages(dep.plan)}{hops} ..."):
        return deploy_stages(stages, dep.cluster, plan=dep.plan, model=dep.model, timeout_s=timeout_s,
                             full_depth=True)


def _evaluate(reference: Any, candidate: Any, dataset: Dataset, top_k: tuple[int, ...],
              quiet: bool) -> Evaluation:
    from splitinfer.runtime.evaluate import evaluate

    if quiet:
        return evaluate(reference, candidate, dataset, top_k=top_k)
    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("eval", total=len(dataset))
        return evaluate(reference, candidate, dataset, top_k=top_k,
                        progress=lambda done, _: bar.update(task, completed=done))


def _print(result: Evaluation, dataset: Dataset) -> None:
    console.print(summary_table(result))
    if result.agreement is not None:
        console.print("\n[bold]agreement with the reference[/]")
        console.print(result.agreement.format_table(), markup=False, highlight=False)
    if result.classification is not None:
        whose = "candidate" if result.candidate is not None else "model"
        console.print(f"\n[bold]classification by the {whose}[/] (output {result.classifier_output})",
                      highlight=False)
        console.print(result.classification.format_table(), markup=False, highlight=False)
    elif dataset.y is None:
        console.print("no classification: the data has no labels (an image folder with one sub-folder "
                      "per class, or an .npz with y)", highlight=False)
    else:
        console.print("no classification: the model has no 2-D float output (N x classes)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's command to the main app."""
    app.command("eval", no_args_is_help=True)(eval_command)
