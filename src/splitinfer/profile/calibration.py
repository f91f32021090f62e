"""What a model is profiled on: its calibration input, checked against the model's inputs.

``prepare_model`` (and so ``profile_model`` and ``profile_cluster``) takes its ``calibration`` in
any of :data:`CALIBRATION_FORMS`; :func:`load_calibration_samples` turns it into one feed of every
input per sample (arrays whose leading dim holds several samples of a batch-1 input give several),
:func:`load_calibration` into the first: blocks are timed on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from splitinfer.data import Dataset
from splitinfer.errors import InputError, ModelError, ShapeError, first_line
from splitinfer.graph import Model
from splitinfer.graph.feeds import read_arrays
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.reference import with_outputs

Calibration = str | Path | Mapping[str, np.ndarray] | np.ndarray | Dataset | None
CALIBRATION_FORMS = ("None (seeded generated inputs), a .npy or .npz path, an array (a single-input model), "
                     "a dict of arrays by input name, or a splitinfer.data.Dataset (a single-input model: "
                     "its first samples make the input batch)")


def load_calibration(model: Model, calibration: Calibration = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The model inputs to profile with: the first of :func:`load_calibration_samples`."""
    return load_calibration_samples(model, calibration, seed)[0]


def load_calibration_samples(model: Model, calibration: Calibration = None,
                             seed: int = 0) -> list[dict[str, np.ndarray]]:
    """The model inputs to profile (or calibrate) with, one feed per sample, checked against the
    model's input names, dtypes and shapes: ``calibration`` as a .npy/.npz path, an array, a dict
    of arrays by input name, or a :class:`~splitinfer.data.Dataset` (its first samples make one
    batch of the model's single input); for None, the model's feeds (those given at load, the
    others seeded and generated). An array of an input whose leading dim is 1 may hold N samples
    (N first: ``[N, ...]`` or ``[N, 1, ...]``); an input given once goes with every sample; arrays
    of inputs fixed at load are left out (the model holds their value). Anything else is an
    InputError that lists these forms."""
    names = [s.name for s in model.inputs]
    if calibration is None:
        return [model.make_feeds(seed=seed)]
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
    fixed = model.specialization.fixed if model.specialization is not None else {}
    arrays = {k: v for k, v in arrays.items() if k not in fixed}
    if set(arrays) != set(names):
        raise ShapeError(f"calibration data has arrays {sorted(arrays)}, the model's inputs are {names}",
                         "give exactly one array per model input, named like the input")
    samples = {}
    for spec in model.inputs:
        arr = np.asarray(arrays[spec.name])
        if arr.dtype.name != spec.dtype:
            raise ShapeError(f"calibration input {spec.name!r} has dtype {arr.dtype.name}, "
                             f"the model takes {spec.dtype}", f"convert it with .astype('{spec.dtype}')")
        samples[spec.name] = _samples(spec.name, arr, tuple(spec.shape))
    counts = {name: len(s) for name, s in samples.items() if len(s) > 1}
    if len(set(counts.values())) > 1:
        raise ShapeError(f"calibration inputs hold different numbers of samples ({counts})",
                         "give every input the same number of samples, or one value for all")
    count = max(counts.values(), default=1)
    return [{name: s[i % len(s)] for name, s in samples.items()} for i in range(count)]


def _samples(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """The samples an array holds for an input of ``shape``: itself, or N along its leading dim
    when the input's leading dim is 1 (``[N, ...]`` or ``[N, 1, ...]``)."""
    if arr.shape == shape:
        return [np.ascontiguousarray(arr)]
    if shape and shape[0] == 1 and arr.ndim == len(shape) and arr.shape[1:] == shape[1:] and len(arr):
        return [np.ascontiguousarray(arr[i:i + 1]) for i in range(len(arr))]
    if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and len(arr):
        return [np.ascontiguousarray(arr[i]) for i in range(len(arr))]
    raise ShapeError(f"calibration input {name!r} has shape {list(arr.shape)}, the model takes {list(shape)}",
                     "give data of that shape, or N samples of it stacked first (or fix the model's shape "
                     "with input_shapes=/batch=)")


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


def run_samples(model: Model, names: Sequence[str],
                samples: Sequence[Mapping[str, np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """The tensors ``names`` (model outputs or any other tensor of the main graph) on each sample, one
    run of the whole model each; ModelError naming the sample the model fails on."""
    session = create_inference_session(with_outputs(model.proto, names))
    for i, feeds in enumerate(samples):
        try:
            values = session.run(list(names), dict(feeds))
        except Exception as e:  # ORT's own error types
            raise ModelError(f"the model fails on calibration sample {i}: {first_line(e)}",
                             "check the calibration data") from None
        yield values
