"""The MODEL argument and its shape options, shared by every command that loads a model.

Use in a command::

    def cmd(model: ModelPath, input_shape: InputShapes = None, batch: Batch = None):
        m = open_model(model, input_shape, batch)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from splitinfer.errors import ShapeError
from splitinfer.graph import Model, load_model

ModelPath = Annotated[
    Path, typer.Argument(metavar="MODEL", help="The .onnx model file (external data next to it).",
                         show_default=False)
]
InputShapes = Annotated[
    list[str] | None,
    typer.Option(
        "--input-shape", metavar="NAME=D1,D2,...",
        help="Fix the shape of a model input, e.g. images=1,3,640,640. Repeat for several inputs. "
             "Needed when an input has dynamic dims.",
        show_default=False,
    ),
]
Batch = Annotated[
    int | None,
    typer.Option("--batch", metavar="N", help="Fix a dynamic leading (batch) dim of every input to N.",
                 show_default=False),
]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=D1,D2,...`` (``x`` also separates dims: ``1x3x224x224``)."""
    name, sep, dims = text.rpartition("=")
    example = "write it like --input-shape images=1,3,640,640"
    if not sep or not name.strip() or not dims.strip():
        raise ShapeError(f"--input-shape {text!r} is not NAME=D1,D2,...", example)
    parts = dims.replace("x", ",").replace("X", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ShapeError(f"--input-shape {text!r} has a dim that is not a whole number", example) from None
    if any(v <= 0 for v in values):
        raise ShapeError(f"--input-shape {text!r} has a dim <= 0", "give positive dims, " + example)
    return name.strip(), values


def parse_input_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse every ``--input-shape``; the same name twice is an error."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in values or []:
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise ShapeError(f"--input-shape gives input {name!r} twice", "give each input once")
        shapes[name] = dims
    return shapes


def open_model(path: Path, input_shape: list[str] | None = None, batch: int | None = None) -> Model:
    """Load the MODEL argument with its ``--input-shape`` / ``--batch`` options."""
    return load_model(path, input_shapes=parse_input_shapes(input_shape), batch=batch)
