"""How confident a classifier's logits are, per sample: what an early exit's rule compares with its
threshold (:mod:`splitinfer.graph.exits`), and what the zoo sets its exits' thresholds from."""

from __future__ import annotations

import numpy as np

from splitinfer.errors import ModelError, ShapeError

# The ONNX metadata key that lists a model's early exits (JSON; graph/exits.py reads it, the zoo writes it).
EXITS_KEY = "splitinfer.exits"


def confidence(rule: str, logits: np.ndarray) -> np.ndarray:
    """Per sample of ``logits`` ``[batch, classes]``: the top softmax probability (``softmax_max``)
    or the softmax's entropy in nats (``entropy``), in float64; NaN for a non-finite sample."""
    z = np.array(logits, dtype=np.float64)  # a copy: the shift below works in place
    if z.ndim != 2 or z.shape[1] == 0:
        raise ShapeError(f"rule {rule} takes logits [batch, classes], not shape {tuple(z.shape)}",
                         "use rule='onnx' with a graph for other shapes")
    if rule not in ("softmax_max", "entropy"):
        raise ModelError(f"rule {rule!r} has no confidence value", "use softmax_max or entropy")
    # The largest logit subtracted: exp never overflows, and the top class's term is exactly 1.
    with np.errstate(invalid="ignore", over="ignore"):
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=1)
        if rule == "softmax_max":
            return 1.0 / total
        return np.log(total) - (e * z).sum(axis=1) / total
