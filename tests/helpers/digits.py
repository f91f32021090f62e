"""A real classifier on real data, for ``splitinfer eval`` tests: scikit-learn's MLP trained on the 8x8
digits (:mod:`splitinfer.zoo.digits`, the one recipe the benchmarks use too), and its stages split
after each ReLU.

The model is trained once per test process (``lru_cache``) and shared by the runtime and CLI tests.
"""

from __future__ import annotations

from functools import lru_cache

from splitinfer.graph import load_model, split
from splitinfer.runtime import StageSpec
from splitinfer.zoo.digits import NUM_TRAIN, Digits
from splitinfer.zoo.digits import digits as _train

__all__ = ["NUM_TRAIN", "Digits", "digits", "split_after_relus"]


@lru_cache(maxsize=1)
def digits() -> Digits:
    """The trained model and the 397 held-out digits (shared: do not change its arrays in place)."""
    return _train()


def split_after_relus(model_bytes: bytes, devices: list[str], batch: int = 1) -> list[StageSpec]:
    """The model with its batch fixed, cut after each ReLU (the hidden activations) with splitinfer's
    own split; partition k on ``devices[k]``."""
    model = load_model(model_bytes, batch=batch)
    relus = [node.output[0] for node in model.proto.graph.node if node.op_type == "Relu"]
    parts = split(model, [[name] for name in relus])
    assert len(parts) == len(devices), f"{len(parts)} partitions for {len(devices)} devices"
    return [StageSpec(p.index, device, p.to_bytes(), p.inputs, p.outputs)
            for p, device in zip(parts, devices, strict=True)]
