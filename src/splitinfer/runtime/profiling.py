"""Profiling a cluster through its workers.

``profile_cluster`` starts (or reaches) one worker per device, times every block
and the whole model on each device through the worker, probes the links cluster.yaml
marks ``measure: true`` (every pair when it lists no links), copies the declared
ones, and returns one :class:`Profile`; :mod:`splitinfer.runtime.refine` then
measures the chosen plan's segments::

    from splitinfer.cluster import load_cluster
    from splitinfer.runtime.profiling import profile_cluster
    cluster = load_cluster("cluster.yaml")
    profile = profile_cluster("resnet18.onnx", cluster, budget_s=20)

Devices on other machines are profiled in parallel; ``local`` devices share this
machine's CPUs, so they take turns, request by request (:class:`~.cluster_workers.Turns`:
side by side they would measure their contention; one whole device after another, each
would see this shared machine at another moment).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from splitinfer.cluster import Cluster, Device
from splitinfer.errors import ClusterError, ProfileError, SplitinferError
from splitinfer.graph import Model
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.profile.device import DeviceRecord, profile_device
from splitinfer.profile.links import (
    DEFAULT_PROBE_SIZES_BYTES,
    declared_links,
    fit_round_trips,
    links_to_measure,
    measured_link,
)
from splitinfer.profile.profiler import (
    Calibration,
    PreparedModel,
    ProfileInterrupted,
    ProfileSettings,
    ProfileWarning,
    prepare_model,
)
from splitinfer.profile.schema import HopCost, LinkProfile, Profile
from splitinfer.profile.sensitivity import Sensitivity
from splitinfer.profile.sizes import measure_sizes
from splitinfer.profile.tradeoff_profile import time_on_device, tradeoff_profile, with_tradeoffs
from splitinfer.profile.validation import validate_profile
from splitinfer.runtime.cluster_workers import ClusterWorkers, Turns, WorkerRunner, cluster_workers
from splitinfer.runtime.coordinator.pipeline import clocks_of
from splitinfer.runtime.messaging import measure_messaging
from splitinfer.runtime.wire.client import MAX_PROBE_REPEATS, MAX_PROBE_SIZES, MAX_WAIT_S
from splitinfer.runtime.wire.codec import DEFAULT_MAX_FRAME_BYTES
from splitinfer.units import check_number

DeviceProgress = Callable[[str, int, int, str], None]  # (device, items done, items in all, what runs now)


class _Stop(Exception):
    """Raised inside a device thread when the user interrupted profiling."""


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

    def __init__(self, device: Device, prepared: PreparedModel, settings: ProfileSettings,
                 workers: ClusterWorkers, stop: threading.Event, request_timeout_s: float,
                 bars: Progress | None = None,
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
        self.turns: Turns | None = None  # shared with the other local devices' jobs (_run_jobs)
        self._bars = bars
        self._task = None if bars is None else bars.add_task("waiting", total=prepared.num_blocks + 1,
                                                              device=device.name)

    def _progress(self, done: int, total: int, what: str) -> None:
        self.show(what, done, total)
        if self.on_progress is not None:
            self.on_progress(self.device.name, done, total, what)
        if self.stop.is_set():
            raise _Stop

    def show(self, what: str, done: int | None = None, total: int | None = None) -> None:
        """The device's bar: ``what`` it does, ``done`` of ``total`` items (None: as it was)."""
        if self._bars is not None and self._task is not None:
            self._bars.update(self._task, completed=done, total=total, description=what)

    def restart_bar(self, what: str) -> None:
        """The bar counts another kind of item from zero (the total comes with the first of them)."""
        if self._bars is not None and self._task is not None:
            self._bars.reset(self._task, total=None, description=what)

    def run(self) -> None:
        """Profile the device; a failure is kept in ``error`` (the other devices go on)."""
        turn = self.turns.hold() if self.turns is not None else contextlib.nullcontext()
        try:
            with turn, self.workers.client(self.device.name, timeout_s=self.request_timeout_s) as client:
                runner = WorkerRunner(client, self.request_timeout_s, clocks=clocks_of(self.device),
                                      turns=self.turns)
                profile_device(runner, self.prepared, self.settings,
                               slowdown=self.device.slowdown, progress=self._progress, record=self.record)
        except _Stop:
            pass
        except SplitinferError as e:  # the device is gone or refuses: keep the others
            self.error = e
            self.show(f"[red]failed: {e.problem[:60]}")


def _run_jobs(jobs: list[_DeviceJob], parallel: bool | None, stop: threading.Event) -> None:
    """Remote devices each in their own thread (a device's configurations, which share its worker and its
    clocks, one after another in it); local ones each in a thread too, taking turns request by request
    (``parallel`` False: every device one after another)."""
    if parallel is False:
        groups = [jobs]
    else:
        groups, by_address, turns = [], {}, Turns()
        for j in jobs:
            if j.device.is_local and parallel is None:
                j.turns = turns
                groups.append([j])
            else:
                by_address.setdefault(j.device.address, []).append(j)
        groups += by_address.values()

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


