"""Expected activation moments (mean, second moment) for a standard normal input.

The builder tracks them through the graph to scale weight layers that have no
normalisation after them (VGG's convs, classifier heads, transformer
projections) so their outputs have a chosen second moment. Rough by design:
independence is assumed where it does not hold; BatchNormalization statistics
come from a real forward pass instead (:mod:`splitinfer.zoo.calibration`).
Pure numpy, no ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Gauss-Hermite nodes (probabilists'), weights normalised to an N(0, 1) expectation.
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)
_GH_W = _GH_W / _GH_W.sum()
_ERF = np.vectorize(math.erf, otypes=[np.float64])

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "relu6": lambda z: np.clip(z, 0.0, 6.0),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
    "gelu": lambda z: 0.5 * z * (1.0 + _ERF(z / math.sqrt(2.0))),
    "tanh": np.tanh,
}

Moments = tuple[np.ndarray, np.ndarray]  # (mean, second moment), one entry per value tracked


def activation(kind: str, mean: np.ndarray, m2: np.ndarray) -> Moments:
    """Moments of ``f(z)`` for ``z ~ N(mean, m2 - mean**2)``, elementwise."""
    mean, m2 = np.atleast_1d(np.asarray(mean, np.float64)), np.atleast_1d(np.asarray(m2, np.float64))
    std = np.sqrt(np.maximum(m2 - mean**2, 1e-12))
    y = ACTIVATIONS[kind](mean[:, None] + std[:, None] * _GH_X[None, :])
    return y @ _GH_W, (y * y) @ _GH_W


def max_pool(moments: Moments, window: int) -> Moments:
    """Moments of the max of ``window`` independent values with the given moments, taken as normal."""
    mean, m2 = moments
    std = np.sqrt(np.maximum(m2 - mean**2, 0.0))
    # The max of n iid N(0, 1) has density n phi(x) Phi(x)^(n-1): reweight the Hermite nodes.
    cdf = 0.5 * (1.0 + _ERF(_GH_X / math.sqrt(2.0)))
    weights = _GH_W * window * cdf ** (window - 1)
    weights = weights / weights.sum()
    shift, shift_m2 = float(weights @ _GH_X), float(weights @ _GH_X**2)
    new_mean = mean + std * shift
    return new_mean, mean**2 + 2 * mean * std * shift + std**2 * shift_m2


def global_avg_pool(moments: Moments, num_positions: int) -> Moments:
    """Averaging a map keeps each channel's mean; neighbours are correlated, so the spread
    shrinks by about sqrt(positions), not by the number of positions."""
    mean, m2 = moments
    return mean, mean**2 + np.maximum(m2 - mean**2, 0.0) / math.sqrt(num_positions)
