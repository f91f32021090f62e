"""`splitinfer zoo list` and `splitinfer zoo build`: the built-in model zoo."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.table import Table

from splitinfer.cli._common import console, print_json
from splitinfer.errors import ModelError
from splitinfer.types import TensorSpec

zoo_app = typer.Typer(
    help="Standard architectures (VGG-16, ResNet, MobileNetV2, ViT, BERT, a detector, a wide MLP) with "
         "seeded weights, written directly as ONNX.",
    no_args_is_help=True,
)


def _specs(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name}:{s.dtype}[{','.join(map(str, s.shape))}]" for s in specs)


def _spec_json(spec: TensorSpec) -> dict[str, object]:
    return {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}


@zoo_app.command("list")
def list_models(
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the zoo's models at full size: inputs, outputs, parameters, GFLOPs."""
    from splitinfer import zoo

    summaries = [zoo.summarize(name) for name in zoo.names()]
    if json_output:
        print_json([{"name": s.name, "description": zoo.describe(s.name),
                     "inputs": [_spec_json(t) for t in s.inputs],
                     "outputs": [_spec_json(t) for t in s.outputs],
                     "num_params": s.num_params, "num_macs": s.num_macs} for s in summaries])
        return
    table = Table(title="splitinfer zoo, full size (--small, --width, --depth, --resolution for less)")
    table.add_column("name", no_wrap=True)
    table.add_column("what")
    table.add_column("inputs")
    table.add_column("outputs")
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("GFLOPs", justify="right", no_wrap=True)
    for s in summaries:
        table.add_row(s.name, zoo.short_description(s.name), _specs(s.inputs), _specs(s.outputs),
                      f"{s.num_params / 1e6:.1f}M", f"{s.gflops:.1f}")
    console.print(table)
    console.print("GFLOPs = 2 x multiply-accumulates of Conv, Gemm and MatMul.", style="dim")


def _check_output(output: Path) -> None:
    """Refuse a bad -o before spending seconds on a full-size build."""
    if output.is_dir():
        raise ModelError(f"{output} is a directory", "give a file name, e.g. -o model.onnx")
    if not output.parent.is_dir():
        raise ModelError(f"directory {output.parent} does not exist", "create it first or choose another -o")


@zoo_app.command("build")
def build_model(
    name: str = typer.Argument(..., help="Model name, from `splitinfer zoo list`."),
    output: Path = typer.Option(
        ..., "-o", "--output",
        help="Where to write the .onnx file (its weights' .data file, if any, goes beside it)."),
    width: float = typer.Option(1.0, "--width", help="Channel/hidden-size multiplier (1 = full size)."),
    depth: float = typer.Option(1.0, "--depth", help="Layer/block-count multiplier (1 = full size)."),
    resolution: int | None = typer.Option(
        None, "--resolution",
        help="Image side (sequence length for bert, input features for mlp); default: the model's own."),
    seed: int = typer.Option(0, "--seed", help="Weights seed; the same arguments give identical bytes."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 13 to 21."),
    small: bool = typer.Option(False, "--small", help="The tiny test variant, for tests and quick trials."),
    external_data: bool | None = typer.Option(
        None, "--external-data/--inline-data",
        help="Where the weights go. An .onnx file is one protobuf message, which cannot pass 2 GB: "
             "weights over that go to a .data file beside it (OUTPUT with suffix .data; the .onnx names "
             "it by that relative name, so keep the two files together in one folder). Default: the "
             ".data file when the weights pass 2 GB, inside the .onnx otherwise. --external-data puts "
             "every weight over 64 KiB in the .data file at any size (ONNX Runtime maps them from "
             "there); --inline-data keeps them all inside (refused over 2 GB)."),
) -> None:
    """Build a zoo model and write it as an .onnx file (and a .data file for weights over 2 GB).

    The weights are drawn and written one at a time, so a model of any size is built in little memory."""
    from splitinfer import zoo

    if small and (width != 1.0 or depth != 1.0 or resolution is not None):
        raise ModelError("--small sets its own width, depth and resolution",
                         "drop --small, or drop --width/--depth/--resolution")
    _check_output(output)
    sizes = {"width": width, "depth": depth, "resolution": resolution} if not small else {}
    data = zoo.external_data_file(name, output, small=small, external_data=external_data, **sizes)
    start = time.perf_counter()
    zoo.save(name, output, seed=seed, opset=opset, small=small, external_data=external_data, **sizes)
    elapsed_s = time.perf_counter() - start
    summary = zoo.summarize(name, small=small, **sizes)
    written = f"{output.stat().st_size / 1e6:.1f} MB"
    if data is not None:
        written += f" + {data.stat().st_size / 1e6:.1f} MB of weights in {data} (keep the two files together)"
    console.print(
        f"wrote {output}: {name}{' (small)' if small else ''}, {summary.num_params / 1e6:.2f}M params, "
        f"{summary.gflops:.2f} GFLOPs, {written}, inputs {_specs(summary.inputs)}, "
        f"outputs {_specs(summary.outputs)} ({elapsed_s:.1f} s)", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `zoo` command group to the main app."""
    app.add_typer(zoo_app, name="zoo")
