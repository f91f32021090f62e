"""A real classifier on real data, for ``splitinfer eval`` tests: scikit-learn's MLP trained on the 8x8
digits (a fixed seed, well under a second), exported with skl2onnx, and its stages split after each ReLU.

The model is trained once per test process (``lru_cache``) and shared by the runtime and CLI tests.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from splitinfer.graph import load_model, split
from splitinfer.runtime import StageSpec

NUM_TRAIN = 1400  # of 1797 digits; the other 397 are the test set


@dataclass(frozen=True)
class Digits:
    """The exported model (batch dimension symbolic) and the held-out samples it is evaluated on."""

    model_bytes: bytes
    x: np.ndarray  # float32, N x 64, pixels scaled to [0, 1]
    y: np.ndarray  # int64, N


@lru_cache(maxsize=1)
def digits() -> Digits:
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


def split_after_relus(model_bytes: bytes, devices: list[str], batch: int = 1) -> list[StageSpec]:
    """The model with its batch fixed, cut after each ReLU (the hidden activations) with splitinfer's
    own split; partition k on ``devices[k]``."""
    model = load_model(model_bytes, batch=batch)
    relus = [node.output[0] for node in model.proto.graph.node if node.op_type == "Relu"]
    parts = split(model, [[name] for name in relus])
    assert len(parts) == len(devices), f"{len(parts)} partitions for {len(devices)} devices"
    return [StageSpec(p.index, device, p.to_bytes(), p.inputs, p.outputs)
            for p, device in zip(parts, devices, strict=True)]
