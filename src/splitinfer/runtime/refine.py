"""Segment refinement: time the chosen plan's segments as they really run, re-plan until stable.

A segment often runs faster than the sum of its blocks, and each hop costs the
runtime a little beyond its link's latency + bytes / bandwidth. ``refine`` plans,
deploys the best plan (or times its segments on the workers), records what it
measured in the profile and plans again until the plan stops changing::

    from splitinfer.runtime.profiling import profile_cluster
    from splitinfer.runtime.refine import refine
    profile = profile_cluster("resnet18.onnx", cluster, budget_s=20)
    plan, profile = refine(profile, cluster, "resnet18.onnx")  # segments measured, plan stable

Refinement is a correction: the figures a plan predicted before it ever ran are
the ones to quote for fidelity. A correction is confirmed before it is kept: a segment
whose measured median moved its prediction by more than the threshold is timed twice
more, and of the three samples the one with the middle median is kept
(:func:`middle_of`). A burst of load on a shared machine (another process, a thermal
step) lasts seconds and inflates every run of one timing alike, so a sample's own spread
and outlier rule (``profile/rounds.py``) do not see it; the middle of three ignores one
burst. The lower of two would too, but a stage also moves from deploy to deploy in both
directions (mobilenetv2 on the emulated camera: 61.5-65.8 ms over four deploys), and the
lower of two takes that low side. Fusion and cold caches, what refinement is for, show in
all three.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from splitinfer.cluster import Cluster
from splitinfer.errors import ProfileError
from splitinfer.graph import Model
from splitinfer.plan import Constraints, Link, Plan, Problem, describe_stages, solve, with_provenance
from splitinfer.plan.provenance import HopOverhead
from splitinfer.profile.blocks import Blocks, check_as_profiled, cut_as_profiled
from splitinfer.profile.device import profile_segments
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import (
    Calibration,
    PreparedModel,
    ProfileSettings,
    ProfileWarning,
    prepare_model,
)
from splitinfer.profile.schema import Profile, SegmentStats
from splitinfer.profile.segments import DEFAULT_THRESHOLD, add_segments
from splitinfer.profile.timing import summarize
from splitinfer.profile.validation import validate_profile
from splitinfer.runtime.cluster_workers import ClusterWorkers, WorkerRunner, cluster_workers
from splitinfer.runtime.coordinator.deploy import build_stages, deploy_stages


def _unmeasured(plan: Plan, profile: Profile, single_blocks: bool) -> dict[str, list[tuple[int, int]]]:
    todo: dict[str, list[tuple[int, int]]] = {}
    for stage in plan.stages:
        have = {(s.first_block, s.last_block) for s in profile.devices[stage.device].segments}
        key = (stage.first_block, stage.last_block)
        if (single_blocks or stage.first_block != stage.last_block) and key not in have:
            todo.setdefault(stage.device, []).append(key)
    return todo


@dataclass
class PlanTiming:
    """A plan as it ran: each stage's busy time, and what each hop took beyond its link's prediction."""

    stages: list[SegmentStats]
    hop_overheads_s: dict[tuple[str, str], float]  # (src, dst) -> median of measured - predicted seconds


def time_plan(plan: Plan, prepared: PreparedModel, cluster: Cluster, links: Sequence[Link], *,
              token: bytes | None = None, num_requests: int = 20, num_warmup: int = 3) -> PlanTiming:
    """Deploy ``plan`` and time its stages and hops as they run in the pipeline (one request at a time).

    A stage's time is its busy time (compute plus emulated slowdown): between requests a
    device idles while the others work, so each run starts with cold caches, a fixed
    fraction of a millisecond that back-to-back profiling never sees (it decides the fate
    of small stages). A hop's overhead is its measured time minus ``latency + bytes /
    bandwidth`` of its link in ``links``: the runtime's own cost of moving a message.
    """
    stages = build_stages(plan, Blocks(prepared.model, prepared.analysis))
    by_pair = {(x.src, x.dst): x for x in links}
    busy: list[list[float]] = [[] for _ in stages]
    extra: dict[tuple[str, str], list[float]] = {}
    with deploy_stages(stages, cluster, token=token) as session:
        for i in range(num_warmup + num_requests):
            session.run(None, prepared.whole_feeds)
            timing = session.last_timing
            if i < num_warmup or timing is None or timing.num_attempts != 1:
                continue
            for k, stage_timing in enumerate(timing.stages):
                busy[k].append(stage_timing.busy_s)
            for hop in timing.hops:
                link = by_pair.get((hop.src, hop.dst))
                if link is not None:
                    predicted = link.latency_s + hop.num_bytes / link.bandwidth_bps
                    extra.setdefault((hop.src, hop.dst), []).append(hop.transfer_s - predicted)
    if not all(busy):
        raise ProfileError(f"no request of {describe_stages(plan)} ran without a retry",
                           "check the workers (a device failed while its stages were timed)")
    return PlanTiming([SegmentStats(s.first_block, s.last_block, summarize(times))
                       for s, times in zip(plan.stages, busy, strict=True)],
                      {pair: float(np.median(v)) for pair, v in extra.items()})


CONFIRMATIONS = 2  # more timings of a correction to confirm: the middle of three ignores one burst


def to_confirm(measured: Sequence[SegmentStats], predicted_s: Sequence[float], threshold: float) -> list[int]:
    """The indices of the ``measured`` segments whose median differs from its prediction by more
    than ``threshold`` (relative): the corrections to confirm before they are kept."""
    return [k for k, (m, p) in enumerate(zip(measured, predicted_s, strict=True))
            if p > 0 and abs(m.stats.median_s / p - 1.0) > threshold]


def middle_of(samples: Sequence[Any], key: Callable[[Any], float] = lambda g: g.stats.median_s) -> Any:
    """Of samples of one thing, the one whose ``key`` (a segment's median) is the middle (the lower middle
    of an even number): the module's confirmation, and how a benchmark picks one of a plan's deploys."""
    ordered = sorted(samples, key=key)
    return ordered[(len(ordered) - 1) // 2]


def _confirmed(timings: Sequence[PlanTiming]) -> PlanTiming:
    """Timings of one plan joined: per stage the middle sample, per hop the median overhead."""
    hops: dict[tuple[str, str], list[float]] = {}
    for timing in timings:
        for pair, t in timing.hop_overheads_s.items():
            hops.setdefault(pair, []).append(t)
    return PlanTiming([middle_of(samples) for samples in zip(*(t.stages for t in timings), strict=True)],
                      {pair: float(np.median(v)) for pair, v in hops.items()})


def _usual_overhead_s(overheads_s: Mapping[tuple[str, str], float]) -> float:
    """The median measured per-hop overhead: what a link not measured yet is assumed to cost."""
    return float(np.median(list(overheads_s.values())))


def _with_overheads(problem: Problem, overheads_s: Mapping[tuple[str, str], float]) -> Problem:
    """Links whose latency includes the runtime's measured per-hop cost (pairs not seen yet: the median)."""
    if not overheads_s:
        return problem
    usual = _usual_overhead_s(overheads_s)
    links = [dataclasses.replace(x, latency_s=x.latency_s + max(0.0, overheads_s.get((x.src, x.dst), usual)))
             for x in problem.links]
    return dataclasses.replace(problem, links=links)


