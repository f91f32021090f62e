"""A data set in memory (``Dataset``), and reading one from a path (``load_dataset``).

A path is an image folder (one sub-folder per class, or only images), an ``.npz`` (``x``, optional
``y`` and ``class_names``), an ``.npy`` (``x``) or one image. Arrays are read without pickle, so
a file cannot run code.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitinfer.data.images import is_image_file, read_image, scan_image_folder
from splitinfer.data.preprocess import Preprocess
from splitinfer.errors import InputError, first_line
from splitinfer.units import check_number

if TYPE_CHECKING:
    from splitinfer.types import TensorSpec

_FORMS = "a folder of images (one sub-folder per class, or flat), an .npz with x (and y), an .npy, " \
    "or one image file"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples ``x`` (N first), their integer labels ``y`` (or None), the classes' names (label i
    is ``class_names[i]``), where they came from (``source``), each sample's name (image files:
    their path under the folder) and the preprocessing that made them."""

    x: np.ndarray
    y: np.ndarray | None = None
    class_names: list[str] | None = None
    source: str = ""
    names: list[str] | None = None
    preprocess: Preprocess | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or self.x.ndim < 1 or len(self.x) == 0:
            raise InputError(f"{_what(self.source)} has no samples (x is {_describe(self.x)})",
                             "give x as an array with at least one sample along its first axis")
        if self.y is not None:
            object.__setattr__(self, "y", _labels(self.y, len(self.x), self.source))
        if self.class_names is not None and self.y is not None and len(self.y) and \
                int(self.y.max()) >= len(self.class_names):
            raise InputError(f"{_what(self.source)} has label {int(self.y.max())} but "
                             f"{len(self.class_names)} class names", "give a name for every label")
        if self.names is not None and len(self.names) != len(self.x):
            raise InputError(f"{_what(self.source)} has {len(self.names)} names for {len(self.x)} samples",
                             "give one name per sample")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batches(self, batch_size: int, *, drop_last: bool = False,
                with_labels: bool = False) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
        """``x`` in consecutive slices of ``batch_size`` samples (views, not copies); the last one is
        shorter unless ``drop_last``. ``with_labels``: (x, y) pairs."""
        # Checked here, not when the first batch is asked for: the caller's line is in the traceback.
        size = int(check_number(batch_size, "batch size", low=1, whole=True, error=InputError))
        if with_labels and self.y is None:
            raise InputError(f"{_what(self.source)} has no labels",
                             "use an image folder with one sub-folder per class, or an .npz with y")
        stop = len(self.x) - len(self.x) % size if drop_last else len(self.x)
        x, y = self.x, self.y
        if with_labels:
            return ((x[i:i + size], y[i:i + size]) for i in range(0, stop, size))  # type: ignore[index]
        return (x[i:i + size] for i in range(0, stop, size))

    def check_fits(self, spec: TensorSpec) -> None:
        """An ``InputError`` unless every batch of these samples can feed the model input ``spec``:
        the same dtype, as many axes, and each sample axis equal to the input's (a negative or
        symbolic dimension takes any size). The batch axis is not checked: choose the batch size."""
        declared = tuple(spec.shape)
        sample_fits = len(declared) == self.x.ndim and all(
            not isinstance(d, int) or d < 0 or d == a for d, a in zip(declared[1:], self.sample_shape,
                                                                   strict=True))
        if sample_fits and self.x.dtype.name == spec.dtype:
            return
        data = f"{_what(self.source)} has samples of shape {list(self.sample_shape)} {self.x.dtype.name}"
        model = f"model input {spec.name!r} takes {list(declared)} {spec.dtype}"
        if not sample_fits:
            fix = ("preprocess the images to the model's input, e.g. Preprocess.for_input(shape)"
                   if self.preprocess is not None else "reshape x to the model's input shape (N first)")
            raise InputError(f"{data}, but {model}", fix)
        fix = (f"preprocess with dtype={spec.dtype}" if self.preprocess is not None
               else f"save x as {spec.dtype} (x.astype('{spec.dtype}'))")
        raise InputError(f"{data}, but {model}", fix)


