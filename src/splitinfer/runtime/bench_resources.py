"""A bench's resource watch: each worker of the plan samples its CPU, memory and GPU use while the bench
runs (the ``resources`` request, ``device/_resources.py``), and the samples of the measured requests'
window become ``bench.json``'s ``resources`` (:class:`~splitinfer.records.resources.ResourceSeries`).

A worker that cannot sample (an older worker, one that does not answer) costs its series, never the
bench: its entry is empty and its ``note`` says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np

from splitinfer.errors import SplitinferError
from splitinfer.records.resources import ResourceSeries
from splitinfer.runtime.coordinator.session import Session
from splitinfer.runtime.wire.client import (
    MAX_RESOURCE_INTERVAL_S,
    MIN_RESOURCE_INTERVAL_S,
    ResourceSamples,
    WorkerClient,
)
from splitinfer.units import check_number

log = logging.getLogger("splitinfer.bench")
REQUEST_TIMEOUT_S = 5.0  # a resources reply is a copy of a buffer: a worker that takes longer is stuck


def check_interval(interval_s: float | None, what: str = "resource_interval_s") -> float | None:
    """The sampling interval, or None for no sampling (None or 0); else within the workers' range."""
    if interval_s is None or interval_s == 0:
        return None
    return float(check_number(interval_s, what, low=MIN_RESOURCE_INTERVAL_S, high=MAX_RESOURCE_INTERVAL_S,
                              fix="0 samples nothing"))


class ResourceWatch:
    """Asks each device's worker to sample every ``interval_s`` (:meth:`start`), then collects the samples
    of a window and stops them (:meth:`collect`). Closed by :meth:`collect` or :meth:`close`."""

    def __init__(self, session: Session, devices: Iterable[str], interval_s: float) -> None:
        self.interval_s = interval_s
        self.notes: dict[str, str] = {}
        self.clients: dict[str, WorkerClient] = {}
        for device in dict.fromkeys(devices):
            try:
                self.clients[device] = session.worker_client(device, timeout_s=REQUEST_TIMEOUT_S)
            except SplitinferError as e:
                self.notes[device] = f"not sampled: {e.problem}"

    def start(self) -> ResourceWatch:
        for device, client in list(self.clients.items()):
            try:
                client.resources(since_unix_s=time.time(), interval_s=self.interval_s)  # no old samples
            except SplitinferError as e:
                self._drop(device, f"not sampled: {e.line()}")
        return self

    def _drop(self, device: str, note: str) -> None:
        log.warning("resources of %s: %s", device, note)
        self.notes[device] = note
        self.clients.pop(device).close()

    def collect(self, start_unix_s: float, end_unix_s: float) -> dict[str, ResourceSeries]:
        """Per device: its samples from ``start_unix_s`` to ``end_unix_s`` (and one interval past it, where
        a sample covers the window's end), times from ``start_unix_s``; sampling stopped."""
        out: dict[str, ResourceSeries] = {}
        for device, client in list(self.clients.items()):
            try:
                samples = client.resources(since_unix_s=start_unix_s, interval_s=self.interval_s, stop=True)
            except SplitinferError as e:
                self._drop(device, f"samples lost: {e.line()}")
                continue
            out[device] = _series(samples, start_unix_s, end_unix_s)
        self.close()
        for device, note in self.notes.items():
            out[device] = ResourceSeries(interval_s=self.interval_s, note=note)
        return out

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


def _series(samples: ResourceSamples, start_unix_s: float, end_unix_s: float) -> ResourceSeries:
    times = samples.times_unix_s
    # A sample covers the interval before it: the one just after the end still belongs to the window.
    keep = (times > start_unix_s) & (times <= end_unix_s + samples.interval_s)
    gpu = samples.has_gpu and bool(np.isfinite(samples.gpu_util_percent[keep]).all())
    note = samples.error
    if not keep.any():
        note = note or f"no samples in the bench's {end_unix_s - start_unix_s:.3g} s (a busy worker, or " \
                       "an interval longer than the bench)"
    return ResourceSeries(
        interval_s=samples.interval_s, num_cpus=samples.num_cpus,
        times_s=tuple((times[keep] - start_unix_s).tolist()),
        cpu_percent=tuple(samples.cpu_percent[keep].tolist()),
        rss_bytes=tuple(int(v) for v in samples.rss_bytes[keep]),
        gpu_util_percent=tuple(samples.gpu_util_percent[keep].tolist()) if gpu else (),
        gpu_memory_bytes=tuple(int(v) for v in samples.gpu_memory_bytes[keep]) if gpu else (),
        gpu=samples.gpu if gpu else "", note=note)
