"""Honest timing: warm up, repeat until the median is known to a given precision.

The stopping rule uses a distribution-free confidence interval for the median
(binomial order statistics), because run times are skewed and have outliers:
a mean +- t*sd interval would be too optimistic on a noisy shared machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from splitinfer.profile.schema import Stats


def median_ci_rel(times: Sequence[float], z: float = 1.96) -> float:
    """Relative half-width of the ~95% confidence interval of the median.

    The interval is [x_(j), x_(k)] with j, k = n/2 -+ z*sqrt(n)/2 (order statistics).
    Returns inf when there are too few samples to bound it.
    """
    n = len(times)
    if n < 3:
        return math.inf
    xs = np.sort(np.asarray(times, dtype=np.float64))
    half = z * math.sqrt(n) / 2
    j = math.floor(n / 2 - half)
    k = math.ceil(n / 2 + half)
    if j < 0 or k > n - 1:
        return math.inf
    median = float(np.median(xs))
    if median <= 0:
        return 0.0 if xs[k] == xs[j] else math.inf
    return float((xs[k] - xs[j]) / 2 / median)


def summarize(times: Sequence[float]) -> Stats:
    """Median, mean, p10, p90, std and CI of a list of durations, as the profile file keeps them
    (``ci_rel`` None when too few samples bound the median)."""
    if len(times) == 0:
        raise ValueError("no measurements to summarize")
    xs = np.asarray(times, dtype=np.float64)
    ci_rel = median_ci_rel(xs)
    return Stats(
        median_s=float(np.median(xs)),
        mean_s=float(xs.mean()),
        p10_s=float(np.percentile(xs, 10)),
        p90_s=float(np.percentile(xs, 90)),
        std_s=float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
        n=len(xs),
        ci_rel=ci_rel if math.isfinite(ci_rel) else None,
    )


def measure(
    run: Callable[[], object],
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 300,
    budget_s: float = 2.0,
    rel_precision: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Time ``run()`` until the median's 95% CI half-width is within ``rel_precision``.

    Stops early at ``max_runs`` or when ``budget_s`` of timed work is spent (after
    at least ``min_runs``). Warm-up runs are not recorded. Returns raw durations.
    """
    for _ in range(warmup):
        run()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_runs:
        start = clock()
        run()
        elapsed = clock() - start
        times.append(elapsed)
        spent += elapsed
        if len(times) >= min_runs and (
            spent >= budget_s or median_ci_rel(times) <= rel_precision
        ):
            break
    return times
