"""The input checks and the ranking shared by the agreement and classification metrics.

Every check raises :class:`InputError` with one line that names the array and what is wrong
with it: a data set is streamed through these functions by ``splitinfer eval``, and the user
must be able to tell which output or which batch was bad.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

from splitinfer.errors import InputError


def check_top_k(top_k: Iterable[int]) -> tuple[int, ...]:
    """The distinct k of ``top_k``, ascending; each an int >= 1 (k above the class count is clamped
    later, where the class count is known)."""
    if isinstance(top_k, numbers.Integral):  # top_k=5 rather than (5,): take it, it is unambiguous
        top_k = (top_k,)
    try:
        values = tuple(top_k)
    except TypeError:
        raise InputError(f"top_k {top_k!r} is not a sequence of integers",
                         "pass e.g. top_k=(1, 5)") from None
    for k in values:
        # bool is an Integral: top_k=(True,) is a mistake, not k=1.
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise InputError(f"top_k value {k!r} is not an integer", "pass e.g. top_k=(1, 5)")
        if k < 1:
            raise InputError(f"top_k value {k} is below 1", "every k must be at least 1, e.g. top_k=(1, 5)")
    return tuple(sorted({int(k) for k in values}))


def numeric_array(value: object, what: str) -> np.ndarray:
    """``value`` as a float64 array: numeric (bool, integer or real float), non-empty, finite."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:  # ragged nested lists
        raise InputError(f"{what} is not an array: {e}", "pass a numpy array") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{what} has dtype {array.dtype}, not a real number type",
                         "pass a bool, integer or float array")
    if array.size == 0:
        raise InputError(f"{what} is empty (shape {array.shape})", "pass at least one value")
    # float64 for every sum: float32 sums over a data set lose the digits SNR is made of.
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{what} has {bad} non-finite value(s) (NaN or inf)",
                         "only finite scores can be compared; find where the model produced them")
    return array


def label_array(value: object, what: str) -> np.ndarray:
    """``value`` as a 1-D int64 array of non-negative class indices (integral floats are accepted:
    labels read from CSV are often floats)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} is not an array: {e}", "pass a 1-D array of class indices") from None
    if array.ndim != 1:
        raise InputError(f"{what} has shape {array.shape}, not one label per sample",
                         "pass a 1-D array of class indices")
    if array.size == 0:
        raise InputError(f"{what} is empty", "pass at least one sample")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError(f"{what} has non-integer values", "labels are class indices 0, 1, 2, ...")
    elif array.dtype.kind not in "iu":
        raise InputError(f"{what} has dtype {array.dtype}, not integer class indices",
                         "map class names to indices 0, 1, 2, ... first")
    labels = array.astype(np.int64)
    if labels.min() < 0:
        raise InputError(f"{what} has a negative label ({int(labels.min())})",
                         "labels are class indices 0, 1, 2, ...")
    return labels


def check_labels_below(labels: np.ndarray, num_classes: int, what: str) -> None:
    """``labels`` all below ``num_classes``."""
    top = int(labels.max())
    if top >= num_classes:
        raise InputError(f"{what} has label {top}, out of range for {num_classes} classes",
                         "pass labels 0 .. num_classes - 1, or the right num_classes")


def rank_of(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per row, how many classes come before ``target`` when classes are ordered by descending score,
    ties by ascending class index (so rank 0 is ``np.argmax``). ``target`` is in the top k when its
    rank is below k: for k above the class count every rank is, which is the clamping of k.

    Counting instead of sorting: O(rows x classes), one pass, and exact on ties."""
    rows = np.arange(scores.shape[0])
    own = scores[rows, target][:, None]
    before = (scores > own) | ((scores == own) & (np.arange(scores.shape[1])[None, :] < target[:, None]))
    return np.count_nonzero(before, axis=1)


def top_k_hits(ranks: np.ndarray, top_k: tuple[int, ...]) -> dict[int, int]:
    """For each k, how many ranks are below k."""
    return {k: int(np.count_nonzero(ranks < k)) for k in top_k}
