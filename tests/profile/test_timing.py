"""The stopping rule and summary statistics of the timing loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from splitinfer.profile.timing import measure, median_ci_rel, summarize


def test_summary_matches_numpy():
    xs = [0.010, 0.012, 0.011, 0.013, 0.050, 0.011, 0.012, 0.010, 0.011, 0.012]
    s = summarize(xs)
    assert s.median_s == pytest.approx(np.median(xs))
    assert s.p90_s == pytest.approx(np.percentile(xs, 90))
    assert s.n == 10 and s.mean_s == pytest.approx(np.mean(xs))


def test_ci_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    few = rng.lognormal(-4, 0.2, 20)
    many = rng.lognormal(-4, 0.2, 2000)
    assert median_ci_rel(many) < median_ci_rel(few)
    assert median_ci_rel([1.0, 2.0]) == math.inf


class FakeClock:
    """A clock advanced by the workload itself: durations are exactly known."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = itertools.cycle(durations)

    def __call__(self):
        return self.now

    def work(self):
        self.now += next(self.durations)


def test_stops_early_when_stable():
    clock = FakeClock([0.01])
    times = measure(clock.work, min_runs=10, max_runs=500, clock=clock)
    assert len(times) == 10  # identical durations: CI is zero at the first check


def test_keeps_going_while_noisy_and_respects_budget():
    spread = np.random.default_rng(1).lognormal(-4, 1.0, 1000)  # CI needs ~4000 runs to tighten
    clock = FakeClock(spread.tolist())
    times = measure(clock.work, min_runs=5, max_runs=10_000, budget_s=3.0, clock=clock)
    assert 3.0 <= sum(times) < 3.2
    assert len(times) > 5


def test_warmup_is_not_recorded():
    clock = FakeClock([1.0, 1.0, 0.5])
    times = measure(clock.work, warmup=2, min_runs=3, max_runs=3, clock=clock)
    assert times == [0.5, 1.0, 1.0]