@dataclass
class _Refiner:
    """The state of one refinement: the profile with the segments measured so far, the hop overheads."""

    profile: Profile
    prepared: PreparedModel
    cluster: Cluster
    objective: str
    threshold: float
    pipeline: bool  # time segments in a deployed pipeline (else back to back on the workers)
    settings: ProfileSettings
    num_requests: int
    request_timeout_s: float
    overheads: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)  # per-hop runtime cost

    def best(self, constraints: Constraints | None) -> Plan:
        """The best plan under the corrected block costs and link latencies."""
        problem = build_problem(self.profile, self.cluster, threshold=self.threshold)  # it corrects
        return solve(_with_overheads(problem, self.overheads), self.objective, constraints)[0]

    def measure(self, plan: Plan, workers: ClusterWorkers) -> bool:
        """Time the plan's segments not timed yet; False when there was nothing to time."""
        todo = _unmeasured(plan, self.profile, single_blocks=self.pipeline)
        if self.pipeline and todo:
            links = build_problem(self.profile, self.cluster).links
            timed = time_plan(plan, self.prepared, self.cluster, links, token=workers.token,
                              num_requests=self.num_requests)
            if to_confirm(timed.stages, [s.compute_s for s in plan.stages], self.threshold):  # confirm it
                timed = _confirmed([timed, *(time_plan(plan, self.prepared, self.cluster, links,
                                                       token=workers.token, num_requests=self.num_requests)
                                             for _ in range(CONFIRMATIONS))])
            for stage, segment in zip(plan.stages, timed.stages, strict=True):
                self.profile = add_segments(self.profile, stage.device, [segment])
            self.overheads.update(timed.hop_overheads_s)
            return True
        predicted = {(s.device, s.first_block, s.last_block): s.compute_s for s in plan.stages}
        for device, segments in todo.items():
            measured = self._time_segments(device, segments, workers)
            again = to_confirm(measured, [predicted[(device, *g)] for g in segments], self.threshold)
            if again:  # confirm those corrections
                more = [self._time_segments(device, [segments[k] for k in again], workers)
                        for _ in range(CONFIRMATIONS)]
                for i, k in enumerate(again):
                    measured[k] = middle_of([measured[k], *(m[i] for m in more)])
            self.profile = add_segments(self.profile, device, measured)
        return bool(todo)

    def _time_segments(self, device: str, segments: list[tuple[int, int]],
                       workers: ClusterWorkers) -> list[SegmentStats]:
        """Time ``segments`` back to back on ``device``'s worker."""
        slowdown = self.cluster.device(device).slowdown
        with workers.client(device, timeout_s=self.request_timeout_s) as client:
            return profile_segments(WorkerRunner(client, self.request_timeout_s), self.prepared,
                                    segments, self.settings, slowdown=slowdown)