def _probe_links(cluster: Cluster, workers: ClusterWorkers, names: Sequence[str],
                 sizes_bytes: Sequence[int], num_repeats: int) -> list[LinkProfile]:
    """Probe the pairs cluster.yaml wants measured (see ``links_to_measure``) among ``names``."""
    links = []
    for a, b in links_to_measure(cluster):
        if a not in names or b not in names:
            continue
        try:
            with workers.client(a) as client:
                rtts = client.probe(workers.addresses[b], list(sizes_bytes), num_repeats=num_repeats,
                                    server_key=workers.server_key(b))
            links.append(measured_link(a, b, fit_round_trips(sizes_bytes, rtts)))
        except SplitinferError as e:
            warnings.warn(ProfileWarning(f"link {a}->{b} not measured: {e.problem}"), stacklevel=3)
    return links


def _measure_messaging(cluster: Cluster, workers: ClusterWorkers, names: Sequence[str],
                       large_bytes: int, stateful: bool) -> dict[str, HopCost]:
    """Each device's hop cost (``runtime/messaging.py``; ``stateful``: a decoder's, as its steps run); a
    device that cannot take the trivial stage is warned about and planned with free hops within it."""
    out = {}
    for name in names:
        try:
            out[name] = measure_messaging(cluster, name, workers.addresses, workers.token, large_bytes,
                                          stateful=stateful)
        except SplitinferError as e:
            warnings.warn(ProfileWarning(f"{name}: hops within the device not measured ({e.problem}); "
                                         "planned as free"), stacklevel=3)
    return out


def _assemble(prepared: PreparedModel, cluster: Cluster, jobs: list[_DeviceJob],
              links: list[LinkProfile], *, final: bool,
              messaging: Mapping[str, HopCost] | None = None) -> Profile:
    devices = {}
    for job in jobs:
        measured = any(b is not None for b in job.record.blocks)
        if job.error is not None or not measured:
            continue
        if not job.record.complete and final:
            continue
        device = job.record.to_device_profile(job.device.providers, job.device.num_threads,
                                              job.device.slowdown)
        hop_cost = (messaging or {}).get(job.device.name)
        devices[job.device.name] = msgspec.structs.replace(device, messaging=hop_cost)
    names = set(devices)
    links = [x for x in [*declared_links(cluster), *links] if {x.src, x.dst} <= names]
    profile = prepared.empty_profile()
    return validate_profile(msgspec.structs.replace(profile, devices=devices, links=tuple(links)))


def _time_tradeoffs(jobs: list[_DeviceJob], alive: Sequence[str], sens: Sensitivity, source: str,
                    workers: ClusterWorkers, request_timeout_s: float, profile: Profile) -> Profile:
    """Each live device's seconds for the quantised blocks and the compressions in ``sens``; a device
    that fails is left out of the trade-offs (with a warning), and the planner then says so."""
    timed = {}
    for job in jobs:
        if job.device.name not in alive:
            continue
        job.restart_bar("trade-offs")
        try:
            with workers.client(job.device.name, timeout_s=request_timeout_s) as client:
                timed[job.device.name] = time_on_device(
                    WorkerRunner(client, request_timeout_s), job.prepared, sens,
                    budget_s=job.settings.budget_s, slowdown=job.device.slowdown, settings=job.settings,
                    progress=lambda done, total, what, job=job: job.show(what, done, total))
        except SplitinferError as e:
            warnings.warn(ProfileWarning(f"device {job.device.name!r}: trade-offs not timed: {e.problem}"),
                          stacklevel=3)
    return with_tradeoffs(profile, tradeoff_profile(sens, timed, source))


def _check_probes(sizes_bytes: Sequence[int], num_repeats: int, request_timeout_s: float) -> None:
    """ProfileError naming the argument a worker would refuse (the same limits as its probe)."""
    check_number(len(sizes_bytes), "the number of probe_sizes_bytes", low=1, high=MAX_PROBE_SIZES, whole=True,
                 error=ProfileError)
    for size in sizes_bytes:
        check_number(size, "a probe_sizes_bytes entry", low=0, high=DEFAULT_MAX_FRAME_BYTES, whole=True,
                     error=ProfileError, fix="sizes in bytes")
    check_number(num_repeats, "num_probe_repeats", low=1, high=MAX_PROBE_REPEATS, whole=True,
                 error=ProfileError)
    check_number(request_timeout_s, "request_timeout_s", low=0, low_open=True, high=MAX_WAIT_S,
                 error=ProfileError, fix="seconds")