def load_dataset(path: str | Path, preprocess: Preprocess | str | None = None, *,
                 input_shape: Sequence[int | str | None] | None = None, input_dtype: str = "float32",
                 limit: int | None = None) -> Dataset:
    """The data set at ``path`` (see the module's docstring for the forms).

    Images go through ``preprocess`` (a :class:`Preprocess` or its text); without it, through
    ``Preprocess.for_input(input_shape, input_dtype)`` when ``input_shape`` is given, else the
    defaults ([0, 1], NCHW, float32, the images' own size). Arrays are taken as they are.
    ``limit``: at most this many samples; an image folder's are taken in turn from each class.
    """
    path = Path(path)
    if limit is not None:
        limit = int(check_number(limit, "data limit", low=1, whole=True, error=InputError))
    if isinstance(preprocess, str):
        preprocess = Preprocess.parse(preprocess)
    if not path.exists():
        raise InputError(f"data set {path} does not exist", f"give {_FORMS}")
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".npz", ".npy"):
        if preprocess is not None:
            raise InputError(f"{path} holds arrays, and preprocessing applies to image files",
                             "drop the preprocessing, or save the images as files")
        return _load_npz(path, limit) if suffix == ".npz" else _load_npy(path, limit)
    if preprocess is None:
        preprocess = Preprocess() if input_shape is None else Preprocess.for_input(input_shape, input_dtype)
    if path.is_dir():
        files, labels, class_names = scan_image_folder(path)
        if limit is not None and limit < len(files):
            keep = _take_in_turn(labels or [0] * len(files), limit)
            files = [files[i] for i in keep]
            labels = [labels[i] for i in keep] if labels is not None else None
        kind = f"image folder, {len(class_names)} classes" if class_names else "image folder"
        return Dataset(_read_images(files, preprocess), None if labels is None else np.asarray(labels),
                       class_names, f"{path} ({kind})", [p.relative_to(path).as_posix() for p in files],
                       preprocess)
    if is_image_file(path):
        return Dataset(_read_images([path], preprocess), source=f"{path} (image)", names=[path.name],
                       preprocess=preprocess)
    raise InputError(f"cannot tell what data {path} holds from its name", f"give {_FORMS}")


def _read_images(files: list[Path], preprocess: Preprocess) -> np.ndarray:
    first = preprocess.apply(read_image(files[0], grayscale=preprocess.grayscale))
    # Filled in place: the stacked batch is the only copy of the decoded images.
    x = np.empty((len(files), *first.shape), first.dtype)
    x[0] = first
    for i, file in enumerate(files[1:], 1):
        sample = preprocess.apply(read_image(file, grayscale=preprocess.grayscale))
        if sample.shape != first.shape:
            raise InputError(
                f"images differ in size after preprocessing: {files[0].name} gives {list(first.shape)}, "
                f"{file.name} {list(sample.shape)}",
                "resize them to one size, e.g. with preprocess resize=256,crop=224 (or resize=HxW)")
        x[i] = sample
    return x


def _take_in_turn(labels: list[int], limit: int) -> list[int]:
    """Indices of ``limit`` samples taken in turn from each label, in their order; sorted."""
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    queues = [iter(indices) for _, indices in sorted(by_label.items())]
    taken: list[int] = []
    while len(taken) < limit:
        turn = [i for q in queues if (i := next(q, None)) is not None]
        if not turn:
            break
        taken += turn[:limit - len(taken)]
    return sorted(taken)


def _load_npz(path: Path, limit: int | None) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "x" not in keys:
                raise InputError(f"{path} has no array 'x' (it has {', '.join(keys) or 'no arrays'})",
                                 "save the inputs as x, e.g. np.savez(path, x=inputs, y=labels)")
            x, y = npz["x"], npz["y"] if "y" in keys else None
            names = npz["class_names"] if "class_names" in keys else None
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"cannot read {path}: {first_line(e)}",
                         "save it with np.savez from arrays of numbers (no objects)") from None
    class_names = [str(n) for n in np.atleast_1d(names)] if names is not None else None
    # Checked whole, before the limit could hide labels that do not match the samples.
    data = Dataset(x, y, class_names, f"{path} (npz)")
    if limit is None or limit >= len(data):
        return data
    return Dataset(x[:limit], None if data.y is None else data.y[:limit], class_names, data.source)


def _load_npy(path: Path, limit: int | None) -> Dataset:
    try:
        # Mapped, so that a limit reads only the samples it keeps.
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        return Dataset(np.array(x[:limit or len(x)] if x.ndim else x), source=f"{path} (npy)")
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read {path}: {first_line(e)}",
                         "save it with np.save from an array of numbers (no objects)") from None


def _labels(y: object, n: int, source: str) -> np.ndarray:
    """``y`` as one int64 label per sample, each >= 0 (whole floats are accepted: CSV-born labels)."""
    arr = np.asarray(y)
    if arr.ndim == 1 and len(arr) != n:
        raise InputError(f"{_what(source)} has {n} samples in x but {len(arr)} labels in y",
                         "give one label per sample")
    if arr.ndim != 1:
        raise InputError(f"{_what(source)} has labels of shape {list(arr.shape)} for {n} samples",
                         "give y as one integer label per sample")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{_what(source)} has labels of dtype {arr.dtype.name}, not whole numbers",
                         "give y as integer class indices (0, 1, ...)")
    if len(arr) and int(arr.min()) < 0:
        raise InputError(f"{_what(source)} has a negative label ({int(arr.min())})",
                         "give y as class indices from 0")
    return arr.astype(np.int64, copy=False)


def _what(source: str) -> str:
    return f"data {source}" if source else "the data"


def _describe(x: object) -> str:
    return f"shape {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
