"""Exit thresholds chosen with the plan within an agreement budget (profile/exit_choice.py)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import Link, Problem, solve
from splitinfer.plan.exits import ExitMix
from splitinfer.profile.exit_choice import choose_thresholds, mix_at
from splitinfer.profile.problem import exit_mix
from splitinfer.profile.schema import ExitProfile


def _exit(name: str, block: int, scores: list[float], agrees: list[bool], rule: str = "softmax_max",
          threshold: float = 0.5) -> ExitProfile:
    return ExitProfile(name, rule, threshold, block, 0.0, 40, len(scores), "test", tuple(scores),
                       agrees=tuple(agrees))


# 8 samples: exit1 scores (top probability) and whether its answer is the final one's
E1 = _exit("exit1", 1, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
           [True, True, False, True, False, True, True, True])
E2 = _exit("exit2", 3, [0.95, 0.9, 0.9, 0.85, 0.8, 0.3, 0.2, 0.1], [True] * 5 + [False, True, True])


def test_a_sample_leaves_at_the_first_exit_it_passes_and_costs_when_it_disagrees():
    shares, cost = mix_at([E1, E2], [0.65, 0.75])
    # exit1 takes samples 0-2 (0.9, 0.8, 0.7), exit2 then samples 3 and 4 (0.85, 0.8)
    assert shares == [3 / 8, 2 / 8]
    assert cost == 1 / 8  # sample 2 left at exit1 with another answer
    assert mix_at([E1, E2], [None, None]) == ([0.0, 0.0], 0.0)  # both off
    assert mix_at([E1, E2], [0.85, None])[0] == [1 / 8, 0.0]


def _problem(exits: tuple[ExitMix, ...] = ()) -> Problem:
    """One device, 5 blocks of 10 ms each: every request that leaves early saves the rest."""
    return Problem(("d",), {"d": [0.01] * 5}, [100] * 4, 100, 40, [], exits=exits)


def test_the_fastest_plan_within_the_budget_and_never_over_it():
    exits = [E1, E2]
    latencies = []
    for budget in (0.0, 1 / 8, 2 / 8, 1.0):
        choice = choose_thresholds(_problem(exit_mix(exits)), exits, budget)
        assert choice.quality_cost <= budget + 1e-12
        shares, cost = mix_at(exits, [choice.thresholds[e.output] for e in exits])
        assert cost == choice.quality_cost
        assert choice.plan.exit_mix == dict(zip(["exit1", "exit2"], shares, strict=True))
        latencies.append(choice.plan.latency_s)
        # brute force over every threshold (each score, and off): no combination within the budget is faster
        for t1 in (None, *E1.confidences):
            for t2 in (None, *E2.confidences):
                s, c = mix_at(exits, [t1, t2])
                if c <= budget:
                    mix = tuple(ExitMix(e.output, e.block, p, 40) for e, p in zip(exits, s, strict=True))
                    (plan,) = solve(_problem(mix), "latency")
                    assert plan.latency_s >= choice.plan.latency_s - 1e-12
    assert latencies == sorted(latencies, reverse=True) and latencies[-1] < latencies[0]
    assert choose_thresholds(_problem(exit_mix(exits)), exits, 0.0).thresholds["exit1"] != 0.2


def test_thresholds_that_a_worker_would_refuse_are_not_tried_and_bad_profiles_are_refused():
    entropy = _exit("e", 1, [0.1, 0.5, 2.0], [True, False, True], rule="entropy", threshold=0.3)
    choice = choose_thresholds(_problem(exit_mix([entropy])), [entropy], 1.0)
    assert choice.thresholds["e"] is None or choice.thresholds["e"] >= 0
    with pytest.raises(PlanError, match="no score and answer per calibration sample"):
        bad = msgspec.structs.replace(E1, agrees=())
        choose_thresholds(_problem(), [bad], 0.1)
    with pytest.raises(PlanError, match="no early exits"):
        choose_thresholds(_problem(), [], 0.1)


def test_no_thresholds_fit_the_constraints_is_infeasible():
    from splitinfer.plan import Constraints

    with pytest.raises(InfeasibleError, match="agreement drop within"):
        choose_thresholds(_problem(exit_mix([E1])), [E1], 1.0, constraints=Constraints(max_latency_s=0.001))


def test_the_mix_at_other_thresholds_is_read_off_the_profiled_scores():
    mix = exit_mix([E1, E2], {"exit1": 0.65, "exit2": None})
    assert [m.probability for m in mix] == [3 / 8, 0.0]
    assert np.isclose(sum(m.probability for m in exit_mix([E1, E2])), 0.0)  # as profiled: 0 in this fake
    _ = Link  # the problem above needs no link: one device