def profile_cluster(model: str | Path | bytes | Model | None, cluster: Cluster, *, token: bytes | None = None,
                    calibration: Calibration = None, max_blocks: int = DEFAULT_MAX_BLOCKS,
                    max_cut_tensors: int = DEFAULT_MAX_CUT_TENSORS,
                    input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int | None = None,
                    budget_s: float = 30.0, settings: ProfileSettings | None = None, progress: bool = True,
                    parallel: bool | None = None,
                    probe_sizes_bytes: Sequence[int] = DEFAULT_PROBE_SIZES_BYTES, num_probe_repeats: int = 5,
                    request_timeout_s: float = 60.0, on_progress: DeviceProgress | None = None,
                    prepared: PreparedModel | None = None, tradeoffs: Sensitivity | None = None,
                    tradeoffs_source: str = "", feeds: Mapping[str, np.ndarray] | None = None,
                    fixed_inputs: Mapping[str, object] | None = None,
                    sizes: Sequence[Mapping[str, Sequence[int]]] | None = None) -> Profile:
    """Profile ``model`` on every device of ``cluster`` through its worker; one profile.

    ``budget_s``: seconds of timed work per device (shared by its blocks). A device
    that fails or disappears is left out with a :class:`ProfileWarning` naming it
    (:class:`ProfileError` if none remains). Ctrl-C raises :class:`ProfileInterrupted`
    whose ``profile`` holds what was measured so far. ``parallel``: None = remote
    devices in parallel, local ones in turn; True/False = all in parallel / in turn.
    ``on_progress(device, done, total, what)`` is called (from the device's thread)
    before each block; ``prepared`` reuses a :func:`prepare_model` result (``model`` unused).
    ``tradeoffs``: a :func:`~splitinfer.profile.tradeoff_profile.sensitivity_of` result whose quantised
    blocks and compressions are then timed on every device (the profile's ``tradeoffs`` section, its
    ``calibration`` set to ``tradeoffs_source``). ``input_shapes``, ``batch``, ``feeds``,
    ``fixed_inputs`` and ``sizes`` load the model (:func:`~splitinfer.graph.load_model`); a model that
    serves several sizes is profiled at each (``Profile.other_sizes``; trade-offs at the first only).
    """
    settings = settings or ProfileSettings(budget_s=budget_s)
    _check_probes(probe_sizes_bytes, num_probe_repeats, request_timeout_s)
    cluster = _with_variants(cluster)  # before the model loads: a bad cluster fails at once
    prepared = prepared or prepare_model(model, calibration=calibration, input_shapes=input_shapes,
                                         batch=batch, max_blocks=max_blocks, max_cut_tensors=max_cut_tensors,
                                         feeds=feeds, fixed_inputs=fixed_inputs, sizes=sizes)
    with cluster_workers(cluster, token) as workers, _progress_bars(progress) as bars:
        run = _Run(settings, parallel, tuple(probe_sizes_bytes), num_probe_repeats, request_timeout_s,
                   on_progress, tradeoffs_source, workers, bars)
        return measure_sizes(prepared, lambda one: _profile_prepared(
            one, cluster, run, tradeoffs if one is prepared else None))


def _with_variants(cluster: Cluster) -> Cluster:
    """The cluster with each device configuration as a device of its own (``Cluster.variants``). A local
    variant gets its own worker, started with its threads and providers; a remote worker serves every
    variant of its device with the threads and providers it was started with, so there a configuration
    may change only what each request carries (its slowdown) and its power."""
    for d in cluster.devices:
        if d.is_local:
            continue
        for c in d.configurations:
            if c.num_threads is not None or c.providers is not None:
                raise ClusterError(f"device {d.name!r} configuration {c.name!r} changes num_threads or "
                                   "providers, but the device's worker runs elsewhere with its own",
                                   "declare it as a device of its own (a worker started with those settings)"
                                   ", or keep to clocks, slowdown and power")
    return cluster.variants() if cluster.has_configurations else cluster


@dataclass
class _Run:
    """How :func:`profile_cluster` profiles, for each size: its options, the workers, the bars."""

    settings: ProfileSettings
    parallel: bool | None
    probe_sizes_bytes: tuple[int, ...]
    num_probe_repeats: int
    request_timeout_s: float
    on_progress: DeviceProgress | None
    tradeoffs_source: str
    workers: ClusterWorkers
    bars: Progress | None


def _profile_prepared(prepared: PreparedModel, cluster: Cluster, run: _Run,
                      tradeoffs: Sensitivity | None) -> Profile:
    """:func:`profile_cluster` of one prepared model (one size) on started workers."""
    stop = threading.Event()
    jobs = [_DeviceJob(d, prepared, run.settings, run.workers, stop, run.request_timeout_s, run.bars,
                       run.on_progress)
            for d in cluster.devices]
    try:
        _run_jobs(jobs, run.parallel, stop)
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
        links = _probe_links(cluster, run.workers, alive, run.probe_sizes_bytes, run.num_probe_repeats)
        messaging = _measure_messaging(cluster, run.workers, alive, prepared.empty_profile().input_bytes,
                                       stateful=bool(prepared.model.state))
        profile = _assemble(prepared, cluster, jobs, links, final=True, messaging=messaging)
        if tradeoffs is not None:
            profile = _time_tradeoffs(jobs, alive, tradeoffs, run.tradeoffs_source, run.workers,
                                      run.request_timeout_s, profile)
    except KeyboardInterrupt:
        raise ProfileInterrupted(_assemble(prepared, cluster, jobs, [], final=False)) from None
    return profile
