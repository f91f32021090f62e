"""Profiling a cluster through real workers on loopback, segment refinement, devices that vanish, Ctrl-C."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import msgspec
import psutil
import pytest

from splitinfer import zoo
from splitinfer.cluster import Device, parse_cluster
from splitinfer.errors import ModelError, ProfileError
from splitinfer.plan import Constraints
from splitinfer.profile.files import decode_profile, encode_profile
from splitinfer.profile.profiler import ProfileInterrupted, ProfileSettings, ProfileWarning, prepare_model
from splitinfer.profile.segments import corrected_profile, joins_of
from splitinfer.runtime import refine as refine_module
from splitinfer.runtime.cluster_workers import Turns
from splitinfer.runtime.launch.local import launch_local_workers
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.runtime.refine import refine

FAST = ProfileSettings(budget_s=0.5, num_warmup=1, min_runs=5, max_runs=40)
CLUSTER = {
    "devices": [{"name": "camera", "num_threads": 1, "slowdown": 3}, {"name": "edge", "num_threads": 1},
                {"name": "cloud", "num_threads": 1}],
    "links": [{"from": "camera", "to": "edge", "bandwidth": "20Mbit/s", "latency": "5ms"},
              {"from": "edge", "to": "cloud", "measure": True}],
}


@pytest.fixture(scope="module")
def prepared():
    # blocks of 0.1-0.3 ms: big enough that timer and scheduler noise do not swamp a 3x slowdown
    return prepare_model(zoo.build("resnet18", width=0.25, resolution=128).SerializeToString(), max_blocks=6)


@pytest.fixture(scope="module")
def profiled(prepared):
    cluster = parse_cluster(CLUSTER)
    return cluster, profile_cluster(None, cluster, prepared=prepared, settings=FAST, progress=False)


def test_every_device_profiled_and_the_file_round_trips(profiled):
    _, profile = profiled
    assert set(profile.devices) == {"camera", "edge", "cloud"}
    for name, device in profile.devices.items():
        assert all(b is not None and b.median_s > 0 for b in device.blocks), name
        assert device.whole_model is not None and device.whole_model.median_s > 0
        assert device.memory_bytes and device.memory_bytes > 0
        assert device.num_threads == 1 and device.host.get("complete") is None
        assert device.versions["onnxruntime"]
    assert profile.devices["camera"].host["slowdown"] == 3
    assert decode_profile(encode_profile(profile)) == profile


def test_every_device_has_its_hop_cost_measured_through_its_worker(profiled):
    _, profile = profiled
    for name, device in profile.devices.items():
        m = device.messaging
        assert m is not None and m.n > 0, name
        # a loopback hop: more than nothing, well under the 5 ms of the slowest link declared here
        assert 1e-6 < m.fixed_s < 5e-3 and 0 <= m.s_per_byte < 1e-7, (name, m)


def test_slowdown_3_profiles_about_3x_slower(profiled):
    _, profile = profiled
    # p10: the runs least disturbed by whatever else this machine runs (blocks take ~30 us here)
    slow = sum(b.p10_s for b in profile.devices["camera"].blocks)
    fast = sum(b.p10_s for b in profile.devices["edge"].blocks)
    # Above 3 on a loaded machine: the emulated wait's sleep overshoots what these tiny blocks take
    # (4.6x was seen in a full CI run); slowdown ignored (1x) or applied twice (9x) still fails.
    assert 2.0 < slow / fast < 7.0


def test_declared_links_verbatim_and_measured_links_fitted(profiled):
    _, profile = profiled
    links = {(x.src, x.dst): x for x in profile.links}
    assert set(links) == {("camera", "edge"), ("edge", "camera"), ("edge", "cloud"), ("cloud", "edge")}
    declared = links[("camera", "edge")]
    assert (declared.source, declared.bandwidth_bps, declared.latency_s) == ("declared", 2.5e6, 0.005)
    for key in (("edge", "cloud"), ("cloud", "edge")):
        link = links[key]
        assert link.source == "measured" and link.r2 is not None
        assert link.latency_s < 0.01 and link.bandwidth_bps > 5e7  # loopback: fast, whatever the noise


@pytest.mark.parametrize("in_pipeline", [True, False], ids=["in-pipeline", "on-workers"])
def test_refine_measures_the_plans_segments_until_stable(profiled, prepared, in_pipeline):
    cluster, profile = profiled
    plan, refined = refine(profile, cluster, None, prepared=prepared, settings=FAST, in_pipeline=in_pipeline,
                           num_requests=8)
    fixed = corrected_profile(refined)
    cuts = [b.cut_bytes for b in refined.blocks]
    for stage in plan.stages:
        if stage.first_block == stage.last_block and not in_pipeline:
            continue  # on the workers, a one-block segment is the block itself
        segments = {(s.first_block, s.last_block): s for s in refined.devices[stage.device].segments}
        assert (stage.first_block, stage.last_block) in segments
        blocks = fixed.devices[stage.device].blocks[stage.first_block:stage.last_block + 1]
        joins = joins_of(refined.devices[stage.device], cuts)[stage.first_block:stage.last_block]
        assert stage.compute_s == pytest.approx(sum(b.median_s for b in blocks) + sum(joins))
    assert [d.blocks for d in refined.devices.values()] == [d.blocks for d in profile.devices.values()]
    if not in_pipeline:
        assert plan.provenance.hop_overheads == ()
        assert refined.hop_overhead_s == profile.hop_overhead_s
    elif any(s.device != cluster.source for s in plan.stages):  # its hops ran: their overhead is known
        assert plan.provenance.hop_overheads
        assert refined.hop_overhead_s > 0  # kept in the profile, so later plans include it


def _inflated(timing, factor):
    """``timing`` as a burst of load would have left it: every stage ``factor`` slower."""
    stages = [msgspec.structs.replace(
        s, stats=msgspec.structs.replace(s.stats, median_s=s.stats.median_s * factor)) for s in timing.stages]
    return refine_module.PlanTiming(stages, {k: v + 0.05 for k, v in timing.hop_overheads_s.items()})


@pytest.mark.parametrize("in_pipeline", [True, False], ids=["in-pipeline", "on-workers"])
def test_refine_confirms_a_correction_so_a_burst_of_load_is_not_kept(profiled, prepared, monkeypatch,
                                                                     in_pipeline):
    # A burst of load lasts seconds and inflates every run of one timing alike (its spread stays narrow):
    # here the first timing of the plan comes back 3x slow, as if another process had taken the cores.
    cluster, profile = profiled
    samples = []
    if in_pipeline:
        real = refine_module.time_plan

        def fake(*args, **kwargs):
            timed = real(*args, **kwargs)
            samples.append(timed if samples else _inflated(timed, 3.0))
            return samples[-1]
        monkeypatch.setattr(refine_module, "time_plan", fake)
    else:
        real = refine_module.profile_segments

        def fake(*args, **kwargs):
            measured = real(*args, **kwargs)
            factor = 1.0 if samples else 3.0
            samples.append([msgspec.structs.replace(g, stats=msgspec.structs.replace(
                g.stats, median_s=g.stats.median_s * factor)) for g in measured])
            return list(samples[-1])
        monkeypatch.setattr(refine_module, "profile_segments", fake)
    pins = ((5, "edge"),)  # a hop, whose overhead the burst inflated too
    _, refined = refine(_without_segments(profile), cluster, None, "latency", Constraints(pins=pins),
                        prepared=prepared, settings=FAST, in_pipeline=in_pipeline, num_requests=8)
    assert len(samples) >= 3  # the inflated timing was confirmed by two more
    burst = samples[0].stages if in_pipeline else samples[0]
    for segment in burst:
        kept = [g for d in refined.devices.values() for g in d.segments
                if (g.first_block, g.last_block) == (segment.first_block, segment.last_block)]
        assert kept and all(g.stats.median_s < segment.stats.median_s for g in kept), segment
    if in_pipeline:
        assert samples[0].hop_overheads_s
        assert refined.hop_overhead_s < profile.hop_overhead_s + 0.05  # nor the burst's hops


def test_a_correction_is_confirmed_only_where_it_moves_a_stage_past_the_threshold():
    from splitinfer.profile.schema import SegmentStats
    from splitinfer.profile.timing import summarize

    def seg(ms):
        return SegmentStats(0, 1, summarize([ms / 1e3] * 5))
    measured = [seg(10.4), seg(11.0), seg(9.0), seg(10.0)]
    assert refine_module.to_confirm(measured, [0.010, 0.010, 0.010, 0.0], 0.05) == [1, 2]
    # one burst (30) is ignored, and neither is the low side of the deploys' own noise taken (10)
    assert refine_module.middle_of([seg(11.0), seg(10.0), seg(30.0)]) == seg(11.0)
    assert refine_module.middle_of([seg(30.0), seg(11.5), seg(11.0)]) == seg(11.5)
    assert refine_module.middle_of([seg(11.0), seg(10.0)]) == seg(10.0)


def test_refine_that_does_not_settle_keeps_its_last_plan_measured(profiled, prepared):
    cluster, profile = profiled
    with pytest.warns(ProfileWarning, match="did not settle in 0 rounds"):
        plan, refined = refine(_without_segments(profile), cluster, None, prepared=prepared, settings=FAST,
                               max_rounds=0)
    multi = [s for s in plan.stages if s.first_block < s.last_block]
    assert multi  # 6 blocks: some stage holds several
    for stage in multi:
        assert any((g.first_block, g.last_block) == (stage.first_block, stage.last_block)
                   for g in refined.devices[stage.device].segments)


def test_refine_refuses_another_model_or_other_blocks_before_any_worker_starts(profiled, prepared):
    cluster, profile = profiled
    before = psutil.Process().children(recursive=True)
    with pytest.raises(ModelError, match="profile was made for model"):
        refine(profile, cluster, zoo.build_small("mobilenetv2").SerializeToString())
    other_blocks = prepare_model(prepared.model, max_blocks=3)
    with pytest.raises(ModelError, match="splits into 3 blocks here, the profile has 6"):
        refine(profile, cluster, None, prepared=other_blocks)
    assert psutil.Process().children(recursive=True) == before


def _without_segments(profile):
    return msgspec.structs.replace(profile, devices={
        n: msgspec.structs.replace(d, segments=()) for n, d in profile.devices.items()})


def test_a_device_that_disappears_is_named_and_the_others_kept(prepared):
    token = b"t" * 32
    with launch_local_workers([Device("gone", num_threads=1)], token) as remote:
        pid = remote.pids["gone"]
        cluster = parse_cluster({"devices": [{"name": "here", "num_threads": 1},
                                             {"name": "gone", "address": remote.workers["gone"].address}]})

        def kill_as_the_blocks_go(device: str, done: int, total: int, what: str) -> None:
            if device == "gone" and done == 0:  # as the blocks are sent to it
                os.kill(pid, signal.SIGKILL)
                psutil.Process(pid).wait(5)

        with pytest.warns(ProfileWarning, match="device 'gone' left out of the profile: worker gone did not"):
            profile = profile_cluster(None, cluster, token=token, prepared=prepared, settings=FAST,
                                      progress=False, request_timeout_s=1.0,
                                      on_progress=kill_as_the_blocks_go)
    assert list(profile.devices) == ["here"]
    assert all(b is not None for b in profile.devices["here"].blocks)


def test_no_device_left_is_an_error(prepared):
    cluster = parse_cluster({"devices": [{"name": "nowhere", "address": "tcp://127.0.0.1:9"}]})
    with pytest.raises(ProfileError, match=r"no device could be profiled.*nowhere"), \
            pytest.warns(ProfileWarning, match="nowhere"):
        profile_cluster(None, cluster, prepared=prepared, settings=FAST, progress=False,
                        request_timeout_s=1.0)


def test_ctrl_c_keeps_what_was_measured(prepared):
    cluster = parse_cluster({"devices": [{"name": "a", "num_threads": 1}, {"name": "b", "num_threads": 1}]})

    def interrupt_at_the_pairs(device: str, done: int, total: int, what: str) -> None:
        if device == "a" and what.startswith("blocks 0-1"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # the main thread takes the signal and sets stop: the pairs are not timed

    with pytest.raises(ProfileInterrupted) as caught:
        profile_cluster(None, cluster, prepared=prepared, settings=dataclasses.replace(FAST, pairs=True),
                        progress=False, on_progress=interrupt_at_the_pairs)
    partial = caught.value.profile
    # local devices take turns request by request: b timed its blocks while a waited for its pairs
    assert partial is not None and list(partial.devices) == ["a", "b"]
    for device in partial.devices.values():
        assert device.host["complete"] is False and device.pairs == ()
        assert all(b is not None for b in device.blocks) and device.run_overhead is not None
    assert decode_profile(encode_profile(partial)) == partial


def test_local_devices_take_turns_request_by_request(prepared):
    cluster = parse_cluster({"devices": [{"name": n, "num_threads": 1} for n in "abc"]})
    settings = dataclasses.replace(FAST, pairs=True)

    def requests(**kwargs) -> list[str]:
        """The device of each timing request (blocks, then pairs), as it starts."""
        devices: list[str] = []
        profile = profile_cluster(None, cluster, prepared=prepared, settings=settings, progress=False,
                                  on_progress=lambda d, _done, _total, what: devices.append(d)
                                  if "in rounds" in what else None, **kwargs)
        assert list(profile.devices) == ["a", "b", "c"]
        return devices

    assert requests() == ["a", "b", "c", "a", "b", "c"]  # in turns, not device by device
    assert requests(parallel=False) == ["a", "a", "b", "b", "c", "c"]


def test_turns_go_round_first_come_first_served():
    turns = Turns()
    order: list[tuple[str, int]] = []
    ready = threading.Barrier(3)

    def device(name: str) -> None:
        ready.wait()
        with turns.hold():
            for k in range(4):
                if not order:
                    time.sleep(0.2)  # the first holder keeps the turn until the others wait for it
                order.append((name, k))
                turns.pass_on()

    threads = [threading.Thread(target=device, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(order) == 12
    for k in range(4):  # each round: every device once, in the order they first asked
        assert [n for n, _ in order[3 * k:3 * k + 3]] == [n for n, _ in order[:3]]
        assert {j for _, j in order[3 * k:3 * k + 3]} == {k}


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"probe_sizes_bytes": []}, "the number of probe_sizes_bytes is 0"),
    ({"probe_sizes_bytes": [-1]}, "a probe_sizes_bytes entry is -1"),
    ({"probe_sizes_bytes": [1 << 40]}, "a probe_sizes_bytes entry is"),
    ({"num_probe_repeats": 0}, "num_probe_repeats is 0"),
    ({"num_probe_repeats": 10**7}, "num_probe_repeats is"),
    ({"request_timeout_s": float("nan")}, "request_timeout_s is nan"),
    ({"budget_s": float("inf")}, "ProfileSettings.budget_s is inf"),
])
def test_probe_and_budget_arguments_out_of_range_are_refused_before_any_worker_starts(kwargs, problem):
    cluster = parse_cluster({"devices": [{"name": "a", "num_threads": 1}]})
    with pytest.raises(ProfileError) as caught:
        profile_cluster(None, cluster, progress=False, **kwargs)  # no model: refused before it is read
    assert caught.value.problem.startswith(problem) and caught.value.fix.startswith("use a ")
