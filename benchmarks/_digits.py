"""A real, trained classifier for bench_quality: scikit-learn's MLP on the 8x8 digits, exported with skl2onnx.

The same recipe as ``tests/helpers/digits.py`` (which benchmarks must not import): 1400 of the 1797
digits train a 64-32-16-10 MLP (seed 0, 100 epochs, about 0.9 held-out accuracy), the other 397 are
held out. The data ships with scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

NUM_TRAIN = 1400  # of 1797 digits; the other 397 are the held-out set


@dataclass(frozen=True)
class Digits:
    """The exported model (batch dimension symbolic) and the held-out samples."""

    model_bytes: bytes
    x: np.ndarray  # float32, N x 64, pixels scaled to [0, 1]
    y: np.ndarray  # int64, N


def digits() -> Digits:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        # 100 epochs do not quite converge, and do not need to.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=100, random_state=0)
        clf.fit(x[:NUM_TRAIN], y[:NUM_TRAIN])
    # zipmap off: the probabilities are an N x 10 tensor, not a sequence of maps.
    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, 64]))],
                  options={id(clf): {"zipmap": False}}, target_opset=17)
    return Digits(onx.SerializeToString(), x[NUM_TRAIN:], y[NUM_TRAIN:].astype(np.int64))
