"""``splitinfer convert``: a PyTorch, Keras, TensorFlow or TFLite model to a verified .onnx file; or
``--report FOLDER``, the conversion table of the sample models (:mod:`splitinfer.convert.report`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from splitinfer.cli import _model
from splitinfer.cli._common import check_folder, check_writable, console
from splitinfer.cli._model import Batch, InputShapes, parse_input_shapes
from splitinfer.errors import ModelError, VerifyError
from splitinfer.units import check_number

HELP = """Convert a model of another framework to ONNX, verified against the framework's own outputs.

PyTorch: an exported program (.pt2, torch.export.save) or TorchScript (.pt, torch.jit.save); Keras (.keras,
.h5) and a TensorFlow SavedModel (a folder: its serving_default signature) through tf2onnx; TFLite (.tflite)
through tf2onnx. Both models run on the same seeded inputs; the line printed says the largest absolute
difference and whether it is within the tolerance (X times the largest output magnitude, at least 1). A
conversion that is not is an error (exit 2) unless --accept-unverified. Every command that takes MODEL
converts such a model itself (kept in a cache, $SPLITINFER_CACHE_DIR or ~/.cache/splitinfer).

Shapes: a PyTorch module or TorchScript needs --input-shape NAME=D1,D2,... (NAME: forward's argument); an
exported program is converted at the shapes it was exported at; Keras, SavedModel and TFLite at the shapes
they declare, a varying batch dim set by --batch (default 1). Extras: pip install 'splitinfer[torch]',
'splitinfer[tf]'.

--report FOLDER writes small sample models of each installed framework, converts each and writes the
table (conversions.md, conversions.csv)."""


def convert(
    model: Path | None = typer.Argument(None, metavar="MODEL", show_default=False,
                                        help="The framework model: .pt2, .pt, .keras, .h5, SavedModel "
                                             "folder, "
                                             ".tflite."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where to write the .onnx model.",
                                       show_default=False),
    input_shape: InputShapes = None,
    batch: Batch = None,
    tolerance: float | None = typer.Option(None, "--tolerance", metavar="X", show_default=False,
                                           help="Largest difference accepted, times the largest output "
                                                "magnitude (at least 1); default 1e-4."),
    accept_unverified: bool = typer.Option(False, "--accept-unverified",
                                           help="Write the model even if it does not verify."),
    seed: int = typer.Option(0, "--seed", help="Seed of the inputs it is verified (and traced) on."),
    report: Path | None = typer.Option(None, "--report", metavar="FOLDER", show_default=False,
                                       help="Convert the sample models of every installed framework; write "
                                            "the table there."),
) -> None:
    tol = _model.CONVERT.tolerance if tolerance is None else tolerance
    check_number(tol, "--tolerance", low=0, low_open=True, fix="a tolerance such as 1e-4")
    check_number(seed, "--seed", low=0, whole=True)
    accept = accept_unverified or _model.CONVERT.accept_unverified
    if report is not None:
        if model is not None or output is not None:
            raise ModelError("--report converts the sample models, not MODEL", "give --report FOLDER alone")
        check_folder(report, "--report")
        _report(report, tol)
        return
    if model is None or output is None:
        raise ModelError("convert needs MODEL and -o OUTPUT.onnx",
                         "e.g. splitinfer convert net.pt2 -o net.onnx")
    check_writable(output, "-o")
    from splitinfer.convert import UnverifiedConversion, convert_file

    try:
        conversion = convert_file(model, parse_input_shapes(input_shape), batch, output=output, tolerance=tol,
                                  seed=seed, accept_unverified=accept)
    except UnverifiedConversion as e:
        raise VerifyError(e.problem, f"{output} was not written; check the model's ops against the "
                                     "converter, or give --tolerance, or --accept-unverified to write it "
                                     "anyway") from None
    console.print(conversion.line(), highlight=False, soft_wrap=True, markup=False)


def _report(folder: Path, tolerance: float) -> None:
    from splitinfer.convert.report import COLUMNS, cells, conversion_report, to_csv, to_markdown

    rows = conversion_report(folder, tolerance)
    (folder / "conversions.md").write_text(to_markdown(rows))
    (folder / "conversions.csv").write_text(to_csv(rows))
    table = Table(title="conversions (verified: within the tolerance on seeded inputs)")
    for column in COLUMNS:
        right = column in ("max_abs_diff", "tolerance", "seconds")
        table.add_column(column, justify="right" if right else "left")
    for row in rows:
        table.add_row(*cells(row))
    console.print(table)
    console.print(f"wrote {folder / 'conversions.md'} and {folder / 'conversions.csv'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("convert", help=HELP)(convert)
