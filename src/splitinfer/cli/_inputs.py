"""What commands read as a request's inputs: arrays (.npy, .npz) or an image through the data
package's preprocessing; data sets cut into batches of a model input (``bench --data``,
``profile --calibration``); and a classifier's top-k labels for what came out."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.table import Table

from splitinfer.errors import InputError

if TYPE_CHECKING:
    from splitinfer.data import Dataset
    from splitinfer.graph import Model
    from splitinfer.types import TensorSpec

ARRAY_SUFFIXES = (".npz", ".npy")


def read_inputs(path: Path, model: Model, preprocess: str | None = None) -> dict[str, np.ndarray]:
    """Feeds from ``path``: an image (preprocessed as ``preprocess`` says, else as the model input's
    shape suggests) for a single-input model, or arrays (.npy for one input, .npz by input name)."""
    from splitinfer.data import IMAGE_EXTENSIONS, Preprocess, load_dataset
    from splitinfer.graph.feeds import read_arrays
    from splitinfer.types import check_feeds

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if len(model.inputs) != 1:
            raise InputError(f"--input {path.name} is an image, the model has {len(model.inputs)} inputs",
                             "give an .npz with one array per input")
        spec = model.inputs[0]
        steps = Preprocess.parse(preprocess) if preprocess else Preprocess.for_input(spec.shape, spec.dtype)
        data = load_dataset(path, steps, input_shape=spec.shape, input_dtype=spec.dtype)
        batch = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 1
        feeds = {spec.name: np.repeat(data.x, batch, axis=0)}  # a fixed batch: the image in each slot
    else:
        if preprocess:
            raise InputError(f"--preprocess applies to images, --input {path.name} holds arrays",
                             "leave out --preprocess, or give an image file")
        feeds = read_arrays(path, [s.name for s in model.inputs])
    check_feeds(feeds, model.inputs, f"--input {path.name}")
    return feeds


def single_input(model: Model, flag: str, path: Path) -> TensorSpec:
    """The model's one input, which a data set feeds; else one line naming ``flag``."""
    if len(model.inputs) != 1:
        names = ", ".join(s.name for s in model.inputs)
        raise InputError(f"{flag} {path.name} is a data set (one input), the model has {len(model.inputs)} "
                         f"inputs ({names})", f"leave out {flag}, or give a model with a single input")
    return model.inputs[0]


def read_dataset(path: Path, spec: TensorSpec, preprocess: str | None, flag: str,
                 limit: int | None = None) -> Dataset:
    """The data set at ``path`` (``load_dataset``'s forms), its images preprocessed as ``preprocess``
    says (else to fit ``spec``), checked to fit ``spec``: every problem is one line naming ``flag``.
    Samples of a batch-1 input may be stacked whole (``[N, 1, ...]``). ``limit``: at most this many
    samples."""
    from splitinfer.data import load_dataset

    if preprocess and path.suffix.lower() in ARRAY_SUFFIXES:
        raise InputError(f"--preprocess applies to images, {flag} {path.name} holds arrays",
                         "leave out --preprocess, or give images (a file or a folder)")
    shape = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
    try:
        data = load_dataset(path, preprocess, input_shape=shape, input_dtype=spec.dtype, limit=limit)
        if spec.shape and spec.shape[0] == 1 and data.x.shape[1:] == tuple(spec.shape):
            # Whole batch-1 inputs stacked ([N, 1, ...]): N samples of the input, as [N, ...].
            data = dataclasses.replace(data, x=data.x.reshape(len(data.x), *spec.shape[1:]))
        data.check_fits(spec)
    except InputError as e:
        fix = e.fix
        if fix and "Preprocess." in fix:  # the API's fix: say it with the flag
            fix = "make --preprocess resize and crop to the input's size, or leave it out to fit the input"
        raise InputError(f"{flag}: {e.problem}", fix) from None
    return data


def dataset_feeds(data: Dataset, spec: TensorSpec, max_feeds: int) -> list[dict[str, np.ndarray]]:
    """Feeds for ``spec`` from ``data``'s samples in order, a batch of the input's size each (1 for
    a dynamic batch), the samples cycled to fill the last one; at most ``max_feeds`` of them."""
    batch = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 1
    count = max(1, min(max_feeds, -(-len(data) // batch)))
    return [{spec.name: data.x[(np.arange(batch) + i * batch) % len(data)]} for i in range(count)]


def top_k_table(outputs: dict[str, np.ndarray], labels_path: Path, k: int = 5) -> Table:
    """The top-``k`` labels of the first classifier output (N x C scores; the first row)."""
    from splitinfer.data import read_labels, top_k

    labels = read_labels(labels_path)
    name, scores = next(((n, v) for n, v in outputs.items() if v.ndim == 2 and v.shape[1] >= 2),
                        (None, None))
    if scores is None:
        raise InputError("no output holds class scores (N x C)", "leave out --labels for this model")
    table = Table(title=f"top {k} of {name}", title_justify="left")
    table.add_column("label")
    table.add_column("score", justify="right")
    for label, score in top_k(scores[0], k, labels):
        table.add_row(label, f"{score:.4g}")
    return table
