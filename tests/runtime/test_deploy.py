"""deploy(): a plan of a zoo model onto 3 local workers, equal to the whole model, re-planned on failure."""

from __future__ import annotations

import itertools
import os
import signal
import time

import msgspec
import numpy as np
import psutil
import pytest
from helpers import deploy as helpers
from helpers.runtime_models import local_cluster

from splitinfer.errors import InfeasibleError, ModelError, PlanError, SplitinferError
from splitinfer.plan import Constraints, plan_to_json, with_provenance
from splitinfer.plan.memory import StageMemory
from splitinfer.plan.problem import prepare
from splitinfer.profile.blocks import cut_as_profiled
from splitinfer.profile.problem import build_problem
from splitinfer.records.plans import load_plan
from splitinfer.runtime.coordinator.deploy import Replanner, build_stages, deploy

DEVICES = ["a", "b", "c"]
DEADLINE_S = 8.0
FAST = {"timeout_s": DEADLINE_S, "heartbeat_interval_s": 0.25, "dead_after_s": 1.0, "deploy_timeout_s": 10.0}


@pytest.fixture(scope="module")
def setup():
    data = helpers.model_bytes("resnet18")
    cluster = local_cluster(DEVICES, slowdown={"a": 4.0})
    profile = helpers.fake_profile(data, cluster)
    last = len(profile.blocks) - 1
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (last, "b")])
    return data, cluster, profile, plan, helpers.reference(data)


def _children() -> set[int]:
    return {
        c.pid
        for c in psutil.Process().children(recursive=True)
        if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
    }


