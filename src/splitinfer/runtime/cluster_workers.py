"""The cluster's workers, started for the length of a block, and a worker as a profiler runner: what
profiling and refinement share."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitinfer.cluster import Cluster
from splitinfer.profile.partition_timing import CompressionTiming, PartitionFailure, PartitionTiming
from splitinfer.runtime.launch.start import cluster_keyring, session_token, start_workers
from splitinfer.runtime.wire.client import WorkerClient
from splitinfer.runtime.wire.curve import Keyring
from splitinfer.runtime.wire.messages import Clocks


class Turns:
    """Profiles of devices that share this machine's CPUs, taken in turns request by request: one holder at
    a time, first come first served, each passing the turn on after each timing request.

    Timed side by side they would measure their contention; timed one device after the other, each
    device's profile would see this machine at another moment, and a shared machine's speed moves over
    minutes (benchmarks/bench_generation.py: one device 1.19x, another 0.99x between two profiles), so
    a plan would be made against speeds that never held together. In turns, every device's timings
    spread over the same minutes."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for the turn; hold it for the block (except while passed on)."""
        self._take()
        try:
            yield
        finally:
            self._give()

    def pass_on(self) -> None:
        """Let every holder already waiting have its turn, then take it back."""
        self._give()
        self._take()

    def _take(self) -> None:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)

    def _give(self) -> None:
        with self._changed:
            self._serving += 1
            self._changed.notify_all()


class WorkerRunner:
    """A worker's client as a profiler runner, with a reply deadline sized to each request's budget;
    with ``turns`` (held by the caller), the turn is passed on after each timing request."""

    def __init__(self, client: WorkerClient, request_timeout_s: float = 60.0,
                 clocks: Clocks | None = None, turns: Turns | None = None) -> None:
        self.client = client
        self.request_timeout_s = request_timeout_s
        self.clocks = clocks  # a configuration's clocks, set on the worker before each timing
        self.turns = turns

    def _timed(self) -> None:
        if self.turns is not None:
            self.turns.pass_on()

    def profile(self, model_bytes: bytes, feeds: Mapping[str, np.ndarray], *, num_warmup: int, min_runs: int,
                max_runs: int, budget_s: float, rel_precision: float, slowdown: float) -> PartitionTiming:
        """Time a partition on the worker (see :meth:`WorkerClient.time_partition`)."""
        timing = self.client.time_partition(
            model_bytes, feeds, num_warmup=num_warmup, min_runs=min_runs, max_runs=max_runs,
            budget_s=budget_s, rel_precision=rel_precision, slowdown=slowdown,
            timeout_s=self.request_timeout_s + 2 * budget_s, clocks=self.clocks)
        self._timed()
        return timing

    def profile_set(self, parts: Sequence[bytes], feeds: Mapping[str, np.ndarray], *, num_warmup: int,
                    min_runs: int, max_runs: int, budget_s: float, rel_precision: float,
                    slowdown: float, rest_s: float = 0.0) -> list[PartitionTiming | PartitionFailure]:
        """Time partitions together on the worker (see :meth:`WorkerClient.time_partitions`); the
        deadline allows each session's creation and the runs a wide spread adds past the budget."""
        timings = self.client.time_partitions(
            parts, feeds, num_warmup=num_warmup, min_runs=min_runs, max_runs=max_runs, budget_s=budget_s,
            rel_precision=rel_precision, slowdown=slowdown, rest_s=rest_s, clocks=self.clocks,
            timeout_s=self.request_timeout_s * (1 + len(parts) / 8) + 3 * budget_s)
        self._timed()
        return timings

    def time_compression(self, arrays: Mapping[str, np.ndarray], compressions: Sequence[str], *,
                         budget_s: float, slowdown: float) -> dict[str, CompressionTiming]:
        """Time compressions on the worker (see :meth:`WorkerClient.time_compression`)."""
        timings = self.client.time_compression(arrays, compressions, budget_s=budget_s, slowdown=slowdown,
                                               timeout_s=self.request_timeout_s + 2 * budget_s)
        self._timed()
        return timings

    def clock_offset_s(self) -> float:
        """The worker's clock minus this machine's (see :meth:`WorkerClient.clock_offset_s`)."""
        return self.client.clock_offset_s()

    def info(self) -> dict[str, Any]:
        """The worker's device information."""
        return self.client.info()


@dataclass
class ClusterWorkers:
    """Running workers: addresses, token, and the launcher to close; CURVE keys and whether the
    token's MAC covers tensors, as the cluster says."""

    addresses: dict[str, str]
    token: bytes | None
    launcher: Any
    keyring: Keyring | None = None
    mac_tensors: bool = False

    def client(self, device: str, timeout_s: float = 10.0) -> WorkerClient:
        return WorkerClient.to_device(self.addresses[device], self.token, device, keyring=self.keyring,
                                      mac_tensors=self.mac_tensors, timeout_s=timeout_s)

    def server_key(self, device: str) -> str:
        """``device``'s CURVE public key as text ('' without CURVE)."""
        return self.keyring.public(device) if self.keyring else ""


@contextlib.contextmanager
def cluster_workers(cluster: Cluster, token: bytes | None, *,
                    start: bool = True) -> Iterator[ClusterWorkers]:
    """The cluster's workers for the block (started unless ``start`` is False), closed after."""
    token = token if token is not None else session_token(cluster)
    keyring = cluster_keyring(cluster)
    if not start:  # the caller deploys sessions, which start their own workers
        yield ClusterWorkers({}, token, None, keyring, cluster.mac_tensors)
        return
    launcher, addresses = start_workers(cluster, token)
    try:
        yield ClusterWorkers(addresses, token, launcher, keyring, cluster.mac_tensors)
    finally:
        if launcher is not None:
            launcher.close()
