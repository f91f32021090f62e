"""Interleaved rounds and the rules of profile/rounds.py, on a simulated clock (durations known)."""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from splitinfer.profile.rounds import (
    MIN_RUNS_WIDE,
    RoundRules,
    kept_runs,
    outlier_fence,
    spread,
    time_rounds,
)


class Machine:
    """A simulated machine: partition i takes base[i] seconds, ``slow`` times longer during a burst."""

    def __init__(self, base, burst=(float("inf"), float("inf")), slow=3.0):
        self.now = 0.0
        self.base = base
        self.burst = burst
        self.slow = slow
        self.calls: list[int] = []

    def clock(self):
        return self.now

    def run(self, i):
        def go():
            self.calls.append(i)
            busy = self.burst[0] <= self.now < self.burst[1]
            self.now += self.base[i] * (self.slow if busy else 1.0)
        return go

    def runs(self):
        return [self.run(i) for i in range(len(self.base))]


def test_every_round_runs_each_partition_once_in_the_order_given():
    m = Machine([0.01, 0.02, 0.03, 0.04])
    time_rounds(m.runs(), RoundRules(num_warmup=0, min_runs=6, max_runs=6, budget_s=100), clock=m.clock)
    assert m.calls == [0, 1, 2, 3] * 6


def test_a_burst_falls_on_all_blocks_alike_so_two_profiles_agree():
    """A burst of 3x load during part of each profile, at different moments: the sums of medians agree
    within 5% when the blocks run in rounds; timed one after another, the burst falls on one block."""
    base = [0.001 * (1 + i % 4) for i in range(12)]
    rules = RoundRules(num_warmup=0, min_runs=9, max_runs=9, budget_s=100)
    sums = []
    for burst in ((0.01, 0.04), (0.07, 0.10)):
        m = Machine(base, burst)
        samples = time_rounds(m.runs(), rules, clock=m.clock)
        sums.append(sum(statistics.median(s.times_s) for s in samples))
    assert sums[1] == pytest.approx(sums[0], rel=0.05)
    assert sums[0] == pytest.approx(sum(base), rel=0.05)
    in_turn = []  # the old way: each block to completion, then the next
    for burst in ((0.01, 0.04), (0.07, 0.10)):
        m = Machine(base, burst)
        medians = []
        for run in m.runs():
            one = []
            for _ in range(9):
                start = m.clock()
                run()
                one.append(m.clock() - start)
            medians.append(statistics.median(one))
        in_turn.append(sum(medians))
    assert abs(in_turn[1] / in_turn[0] - 1) > 0.05  # what the rounds protect against


def test_slow_outliers_are_dropped_by_the_stated_fence():
    times = [1.0, 1.1, 1.0, 1.2, 1.1, 1.0, 9.0]
    q1, q3 = 1.0, 1.15  # numpy's linear percentiles of these seven
    assert outlier_fence(times) == pytest.approx(q3 + 3 * (q3 - q1))
    alike = [1.0] * 7 + [1.2, 1.1]  # IQR 0: it counts as 5% of the median
    assert outlier_fence(alike) == pytest.approx(1.0 + 3 * 0.05) and kept_runs(alike) == [1.0] * 7 + [1.1]
    assert kept_runs(times) == [1.0, 1.1, 1.0, 1.2, 1.1, 1.0]
    assert kept_runs([0.1, 1.0, 1.0, 1.1, 1.0]) == [0.1, 1.0, 1.0, 1.1, 1.0]  # fast runs stay
    assert kept_runs([1.0, 50.0, 1.0]) == [1.0, 50.0, 1.0]  # too few runs for quartiles


def test_no_median_of_a_wide_spread_from_fewer_than_10_runs():
    m = Machine([])
    durations = iter([1.0, 2.0] * 50)  # one partition alternating 1 s and 2 s: p90/p10 = 2

    def noisy():
        m.now += next(durations)

    rules = RoundRules(num_warmup=0, min_runs=3, max_runs=100, budget_s=0.001, rel_precision=0.5)
    (sample,) = time_rounds([noisy], rules, clock=m.clock)
    assert spread(sample.times_s) >= 1.5
    assert len(sample.times_s) == MIN_RUNS_WIDE  # past the budget, but no fewer than 10
    steady = Machine([1.0])
    (sample,) = time_rounds(steady.runs(), rules, clock=steady.clock)
    assert len(sample.times_s) == 3  # a narrow spread leaves at min_runs when the budget is spent


