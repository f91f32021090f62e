"""Timing that survives a busy machine: interleaved rounds, a stated outlier rule, a spread rule.

Timing each partition to completion in turn lets a burst of load (another process, a thermal
step) fall on a few blocks only, and two profiles of one model then disagree on its sum of
blocks. Here every partition of a set is run once per *round*, so a burst longer than a round
lands on all of them alike. A round runs them in the order given: a model's blocks in model order,
as a stage runs them, each block's input still warm in the cache. The rules, in one place:

- **Outliers**: a run slower than the third quartile plus 3 interquartile ranges (Tukey's
  far-out fence; the range at least 5% of the median) is dropped. Only slow runs: interference
  only ever adds time.
- **Stopping**: a partition leaves the rounds when it has ``min_runs`` kept runs and its median
  is known to ``rel_precision`` (95% CI, :func:`median_ci_rel`), or at
  ``max_runs``; all leave when the timed ``budget_s`` is spent, except that
- **Wide spread**: no median is accepted from fewer than :data:`MIN_RUNS_WIDE` runs when its
  p90/p10 exceeds :data:`WIDE_SPREAD`: such a partition keeps running past the budget (up to
  ``max_runs``); and a partition whose spread is still wide at the end is **re-measured** in
  rounds of its own, the sample with the narrower spread kept.
- **Rest**: with ``rest_s`` > 0 every timed run follows that long idle (untimed, but counted in
  ``budget_s``, which then bounds the rounds' wall time), unless the set's partitions are short: the
  median of their fastest warm-up runs under ``min_rested_s``. A stage of a decoder's pipeline serving
  one sequence idles while the other stages work, and a run after idle is slower than one back to back
  (its caches hold other work's data; an idle core wakes slowly): ARCHITECTURE.md's cost model has the
  figures measured here. Blocks that short would end within the moments a core takes to wake, which a
  stage of many of them pays once, not once each; and a rest before one makes the runs after it cold
  too, so a set rests all its partitions or none.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

OUTLIER_IQRS = 3.0  # Tukey's far-out fence: Q3 + 3 x IQR
MIN_IQR = 0.05  # ... with the IQR at least 5% of the median
WIDE_SPREAD = 1.5  # p90 / p10 above this is a wide spread
MIN_RUNS_WIDE = 10  # the fewest runs a median with a wide spread is accepted from


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


def outlier_fence(times: Sequence[float]) -> float:
    """The time above which a run is an outlier (inf with fewer than 4 runs: no quartiles yet)."""
    if len(times) < 4:
        return math.inf
    q1, median, q3 = np.percentile(np.asarray(times, dtype=np.float64), [25, 50, 75])
    # Runs that are all alike have no spread to scale a fence by, and a coarse timer makes them so:
    # the interquartile range counts as at least MIN_IQR of the median.
    return float(q3 + OUTLIER_IQRS * max(q3 - q1, MIN_IQR * median))


def kept_runs(times: Sequence[float]) -> list[float]:
    """``times`` without the outliers (:func:`outlier_fence`), in their order."""
    fence = outlier_fence(times)
    return [t for t in times if t <= fence]


def spread(times: Sequence[float]) -> float:
    """p90 / p10 of ``times`` (inf when p10 is 0 and p90 is not, 1 for no spread)."""
    if len(times) == 0:
        return math.inf
    p10, p90 = np.percentile(np.asarray(times, dtype=np.float64), [10, 90])
    if p10 <= 0:
        return 1.0 if p90 <= 0 else math.inf
    return float(p90 / p10)


@dataclass(frozen=True)
class RoundRules:
    """How many runs, for how long, to which precision (see the module's rules)."""

    num_warmup: int = 3
    min_runs: int = 5
    max_runs: int = 200
    budget_s: float = 2.0  # timed work of the whole set, and its rests
    rel_precision: float = 0.05
    rest_s: float = 0.0  # idle before each timed run (see the module's rules)
    min_rested_s: float = 0.0002  # ... of a set whose median partition's warm-up took at least this long

    def enough(self, times: Sequence[float], budget_spent: bool) -> bool:
        """May a partition with these runs leave the rounds?"""
        n = len(times)
        if n >= self.max_runs:
            return True
        kept = kept_runs(times)
        fewest = max(self.min_runs, MIN_RUNS_WIDE if spread(kept) > WIDE_SPREAD else 0)
        if len(kept) < min(fewest, self.max_runs):
            return False
        return budget_spent or median_ci_rel(kept) <= self.rel_precision


@dataclass(frozen=True)
class Sample:
    """One partition's raw run times from the rounds (outliers still in), and whether it was re-measured."""

    times_s: list[float]
    remeasured: bool = False


def _rounds(runs: Sequence[Callable[[], object]], which: list[int], rules: RoundRules, budget_s: float,
            clock: Callable[[], float], sleep: Callable[[float], None],
            rest: bool | None = None) -> tuple[dict[int, list[float]], bool]:
    """Run partitions ``which`` in rounds until each may leave (the budget spent or its rule met); their
    times, and whether each run followed a rest (``rest``: as given, or None for the rule's choice)."""
    warm: dict[int, float] = {}  # each one's fastest warm-up run (none: the set rests)
    for _ in range(rules.num_warmup):
        for i in which:
            start = clock()
            runs[i]()
            warm[i] = min(warm.get(i, math.inf), clock() - start)
    if rest is None:  # all or none: a run after another's rest is about as cold as after its own
        typical = float(np.median(list(warm.values()))) if warm else math.inf
        rest = rules.rest_s > 0 and typical >= rules.min_rested_s
    times: dict[int, list[float]] = {i: [] for i in which}
    active = list(which)
    spent = 0.0
    while active:
        order = active  # in the order given: a model's blocks in model order, as a stage runs them
        for i in order:
            if rest:
                sleep(rules.rest_s)
                spent += rules.rest_s
            start = clock()
            runs[i]()
            elapsed = clock() - start
            times[i].append(elapsed)
            spent += elapsed
        done = spent >= budget_s
        active = [i for i in active if not rules.enough(times[i], done)]
    return times, rest


def time_rounds(runs: Sequence[Callable[[], object]], rules: RoundRules | None = None, *,
                clock: Callable[[], float] = time.perf_counter,
                sleep: Callable[[float], None] = time.sleep) -> list[Sample]:
    """Time every ``runs[i]()`` in interleaved rounds (the module's rules); one :class:`Sample` each.
    ``sleep`` rests (``rules.rest_s``) between runs."""
    rules = rules or RoundRules()
    first, rested = _rounds(runs, list(range(len(runs))), rules, rules.budget_s, clock, sleep)
    samples = [Sample(first[i]) for i in range(len(runs))]
    wide = [i for i, s in enumerate(samples) if spread(kept_runs(s.times_s)) > WIDE_SPREAD]
    if wide:  # a burst may have passed: measure those again, as long again as their first share
        share = sum(math.fsum(first[i]) + rules.rest_s * len(first[i]) * rested for i in wide)
        again, _ = _rounds(runs, wide, dataclasses.replace(rules, num_warmup=1, budget_s=share), share,
                           clock, sleep, rested)  # timed as the first time, rested or not
        for i in wide:
            if spread(kept_runs(again[i])) < spread(kept_runs(first[i])):
                samples[i] = Sample(again[i], remeasured=True)
    return samples
