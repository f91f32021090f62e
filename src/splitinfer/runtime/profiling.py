"""Profiling a cluster through its workers, and refining a plan with measured segments.

``profile_cluster`` starts (or reaches) one worker per device, times every block
and the whole model on each device through the worker, probes the links cluster.yaml
marks ``measure: true`` (every pair when it lists no links), copies the declared
ones, and returns one :class:`Profile`. ``refine`` then deploys the best plan, times
its segments (and hops) as they run and re-plans until the plan stops changing::

    from splitinfer.cluster import load_cluster
    from splitinfer.runtime.profiling import profile_cluster, refine
    cluster = load_cluster("cluster.yaml")
    profile = profile_cluster("resnet18.onnx", cluster, budget_s=20)
    plan, profile = refine(profile, cluster, "resnet18.onnx")  # segments measured, plan stable

Devices on other machines are profiled in parallel; ``local`` devices share this
machine's CPUs, so they take turns (timing them side by side would measure the
contention, not the device).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from splitinfer.cluster import Cluster, Device
from splitinfer.errors import ProfileError, SplitinferError
from splitinfer.graph import Model, extract_segment
from splitinfer.plan import Constraints, Link, Plan, Problem, describe_stages, solve
from splitinfer.profile.links import (
    DEFAULT_PROBE_SIZES_BYTES,
    declared_links,
    fit_round_trips,
    links_to_measure,
    measured_link,
)
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import (
    Calibration,
    DeviceRecord,
    PreparedModel,
    ProfileInterrupted,
    ProfileSettings,
    ProfileWarning,
    prepare_model,
    profile_device,
    profile_segments,
)
from splitinfer.profile.schema import LinkProfile, Profile, SegmentStats, validate_profile
from splitinfer.profile.segments import DEFAULT_THRESHOLD, add_segments, corrected_profile
from splitinfer.profile.timing import summarize
from splitinfer.runtime.client import ProfileResult, WorkerClient
from splitinfer.runtime.launcher import session_token, start_workers
from splitinfer.runtime.pipeline import StageSpec
from splitinfer.runtime.session import deploy_stages


class WorkerRunner:
    """A worker's client as a profiler runner, with a reply deadline sized to each request's budget."""

    def __init__(self, client: WorkerClient, request_timeout_s: float = 60.0) -> None:
        self.client = client
        self.request_timeout_s = request_timeout_s

    def profile(self, model_bytes: bytes, feeds: Mapping[str, np.ndarray], *, warmup: int, min_runs: int,
                max_runs: int, budget_s: float, rel_precision: float, slowdown: float) -> ProfileResult:
        """Time a partition on the worker (see :meth:`WorkerClient.profile`)."""
        return self.client.profile(model_bytes, feeds, warmup=warmup, min_runs=min_runs, max_runs=max_runs,
                                   budget_s=budget_s, rel_precision=rel_precision, slowdown=slowdown,
                                   timeout_s=self.request_timeout_s + 2 * budget_s)

    def info(self) -> dict[str, Any]:
        """The worker's device information."""
        return self.client.info()


DeviceProgress = Callable[[str, int, int, str], None]  # (device, items done, items in all, what runs now)


class _Stop(Exception):
    """Raised inside a device thread when the user interrupted profiling."""


@dataclass
class _Workers:
    """Running workers: addresses, token, and the launcher to close."""

    addresses: dict[str, str]
    token: bytes
    launcher: Any

    def client(self, device: str, timeout_s: float = 10.0) -> WorkerClient:
        return WorkerClient(self.addresses[device], self.token, timeout_s=timeout_s, name=device)


@contextlib.contextmanager
def _workers(cluster: Cluster, token: bytes | None, *, start: bool = True) -> Iterator[_Workers]:
    token = token if token is not None else session_token(cluster)
    if not start:  # the caller deploys sessions, which start their own workers
        yield _Workers({}, token, None)
        return
    launcher, addresses = start_workers(cluster, token)
    try:
        yield _Workers(addresses, token, launcher)
    finally:
        if launcher is not None:
            launcher.close()


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.fields[device]:>12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bars:
        yield bars


