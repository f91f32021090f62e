"""Class names for a classifier's outputs: reading a label file, and naming the top-k scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splitinfer.errors import InputError, read_file
from splitinfer.units import check_number

_FORMS = "one label per line, a JSON list of names, or a JSON object {\"0\": name, ...}"


def read_labels(path: str | Path) -> list[str]:
    """The class names in ``path``, label i first at index i.

    Text: one label per line (blank lines at the end are ignored, inside they are an error).
    JSON (a ``.json`` file, or text starting with ``[`` or ``{``): a list of names, or an object
    from index to name; a name may be a list whose last item is the name, as in Keras'
    ``imagenet_class_index.json`` (``{"0": ["n01440764", "tench"]}``).
    """
    raw = read_file(path, "label file", "check the path", InputError)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"label file {path} is not UTF-8 text ({e.reason} at byte {e.start})",
                         f"save it as UTF-8: {_FORMS}") from None
    if Path(path).suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        labels = _json_labels(text, path)
    else:
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        blank = next((i for i, line in enumerate(lines) if not line), None)
        if blank is not None:
            raise InputError(f"label file {path} has a blank line (line {blank + 1})",
                             "give every class a name, one per line, so that line i+1 names label i")
        labels = lines
    if not labels:
        raise InputError(f"label file {path} has no labels", f"write {_FORMS}")
    return labels


def _json_labels(text: str, path: str | Path) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"label file {path} is not valid JSON: {e.msg} (line {e.lineno})",
                         f"write {_FORMS}") from None
    if isinstance(data, list):
        return [_name(item, f"item {i}", path) for i, item in enumerate(data)]
    if not isinstance(data, dict):
        raise InputError(f"label file {path} holds a JSON {type(data).__name__}", f"write {_FORMS}")
    by_index: dict[int, str] = {}
    for key, item in data.items():
        try:
            index = int(key)
        except ValueError:
            index = -1
        if index < 0:
            raise InputError(f"label file {path} has key {key!r}, not a class index",
                             "key the object by class index from 0: {\"0\": name, \"1\": name, ...}")
        by_index[index] = _name(item, f"key {key!r}", path)
    missing = next((i for i in range(len(by_index)) if i not in by_index), None)
    if missing is not None:
        raise InputError(f"label file {path} has no label for index {missing} (its {len(by_index)} "
                         f"labels must be indices 0 to {len(by_index) - 1})", "name every class from 0")
    return [by_index[i] for i in range(len(by_index))]


def _name(item: object, where: str, path: str | Path) -> str:
    if isinstance(item, list) and item:
        item = item[-1]
    if not isinstance(item, str) or not item.strip():
        raise InputError(f"label file {path}: {where} is {item!r}, not a name",
                         "give each class a non-empty string")
    return item.strip()


def top_k(scores: np.ndarray | Sequence[float], k: int = 5,
          labels: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """The ``k`` highest of one sample's class scores, highest first, as (label, score); a tie goes
    to the lower index. Without ``labels`` a class is named by its index; ``k`` above the number
    of classes gives them all."""
    k = int(check_number(k, "top-k", low=1, whole=True, error=InputError))
    arr = np.asarray(scores)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iuf":
        raise InputError(f"top-k takes one sample's class scores, got {arr.dtype.name} of shape "
                         f"{list(np.shape(scores))}", "pass one row of the model's output, e.g. output[i]")
    if labels is not None and len(labels) != arr.size:
        raise InputError(f"the scores have {arr.size} classes but there are {len(labels)} labels",
                         "use the label file made for this model (some add a 'background' class 0)")
    # Sorting the negated scores: ties keep index order, and NaN (a broken output) sorts last.
    order = np.argsort(-arr.astype(np.float64), kind="stable")[:k]
    return [(labels[i] if labels is not None else str(i), float(arr[i])) for i in order]
