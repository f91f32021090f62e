"""How well a model classifies a labelled data set: accuracy, top-k accuracy, the confusion matrix,
per-class precision and sensitivity (recall), their macro averages, balanced accuracy and G-mean.

Definitions (``M`` the confusion matrix, rows the true class, columns the predicted one):

- predicted class: the given label, or the argmax of the scores (ties: the lowest index);
  ``top_k_accuracy[k]`` (scores only): the fraction of samples whose true class is among the k best
  scores, ties ordered by ascending index; a k above the class count is clamped to it (1.0).
- ``precision[c] = M[c, c] / sum(M[:, c])`` and ``sensitivity[c] = M[c, c] / sum(M[c, :])``; a zero
  denominator (class never predicted, class absent from the labels) gives 0.0 and puts ``c`` in
  ``undefined_precision`` / ``undefined_sensitivity``.
- ``macro_precision``, ``macro_sensitivity``: the mean over the classes that occur in the labels or
  the predictions (scikit-learn's ``average="macro", zero_division=0``).
- ``balanced_accuracy``: the mean sensitivity, and ``g_mean`` their geometric mean, over the classes
  that occur in the labels (0.0 as soon as one of them is never recognised).

Every number is made of counts (the confusion matrix and the top-k hits), so the accumulator gives
exactly the result one batch of all the data would.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.errors import InputError
from splitinfer.quality._checks import (
    check_labels_below,
    check_top_k,
    label_array,
    numeric_array,
    rank_of,
    top_k_hits,
)
from splitinfer.quality._format import fixed, json_float, table

# A bigger confusion matrix is unreadable in a terminal: format_table leaves it to to_dict().
MAX_TABLE_CLASSES = 20


@dataclass(frozen=True, eq=False)  # eq=False: the confusion matrix is an array; compare to_dict()s
class Classification:
    """The report of one labelled data set (see the module's doc for each number's definition)."""

    num_samples: int
    num_classes: int
    class_names: tuple[str, ...] | None
    accuracy: float
    top_k_accuracy: Mapping[int, float]  # empty when predicted labels, not scores, were given
    confusion: np.ndarray  # int64, num_classes x num_classes, read-only; rows true, columns predicted
    support: tuple[int, ...]  # samples per true class
    precision: tuple[float, ...]
    sensitivity: tuple[float, ...]
    undefined_precision: tuple[int, ...]  # classes never predicted: their precision is 0.0 by convention
    undefined_sensitivity: tuple[int, ...]  # classes absent from the labels: sensitivity 0.0 likewise
    macro_precision: float
    macro_sensitivity: float
    balanced_accuracy: float
    g_mean: float

    def name_of(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None else str(c)

    def to_dict(self) -> dict:
        """JSON-ready: ints, floats and lists (no inf or NaN can occur here; ``json_float`` all the same)."""
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
            "accuracy": json_float(self.accuracy),
            "top_k_accuracy": {str(k): json_float(v) for k, v in self.top_k_accuracy.items()},
            "confusion": self.confusion.tolist(),
            "support": list(self.support),
            "precision": [json_float(v) for v in self.precision],
            "sensitivity": [json_float(v) for v in self.sensitivity],
            "undefined_precision": list(self.undefined_precision),
            "undefined_sensitivity": list(self.undefined_sensitivity),
            "macro_precision": json_float(self.macro_precision),
            "macro_sensitivity": json_float(self.macro_sensitivity),
            "balanced_accuracy": json_float(self.balanced_accuracy),
            "g_mean": json_float(self.g_mean),
        }

    def format_table(self) -> str:
        """The summary, a row per class and (up to 20 classes) the confusion matrix, for the CLI."""
        summary = [["accuracy", fixed(self.accuracy)],
                   *([f"top-{k} accuracy", fixed(v)] for k, v in self.top_k_accuracy.items() if k != 1),
                   ["macro precision", fixed(self.macro_precision)],
                   ["macro sensitivity", fixed(self.macro_sensitivity)],
                   ["balanced accuracy", fixed(self.balanced_accuracy)],
                   ["G-mean", fixed(self.g_mean)]]
        bad_p, bad_s = set(self.undefined_precision), set(self.undefined_sensitivity)
        per_class = [[self.name_of(c), str(self.support[c]),
                      fixed(self.precision[c]) + ("*" if c in bad_p else " "),
                      fixed(self.sensitivity[c]) + ("*" if c in bad_s else " ")]
                     for c in range(self.num_classes)]
        parts = [f"{self.num_samples} samples, {self.num_classes} classes",
                 table(["metric", "value"], summary), "",
                 table(["class", "support", "precision", "sensitivity"], per_class)]
        if bad_p or bad_s:
            parts.append("* undefined (class never predicted / absent from the labels): counted as 0")
        if self.num_classes <= MAX_TABLE_CLASSES:
            header = ["true \\ predicted", *(self.name_of(c) for c in range(self.num_classes))]
            rows = [[self.name_of(c), *map(str, row)] for c, row in enumerate(self.confusion.tolist())]
            parts += ["", table(header, rows)]
        else:
            parts.append(f"(confusion matrix of {self.num_classes} classes: see the JSON report)")
        return "\n".join(parts)


class ClassificationAccumulator:
    """A classification report over a data set streamed in batches: :meth:`add` each batch's labels
    and scores (or predicted labels), then :meth:`result`. Every batch gives scores, or every batch
    gives labels. Without ``num_classes`` or ``class_names`` the class count is the scores' column
    count, or for predicted labels the largest label seen (true or predicted) plus one."""

    def __init__(self, *, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 top_k: Iterable[int] = (1, 5)) -> None:
        self.top_k = check_top_k(top_k)
        self.class_names = None if class_names is None else _check_names(class_names)
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
                    or num_classes < 1:
                raise InputError(f"num_classes {num_classes!r} is not a positive integer",
                                 "pass the number of classes, e.g. num_classes=10")
            if self.class_names is not None and len(self.class_names) != num_classes:
                raise InputError(f"{len(self.class_names)} class names for num_classes={num_classes}",
                                 "give one name per class, or leave num_classes out")
        elif self.class_names is not None:
            num_classes = len(self.class_names)
        self._fixed = num_classes is not None  # else the class count may still grow (labels only)
        self._num_classes = int(num_classes) if num_classes is not None else 0
        self._confusion = np.zeros((self._num_classes, self._num_classes), dtype=np.int64)
        self._hits = dict.fromkeys(self.top_k, 0)
        self._mode: str | None = None  # "scores" or "labels", set by the first batch
        self.num_samples = 0

    def add(self, y_true: object, scores_or_pred: object) -> None:
        """One batch: ``y_true`` the class indices (N), ``scores_or_pred`` an N x C score array or N
        predicted class indices."""
        labels = label_array(y_true, "y_true")
        try:
            given = np.asarray(scores_or_pred)
        except (TypeError, ValueError) as e:  # ragged nested lists
            raise InputError(f"scores_or_pred is not an array: {e}", "pass a numpy array") from None
        if given.ndim not in (1, 2):
            raise InputError(f"scores_or_pred has shape {given.shape}",
                             "pass N x C scores or N predicted labels")
        mode = "scores" if given.ndim == 2 else "labels"
        if self._mode not in (None, mode):
            raise InputError(f"this batch gives {mode} but an earlier batch gave {self._mode}",
                             "give scores in every batch, or predicted labels in every batch")
        if mode == "scores":
            pred, hits, num_classes = self._from_scores(labels, given)
        else:
            hits = {}
            pred = label_array(given, "scores_or_pred")
            _check_rows(labels, pred.shape[0], "predicted labels")
            num_classes = self._num_classes if self._fixed else max(
                self._num_classes, int(labels.max()) + 1, int(pred.max()) + 1)
            check_labels_below(pred, num_classes, "scores_or_pred")
        check_labels_below(labels, num_classes, "y_true")
        # Everything is checked: only now does the batch count.
        self._mode = mode
        if num_classes > self._num_classes:
            grow = num_classes - self._num_classes
            self._confusion = np.pad(self._confusion, ((0, grow), (0, grow)))
            self._num_classes = num_classes
        self._fixed = self._fixed or mode == "scores"
        flat = labels * num_classes + pred
        self._confusion += np.bincount(flat, minlength=num_classes * num_classes).reshape(
            num_classes, num_classes)
        for k, h in hits.items():
            self._hits[k] += h
        self.num_samples += labels.shape[0]

    def _from_scores(self, labels: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, dict[int, int], int]:
        scores = numeric_array(given, "scores_or_pred")
        _check_rows(labels, scores.shape[0], "score rows")
        num_classes = scores.shape[1]
        if num_classes < 2:
            raise InputError("scores_or_pred has one column: a score per class is needed",
                             "for a binary sigmoid pass [1 - p, p], or pass predicted labels")
        if self._fixed and num_classes != self._num_classes:
            raise InputError(f"scores_or_pred has {num_classes} columns for {self._num_classes} classes",
                             "pass one score column per class")
        check_labels_below(labels, num_classes, "y_true")  # before rank_of indexes the scores with them
        pred = np.argmax(scores, axis=1)
        return pred, top_k_hits(rank_of(scores, labels), self.top_k), num_classes

    def result(self) -> Classification:
        """The report of everything added so far."""
        if self.num_samples == 0:
            raise InputError("no batch was added", "add at least one batch of labels first")
        top_k = {k: h / self.num_samples for k, h in self._hits.items()} if self._mode == "scores" else {}
        return _report(self._confusion.copy(), top_k, self.class_names)


def classification_report(y_true: object, scores_or_pred: object, *, num_classes: int | None = None,
                          class_names: Sequence[str] | None = None,
                          top_k: Iterable[int] = (1, 5)) -> Classification:
    """The report of one batch; see :class:`ClassificationAccumulator` for the arguments."""
    acc = ClassificationAccumulator(num_classes=num_classes, class_names=class_names, top_k=top_k)
    acc.add(y_true, scores_or_pred)
    return acc.result()


def _report(confusion: np.ndarray, top_k: dict[int, float],
            class_names: tuple[str, ...] | None) -> Classification:
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    sensitivity = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    present = support > 0
    seen = present | (predicted > 0)
    recognised = sensitivity[present]
    balanced = float(np.mean(recognised))
    # exp(mean(log)): a product of many sensitivities below 1 underflows long before 1000 classes.
    # It can round a hair above the arithmetic mean when all are equal; the mean bounds it (AM-GM).
    g_mean = 0.0 if (recognised == 0).any() else min(balanced, math.exp(float(np.mean(np.log(recognised)))))
    num_samples = int(support.sum())
    confusion.setflags(write=False)
    return Classification(
        num_samples=num_samples,
        num_classes=confusion.shape[0],
        class_names=class_names,
        accuracy=float(tp.sum() / num_samples),
        top_k_accuracy=top_k,
        confusion=confusion,
        support=tuple(int(s) for s in support),
        precision=tuple(float(p) for p in precision),
        sensitivity=tuple(float(s) for s in sensitivity),
        undefined_precision=tuple(int(c) for c in np.flatnonzero(predicted == 0)),
        undefined_sensitivity=tuple(int(c) for c in np.flatnonzero(~present)),
        macro_precision=float(np.mean(precision[seen])),
        macro_sensitivity=float(np.mean(sensitivity[seen])),
        balanced_accuracy=balanced,
        g_mean=g_mean,
    )


def _check_names(class_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise InputError("class_names is not a sequence of strings", "pass e.g. ['cat', 'dog']")
    names = tuple(class_names)
    if not names:
        raise InputError("class_names is empty", "give one name per class")
    return names


def _check_rows(labels: np.ndarray, rows: int, what: str) -> None:
    if rows != labels.shape[0]:
        raise InputError(f"{labels.shape[0]} labels but {rows} {what}", "give one label per sample")
