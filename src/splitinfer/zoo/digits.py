"""A real, trained classifier on real data: scikit-learn's MLP on its 8x8 digits, exported to ONNX.

1400 of the 1797 digits train a 64-32-16-10 MLP (seed 0, 100 epochs: about 0.9 held-out accuracy);
the other 397 are held out. The same seed and split give the same model bytes every time; the data
ships with scikit-learn, nothing is downloaded. Unlike the rest of the zoo (built node by node with
seeded weights) the model is trained, so it needs scikit-learn and skl2onnx: imported when
:func:`digits` runs, never by splitinfer itself, and named in the error when they are missing.
The tests (``tests/helpers/digits.py``) and the benchmarks (``benchmarks/_digits.py``) take it
from here.

>>> from splitinfer.zoo.digits import digits
>>> d = digits()                                # doctest: +SKIP
>>> d.x.shape, d.y.shape                        # doctest: +SKIP
((397, 64), (397,))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.util import find_spec

import numpy as np

from splitinfer.errors import ModelError

NUM_TRAIN = 1400  # of 1797 digits; the other 397 are the held-out set
_NEEDS = ("sklearn", "skl2onnx")  # import names; their packages are scikit-learn and skl2onnx


@dataclass(frozen=True)
class Digits:
    """The exported model (input ``x``: N x 64, batch dimension symbolic; outputs ``label`` and
    ``probabilities``, N x 10) and the held-out samples it is evaluated on."""

    model_bytes: bytes
    x: np.ndarray  # float32, N x 64, pixels scaled to [0, 1]
    y: np.ndarray  # int64, N


def _check_installed() -> None:
    missing = [name for name in _NEEDS if find_spec(name) is None]
    if missing:
        packages = ", ".join("scikit-learn" if m == "sklearn" else m for m in missing)
        raise ModelError(f"the digits classifier is trained with scikit-learn and exported with skl2onnx, "
                         f"and {packages} {'is' if len(missing) == 1 else 'are'} not installed",
                         "pip install 'splitinfer[digits]' (scikit-learn and skl2onnx)")


def digits() -> Digits:
    """Train the MLP on the first 1400 digits and export it (well under a second); the other 397
    digits come with it. A ModelError naming what to install when scikit-learn or skl2onnx is missing."""
    _check_installed()
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        # 100 epochs do not quite converge, and do not need to: about 90% held-out accuracy.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=100, random_state=0)
        clf.fit(x[:NUM_TRAIN], y[:NUM_TRAIN])
    # zipmap off: the probabilities are an N x 10 tensor, not a sequence of maps.
    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, 64]))],
                  options={id(clf): {"zipmap": False}}, target_opset=17)
    return Digits(onx.SerializeToString(), x[NUM_TRAIN:], y[NUM_TRAIN:].astype(np.int64))
