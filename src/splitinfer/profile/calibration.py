"""What a model is profiled on: its calibration input, checked against the model's inputs.

``prepare_model`` (and so ``profile_model`` and ``profile_cluster``) takes its ``calibration`` in
any of :data:`CALIBRATION_FORMS`; :func:`load_calibration` turns it into one feed of every input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from splitinfer.data import Dataset
from splitinfer.errors import InputError, ShapeError
from splitinfer.graph import Model
from splitinfer.graph.feeds import read_arrays

Calibration = str | Path | Mapping[str, np.ndarray] | np.ndarray | Dataset | None
CALIBRATION_FORMS = ("None (seeded generated inputs), a .npy or .npz path, an array (a single-input model), "
                     "a dict of arrays by input name, or a splitinfer.data.Dataset (a single-input model: "
                     "its first samples make the input batch)")


def load_calibration(model: Model, calibration: Calibration = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The model inputs to profile with, checked against the model's input names, dtypes and shapes:
    ``calibration`` as a .npy/.npz path, an array, a dict of arrays by input name, or a
    :class:`~splitinfer.data.Dataset` (its first samples make one batch of the model's single input);
    for None, seeded generated inputs. Anything else is an InputError that lists these forms."""
    names = [s.name for s in model.inputs]
    if calibration is None:
        return model.make_feeds(seed=seed)
    if isinstance(calibration, Dataset):
        arrays = _dataset_batch(model, calibration)
    elif isinstance(calibration, str | Path):
        arrays = read_arrays(calibration, names, "calibration")
    elif isinstance(calibration, np.ndarray):
        arrays = {names[0]: calibration} if len(names) == 1 else {"": calibration}
    elif isinstance(calibration, Mapping):
        arrays = dict(calibration)
    else:
        raise InputError(f"calibration is a {type(calibration).__name__}; it takes {CALIBRATION_FORMS}",
                         "give the calibration in one of those forms")
    if set(arrays) != set(names):
        raise ShapeError(f"calibration data has arrays {sorted(arrays)}, the model's inputs are {names}",
                         "give exactly one array per model input, named like the input")
    for spec in model.inputs:
        arr = np.asarray(arrays[spec.name])
        if arr.dtype.name != spec.dtype:
            raise ShapeError(f"calibration input {spec.name!r} has dtype {arr.dtype.name}, "
                             f"the model takes {spec.dtype}", f"convert it with .astype('{spec.dtype}')")
        if tuple(arr.shape) != tuple(spec.shape):
            raise ShapeError(f"calibration input {spec.name!r} has shape {list(arr.shape)}, "
                             f"the model takes {list(spec.shape)}",
                             "give data of that shape (or fix the model's shape with --input-shape/--batch)")
        arrays[spec.name] = np.ascontiguousarray(arr)
    return arrays


def _dataset_batch(model: Model, data: Dataset) -> dict[str, np.ndarray]:
    """One batch of the model's single input from ``data``'s first samples, cycled when there are
    fewer than the batch (as ``profile --calibration DATA`` makes it)."""
    if len(model.inputs) != 1:
        names = ", ".join(s.name for s in model.inputs)
        raise InputError(f"calibration is a data set (it feeds one input), the model has {len(model.inputs)} "
                         f"inputs ({names})", "give calibration as a dict of arrays by input name")
    spec = model.inputs[0]
    try:
        data.check_fits(spec)
    except InputError as e:
        raise InputError(f"calibration: {e.problem}", e.fix) from None
    batch = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 1
    return {spec.name: data.x[np.arange(batch) % len(data)]}