def _wait_dead(session, device: str, timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while device not in session.dead_devices and time.monotonic() < end:
        time.sleep(0.05)
    assert device in session.dead_devices


def test_deployed_plan_equals_the_whole_model_and_survives_failures(setup):
    data, cluster, profile, plan, ref = setup
    assert len(plan.stages) >= 2
    before = _children()
    with deploy(plan, cluster, data, profile=profile, **FAST) as session:
        assert session.plan == plan and [s.device for s in session.stages] == [s.device for s in plan.stages]
        for i in range(10):
            feeds = ref.model.make_feeds(seed=i)
            (out,) = session.run(None, feeds)
            np.testing.assert_allclose(out, ref.run(feeds)[0], atol=1e-4, rtol=0)
        assert len(session.last_timing.stages) == len(plan.stages)

        os.kill(session.worker_pids["b"], signal.SIGKILL)  # b hosts the last stage
        feeds = ref.model.make_feeds(seed=100)
        (out,) = session.run(None, feeds)  # waits through detection and the re-plan
        np.testing.assert_allclose(out, ref.run(feeds)[0], atol=1e-4, rtol=0)
        assert session.num_replans >= 1
        assert "b" not in {s.device for s in session.plan.stages}
        assert [s.device for s in session.stages] == [s.device for s in session.plan.stages]
        assert session.plan.provenance.model_sha256 == profile.model.sha256

        os.kill(session.worker_pids["c"], signal.SIGKILL)
        _wait_dead(session, "c")
        for i in range(3):  # only a is left
            feeds = ref.model.make_feeds(seed=200 + i)
            (out,) = session.run(None, feeds)
            np.testing.assert_allclose(out, ref.run(feeds)[0], atol=1e-4, rtol=0)
        assert {s.device for s in session.stages} == {"a"}

        os.kill(session.worker_pids["a"], signal.SIGKILL)  # no device remains
        start = time.monotonic()
        with pytest.raises(SplitinferError) as caught:
            session.run(None, ref.model.make_feeds(seed=300))
        assert time.monotonic() - start < DEADLINE_S
        assert "'a'" in caught.value.problem
    end = time.monotonic() + 5
    while _children() - before and time.monotonic() < end:
        time.sleep(0.05)
    assert not _children() - before, "worker processes left behind"


def test_without_a_profile_the_plan_deploys_with_default_blocks(setup, tmp_path):
    data, cluster, _, _, ref = setup
    blocks = cut_as_profiled(data, None)
    assert blocks.analysis.num_blocks > 2
    # a plan over the default blocks, written by hand: first block on a, the rest on c
    from splitinfer.plan import Hop, Plan, Stage

    n = blocks.analysis.num_blocks
    plan = Plan(
        "latency",
        (Stage("a", 0, 0, 0.001), Stage("c", 1, n - 1, 0.002)),
        (Hop("a", "c", 100, 0.0, "cut"), Hop("c", "a", 40, 0.0, "return")),
        0.003,
        0.002,
        500.0,
        140,
        0,
    )
    path = tmp_path / "plan.json"
    path.write_text(plan_to_json([plan]))
    feeds = ref.model.make_feeds(seed=7)
    with deploy(path, cluster, data, timeout_s=DEADLINE_S) as session:
        (out,) = session.run(None, feeds)
        assert [s.device for s in session.stages] == ["a", "c"]
    np.testing.assert_allclose(out, ref.run(feeds)[0], atol=1e-4, rtol=0)


def test_a_plan_for_another_model_is_refused(setup):
    data, cluster, profile, plan, _ = setup
    other = helpers.model_bytes("mobilenetv2")
    with pytest.raises(ModelError, match="profile was made for model resnet18"):
        deploy(plan, cluster, other, profile=profile)
    stamped = with_provenance(plan, model_sha256="0" * 64, model="other")
    with pytest.raises(ModelError, match="plan was made for model other"):
        deploy(stamped, cluster, data, profile=profile)


def test_a_plan_that_does_not_cover_the_blocks_is_refused(setup):
    data, cluster, profile, plan, _ = setup
    short = msgspec.structs.replace(plan, stages=plan.stages[:-1])
    with pytest.raises(PlanError, match="covers"):
        deploy(short, cluster, data, profile=profile)
    gap = msgspec.structs.replace(plan, stages=plan.stages[1:])
    with pytest.raises(PlanError, match="do not cover blocks in order"):
        deploy(gap, cluster, data, profile=profile)


def test_stages_chain_and_plan_files_load_by_rank(setup, tmp_path):
    data, _, profile, plan, _ = setup
    blocks = cut_as_profiled(data, profile)
    stages = build_stages(plan, blocks)
    for a, b in itertools.pairwise(stages):
        assert {t.name for t in a.outputs} == {t.name for t in b.inputs}
    second = msgspec.structs.replace(plan, rank=2, objective="throughput")
    path = tmp_path / "plans.json"
    path.write_text(plan_to_json([plan, second]))
    assert load_plan(path).rank == 1 and load_plan(path, rank=2).objective == "throughput"
    with pytest.raises(PlanError, match="no plan of rank 5"):
        load_plan(path, rank=5)


def test_a_replan_keeps_the_constraints_it_is_given(setup):
    data, cluster, profile, plan, ref = setup
    with deploy(
        plan, cluster, data, profile=profile, constraints=Constraints(private_blocks=1), **FAST
    ) as session:
        os.kill(session.worker_pids["b"], signal.SIGKILL)
        feeds = ref.model.make_feeds(seed=11)
        (out,) = session.run(None, feeds)
        np.testing.assert_allclose(out, ref.run(feeds)[0], atol=1e-4, rtol=0)
        first = session.plan.stages[0]
        assert session.num_replans == 1 and first.device == "a" and first.first_block == 0
        assert "b" not in {s.device for s in session.plan.stages}


def test_a_replan_holds_as_many_requests_in_flight_as_the_plan_was_made_for(setup):
    data, cluster, profile, plan, _ = setup
    blocks = cut_as_profiled(data, profile)
    inst = prepare(build_problem(profile, cluster))
    buffers = inst.input_bytes + inst.output_bytes  # one more request held by a one-stage plan
    whole = StageMemory.of(inst).stage(0, inst.num_blocks - 1)
    # c alone is left: it fits the whole model with one request in flight, not with two
    tight = msgspec.structs.replace(cluster, devices=tuple(
        msgspec.structs.replace(d, memory_bytes=int(whole + buffers / 2)) for d in cluster.devices))
    one = Replanner(plan, blocks, profile, tight)
    assert one(frozenset({"a", "b"})).plan.stages[0].device == "c"
    two = Replanner(with_provenance(plan, in_flight=2), blocks, profile, tight)
    with pytest.raises(InfeasibleError):  # two requests in flight do not fit on c
        two(frozenset({"a", "b"}))
