"""A real, trained classifier for bench_quality: scikit-learn's MLP on the 8x8 digits, exported with skl2onnx.

The recipe is :mod:`splitinfer.zoo.digits` (the tests take it from there too): 1400 of the 1797 digits
train a 64-32-16-10 MLP (seed 0, 100 epochs, about 0.9 held-out accuracy), the other 397 are held out.
"""

from __future__ import annotations

from splitinfer.zoo.digits import NUM_TRAIN, Digits, digits

__all__ = ["NUM_TRAIN", "Digits", "digits"]