class _DeviceJob:
    """Profiling one device in a thread; its record survives an interruption or a failure."""

    def __init__(self, device: Device, prepared: PreparedModel, settings: ProfileSettings, workers: _Workers,
                 stop: threading.Event, request_timeout_s: float, bars: Progress | None = None,
                 on_progress: DeviceProgress | None = None) -> None:
        self.device = device
        self.prepared = prepared
        self.settings = settings
        self.workers = workers
        self.stop = stop
        self.request_timeout_s = request_timeout_s
        self.on_progress = on_progress
        self.record = DeviceRecord([None] * prepared.num_blocks)
        self.error: SplitinferError | None = None
        self._bars = bars
        self._task = None if bars is None else bars.add_task("waiting", total=prepared.num_blocks + 1,
                                                              device=device.name)

    def _progress(self, done: int, total: int, what: str) -> None:
        self._show(what, done)
        if self.on_progress is not None:
            self.on_progress(self.device.name, done, total, what)
        if self.stop.is_set():
            raise _Stop

    def _show(self, what: str, done: int | None = None) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.update(self._task, completed=done, description=what)

    def run(self) -> None:
        """Profile the device; a failure is kept in ``error`` (the other devices go on)."""
        try:
            with self.workers.client(self.device.name, timeout_s=self.request_timeout_s) as client:
                profile_device(WorkerRunner(client, self.request_timeout_s), self.prepared, self.settings,
                               slowdown=self.device.slowdown, progress=self._progress, record=self.record)
        except _Stop:
            pass
        except SplitinferError as e:  # the device is gone or refuses: keep the others
            self.error = e
            self._show(f"[red]failed: {e.problem[:60]}")


def _run_jobs(jobs: list[_DeviceJob], parallel: bool | None, stop: threading.Event) -> None:
    """Remote devices each in their own thread; local ones one after another in one more thread."""
    groups: list[list[_DeviceJob]] = []
    local = [j for j in jobs if j.device.is_local and parallel is not True]
    if local:
        groups.append(local)
    groups += [[j] for j in jobs if j not in local]
    if parallel is False:
        groups = [jobs]

    def run_group(group: list[_DeviceJob]) -> None:
        for job in group:
            if not stop.is_set():
                job.run()

    threads = [threading.Thread(target=run_group, args=(g,), daemon=True) for g in groups]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(5.0)  # a request in flight finishes or times out; then the thread stops
        raise


def _probe_links(cluster: Cluster, workers: _Workers, names: Sequence[str],
                 sizes_bytes: Sequence[int], num_repeats: int) -> list[LinkProfile]:
    """Probe the pairs cluster.yaml wants measured (see ``links_to_measure``) among ``names``."""
    links = []
    for a, b in links_to_measure(cluster):
        if a not in names or b not in names:
            continue
        try:
            with workers.client(a) as client:
                rtts = client.probe(workers.addresses[b], list(sizes_bytes), num_repeats=num_repeats)
            links.append(measured_link(a, b, fit_round_trips(sizes_bytes, rtts)))
        except SplitinferError as e:
            warnings.warn(ProfileWarning(f"link {a}->{b} not measured: {e.problem}"), stacklevel=3)
    return links


def _assemble(prepared: PreparedModel, cluster: Cluster, jobs: list[_DeviceJob],
              links: list[LinkProfile], *, final: bool) -> Profile:
    devices = {}
    for job in jobs:
        measured = any(b is not None for b in job.record.blocks)
        if job.error is not None or not measured:
            continue
        if not job.record.complete and final:
            continue
        devices[job.device.name] = job.record.to_device_profile(job.device.providers, job.device.threads,
                                                                 job.device.slowdown)
    names = set(devices)
    links = [x for x in [*declared_links(cluster), *links] if {x.src, x.dst} <= names]
    profile = prepared.empty_profile()
    return validate_profile(msgspec.structs.replace(profile, devices=devices, links=tuple(links)))


