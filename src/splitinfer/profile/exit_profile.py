"""How often each early exit answers, measured on calibration samples: the planner's exit mix.

Each sample (one request: every row of a batch must be confident) runs through the whole model once;
it leaves at the first exit, in depth order, whose rule holds (:func:`splitinfer.graph.exits.is_confident`).
Without calibration data the samples are generated (seeded), which says little about real inputs:
give ``calibration=`` (``--calibration``) to plan with the mix of your data. Each sample's score under
a threshold rule is kept (``ExitProfile.confidences``), so the fraction at another threshold is known
without measuring again (:func:`leave_fractions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from splitinfer.graph import Analysis, Model
from splitinfer.graph.exit_cuts import exit_blocks
from splitinfer.graph.exits import Exit, is_confident
from splitinfer.profile.schema import ExitProfile
from splitinfer.quality.confidence import confidence

NUM_GENERATED = 32  # samples when no calibration data is given


def exit_tensors(model: Model, exits: Sequence[Exit]) -> list[str]:
    """What each sample's run must give to measure ``exits``: their outputs and the final answer."""
    return [*(e.output for e in exits), model.outputs[-1].name] if exits else []


def measure_exits(model: Model, analysis: Analysis, exits: Sequence[Exit],
                  runs: Sequence[Mapping[str, np.ndarray]], source: str) -> tuple[ExitProfile, ...]:
    """Each exit's fraction of the samples that leave there, its block and its tensor's bytes; ``runs``:
    each sample's tensors by name, holding :func:`exit_tensors`."""
    if not exits:
        return ()
    blocks = exit_blocks(model, exits, analysis)
    ordered = sorted(exits, key=lambda e: blocks[e.output])
    passed = np.zeros((len(runs), len(ordered)), dtype=bool)
    scores: list[list[float]] = [[] for _ in ordered]
    agrees: list[list[bool]] = [[] for _ in ordered]
    final = model.outputs[-1].name  # the answer of a request that takes no exit
    for i, run in enumerate(runs):
        answer = _top1(run[final])
        for k, e in enumerate(ordered):
            value = run[e.output]
            passed[i, k] = bool(np.all(is_confident(e, value)))
            if e.rule != "onnx":
                scores[k].extend(float(c) for c in confidence(e.rule, value))
            top = _top1(value)  # a batch of another size than the answer's cannot agree with it
            agrees[k].extend(top == answer if top.shape == answer.shape else [False] * len(top))
    left = leave_fractions(passed)
    return tuple(ExitProfile(e.output, e.rule, e.threshold, blocks[e.output], float(p),
                             model.tensor(e.output).num_bytes, len(runs), source, tuple(scores[k]),
                             e.rule_path, tuple(bool(a) for a in agrees[k]))
                 for k, (e, p) in enumerate(zip(ordered, left, strict=True)))


def _top1(value: np.ndarray) -> np.ndarray:
    """Each sample's top class (a tensor of any rank: batch first, the rest flattened)."""
    arr = np.asarray(value)
    return arr.reshape(arr.shape[0], -1).argmax(axis=1) if arr.ndim >= 1 and arr.size else np.zeros(0, int)


def leave_fractions(passed: np.ndarray) -> list[float]:
    """(samples, exits) booleans, exits in depth order -> the fraction leaving at each (at the first it
    passes)."""
    if passed.size == 0:
        return [0.0] * passed.shape[1]
    first = np.where(passed.any(axis=1), passed.argmax(axis=1), -1)
    return [float(np.mean(first == k)) for k in range(passed.shape[1])]