def test_a_wide_partition_is_measured_again_and_the_narrower_sample_kept():
    m = Machine([0.01, 0.01], burst=(0.0, 0.4), slow=5.0)  # 4 of the first pass's 10 rounds
    rules = RoundRules(num_warmup=0, min_runs=10, max_runs=10, budget_s=100)
    samples = time_rounds(m.runs(), rules, clock=m.clock)
    for s in samples:
        assert s.remeasured and spread(s.times_s) == pytest.approx(1.0)
        assert statistics.median(s.times_s) == pytest.approx(0.01)
    quiet = Machine([0.01, 0.01])
    assert not any(s.remeasured for s in time_rounds(quiet.runs(), rules, clock=quiet.clock))


def test_a_rest_precedes_every_timed_run_and_counts_in_the_budget():
    """With ``rest_s`` each timed run follows that long idle (the machine's runs after rest are 1.5x
    slower here, as this VM's are): the medians are the rested runs', and the rests spend the budget.
    A set whose median partition's warm-up took less than ``min_rested_s`` runs back to back."""
    m = Machine([0.01, 0.02, 0.0001])
    rested = []

    def sleep(seconds):
        m.now += seconds
        rested.append(len(m.calls))

    def cold(i):
        def go():
            m.calls.append(i)
            m.now += m.base[i] * (1.5 if rested and rested[-1] == len(m.calls) - 1 else 1.0)
        return go

    rules = RoundRules(num_warmup=1, min_runs=3, max_runs=100, budget_s=0.8, rel_precision=0.0, rest_s=0.04)
    samples = time_rounds([cold(i) for i in range(3)], rules, clock=m.clock, sleep=sleep)
    assert [statistics.median(s.times_s) for s in samples] == pytest.approx([0.015, 0.03, 0.00015])
    rounds = len(samples[0].times_s)
    assert rested == list(range(3, 3 + 3 * rounds))  # before each timed run, none before the warm-up's
    assert rounds == 5  # each round spends 3 x 0.04 + 0.015 + 0.03 + 0.00015 of the 0.8 s: five to pass it
    short = Machine([0.0001, 0.0001, 0.01])  # the median partition's warm-up under 0.2 ms: no rests
    rested.clear()
    samples = time_rounds(short.runs(), rules, clock=short.clock, sleep=sleep)
    assert rested == []
    assert [statistics.median(s.times_s) for s in samples] == pytest.approx([0.0001, 0.0001, 0.01])
    awake = Machine([0.01, 0.02])  # no rest asked: the runs back to back, and nothing sleeps
    back_to_back = dataclasses.replace(rules, rest_s=0.0)
    samples = time_rounds(awake.runs(), back_to_back, clock=awake.clock, sleep=sleep)
    assert [statistics.median(s.times_s) for s in samples] == pytest.approx([0.01, 0.02])
    assert rested == [] and len(samples[0].times_s) > rounds


def test_a_partition_measured_again_rests_as_its_set_did():
    """The set rested (its median partition is long), so a short partition whose spread was wide is
    measured again after rests too, though alone it would not rest: its two samples are alike."""
    m = Machine([])
    sleeps = []
    noisy = iter([0.0001, 0.0005] * 5)  # its first 10 runs alternate 1x and 5x: p90/p10 = 5

    def sleep(seconds):
        m.now += seconds
        sleeps.append(seconds)

    def steady():
        m.now += 0.01

    def short():
        m.now += next(noisy, 0.0001)

    rules = RoundRules(num_warmup=0, min_runs=10, max_runs=10, budget_s=100, rest_s=0.04)
    samples = time_rounds([steady, steady, short], rules, clock=m.clock, sleep=sleep)
    assert not samples[0].remeasured and samples[2].remeasured
    assert len(sleeps) == sum(len(s.times_s) for s in samples) + 10  # the 10 runs measured again too
