"""Bad input raises InputError with one line naming the problem, and a bad batch counts for nothing."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.errors import InputError
from splitinfer.quality import (
    AgreementAccumulator,
    ClassificationAccumulator,
    classification_report,
    compare_outputs,
)

A = np.arange(12, dtype=np.float32).reshape(4, 3)
Y = np.array([0, 1, 2, 1])

CASES = {
    # compare_outputs
    "missing output": (lambda: compare_outputs({"a": A, "b": A}, {"a": A}), "only in the reference: 'b'"),
    "extra output": (lambda: compare_outputs({"a": A}, {"a": A, "c": A}), "only in the candidate: 'c'"),
    "no outputs": (lambda: compare_outputs({}, {}), "the reference has no outputs"),
    "not a mapping": (lambda: compare_outputs(A, {"a": A}), "not a mapping"),
    "shape mismatch": (lambda: compare_outputs({"a": A}, {"a": A.T}),
                       "output 'a' has shape (4, 3) in the reference but (3, 4) in the candidate"),
    "empty output": (lambda: compare_outputs({"a": A[:0]}, {"a": A[:0]}), "reference output 'a' is empty"),
    "NaN in candidate": (lambda: compare_outputs({"a": A}, {"a": np.where(A == 5, np.nan, A)}),
                         "candidate output 'a' has 1 non-finite value(s)"),
    "inf in reference": (lambda: compare_outputs({"a": np.full(3, np.inf)}, {"a": np.zeros(3)}),
                         "reference output 'a' has 3 non-finite"),
    "strings": (lambda: compare_outputs({"a": np.array(["x"])}, {"a": np.array(["x"])}),
                "not a real number type"),
    "ragged": (lambda: compare_outputs({"a": [[1.0], [1.0, 2.0]]}, {"a": A}),
               "reference output 'a' is not an array"),
    "k zero": (lambda: compare_outputs({"a": A}, {"a": A}, top_k=(0, 1)), "top_k value 0 is below 1"),
    "k not int": (lambda: compare_outputs({"a": A}, {"a": A}, top_k=(1.5,)),
                  "top_k value 1.5 is not an integer"),
    "k bool": (lambda: AgreementAccumulator(top_k=(True,)), "top_k value True is not an integer"),
    "k not iterable": (lambda: AgreementAccumulator(top_k=None), "top_k None is not a sequence"),
    "nothing added": (lambda: AgreementAccumulator().result(), "no batch was added"),
    # classification_report
    "negative label": (lambda: classification_report([0, -1, 2, 1], A), "y_true has a negative label (-1)"),
    "label too big": (lambda: classification_report([0, 3, 2, 1], A),
                      "y_true has label 3, out of range for 3 classes"),
    "fractional label": (lambda: classification_report([0, 1.5, 2, 1], A), "y_true has non-integer values"),
    "string labels": (lambda: classification_report(["a", "b", "c", "a"], A), "not integer class indices"),
    "2-D labels": (lambda: classification_report(A, A), "y_true has shape (4, 3), not one label per sample"),
    "empty labels": (lambda: classification_report([], A[:0]), "y_true is empty"),
    "row mismatch": (lambda: classification_report(Y[:3], A), "3 labels but 4 score rows"),
    "pred mismatch": (lambda: classification_report(Y, Y[:3]), "4 labels but 3 predicted labels"),
    "pred too big": (lambda: classification_report(Y, [0, 1, 5, 1], num_classes=3),
                     "scores_or_pred has label 5, out of range for 3 classes"),
    "negative pred": (lambda: classification_report(Y, [0, -2, 1, 1]), "scores_or_pred has a negative label"),
    "NaN score": (lambda: classification_report(Y, np.where(A == 4, np.nan, A)),
                  "scores_or_pred has 1 non-finite"),
    "inf score": (lambda: classification_report(Y, np.where(A == 4, -np.inf, A)),
                  "non-finite value(s) (NaN or inf)"),
    "one column": (lambda: classification_report([0, 0, 0, 0], A[:, :1]), "scores_or_pred has one column"),
    "columns vs num_classes": (lambda: classification_report(Y, A, num_classes=4), "3 columns for 4 classes"),
    "3-D scores": (lambda: classification_report(Y, A[:, :, None]),
                   "scores_or_pred has shape (4, 3, 1). pass N x C scores or N predicted labels"),
    "num_classes zero": (lambda: classification_report(Y, A, num_classes=0),
                         "num_classes 0 is not a positive"),
    "names vs num_classes": (lambda: classification_report(Y, A, num_classes=3, class_names=["a", "b"]),
                             "2 class names for num_classes=3"),
    "names not strings": (lambda: classification_report(Y, A, class_names="abc"),
                          "not a sequence of strings"),
    "k negative": (lambda: classification_report(Y, A, top_k=(-1,)), "top_k value -1 is below 1"),
    "nothing classified": (lambda: ClassificationAccumulator().result(), "no batch was added"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_naming_the_problem(case):
    call, words = CASES[case]
    with pytest.raises(InputError) as info:
        call()
    text = str(info.value)
    assert words in text
    assert "\n" not in text and info.value.fix  # one line, and it says what to do


def test_batches_must_agree_with_the_first():
    acc = AgreementAccumulator()
    acc.add({"a": A, "b": A[:, 0]}, {"a": A, "b": A[:, 0]})
    with pytest.raises(InputError, match="only in the first batch: 'b'; only in this batch: 'c'"):
        acc.add({"a": A, "c": A}, {"a": A, "c": A})
    with pytest.raises(InputError, match=r"output 'a' has shape \(4, 4\) in this batch.*ending in \(3,\)"):
        acc.add({"a": np.ones((4, 4)), "b": A[:, 0]}, {"a": np.ones((4, 4)), "b": A[:, 0]})
    cls = ClassificationAccumulator()
    cls.add(Y, A)
    with pytest.raises(InputError, match="this batch gives labels but an earlier batch gave scores"):
        cls.add(Y, Y)
    with pytest.raises(InputError, match="4 columns for 3 classes"):
        cls.add(Y, np.ones((4, 4)))


def test_a_rejected_batch_counts_for_nothing():
    good, nan = {"a": A, "b": A[:, 0]}, {"a": A, "b": np.full(4, np.nan)}
    acc = AgreementAccumulator()
    acc.add(good, {"a": A + 1, "b": A[:, 0]})
    with pytest.raises(InputError):  # "a" is fine and checked first; "b" is not: "a" must not be summed
        acc.add(good, nan)
    assert acc.num_batches == 1
    assert acc.result().to_dict() == compare_outputs(good, {"a": A + 1, "b": A[:, 0]}).to_dict()

    cls = ClassificationAccumulator()
    cls.add(Y, A)
    with pytest.raises(InputError):  # labels 0..2 fine, the prediction 7 is not: nothing may grow
        cls.add(Y, np.array([0, 1, 2, 7]))
    with pytest.raises(InputError):
        cls.add([0, 1, 2, 9], A)
    assert cls.num_samples == 4
    assert cls.result().to_dict() == classification_report(Y, A).to_dict()

    grown = ClassificationAccumulator()
    grown.add(Y, Y)
    with pytest.raises(InputError):  # a valid new class 5 in the labels, but a negative prediction
        grown.add([5, 0], [-1, 0])
    assert grown.result().num_classes == 3