def refine(profile: Profile, cluster: Cluster, model: str | Path | bytes | Model | None,
           objective: str = "latency", constraints: Constraints | None = None, *,
           token: bytes | None = None, calibration: Calibration = None, max_rounds: int = 5,
           threshold: float = DEFAULT_THRESHOLD, in_pipeline: bool | None = None, num_requests: int = 20,
           budget_s: float = 10.0, settings: ProfileSettings | None = None, request_timeout_s: float = 60.0,
           prepared: PreparedModel | None = None) -> tuple[Plan, Profile]:
    """Segment refinement: plan, time the plan's segments on their devices, re-plan, until stable.

    Where a segment's time differs from its blocks' sum by more than ``threshold``,
    its blocks' costs are scaled to match (see :mod:`splitinfer.profile.segments`), once
    three timings confirmed it (their middle is kept: the module's confirmation).
    ``in_pipeline`` (default: for every objective but throughput): time the segments
    by deploying the plan and running ``num_requests`` one at a time, as a latency
    plan runs (every stage, single blocks too), and add what each hop took beyond its
    link's latency + bytes / bandwidth (the runtime's own cost, about a millisecond on
    loopback) to that link's latency when re-planning (``plan.provenance.hop_overheads``);
    otherwise time them back to back on their workers within ``budget_s`` each round,
    as they run when the pipeline is full.
    Returns the best plan under the corrected costs and the profile with the measured
    segments recorded (its block times as measured). If the plan still changes after
    ``max_rounds``, the last one is kept with its own segments measured (a warning says so).
    """
    if cluster.has_configurations:  # a segment is timed on a device as one configuration runs it
        raise ProfileError("refinement does not choose device configurations yet",
                           "plan with the configurations without refining, or refine a cluster without them")
    if prepared is None:
        if model is None:
            raise ProfileError("no model to refine", "give the model file that was profiled")
        blocks = cut_as_profiled(model, profile)  # another model fails here, before its calibration runs
        prepared = prepare_model(blocks.model, calibration=calibration, max_blocks=profile.model.max_blocks,
                                 max_cut_tensors=profile.model.max_cut_tensors)
    else:
        check_as_profiled(Blocks(prepared.model, prepared.analysis), profile)
    settings = settings or ProfileSettings(budget_s=budget_s)
    pipeline = objective != "throughput" if in_pipeline is None else in_pipeline

    refiner = _Refiner(profile, prepared, cluster, objective, threshold, pipeline, settings, num_requests,
                       request_timeout_s)
    best, measure_segments = refiner.best, refiner.measure

    plan = best(constraints)
    with cluster_workers(cluster, token, start=not pipeline) as workers:
        for _ in range(max_rounds):
            if not measure_segments(plan, workers):
                break
            plan = best(constraints)
        else:
            # Not stable within max_rounds: keep this plan, but with its own segments measured.
            if measure_segments(plan, workers):
                pins = tuple(enumerate(plan.assignment))
                plan = best(dataclasses.replace(constraints or Constraints(), pins=pins))
                warnings.warn(ProfileWarning(f"the plan did not settle in {max_rounds} rounds of segment "
                                             f"refinement: keeping {describe_stages(plan)}"), stacklevel=2)
    refined = refiner.profile
    if refiner.overheads:  # say what the hop predictions include beyond the links' own figures
        overheads = tuple(HopOverhead(a, b, t) for (a, b), t in sorted(refiner.overheads.items()))
        plan = with_provenance(plan, hop_overheads=overheads)
        # plans made later from the refined profile (`splitinfer plan`) include the typical overhead
        usual = max(0.0, _usual_overhead_s(refiner.overheads))
        refined = msgspec.structs.replace(refined, hop_overhead_s=refined.hop_overhead_s + usual)
    return plan, validate_profile(refined)
