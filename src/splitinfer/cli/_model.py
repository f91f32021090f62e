"""The MODEL argument and its shape and input options, shared by every command that loads a model.

Use in a command::

    def cmd(model: ModelPath, input_shape: InputShapes = None, batch: Batch = None):
        m = open_model(model, input_shape, batch)

and with real inputs (``--input``, ``--inputs``, ``--fix-input``)::

    def cmd(model: ModelPath, ..., inputs: Inputs = None, inputs_file: InputsFile = None,
            fix_input: FixInputs = None):
        m = open_model(model, input_shape, batch, GivenInputs(inputs, inputs_file, fix_input))
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from splitinfer.cli._common import err_console
from splitinfer.convert.verify import DEFAULT_TOLERANCE
from splitinfer.errors import InputError, ShapeError, VerifyError
from splitinfer.graph import Model, load_model

ModelPath = Annotated[
    Path, typer.Argument(metavar="MODEL", help="The .onnx model file (external data next to it), or a "
                         "model of another framework, converted and verified first: .pt2, TorchScript .pt, "
                         ".keras, .h5, a SavedModel folder, .tflite (see `splitinfer convert`).",
                         show_default=False)
]
InputShapes = Annotated[
    list[str] | None,
    typer.Option(
        "--input-shape", metavar="NAME=D1,D2,...",
        help="Fix the shape of a model input, e.g. images=1,3,640,640. Repeat for several inputs. "
             "Needed when an input has dynamic dims. inspect, split and profile take several sizes: give "
             "an input once per size (x=1,3,224,224 then x=8,3,224,224): the dims that differ stay "
             "symbolic in the partitions, and profile measures each size.",
        show_default=False,
    ),
]
Batch = Annotated[
    int | None,
    typer.Option("--batch", metavar="N", help="Fix a dynamic leading (batch) dim of every input to N.",
                 show_default=False),
]


Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input", metavar="NAME=FILE.npy",
        help="A real value of a model input (repeat for several): the run that measures shapes uses it, "
             "and so do verification and profiling. Inputs not given are generated.",
        show_default=False,
    ),
]
InputsFile = Annotated[
    Path | None,
    typer.Option("--inputs", metavar="FILE.npz", help="Real values of model inputs, one array per input name "
                 "(as --input).", show_default=False),
]
FixInputs = Annotated[
    list[str] | None,
    typer.Option(
        "--fix-input", metavar="NAME=VALUE",
        help="Fix a model input to VALUE (a number or comma-separated numbers, in the input's dtype), e.g. "
             "sr=16000: it becomes a constant, and every If it decides is replaced by the branch taken, "
             "so a network inside a branch can be cut. Checked against the original model. Repeatable.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class GivenInputs:
    """The ``--input``, ``--inputs`` and ``--fix-input`` options as given."""

    inputs: list[str] | None = None
    inputs_file: Path | None = None
    fix_input: list[str] | None = None

    def feeds(self) -> dict[str, np.ndarray]:
        """The arrays of ``--inputs`` and ``--input`` (the same name twice is an error)."""
        feeds = _read_npz(self.inputs_file) if self.inputs_file is not None else {}
        for text in self.inputs or []:
            name, path = _split_pair(text, "--input", "NAME=FILE.npy", "--input x=x.npy")
            if name in feeds:
                raise InputError(f"input {name!r} is given twice (--input, --inputs)", "give each input once")
            feeds[name] = _read_npy(Path(path), name)
        return feeds

    def fixed(self) -> dict[str, float | list[float]]:
        """``--fix-input`` values by name, as numbers (the model's input says the dtype)."""
        fixed: dict[str, float | list[float]] = {}
        for text in self.fix_input or []:
            name, value = _split_pair(text, "--fix-input", "NAME=VALUE", "--fix-input sr=16000")
            if name in fixed:
                raise InputError(f"--fix-input gives input {name!r} twice", "give each input once")
            numbers = [_number(v.strip(), text) for v in value.split(",")]
            fixed[name] = numbers[0] if len(numbers) == 1 else numbers
        return fixed


def _number(text: str, option: str) -> float:
    """A whole number stays an int (an int64 input takes it exactly); else a float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--fix-input {option!r} has a value that is not a number",
                         "give a number or comma-separated numbers, e.g. --fix-input sr=16000") from None


def _split_pair(text: str, flag: str, form: str, example: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise InputError(f"{flag} {text!r} is not {form}", f"write it like {example}")
    return name.strip(), value.strip()


def _read_npy(path: Path, name: str) -> np.ndarray:
    where = f"--input {name}={path}"
    if not path.is_file():
        raise InputError(f"{where}: file {path} does not exist", "give the path of an .npy file (numpy.save)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{where}: cannot read {path.name} as .npy ({_first(e)})",
                         "save the array with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise InputError(f"{where}: {path.name} holds several arrays", "give them with --inputs FILE.npz")
    return arr


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"--inputs {path} does not exist", "give the path of an .npz file (numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as e:
        raise InputError(f"--inputs {path}: cannot read it as .npz ({_first(e)})",
                         "save the arrays with numpy.savez(f, **{name: array})") from None


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:120].rsplit(" ", 1)[0] if len(text) > 120 else text or type(err).__name__


# The library names its arguments (feeds=, fixed_inputs=); here they are the options.
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
            raise ShapeError(f"--input-shape gives input {name!r} twice",
                             "give each input once (several sizes are for inspect, split and profile)")
        shapes[name] = dims
    return shapes


def parse_sizes(values: list[str] | None) -> list[dict[str, tuple[int, ...]]]:
    """Every ``--input-shape`` as input sizes: an input given k times has its k-th shape in the k-th
    size; one given once is in every size. At least one size (empty when no shape was given)."""
    given: dict[str, list[tuple[int, ...]]] = {}
    for text in values or []:
        name, dims = parse_input_shape(text)
        given.setdefault(name, []).append(dims)
    count = max((len(v) for v in given.values()), default=1)
    uneven = [n for n, v in given.items() if len(v) not in (1, count)]
    if uneven:
        raise ShapeError(f"--input-shape gives input {uneven[0]!r} {len(given[uneven[0]])} times, another "
                         f"input {count} times", f"give each input once or {count} times (once per size)")
    return [{n: v[k] if len(v) > 1 else v[0] for n, v in given.items()} for k in range(count)]


@dataclass
class ConvertOptions:
    """How a framework model given as MODEL is converted: the root's ``--tolerance`` and
    ``--accept-unverified`` (``splitinfer --accept-unverified inspect net.pt2``)."""

    tolerance: float = DEFAULT_TOLERANCE
    accept_unverified: bool = False


CONVERT = ConvertOptions()


def onnx_file(path: Path, input_shape: list[str] | None = None, batch: int | None = None) -> Path:
    """MODEL as an .onnx file: itself, or a framework model converted at its ``--input-shape`` (one size)
    and ``--batch`` (:func:`converted`)."""
    from splitinfer.convert import is_framework_model

    if not is_framework_model(path):
        return path
    sizes = parse_sizes(input_shape)
    if len(sizes) > 1:
        raise ShapeError(f"{path} is converted at one size, and --input-shape gives {len(sizes)}",
                         "give each input one shape (or export an ONNX model with dynamic dims yourself)")
    return converted(path, sizes[0], batch)


def converted(path: Path, input_shapes: dict[str, tuple[int, ...]] | None = None,
              batch: int | None = None) -> Path:
    """``path`` itself, or the framework model there converted and verified (from the cache when
    converted before); the line that says how close it is goes to stderr. A conversion that does not
    verify is an error unless ``--accept-unverified`` was given."""
    from splitinfer.convert import UnverifiedConversion, convert_file, is_framework_model

    if not is_framework_model(path):
        return path
    try:
        conversion = convert_file(path, input_shapes or None, batch, tolerance=CONVERT.tolerance,
                                  accept_unverified=CONVERT.accept_unverified)
    except UnverifiedConversion as e:
        raise VerifyError(e.problem, "check the model's ops against the converter; or give a larger "
                          "tolerance or take it anyway, before the command: splitinfer --tolerance 1e-3 ... "
                          "or splitinfer --accept-unverified ...") from None
    err_console.print(conversion.line(), highlight=False, soft_wrap=True, markup=False)
    assert conversion.path is not None
    return conversion.path


def open_model(path: Path, input_shape: list[str] | None = None, batch: int | None = None,
               given: GivenInputs | None = None, sizes: bool = False,
               weights_on_disk: bool | None = None) -> Model:
    """Load the MODEL argument with its ``--input-shape`` / ``--batch`` options and, with ``given``,
    its ``--input`` / ``--inputs`` / ``--fix-input`` ones. ``sizes``: an input may be given several
    shapes (one per size the partitions serve: :func:`parse_sizes`). A framework model is converted
    first (:func:`onnx_file`)."""
    path = onnx_file(path, input_shape, batch)
    given = given or GivenInputs()
    feeds, fixed = given.feeds(), given.fixed()
    # The library's messages name feeds= and fixed_inputs=; the CLI's error line spells them as
    # options (graph/shapes.as_flags).
    if not sizes:
        return load_model(path, input_shapes=parse_input_shapes(input_shape), batch=batch, feeds=feeds,
                          fixed_inputs=fixed, weights_on_disk=weights_on_disk)
    first, *others = parse_sizes(input_shape)
    return load_model(path, input_shapes=first, batch=batch, feeds=feeds, fixed_inputs=fixed,
                      sizes=others or None, weights_on_disk=weights_on_disk)