def profile_cluster(model: str | Path | bytes | Model | None, cluster: Cluster, *, token: bytes | None = None,
                    calibration: Calibration = None, max_blocks: int = 64, max_cut_tensors: int = 4,
                    input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int | None = None,
                    budget_s: float = 30.0, settings: ProfileSettings | None = None, progress: bool = True,
                    parallel: bool | None = None,
                    probe_sizes_bytes: Sequence[int] = DEFAULT_PROBE_SIZES_BYTES, num_probe_repeats: int = 5,
                    request_timeout_s: float = 60.0, on_progress: DeviceProgress | None = None,
                    prepared: PreparedModel | None = None) -> Profile:
    """Profile ``model`` on every device of ``cluster`` through its worker; one profile.

    ``budget_s``: seconds of timed work per device (shared by its blocks). A device
    that fails or disappears is left out with a :class:`ProfileWarning` naming it
    (:class:`ProfileError` if none remains). Ctrl-C raises :class:`ProfileInterrupted`
    whose ``profile`` holds what was measured so far. ``parallel``: None = remote
    devices in parallel, local ones in turn; True/False = all in parallel / in turn.
    ``on_progress(device, done, total, what)`` is called (from the device's thread)
    before each block; ``prepared`` reuses a :func:`prepare_model` result (``model`` unused).
    """
    settings = settings or ProfileSettings(budget_s=budget_s)
    prepared = prepared or prepare_model(model, calibration=calibration, input_shapes=input_shapes,
                                         batch=batch, max_blocks=max_blocks, max_cut_tensors=max_cut_tensors)
    stop = threading.Event()
    with _workers(cluster, token) as workers, _progress_bars(progress) as bars:
        jobs = [_DeviceJob(d, prepared, settings, workers, stop, request_timeout_s, bars, on_progress)
                for d in cluster.devices]
        try:
            _run_jobs(jobs, parallel, stop)
        except KeyboardInterrupt:
            raise ProfileInterrupted(_assemble(prepared, cluster, jobs, [], final=False)) from None
        for job in jobs:
            if job.error is not None:
                warnings.warn(ProfileWarning(f"device {job.device.name!r} left out of the profile: "
                                             f"{job.error.problem}"), stacklevel=2)
            for failure in job.record.failures:  # blocks the device cannot run: null in the profile
                warnings.warn(ProfileWarning(f"{job.device.name}: {failure}"), stacklevel=2)
        alive = [j.device.name for j in jobs if j.error is None and j.record.complete]
        if not alive:
            failed = "; ".join(f"{j.device.name}: {j.error.problem if j.error else 'stopped'}" for j in jobs)
            raise ProfileError(f"no device could be profiled ({failed})",
                               "check that the workers run and can load the model")
        try:
            links = _probe_links(cluster, workers, alive, probe_sizes_bytes, num_probe_repeats)
        except KeyboardInterrupt:
            raise ProfileInterrupted(_assemble(prepared, cluster, jobs, [], final=False)) from None
    return _assemble(prepared, cluster, jobs, links, final=True)


