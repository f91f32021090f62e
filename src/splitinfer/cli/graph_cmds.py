"""`splitinfer inspect` and `splitinfer split`: look at a model's blocks, cut it into partitions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from splitinfer.cli._common import check_folder, console, format_bytes, format_count, print_json
from splitinfer.cli._exits import (
    ExitRuleOpt,
    ExitRulePathOpt,
    ExitsOpt,
    ExitThresholdOpt,
    read_exit_options,
)
from splitinfer.cli._model import (
    Batch,
    FixInputs,
    GivenInputs,
    Inputs,
    InputsFile,
    InputShapes,
    ModelPath,
    open_model,
)
from splitinfer.errors import CutError, VerifyError
from splitinfer.graph import (
    Analysis,
    Model,
    Partition,
    VerifyReport,
    analyze,
    split,
    verify,
    write_partitions,
)
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.graph.exit_cuts import exit_cuts, exit_partitions
from splitinfer.graph.exits import Exit
from splitinfer.graph.sizes import describe_size
from splitinfer.types import TensorSpec
from splitinfer.units import check_number

MaxCutTensors = Annotated[
    int, typer.Option("--max-cut-tensors", metavar="K", help="A candidate cut has at most K live tensors.")
]
MaxBlocks = Annotated[
    int,
    typer.Option("--max-blocks", metavar="N", help="Group nodes into at most N blocks (0: every candidate)."),
]


def _check_cut_options(max_cut_tensors: int, max_blocks: int) -> None:
    check_number(max_cut_tensors, "--max-cut-tensors", low=1, whole=True, error=CutError)
    check_number(max_blocks, "--max-blocks", low=0, whole=True, error=CutError, fix="0 = every candidate")


def _model_info(model: Model) -> dict[str, object]:
    fixed = {n: np.asarray(v).tolist() for n, v in model.fixed_inputs.items()}
    return {
        "name": model.name,
        "path": str(model.path) if model.path else None,
        "sha256": model.sha256,
        "opset": model.opset,
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in model.inputs],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in model.outputs],
        "fixed_inputs": fixed,
        "inputs_given": sorted(model.feeds),
        # tensors whose size depends on the input values: the axes that vary (graph/dynamic.py)
        "dynamic_dims": {name: list(axes) for name, axes in model.dynamic_dims.items()},
        # with several --input-shape sizes: the input sizes served and the axes that follow them
        "sizes": [{n: list(d) for n, d in size.items()} for size in model.sizes],
        "symbolic_dims": {name: list(axes) for name, axes in model.symbolic_dims.items()},
    }


def _block_table(analysis: Analysis, model: Model) -> Table:
    table = Table(title="blocks", title_justify="left")
    # A cut (or the model output) whose size depends on the input values: its bytes are those seen at load.
    after = [[t.name for t in c.tensors] for c in analysis.cuts] + [[s.name for s in model.outputs]]
    varies = [any(n in model.dynamic_dims for n in names) for names in after]
    if any(varies):
        table.caption = "* size varies with the input values (bytes: as seen at load)"
        table.caption_justify = "left"
    for col, justify in [("block", "right"), ("nodes", "right"), ("op types (top 3)", "left"),
                         ("GFLOPs", "right"), ("params", "right"), ("output", "right"), ("cut", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for b in analysis.blocks:
        ops = ", ".join(f"{op}×{n}" for op, n in list(b.op_types.items())[:3])
        table.add_row(str(b.index), str(len(b.nodes)), ops, f"{b.flops / 1e9:.3f}",
                      format_count(b.num_params), format_bytes(b.output_bytes),
                      format_bytes(b.cut_bytes) + ("*" if varies[b.index] else ""))
    return table


def inspect(
    model: ModelPath,
    input_shape: InputShapes = None,
    batch: Batch = None,
    max_cut_tensors: MaxCutTensors = DEFAULT_MAX_CUT_TENSORS,
    max_blocks: MaxBlocks = DEFAULT_MAX_BLOCKS,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print only JSON (analysis + model info).")
    ] = False,
    inputs: Inputs = None,
    inputs_file: InputsFile = None,
    fix_input: FixInputs = None,
) -> None:
    """Show a model's blocks: nodes, op types, GFLOPs, params, output and cut bytes.

    A cut is a point in the model where few tensors are live; blocks are the
    runs of nodes between chosen cuts, the units that get profiled and placed.

    Examples:

      splitinfer inspect resnet50.onnx

      splitinfer inspect yolo.onnx --input-shape images=1,3,640,640

      splitinfer inspect bert.onnx --batch 1 --input-shape input_ids=1,128 --json

      splitinfer inspect silero_vad.onnx --fix-input sr=16000

    (the network inside the If that sr decides becomes blocks that can be cut)
    """
    started = time.perf_counter()
    _check_cut_options(max_cut_tensors, max_blocks)
    # Inspecting and splitting read external weights range by range: the process holds one partition's.
    m = open_model(model, input_shape, batch, GivenInputs(inputs, inputs_file, fix_input), sizes=True,
                   weights_on_disk=True)
    analysis = analyze(m, max_cut_tensors=max_cut_tensors, max_blocks=max_blocks)
    elapsed_s = time.perf_counter() - started
    if json_out:
        print_json({"model": _model_info(m), **analysis.to_dict()})
        return
    console.print(_block_table(analysis, m))
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("model", f"{m.name} (sha256 {m.sha256[:12]}, opset {m.opset})"),
        ("nodes", f"{analysis.num_nodes} ({len(analysis.order)} in blocks, "
                  f"{analysis.num_nodes - len(analysis.order)} folded as constants)"),
        ("blocks", str(len(analysis.blocks))),
        ("candidate cuts", f"{len(analysis.candidates)} (at most {max_cut_tensors} tensors each)"),
        ("params", f"{format_count(analysis.num_params)} ({format_bytes(analysis.param_bytes)})"),
        ("GFLOPs", f"{analysis.total_flops / 1e9:.3f}"),
        ("input", f"{_show_specs(m.inputs)} = {format_bytes(analysis.input_bytes)}"),
        ("output", f"{_show_specs(m.outputs)} = {format_bytes(analysis.output_bytes)}"),
        ("time", f"{elapsed_s:.2f} s"),
    ]
    if m.specialization is not None:
        spec = m.specialization
        rows.insert(1, ("fixed", f"{spec.describe()}; outputs as the original's "
                                 f"(max abs diff {spec.max_abs_diff or 0.0:.3g})"))
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)


def _show_specs(specs: tuple[TensorSpec, ...] | list[TensorSpec], limit: int = 3) -> str:
    shown = [f"{s.name}{list(s.shape)}" for s in specs[:limit]]
    if len(specs) > limit:
        shown.append(f"+{len(specs) - limit} more")
    return ", ".join(shown)


def _partition_table(parts: list[Partition]) -> Table:
    table = Table(title="partitions", title_justify="left")
    for col, justify in [("part", "right"), ("blocks", "right"), ("nodes", "right"), ("inputs", "left"),
                         ("outputs", "left"), ("cut", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for p in parts:
        blocks = f"{p.first_block}-{p.last_block}" if p.first_block is not None else "-"
        table.add_row(str(p.index), blocks, str(p.num_nodes), _show_specs(p.inputs), _show_specs(p.outputs),
                      format_bytes(p.cut_bytes))
    return table


def _report_table(report: VerifyReport) -> Table:
    title = "verification (partitions chained vs whole model, ONNX Runtime)"
    table = Table(title=title, title_justify="left")
    # Relative to the output's largest magnitude, not element-wise: near-0 references made that 1e300.
    for col in ("output", "max abs diff", "max abs diff / max |ref|", "ok"):
        table.add_column(col)
    for o in report.outputs:
        table.add_row(o.name, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", "yes" if o.ok else "[red]NO[/]")
    if report.sizes:  # sizes that depend on the input values: the inputs compared, each with its sizes
        seen = "; ".join(", ".join(f"{n}{list(v)}" for n, v in run.items()) for run in report.sizes)
        table.caption = f"on {len(report.sizes)} inputs, sizes seen: {seen}"
        table.caption_justify = "left"
    return table


def _cuts_for(m: Model, at: list[str] | None, blocks: int | None, all_blocks: bool,
              max_cut_tensors: int, exits: tuple[Exit, ...] = ()) -> tuple[Analysis, list[object]]:
    chosen = sum([bool(at), blocks is not None, all_blocks])
    if exits and not at:  # each exit ends a partition; --blocks / --all cut the trunk further
        analysis = analyze(m, max_cut_tensors=max_cut_tensors, max_blocks=blocks or 0) if chosen else \
            analyze(m, max_cut_tensors=max_cut_tensors)
        at_exits = {c.position for c in exit_cuts(m, exits, analysis)}
        return analysis, sorted(at_exits | ({c.position for c in analysis.cuts} if chosen else set()))
    if chosen != 1:
        raise CutError(
            "say where to cut with exactly one of --at, --blocks or --all",
            "e.g. `splitinfer split model.onnx --blocks 4 -o parts` (see `splitinfer split --help`)",
        )
    if blocks is not None:
        if blocks < 1:
            raise CutError(f"--blocks {blocks} is not a positive number", "give --blocks 2 or more")
        analysis = analyze(m, max_cut_tensors=max_cut_tensors, max_blocks=blocks)
        return analysis, list(analysis.cuts)
    analysis = analyze(m, max_cut_tensors=max_cut_tensors)
    if all_blocks:
        return analysis, list(analysis.cuts)
    return analysis, [[name.strip() for name in cut.split(",")] for cut in at or []]


def split_command(
    model: ModelPath,
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for part_<k>.onnx and manifest.json.")],
    at: Annotated[list[str] | None, typer.Option(
        "--at", metavar="T1,T2,...", help="Cut at these tensors (one cut; repeat --at for more cuts).",
        show_default=False)] = None,
    blocks: Annotated[int | None, typer.Option(
        "--blocks", metavar="N", help="Split into N partitions of even cost.", show_default=False)] = None,
    all_blocks: Annotated[bool, typer.Option("--all", help="One partition per block of `inspect`.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking the chain against the model.")]
    = False,
    input_shape: InputShapes = None,
    batch: Batch = None,
    max_cut_tensors: MaxCutTensors = DEFAULT_MAX_CUT_TENSORS,
    inputs: Inputs = None,
    inputs_file: InputsFile = None,
    fix_input: FixInputs = None,
    exits: ExitsOpt = None,
    exit_rule: ExitRuleOpt = None,
    exit_threshold: ExitThresholdOpt = None,
    exit_rule_path: ExitRulePathOpt = None,
) -> None:
    """Split a model into standalone ONNX partitions that chain, and verify them.

    Give exactly one of --at, --blocks, --all (with --exits, none is needed: one
    partition per exit and one for the rest; --blocks or --all cut further). Writes DIR/part_0.onnx,
    part_1.onnx, ... and DIR/manifest.json, then runs the chain and the whole
    model in ONNX Runtime and compares outputs (fails if they differ by more
    than atol 1e-4 and rtol 1e-3), on the --input/--inputs values where given.
    With --fix-input the partitions are of the model specialised to those values.

    Examples:

      splitinfer split resnet50.onnx --blocks 3 -o parts

      splitinfer split resnet50.onnx --all -o blocks

      splitinfer split model.onnx --at relu_5 --at add_7,relu_6 -o parts

    (two cuts; the second one has 2 tensors)

      splitinfer split yolo.onnx --input-shape images=1,3,640,640 --all -o parts

      splitinfer split silero_vad.onnx --fix-input sr=16000 --input x=audio.npy --blocks 3 -o parts

      splitinfer split resnet18_exits.onnx --exits model -o parts
    """
    _check_cut_options(max_cut_tensors, 0)
    check_folder(out, "-o")
    m = open_model(model, input_shape, batch, GivenInputs(inputs, inputs_file, fix_input), sizes=True,
                   weights_on_disk=True)
    declared = read_exit_options(m, exits, exit_rule, exit_threshold, exit_rule_path)
    analysis, cuts = _cuts_for(m, at, blocks, all_blocks, max_cut_tensors, declared)
    parts = split(m, cuts, analysis)  # type: ignore[arg-type]
    produced = exit_partitions(m, declared, parts) if declared else {}
    console.print(_partition_table(parts))
    for name, index in produced.items():
        console.print(f"exit {name}: partition {index}", highlight=False)
    report = None
    if not no_verify:
        report = verify(m, parts)
        console.print(_report_table(report))
        if not report.ok:
            worst = report.worst
            raise VerifyError(
                f"the {len(parts)} partitions differ from the whole model (output {worst.name!r}: "
                f"max abs diff {worst.max_abs:.3g})",
                "this is a splitinfer bug: please report it with the model; "
                "--no-verify writes the partitions anyway",
            )
    manifest = write_partitions(parts, out, m, analysis, exits=declared)
    verdict = f"verified, max abs diff {report.max_abs:.3g}" if report else "not verified"
    if report and report.input_sizes:
        sizes = "; ".join(map(describe_size, report.input_sizes))
        verdict += f", at {len(report.input_sizes)} sizes: {sizes}"
    console.print(f"wrote {len(parts)} partitions and {manifest} ({verdict})")


def register(app: typer.Typer) -> None:
    """Add `inspect` and `split` to the main app."""
    app.command("inspect")(inspect)
    app.command("split")(split_command)
