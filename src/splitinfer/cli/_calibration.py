"""``profile --calibration``: the model loaded with its input options, and the calibration in the form
the profiler takes (named arrays, or one batch of a data set's first samples)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from splitinfer.cli._inputs import ARRAY_SUFFIXES, dataset_feeds, read_dataset, single_input
from splitinfer.cli._model import open_model
from splitinfer.errors import InputError
from splitinfer.graph import Model

_CALIBRATION_FORMS = ("an .npz with one array per input name, or a data set: an image folder, one image, "
                      "an .npz with x, an .npy")


def _named_arrays(path: Path, model: Model) -> bool:
    """Whether ``path`` is calibration's own form, arrays by input name, rather than a data set: an .npz
    without ``x`` (or any array file for a model of several inputs, whose reader says what is wrong)."""
    if path.suffix.lower() not in ARRAY_SUFFIXES or not path.is_file():
        return False
    if len(model.inputs) != 1:
        return True
    if path.suffix.lower() == ".npy":
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "x" not in npz.files
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile, EOFError):
        return True  # not a readable .npz: the calibration reader says so


def calibration_input(model: Path, options: dict) -> tuple[Model, Any, Any]:
    """The model (loaded with its --input-shape, --batch, --input, --inputs and --fix-input), the
    calibration to profile with: None (the --input values, the other inputs generated), the .npz of
    arrays by input name, or one input batch made from a data set's first samples; and the data set
    (None unless the calibration is one)."""
    path, steps = options["calibration"], options["preprocess"]
    need_data = InputError("--tradeoffs measures quality on a data set; --calibration must give one",
                           "add --calibration DATA: an image folder, an .npz with x, or an .npy")
    if path is None:
        if options["tradeoffs"]:
            raise need_data
        if steps is not None:
            raise InputError("--preprocess needs --calibration: it says how the calibration images become "
                             "inputs", "give --calibration DATA, or leave out --preprocess")
    elif not path.exists():
        raise InputError(f"--calibration {path} does not exist", f"give {_CALIBRATION_FORMS}")
    loaded = open_model(model, options["input_shape"], options["batch"], options.get("given"), sizes=True)
    if path is None:
        return loaded, None, None
    if _named_arrays(path, loaded):
        if options["tradeoffs"]:
            raise need_data
        if steps is not None:
            raise InputError(f"--preprocess applies to images, --calibration {path.name} holds arrays",
                             "leave out --preprocess, or give images (a file or a folder)")
        return loaded, path, None
    spec = single_input(loaded, "--calibration", path)
    data = read_dataset(path, spec, steps, "--calibration", options["limit"])
    return loaded, dataset_feeds(data, spec, 1)[0], data