def _matching(prepared: PreparedModel, profile: Profile) -> None:
    if prepared.info.sha256 != profile.model.sha256 or len(prepared.blocks) != len(profile.blocks):
        raise ProfileError(f"the profile is of {profile.model.name} ({profile.model.sha256[:12]}, "
                           f"{len(profile.blocks)} blocks), the model given is {prepared.info.name} "
                           f"({prepared.info.sha256[:12]}, {len(prepared.blocks)} blocks)",
                           "refine with the model file that was profiled")


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
    stages = []
    for k, stage in enumerate(plan.stages):
        part = extract_segment(prepared.model, prepared.analysis, stage.first_block, stage.last_block)
        stages.append(StageSpec(k, stage.device, part.to_bytes(), part.inputs, part.outputs))
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
        problem = build_problem(corrected_profile(self.profile, self.threshold), self.cluster)
        return solve(_with_overheads(problem, self.overheads), self.objective, constraints)[0]

    def measure(self, plan: Plan, workers: _Workers) -> bool:
        """Time the plan's segments not timed yet; False when there was nothing to time."""
        todo = _unmeasured(plan, self.profile, single_blocks=self.pipeline)
        if self.pipeline and todo:
            links = build_problem(self.profile, self.cluster).links
            timed = time_plan(plan, self.prepared, self.cluster, links, token=workers.token,
                              num_requests=self.num_requests)
            for stage, segment in zip(plan.stages, timed.stages, strict=True):
                self.profile = add_segments(self.profile, stage.device, [segment])
            self.overheads.update(timed.hop_overheads_s)
            return True
        for device, segments in todo.items():
            slowdown = self.cluster.device(device).slowdown
            with workers.client(device, timeout_s=self.request_timeout_s) as client:
                measured = profile_segments(WorkerRunner(client, self.request_timeout_s), self.prepared,
                                            segments, self.settings, slowdown=slowdown)
            self.profile = add_segments(self.profile, device, measured)
        return bool(todo)


def refine(profile: Profile, cluster: Cluster, model: str | Path | bytes | Model | None,
           objective: str = "latency", constraints: Constraints | None = None, *,
           token: bytes | None = None, calibration: Calibration = None, max_rounds: int = 5,
           threshold: float = DEFAULT_THRESHOLD, in_pipeline: bool | None = None, num_requests: int = 20,
           budget_s: float = 10.0, settings: ProfileSettings | None = None, request_timeout_s: float = 60.0,
           prepared: PreparedModel | None = None) -> tuple[Plan, Profile]:
    """Segment refinement: plan, time the plan's segments on their devices, re-plan, until stable.

    Where a segment's time differs from its blocks' sum by more than ``threshold``,
    its blocks' costs are scaled to match (see :mod:`splitinfer.profile.segments`).
    ``in_pipeline`` (default: for every objective but throughput): time the segments
    by deploying the plan and running ``num_requests`` one at a time, as a latency
    plan runs (every stage, single blocks too), and add what each hop took beyond its
    link's latency + bytes / bandwidth (the runtime's own cost, about a millisecond on
    loopback) to that link's latency when re-planning (``plan.meta["hop_overhead_ms"]``);
    otherwise time them back to back on their workers within ``budget_s`` each round,
    as they run when the pipeline is full.
    Returns the best plan under the corrected costs and the profile with the measured
    segments recorded (its block times as measured). If the plan still changes after
    ``max_rounds``, the last one is kept with its own segments measured (a warning says so).
    """
    prepared = prepared or prepare_model(model, calibration=calibration,
                                         input_shapes=profile.model.input_shapes,
                                         max_blocks=profile.model.max_blocks,
                                         max_cut_tensors=profile.model.max_cut_tensors)
    _matching(prepared, profile)
    settings = settings or ProfileSettings(budget_s=budget_s)
    pipeline = objective != "throughput" if in_pipeline is None else in_pipeline

    refiner = _Refiner(profile, prepared, cluster, objective, threshold, pipeline, settings, num_requests,
                       request_timeout_s)
    best, measure_segments = refiner.best, refiner.measure

    plan = best(constraints)
    with _workers(cluster, token, start=not pipeline) as workers:
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
        text = ", ".join(f"{a}->{b} {t * 1000:.2f}" for (a, b), t in sorted(refiner.overheads.items()))
        plan = msgspec.structs.replace(plan, meta={**plan.meta, "hop_overhead_ms": text})
        # plans made later from the refined profile (`splitinfer plan`) include the typical overhead
        usual = max(0.0, _usual_overhead_s(refiner.overheads))
        refined = msgspec.structs.replace(refined, hop_overhead_s=refined.hop_overhead_s + usual)
    return plan, validate_profile(refined)
