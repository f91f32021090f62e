"""A real classifier for the quality tests: logistic regression on scikit-learn's digits (shipped
with scikit-learn, 1797 8x8 images), trained once per session in about a second."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest


@dataclass(frozen=True)
class Digits:
    y_test: np.ndarray  # int64 labels of the held-out 30 %
    proba: np.ndarray  # float64 predict_proba of a good model (about 97 % accurate), N x 10
    logits: np.ndarray  # float32 decision_function of the same model, N x 10
    weak_y: np.ndarray  # held-out labels without class 8
    weak_proba: np.ndarray  # a weak model never trained on class 9: N x 9 scores for weak_y


@pytest.fixture(scope="session")
def digits() -> Digits:
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the test extra needs it)")
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.3, random_state=0,
                                                        stratify=y)
    model = LogisticRegression(max_iter=200).fit(x_train, y_train)
    # The weak model sees the top 10 pixels only and no 9s: it never predicts 9 (precision of 9
    # undefined), and predicts 8 for samples that are not 8 once the 8s are left out (sensitivity
    # of 8 undefined): the zero divisions, on real data.
    seen = y_train != 9
    weak = LogisticRegression(max_iter=50).fit(x_train[seen][:, :10], y_train[seen])
    keep = y_test != 8
    return Digits(y_test=y_test.astype(np.int64), proba=model.predict_proba(x_test),
                  logits=model.decision_function(x_test).astype(np.float32),
                  weak_y=y_test[keep].astype(np.int64), weak_proba=weak.predict_proba(x_test[keep][:, :10]))
