"""A stage's memory by hand (plan/memory.py): a PipeEdge-style case, and a stage that holds its inner cuts,
each solved and checked against the need counted by hand (helpers/memory_by_hand.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers.memory_by_hand import fits

from splitinfer.errors import InfeasibleError
from splitinfer.plan import Constraints, Link, Problem, prepare, solve
from splitinfer.plan.cost import runs_of, violations
from splitinfer.plan.memory import StageMemory, device_needs, need_bound
from splitinfer.plan.milp import solve_milp, spec_for

M = 1_000_000


# ---- a PipeEdge-style case, by hand -------------------------------------------------------------

def _pipeedge(capacity: dict[str, int], in_flight: int = 1) -> Problem:
    """Four blocks: early ones with large activations and cuts (as in MobileNetV2), late ones heavy."""
    return Problem(
        ("cam", "edge"),
        {"cam": [0.4, 0.4, 0.4, 0.4], "edge": [0.01, 0.01, 0.01, 0.01]},
        cut_bytes=[4 * M, 2 * M, 1 * M],
        input_bytes=1 * M,
        output_bytes=1 * M,
        links=[Link("cam", "edge", 1e9, 0.001), Link("edge", "cam", 1e9, 0.001)],
        weight_bytes=[1 * M, 1 * M, 2 * M, 4 * M],
        activation_bytes=[8 * M, 6 * M, 3 * M, 1 * M],
        capacity_bytes=capacity,
        in_flight=in_flight,
    )


def test_pipeedge_needs_by_hand():
    inst = prepare(_pipeedge({}))
    mem = StageMemory.of(inst)
    # the whole model in one stage: weights 1+1+2+4, peak 8, input 1 + output 1
    assert mem.stage(0, 3) == 18 * M
    # block 0 alone: 1 + 8 + (input 1 + cut 4); blocks 1..2: 1+2 + 6 + (cut 4 + cut 1);
    # block 3 alone: 4 + 1 + (cut 1 + output 1)
    assert (mem.stage(0, 0), mem.stage(1, 2), mem.stage(3, 3)) == (14 * M, 14 * M, 7 * M)
    # ... which are its terms: weights, largest activation, buffers
    assert mem.terms(1, 2) == (3 * M, 6 * M, 5 * M)
    # cam hosts two stages (a revisit), each charged on its own: 14 + 7
    assert device_needs(inst, runs_of([0, 1, 1, 0])).tolist() == [21 * M, 14 * M]
    # two requests in flight double the buffers: 8 + 8 + 2 x (1 + 1)
    assert device_needs(prepare(_pipeedge({}, in_flight=2)), runs_of([1] * 4)).tolist() == [0, 20 * M]
    # the old model (weights + peak summed over every block) charged the whole model 26 M
    assert sum(w + a for w, a in zip(inst.weight_bytes, inst.activation_bytes, strict=True)) == 26 * M


def test_the_stage_model_admits_what_the_per_block_sum_rejected():
    # 18 M fits 20 M (the per-block sum, 26 M, did not): the fast edge runs the whole model
    problem = _pipeedge({"cam": 10 * M, "edge": 20 * M})
    assert solve(problem)[0].assignment == ("edge",) * 4
    # two requests in flight: 20 M, exactly the capacity, still fits
    assert solve(_pipeedge({"cam": 10 * M, "edge": 20 * M}, in_flight=2))[0].assignment == ("edge",) * 4
    inst = prepare(_pipeedge({"cam": 10 * M, "edge": 20 * M}, in_flight=3))  # 22 M does not
    assert violations(inst, Constraints(), [1, 1, 1, 1]) == ["memory of edge"]


def test_the_stage_model_rejects_what_the_per_block_sum_admitted():
    # block 0 on cam: the per-block sum says 1 + 8 = 9 M <= 10 M; its stage holds the input and the
    # 4 M cut too: 14 M
    problem = _pipeedge({"cam": 10 * M, "edge": 20 * M})
    inst = prepare(problem)
    assert violations(inst, Constraints(), [0, 1, 1, 1]) == ["memory of cam"]
    with pytest.raises(InfeasibleError, match="private-blocks 1"):  # the old model: cam 9, edge 17
        solve(problem, "latency", Constraints(private_blocks=1))
    # with 14 M on cam it fits, and edge holds blocks 1..3: 7 + 6 + (4 + 1) = 18 M
    plan = solve(_pipeedge({"cam": 14 * M, "edge": 20 * M}), "latency", Constraints(private_blocks=1))[0]
    assert plan.assignment == ("cam", "edge", "edge", "edge")


def _held(capacity: int) -> Problem:
    """Three blocks whose 4 M cuts a stage holds inside it, at most 3 M: the fast edge's whole model
    needs weights 3 + activation 2 + input and output 1 + 1, and 3 of its 8 M of inner cuts: 10 M."""
    return Problem(
        ("cam", "edge"),
        {"cam": [0.4, 0.4, 0.4], "edge": [0.01, 0.01, 0.01]},
        cut_bytes=[4 * M, 4 * M],
        input_bytes=1 * M,
        output_bytes=1 * M,
        links=[Link("cam", "edge", 1e9, 0.001), Link("edge", "cam", 1e9, 0.001)],
        weight_bytes=[1 * M] * 3,
        activation_bytes=[2 * M] * 3,
        capacity_bytes={"edge": capacity},
        held_cut_cap_bytes=3 * M,
    )


def test_a_stage_holds_its_inner_cuts_up_to_the_cap():
    mem = StageMemory.of(prepare(_held(10 * M)))
    assert mem.stage(0, 2) == 10 * M  # the cap, not the 8 M of cuts inside
    assert mem.stage(0, 0) == 1 * M + 2 * M + 5 * M  # one block holds no cut of its own
    assert mem.held([(0, 1)]) == 3 * M  # its 4 M cut, capped
    assert mem.held([(0, 0), (1, 2)]) == 4 * M  # two stages: the cap twice (6 M), their cuts summed (4 M)
    for revisits in (True, False):
        for method in ("auto", "milp"):
            cons = Constraints(revisits=revisits)
            # exactly the need fits: the MILP's minimum takes the cap (the cuts' 8 M would not fit)
            at_capacity = solve(_held(10 * M), "latency", cons, method=method)[0]
            assert at_capacity.assignment == ("edge",) * 3, (revisits, method)
            # half a megabyte less does not: without the held cuts (7 M) it would
            plan = solve(_held(int(9.5 * M)), "latency", cons, method=method)[0]
            assert plan.assignment != ("edge",) * 3, (revisits, method)
            assert fits(_held(int(9.5 * M)), [("cam", "edge").index(d) for d in plan.assignment])
        # the MILP's rows alone, not re-checked: they hold the cuts too
        inst = prepare(_held(int(9.5 * M)))
        spec = spec_for(inst, Constraints(), np.ones((3, 2), dtype=bool), revisits, "latency")
        found = solve_milp(spec, 1, lambda a: True).found[0][0]
        assert found != [1, 1, 1] and fits(_held(int(9.5 * M)), found), revisits
    # the bound on a device's need counts them: large input and output, small cuts (held 2 M of 3)
    small = dataclasses.replace(_held(10 * M), cut_bytes=[1 * M, 1 * M], input_bytes=4 * M,
                                output_bytes=4 * M)
    whole = StageMemory.of(prepare(small)).stage(0, 2)
    assert whole == 3 * M + 2 * M + 8 * M + 2 * M
    for revisits in (True, False):
        assert need_bound(StageMemory.of(prepare(small)), np.ones((3, 2), dtype=bool), revisits)[1] >= whole
