"""A trade-off plan deployed on three local workers, with a real trained classifier (scikit-learn's
digits) profiled with its trade-offs: bench puts each hop's predicted bytes beside the bytes sent and
shows precisions and compressions, and when the device of a stage dies, the re-plan keeps choosing
precisions and compressions within the plan's quality budget, its stages quantised as the first."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from helpers.digits import digits
from helpers.runtime_models import local_cluster
from msgspec.structs import replace
from rich.console import Console

import splitinfer.runtime.coordinator.deploy as deploy_module
from splitinfer.cli.runtime_cmds import format_bench_table
from splitinfer.plan import describe_stages, solve_tradeoffs
from splitinfer.profile.device import profile_model
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import LocalRunner, prepare_model
from splitinfer.profile.tradeoff_profile import (
    sensitivity_of,
    time_on_device,
    tradeoff_profile,
    tradeoffs_for_planning,
    with_tradeoffs,
)
from splitinfer.runtime.bench import bench
from splitinfer.runtime.coordinator.deploy import deploy, replan_tradeoffs
from splitinfer.runtime.evaluate import chain_runner

DEVICES = ["cam", "edge", "cloud"]
FAST = {"timeout_s": 20.0, "heartbeat_interval_s": 0.25, "dead_after_s": 1.0, "deploy_timeout_s": 20.0}
BATCH = 32


def _scaled(device, factor: float):
    """The device ``factor`` times slower in everything it ran (blocks, whole model, trivial run)."""
    def slower(stats):
        return None if stats is None else replace(stats, median_s=stats.median_s * factor)

    return replace(device, blocks=tuple(slower(b) for b in device.blocks),
                   whole_model=slower(device.whole_model), run_overhead=slower(device.run_overhead))


@pytest.fixture(scope="module")
def setup():
    """The camera is the source, far too slow to compute and unable to run int8; edge and cloud are
    alike, with fp32 five times slower than int8, behind equally slow links from the camera: the
    best plan sends the input compressed to one of them and runs there in int8."""
    d = digits()
    prepared = prepare_model(d.model_bytes, batch=BATCH, calibration=d.x[:BATCH])
    profile = profile_model(None, prepared=prepared, budget_s=0.3, device_name="cam")
    sens = sensitivity_of(prepared, d.x[:128], ["int8"], ["int8", "lz4"], limit=128)
    timed = time_on_device(LocalRunner(), prepared, sens, budget_s=0.3)
    no_int8 = ({p: tuple(None for _ in times) for p, times in timed[0].items()}, timed[1])
    measured = profile.devices["cam"]
    profile = with_tradeoffs(
        replace(profile, devices={"cam": _scaled(measured, 5000), "edge": _scaled(measured, 5),
                                                  "cloud": _scaled(measured, 5)}),
        tradeoff_profile(sens, {"cam": no_int8, "edge": timed, "cloud": timed}, "digits[:128]"),
    )
    links = [{"from": a, "to": b, "bandwidth": "200KB/s", "latency": "1ms"}
             for a, b in (("cam", "edge"), ("cam", "cloud"), ("edge", "cloud"))]
    cluster = local_cluster(DEVICES, links=links)
    problem = build_problem(profile, cluster)
    budget = 0.05
    tradeoffs = tradeoffs_for_planning(profile, problem.devices, max_quality_drop=budget)
    (plan,) = solve_tradeoffs(problem, tradeoffs)
    assert plan.has_tradeoffs and "cam" not in {s.device for s in plan.stages}, describe_stages(plan)
    assert 0 < plan.quality_cost <= budget and any(s.precision == "int8" for s in plan.stages)
    return d, profile, cluster, plan


def _feeds(d, seed: int) -> dict[str, np.ndarray]:
    start = (seed * BATCH) % (len(d.x) - BATCH)
    return {"x": np.ascontiguousarray(d.x[start:start + BATCH])}


def _agreement(session, d, seeds) -> float:
    """The session's results, checked against its own stages run in this process (the same
    quantised partitions and hop compressions), and their top-1 agreement with the labels."""
    local = chain_runner(session.stages, num_threads=1)
    hits = []
    for seed in seeds:
        feeds = _feeds(d, seed)
        outputs = session.run(None, feeds)
        expected = local(feeds)
        for name, got in zip([s.name for s in session.outputs], outputs, strict=True):
            np.testing.assert_allclose(got, expected[name], atol=1e-5, rtol=0)
        probabilities = outputs[-1]
        start = (seed * BATCH) % (len(d.x) - BATCH)
        hits.append(np.argmax(probabilities, axis=1) == d.y[start:start + BATCH])
    return float(np.mean(np.concatenate(hits)))


def test_bench_shows_precisions_compressions_and_the_bytes_each_hop_sent(setup):
    d, profile, cluster, plan = setup
    with deploy(plan, cluster, d.model_bytes, profile=profile, calibration=d.x[:128], **FAST) as session:
        result = bench(session, num_requests=6, num_warmup=1, feeds=[_feeds(d, i) for i in range(4)])
    assert [s.precision for s in result.stages] == [s.precision for s in plan.stages]
    planned = {(h.src, h.dst, h.kind): h for h in plan.hops}
    assert planned, "the plan lists no hop"
    for hop in result.hops:
        if (hop.src, hop.dst, hop.kind) not in planned:
            assert hop.predicted_bytes == 0 and hop.compression == "none"  # within one device: free
            continue
        predicted = planned[hop.src, hop.dst, hop.kind]
        assert (hop.compression, hop.predicted_bytes) == (predicted.compression, predicted.num_bytes)
        if predicted.compression in ("none", "int8", "fp16"):  # their size depends only on the shape
            assert hop.num_bytes == pytest.approx(predicted.num_bytes, abs=16)
    upload = next(h for h in result.hops if h.kind == "upload")
    assert upload.compression != "none" and upload.num_bytes < BATCH * 64 * 4 // 2  # not the raw input

    console = Console(width=140, record=True)
    console.print(format_bench_table(result))
    text = console.export_text()
    for column in ("precision", "compression", "plan bytes", "sent bytes"):
        assert column in text
    assert "int8" in text and "upload hop" in text and "stage 0" in text


def test_a_replan_after_a_failure_keeps_the_trade_offs_within_the_budget(setup, monkeypatch):
    d, profile, cluster, plan = setup
    dead = plan.stages[0].device
    calibration = d.x[:128]
    built = []  # the calibration of every set of stages built (digits' int8 is dynamic: it would not show)

    def build_stages(new, blocks, calibration=None):
        built.append(calibration)
        return real_build_stages(new, blocks, calibration)

    real_build_stages = deploy_module.build_stages
    monkeypatch.setattr(deploy_module, "build_stages", build_stages)
    with deploy(plan, cluster, d.model_bytes, profile=profile, calibration=calibration, **FAST) as session:
        before = _agreement(session, d, range(3))
        os.kill(session.worker_pids[dead], signal.SIGKILL)
        after = _agreement(session, d, range(3, 9))  # waits through detection and the re-plan
        new = session.plan
        assert session.num_replans == 1 and dead not in {s.device for s in new.stages}
        assert new.has_tradeoffs, describe_stages(new)
        assert new.quality_cost is not None and new.quality_cost <= plan.quality_cost + 1e-12
        assert new.provenance == plan.provenance
        # The stages deployed are the new plan's: its compressions on the hops into them.
        upload = next((h.compression for h in new.hops if h.kind == "upload"), "none")
        assert session.stages[0].compression == ("" if upload == "none" else upload)
    assert before > 0.8 and after > 0.8
    assert len(built) == 2 and all(c is calibration for c in built)


def test_replan_tradeoffs_hold_the_plans_own_quality_cost(setup):
    _, profile, cluster, plan = setup
    tradeoffs = replan_tradeoffs(plan, profile, cluster.device_names)
    assert tradeoffs is not None and tradeoffs.max_quality_drop == plan.quality_cost
    assert {p.name for p in tradeoffs.precisions} == {"int8"}
    assert {c.name for c in tradeoffs.compressions} == {"int8", "lz4"}
    plain = replace(plan, stages=tuple(replace(s, precision="fp32") for s in plan.stages),
                    hops=tuple(replace(h, compression="none") for h in plan.hops))
    assert replan_tradeoffs(plain, profile, cluster.device_names) is None  # a plain plan re-plans plain
    devices = cluster.device_names
    assert replan_tradeoffs(plan, replace(profile, tradeoffs=None), devices) is None
    # A compression not timed on every device is not offered: any device may receive a hop.
    section = profile.tradeoffs
    partial = replace(section, compressions={
        **section.compressions,
        "lz4": replace(section.compressions["lz4"], devices={
            k: v for k, v in section.compressions["lz4"].devices.items() if k != "edge"})})
    narrowed = replan_tradeoffs(plan, replace(profile, tradeoffs=partial), devices)
    assert narrowed is not None and {c.name for c in narrowed.compressions} == {"int8"}
