"""A converted model checked against the framework's own outputs on the same seeded inputs.

The converted ONNX model runs in ONNX Runtime and the original in its framework, on inputs
:meth:`splitinfer.graph.Model.make_feeds` generates (seeded; integer inputs within the bounds the
graph shows). The largest absolute difference over every output is the figure; the conversion
*verifies* when it is at most ``tolerance`` times the largest output magnitude (at least 1), so the
tolerance is absolute for outputs up to 1 and relative above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 1e-4
SEEDS = (0, 1)  # two input draws: a difference hidden on one shows on the other


@dataclass(frozen=True)
class Verification:
    """How far the converted model's outputs are from the framework's (``max_abs_diff``), the
    largest framework output magnitude (``scale``), and on how many outputs and input draws."""

    max_abs_diff: float
    scale: float
    num_outputs: int
    num_draws: int = len(SEEDS)
    problem: str = ""  # an output missing or of another shape (then max_abs_diff is inf)

    def tolerance(self, tolerance: float = DEFAULT_TOLERANCE) -> float:
        """The largest difference accepted: ``tolerance`` x max(1, largest output magnitude)."""
        return tolerance * max(1.0, self.scale)

    def verified(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        return not self.problem and bool(self.max_abs_diff <= self.tolerance(tolerance))

    def describe(self, tolerance: float = DEFAULT_TOLERANCE) -> str:
        """``max abs difference 7.5e-08 over 1 output, verified (tolerance 1.0e-04)``."""
        if self.problem:
            return f"{self.problem}, not verified"
        outputs = f"{self.num_outputs} output{'s' if self.num_outputs != 1 else ''}"
        verdict = "verified" if self.verified(tolerance) else "NOT verified"
        return (f"max abs difference {self.max_abs_diff:.1e} over {outputs}, {verdict} "
                f"(tolerance {self.tolerance(tolerance):.1e})")


def compare(names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> Verification:
    """``got`` (ONNX Runtime) against ``want`` (the framework), output by output (``names`` of the ONNX
    outputs, in order)."""
    if len(got) != len(want):
        return Verification(float("inf"), 0.0, len(names),
                            problem=f"the converted model has {len(got)} outputs, the framework gives "
                                    f"{len(want)}")
    worst, scale = 0.0, 0.0
    for name, a, b in zip(names, got, want, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return Verification(float("inf"), 0.0, len(names),
                                problem=f"output {name!r} has shape {list(a.shape)}, the framework gives "
                                        f"{list(b.shape)}")
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        same_nan = np.isnan(a64) & np.isnan(b64)
        diff = np.where(same_nan, 0.0, np.abs(a64 - b64))
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max()))
        finite = b64[np.isfinite(b64)]
        scale = max(scale, float(np.abs(finite).max()) if finite.size else 0.0)
    return Verification(worst, scale, len(names))


def verify(run_onnx: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
           run_framework: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
           make_feeds: Callable[[int], dict[str, np.ndarray]], names: Sequence[str]) -> Verification:
    """Both models on each seeded draw of inputs; the worst draw."""
    results = []
    for seed in SEEDS:
        feeds = make_feeds(seed)
        results.append(compare(names, run_onnx(feeds), run_framework(feeds)))
    failed = [r for r in results if r.problem]
    if failed:
        return failed[0]
    return Verification(max(r.max_abs_diff for r in results), max(r.scale for r in results), len(names))
