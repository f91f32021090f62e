"""The bytes a cut carries when its size depends on the input values (``Model.dynamic_dims``: the boxes
NonMaxSuppression keeps, NonZero's count), measured on calibration samples: the planner charges each cut
its mean, not the size the analysis happened to see on one input.

The varying cut tensors are read on each sample's one run of the whole model (``prepare_model`` runs the
samples once for these and the exits). Cuts that cross no varying tensor keep the analysis's bytes (they
are the same on every input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from splitinfer.graph import Analysis, Model


def _after(model: Model, analysis: Analysis) -> list[list[str]]:
    """Per block: the tensors crossing the cut after it (the model outputs after the last)."""
    return [[t.name for t in c.tensors] for c in analysis.cuts] + [[s.name for s in model.outputs]]


def varying_cut_tensors(model: Model, analysis: Analysis) -> list[str]:
    """The tensors of every cut whose size varies: what each sample's run must give."""
    return sorted({n for names in _after(model, analysis) if any(t in model.dynamic_dims for t in names)
                   for n in names})


def measure_cut_bytes(model: Model, analysis: Analysis,
                      runs: Sequence[Mapping[str, np.ndarray]]) -> list[tuple[int, ...]]:
    """Per block: the bytes of the cut after it on each run (a sample's tensors by name, holding
    :func:`varying_cut_tensors`); empty where none of its tensors varies."""
    after = _after(model, analysis)
    varying = [any(n in model.dynamic_dims for n in names) for names in after]
    return [tuple(sum(int(np.asarray(run[n]).nbytes) for n in names) for run in runs) if v else ()
            for names, v in zip(after, varying, strict=True)]
