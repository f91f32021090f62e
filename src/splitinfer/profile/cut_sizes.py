"""The bytes a cut carries when its size depends on the input values (``Model.dynamic_dims``: the boxes
NonMaxSuppression keeps, NonZero's count), measured on calibration samples: the planner charges each cut
its mean, not the size the analysis happened to see on one input.

Each sample runs through the whole model once with the varying cut tensors as extra outputs. Cuts that
cross no varying tensor keep the analysis's bytes (they are the same on every input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from splitinfer.graph import Analysis, Model
from splitinfer.profile.calibration import run_samples


def measure_cut_bytes(model: Model, analysis: Analysis,
                      samples: Sequence[Mapping[str, np.ndarray]]) -> list[tuple[int, ...]]:
    """Per block: the bytes of the cut after it on each sample (empty where none of its tensors varies)."""
    after = [[t.name for t in c.tensors] for c in analysis.cuts] + [[s.name for s in model.outputs]]
    varying = [any(n in model.dynamic_dims for n in names) for names in after]
    if not any(varying) or not samples:
        return [() for _ in after]
    names = sorted({n for names, v in zip(after, varying, strict=True) if v for n in names})
    seen: list[dict[str, int]] = []
    for values in run_samples(model, names, samples):
        seen.append({n: int(np.asarray(v).nbytes) for n, v in zip(names, values, strict=True)})
    return [tuple(sum(s[n] for n in block_names) for s in seen) if v else ()
            for block_names, v in zip(after, varying, strict=True)]
