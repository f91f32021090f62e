"""Every classification metric equals scikit-learn's own, on a classifier trained on real digits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from splitinfer.quality import classification_report

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed (the test extra needs it)")

ALL = list(range(10))


def _sk_top_k(y, scores, k):
    with warnings.catch_warnings():  # k >= n_classes: scikit-learn warns, and scores 1.0 as we do
        warnings.simplefilter("ignore")
        return sk.top_k_accuracy_score(y, scores, k=k, labels=list(range(scores.shape[1])))


def test_accuracy_and_top_k_match_scikit_learn(digits):
    # No exact ties in the scores: scikit-learn orders tied classes the other way round.
    assert (np.diff(np.sort(digits.proba, axis=1), axis=1) > 0).all()
    report = classification_report(digits.y_test, digits.proba, top_k=(1, 2, 3, 5, 10, 12))
    assert report.num_samples == digits.y_test.size == 540
    accuracy = sk.accuracy_score(digits.y_test, digits.proba.argmax(1))
    assert report.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert 0.9 < report.accuracy < 1.0  # a real model: good, and not trivially perfect
    for k in (1, 2, 3, 5, 10, 12):
        assert report.top_k_accuracy[k] == pytest.approx(_sk_top_k(digits.y_test, digits.proba, k), abs=1e-12)
    assert report.top_k_accuracy[2] > report.accuracy  # k = 2 finds some the argmax missed
    assert report.top_k_accuracy[12] == 1.0  # k above the class count is clamped


def test_confusion_precision_sensitivity_match_scikit_learn(digits):
    y, pred = digits.y_test, digits.proba.argmax(1)
    report = classification_report(y, digits.proba)
    np.testing.assert_array_equal(report.confusion, sk.confusion_matrix(y, pred, labels=ALL))
    np.testing.assert_allclose(report.precision, sk.precision_score(y, pred, average=None, zero_division=0),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.sensitivity, sk.recall_score(y, pred, average=None, zero_division=0),
                               rtol=0, atol=1e-12)
    assert report.support == tuple(np.bincount(y, minlength=10))
    assert report.macro_precision == pytest.approx(
        sk.precision_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert report.macro_sensitivity == pytest.approx(
        sk.recall_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert report.balanced_accuracy == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-12)
    recall = sk.recall_score(y, pred, average=None)
    assert report.g_mean == pytest.approx(np.prod(recall) ** (1 / len(recall)), abs=1e-12)
    assert report.undefined_precision == report.undefined_sensitivity == ()


def test_zero_divisions_are_zero_flagged_and_match_scikit_learn(digits):
    y, scores = digits.weak_y, digits.weak_proba
    pred = scores.argmax(1)  # 9 columns: classes 0..8
    assert 9 in y and 9 not in pred and 8 in pred and 8 not in y  # the weak model's two zero divisions
    # 12 classes: 10 and 11 are neither labels nor predictions, and take no part in the macro averages.
    report = classification_report(y, pred, num_classes=12)
    assert report.undefined_precision == (9, 10, 11) and report.undefined_sensitivity == (8, 10, 11)
    assert report.precision[9] == 0.0 and report.sensitivity[8] == 0.0
    twelve = list(range(12))
    np.testing.assert_array_equal(report.confusion, sk.confusion_matrix(y, pred, labels=twelve))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about the zero divisions
        precision = sk.precision_score(y, pred, labels=twelve, average=None, zero_division=0)
        recall = sk.recall_score(y, pred, labels=twelve, average=None, zero_division=0)
        np.testing.assert_allclose(report.precision, precision, rtol=0, atol=1e-12)
        np.testing.assert_allclose(report.sensitivity, recall, rtol=0, atol=1e-12)
        # Macro over the classes in the labels or predictions: scikit-learn's default labels.
        assert report.macro_precision == pytest.approx(
            sk.precision_score(y, pred, average="macro", zero_division=0), abs=1e-12)
        assert report.macro_sensitivity == pytest.approx(
            sk.recall_score(y, pred, average="macro", zero_division=0), abs=1e-12)
        assert report.balanced_accuracy == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-12)
    # G-mean over the classes in the labels only: the never-predicted 9 makes it 0.
    present = np.unique(y)
    recall = sk.recall_score(y, pred, labels=present, average=None, zero_division=0)
    assert recall[present == 9] == 0.0
    assert report.g_mean == pytest.approx(np.prod(recall) ** (1 / len(recall)), abs=1e-12) == 0.0


def test_g_mean_by_hand_on_classes_present(digits):
    # The weak model without its 9s: every class in the labels is recognised sometimes, so the G-mean
    # is a real geometric mean over the classes present (8 is predicted but absent: left out).
    keep = digits.weak_y != 9
    y, pred = digits.weak_y[keep], digits.weak_proba[keep].argmax(1)
    report = classification_report(y, pred, num_classes=10)
    present = np.unique(y)
    recall = sk.recall_score(y, pred, labels=present, average=None)
    assert (recall > 0).all() and 8 not in present and 8 in pred
    assert report.g_mean == pytest.approx(np.exp(np.mean(np.log(recall))), rel=1e-12)
    assert 0 < report.g_mean < report.balanced_accuracy  # AM-GM, strictly: the recalls differ


def test_labels_and_scores_give_the_same_report(digits):
    from_scores = classification_report(digits.y_test, digits.proba, top_k=(1,)).to_dict()
    from_labels = classification_report(digits.y_test, digits.proba.argmax(1), top_k=(1,)).to_dict()
    assert from_scores.pop("top_k_accuracy") == {"1": from_scores["accuracy"]}
    assert from_labels.pop("top_k_accuracy") == {}  # labels have no ranking
    assert from_scores == from_labels
