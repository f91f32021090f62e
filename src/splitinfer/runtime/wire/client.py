"""A synchronous client for one worker's control requests (health, info, deploy, profile, ...).

The coordinator uses it to deploy stages and send heartbeats; the profiler
uses it to time partitions on a device and to probe links. One client per
thread (it holds a ZeroMQ socket); calls are serialised by a lock anyway.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import zmq

from splitinfer.errors import AuthError, DeadlineError, ErrorCode, TransportError, WorkerError, code_of
from splitinfer.profile.partition_timing import (
    MAX_COMPRESSIONS,
    MAX_TIMED_PARTITIONS,
    CompressionTiming,
    PartitionFailure,
    PartitionTiming,
    timing_from_wire,
)
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.curve import Curve, Keyring
from splitinfer.runtime.wire.messages import Message, error_of_reply
from splitinfer.runtime.wire.partitions import BY_HASH_MIN_BYTES, PartitionUpload, put_partition
from splitinfer.runtime.wire.replay import ReplayGuard, Sender
from splitinfer.runtime.wire.sockets import connect_dealer
from splitinfer.units import check_number

MAX_WAIT_S = 7 * 24 * 3600.0  # a reply later than a week is a mistake (and past ZeroMQ's poll limit)
# What one probe may ask of a worker: more is a mistake, and holds its control thread for hours.
MAX_PROBE_SIZES = 64
MAX_PROBE_REPEATS = 1_000
MAX_PROBE_TIMEOUT_S = 600.0
# Resource sampling (device/_resources.py): the interval's range, and the samples a worker keeps and
# sends at most (10 minutes at 0.1 s; five float64 series of that length are 240 KB).
MIN_RESOURCE_INTERVAL_S, MAX_RESOURCE_INTERVAL_S = 0.01, 10.0
MAX_RESOURCE_SAMPLES = 6000
_MAX_CPUS = 1 << 16  # more CPUs than any machine: a reply claiming more is broken
_MAX_TEXT = 300  # a reply's words kept (an error's first line)


@dataclasses.dataclass(frozen=True)
class ResourceSamples:
    """A worker's resource samples (:meth:`WorkerClient.resources`), parallel arrays of one length, times
    on this side's wall clock. GPU series are NaN where the worker read no GPU."""

    times_unix_s: np.ndarray
    cpu_percent: np.ndarray  # the worker process's: 100 = one core busy
    rss_bytes: np.ndarray
    gpu_util_percent: np.ndarray  # the whole GPU's
    gpu_memory_bytes: np.ndarray
    interval_s: float
    sampling: bool  # still sampling after this reply
    num_cpus: int
    gpu: str = ""  # which GPU ("": none)
    error: str = ""  # why sampling, or its GPU part, stopped on its own
    clock_offset_s: float = 0.0  # the worker's clock minus this side's, subtracted from its times

    @property
    def has_gpu(self) -> bool:
        return bool(np.isfinite(self.gpu_util_percent).any())


class WorkerClient:
    """Request/reply with one worker at ``address``; replies are matched by request id."""

    def __init__(self, address: str, token: bytes | None = None, *, context: zmq.Context | None = None,
                 timeout_s: float = 10.0, name: str | None = None, curve: Curve | None = None,
                 mac_tensors: bool = False) -> None:
        self.address = address
        self.token = token
        self.curve = curve  # CurveZMQ: this side's keys and the worker's public key (wire/curve.py)
        self.mac_tensors = mac_tensors  # the token's MAC covers blobs and tensors too
        self.timeout_s = check_number(timeout_s, "timeout_s", low=0, low_open=True, high=MAX_WAIT_S)
        self.name = name or address
        self._context = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = connect_dealer(self._context, address, curve=curve)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._sender = Sender()  # numbers this client's requests (wire/replay.py)
        self._replays = ReplayGuard()  # the worker's signed replies, each accepted once
        self._clock_offset_s = 0.0  # the worker's wall clock minus ours, from its last resources reply
        self.sent_bytes = 0  # every byte of every request this client sent (heads, blobs, tensors)

    @classmethod
    def to_device(cls, address: str, token: bytes | None, device: str, *, keyring: Keyring | None = None,
                  mac_tensors: bool = False, **kwargs: Any) -> WorkerClient:
        """A client for the worker of cluster device ``device``, over CURVE when ``keyring`` is given."""
        return cls(address, token, name=device, curve=keyring.client(device) if keyring else None,
                   mac_tensors=mac_tensors, **kwargs)

    def request(self, header: Any, *, blobs: Sequence[bytes | memoryview] = (),
                arrays: Sequence[tuple[str, np.ndarray]] = (), timeout_s: float | None = None) -> Message:
        """Send one request and wait for its reply; raise on error replies and timeouts."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        check_number(timeout, "timeout_s", low=0, low_open=True, high=MAX_WAIT_S)
        with self._lock:
            if self._sock is None:
                raise WorkerError(f"client for {self.name} is closed", "create a new WorkerClient")
            rid = next(self._ids)
            header = msgspec.structs.replace(header, request_id=rid)
            frames = codec.encode(header, self.token, blobs=blobs, arrays=arrays, sender=self._sender,
                                  mac_tensors=self.mac_tensors)
            self._sock.send_multipart(frames, copy=False)
            self.sent_bytes += sum(memoryview(f).nbytes for f in frames)
            deadline = time.perf_counter() + timeout
            refused: TransportError | None = None
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._sock.poll(int(remaining * 1000) + 1):
                    self._reconnect()  # drop what is queued for a peer that does not answer
                    if refused is not None:
                        raise refused  # the answer came and was refused: say why (clocks that disagree)
                    fix = "check that the worker runs and is reachable at " + self.address
                    if self.curve is not None:
                        fix += (", that it trusts this side's public key, and that its public key is the one "
                                "in cluster.yaml (a CURVE handshake that fails sends nothing)")
                    raise DeadlineError(f"worker {self.name} did not answer a {type(header).__name__} "
                                        f"request within {timeout:g} s", fix)
                reply = codec.decode(self._sock.recv_multipart(copy=False), self.token)
                if self.token and reply.authenticated:
                    try:
                        self._replays.check(reply)
                    except TransportError as e:
                        if reply.header.request_id in (rid, -1):
                            refused = e
                        continue  # a replayed reply: ignored, as a late one is
                if reply.header.request_id not in (rid, -1):
                    continue  # a late reply to an earlier, timed-out request
                if isinstance(reply.header, messages.ErrorReply):
                    raise error_of_reply(reply.header, f"worker {self.name}")
                if self.token and not reply.authenticated:
                    raise AuthError(f"reply from {self.name} has no valid token MAC",
                                    "give the worker and the coordinator the same token")
                if self.mac_tensors and self.token and (reply.blobs or reply.arrays) \
                        and not reply.tensors_authenticated:
                    raise AuthError(f"reply from {self.name} carries tensors its MAC does not cover",
                                    "start the worker with --mac-tensors, as cluster.yaml's mac_tensors asks")
                return reply

    def _reconnect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = connect_dealer(self._context, self.address, curve=self.curve)

    def health(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """Liveness figures (name, pid, uptime, queue length); needs no token."""
        return self.request(messages.Health(), timeout_s=timeout_s).header.data

    def info(self) -> dict[str, Any]:
        """Device information: CPUs, memory, providers, library versions."""
        return self.request(messages.Info()).header.data

    def clock_offset_s(self, num_repeats: int = 5) -> float:
        """The worker's clock minus this machine's (seconds): its send time of a health reply against
        the middle of the round trip, from the quickest of ``num_repeats`` (the least uncertain). A
        power log kept on the device is on its clock; windows timed there are too."""
        best: tuple[float, float] | None = None
        for _ in range(max(1, num_repeats)):
            start = time.time()
            reply = self.request(messages.Health())
            end = time.time()
            if best is None or end - start < best[0]:
                best = (end - start, reply.sent_unix_s - (start + end) / 2)
        assert best is not None
        return best[1]

    def echo(self, num_bytes: int, num_reply_bytes: int | None = None) -> float:
        """Round-trip seconds for ``num_bytes`` up and the same (or ``num_reply_bytes``) back."""
        start = time.perf_counter()
        self.request(messages.Echo(num_reply_bytes=num_reply_bytes), blobs=[bytes(num_bytes)])
        return time.perf_counter() - start

    def probe(self, address: str, sizes_bytes: Sequence[int], num_repeats: int = 5,
              timeout_s: float = 5.0, server_key: str = "") -> list[list[float]]:
        """Echo round trips measured by this worker to another worker; one list per size.
        ``server_key``: the other worker's CURVE public key (with CURVE on)."""
        check_number(len(sizes_bytes), "the number of sizes_bytes", low=1, high=MAX_PROBE_SIZES, whole=True)
        for size in sizes_bytes:
            check_number(size, "a sizes_bytes entry", low=0, whole=True)
        check_number(num_repeats, "num_repeats", low=1, high=MAX_PROBE_REPEATS, whole=True)
        check_number(timeout_s, "timeout_s", low=0, low_open=True, high=MAX_PROBE_TIMEOUT_S)
        header = messages.Probe(address=address, sizes_bytes=list(sizes_bytes), num_repeats=num_repeats,
                             timeout_s=timeout_s, server_key=server_key)
        wait_s = min(MAX_WAIT_S, timeout_s * (num_repeats + 1) * max(1, len(sizes_bytes)) + self.timeout_s)
        return self.request(header, timeout_s=wait_s).header.data["rtts_s"]

    def time_partitions(self, parts: Sequence[bytes], feeds: Mapping[str, np.ndarray], *, num_warmup: int = 3,
                        min_runs: int = 10, max_runs: int = 100, budget_s: float = 2.0,
                        rel_precision: float = 0.05, slowdown: float = 1.0, return_outputs: bool = False,
                        timeout_s: float | None = None, clocks: messages.Clocks | None = None,
                        rest_s: float = 0.0) -> list[PartitionTiming | PartitionFailure]:
        """Time partitions of one model together on the worker, in interleaved rounds
        (:func:`splitinfer.profile.timing.time_partitions`): ``feeds`` holds every tensor any takes;
        ``budget_s`` is the timed work of the set and its rests of ``rest_s`` before each run. One result
        per partition, or why it cannot run."""
        check_number(len(parts), "the number of partitions", low=1, high=MAX_TIMED_PARTITIONS, whole=True)
        header = messages.TimePartition(num_warmup=num_warmup, min_runs=min_runs, max_runs=max_runs,
                                        budget_s=budget_s, rel_precision=rel_precision, slowdown=slowdown,
                                        return_outputs=return_outputs, clocks=clocks, rest_s=rest_s)
        wait_s = timeout_s if timeout_s is not None else \
            min(MAX_WAIT_S, max(self.timeout_s, 30.0 + 3 * budget_s))
        held = self._put_large(parts, timeout_s)
        try:
            reply = self.request(msgspec.structs.replace(header, parts_sha256=held), blobs=[] if held else
                                 list(parts), arrays=list(feeds.items()), timeout_s=wait_s)
        except WorkerError as e:
            if not held or code_of(e) != ErrorCode.MISSING_PARTITION:
                raise
            # evicted between its upload and now (a cache smaller than the set): sent inline instead
            reply = self.request(header, blobs=list(parts), arrays=list(feeds.items()), timeout_s=wait_s)
        data = reply.header.data
        got = data.get("partitions") if isinstance(data, dict) else None
        if not isinstance(got, list) or len(got) != len(parts):
            raise TransportError(f"the worker timed {len(got) if isinstance(got, list) else 'no'} partitions "
                                 f"of {len(parts)}", "check the worker's splitinfer version")
        timings = [timing_from_wire(item, slowdown) for item in got]
        if return_outputs and isinstance(timings[0], PartitionTiming):
            outputs = {k: np.array(v) for k, v in reply.arrays.items()}  # own the memory past the frame
            timings[0] = dataclasses.replace(timings[0], outputs=outputs)
        return timings

    def _put_large(self, parts: Sequence[bytes], timeout_s: float | None) -> list[str]:
        """When a partition is of BY_HASH_MIN_BYTES or more, all of them put on the worker by hash (sent
        once, kept in its cache, opened there memory-mapped); their hashes, or [] to send them inline (all
        small, or a worker that cannot keep them)."""
        if all(len(p) < BY_HASH_MIN_BYTES for p in parts):
            return []
        held = []
        for part in parts:
            upload = self.put_partition(part, timeout_s=timeout_s)
            if upload is None:
                return []
            held.append(upload.sha256)
        return held

    def time_partition(self, model_bytes: bytes, feeds: Mapping[str, np.ndarray], *, num_warmup: int = 3,
                       min_runs: int = 10, max_runs: int = 100, budget_s: float = 2.0,
                       rel_precision: float = 0.05, slowdown: float = 1.0, return_outputs: bool = False,
                       timeout_s: float | None = None,
                       clocks: messages.Clocks | None = None) -> PartitionTiming:
        """Time one partition on the worker: session created untimed, warm-up, then timed runs; the
        ShapeError, ModelError or WorkerError the worker met."""
        (timing,) = self.time_partitions([model_bytes], feeds, num_warmup=num_warmup, min_runs=min_runs,
                                         max_runs=max_runs, budget_s=budget_s, rel_precision=rel_precision,
                                         slowdown=slowdown, return_outputs=return_outputs,
                                         timeout_s=timeout_s, clocks=clocks)
        if isinstance(timing, PartitionFailure):
            raise timing.error
        return timing

    def time_compression(self, arrays: Mapping[str, np.ndarray], compressions: Sequence[str], *,
                         budget_s: float = 0.5, slowdown: float = 1.0, num_warmup: int = 1, min_runs: int = 3,
                         max_runs: int = 50, rel_precision: float = 0.1,
                         timeout_s: float | None = None) -> dict[str, CompressionTiming]:
        """Time compressing and restoring ``arrays`` (one cut's tensors) with each compression on the
        worker (:func:`splitinfer.profile.timing.time_compression`), keyed by the text given."""
        check_number(len(compressions), "the number of compressions", low=0, high=MAX_COMPRESSIONS,
                     whole=True)
        check_number(budget_s, "budget_s", low=0, high=MAX_WAIT_S)
        header = messages.TimeCompression(compressions=list(compressions), num_warmup=num_warmup,
                                          min_runs=min_runs, max_runs=max_runs, budget_s=budget_s,
                                          rel_precision=rel_precision, slowdown=slowdown)
        wait_s = timeout_s if timeout_s is not None else \
            min(MAX_WAIT_S, max(self.timeout_s, 30.0 + 3 * budget_s))
        data = self.request(header, arrays=list(arrays.items()), timeout_s=wait_s).header.data
        return {text: CompressionTiming(compress_s=float(t["compress_s"]),
                                        decompress_s=float(t["decompress_s"]),
                                        wire_bytes=int(t["wire_bytes"]), raw_bytes=int(t["raw_bytes"]))
                for text, t in data["timings"].items()}

    def resources(self, since_unix_s: float = 0.0, interval_s: float = 0.1, *, stop: bool = False,
                  timeout_s: float | None = None) -> ResourceSamples:
        """The worker's resource samples taken after ``since_unix_s`` (this side's clock); the worker
        samples every ``interval_s`` from now on (``stop``: stops once it answered). Every number the
        worker sends is checked: TransportError for a reply no worker writes."""
        check_number(interval_s, "interval_s", low=MIN_RESOURCE_INTERVAL_S, high=MAX_RESOURCE_INTERVAL_S)
        check_number(since_unix_s, "since_unix_s", low=0)
        worker_since = max(0.0, since_unix_s + self._clock_offset_s)
        sent_s = time.time()
        reply = self.request(messages.Resources(since_unix_s=worker_since, interval_s=interval_s, stop=stop),
                             timeout_s=timeout_s)
        samples = _resource_samples(reply, f"worker {self.name}", sent_s, time.time())
        self._clock_offset_s = samples.clock_offset_s
        return samples

    def put_partition(self, model_bytes: bytes | memoryview,
                      timeout_s: float | None = None) -> PartitionUpload | None:
        """Make the worker hold a partition, by its SHA-256: nothing sent when it has it (cache or
        --model-dir), else its bytes in chunks from where a broken transfer left off, each chunk and the
        whole checked by hash. None when the worker cannot keep it (older, or its cache is off or too
        small): deploy it inline. A deploy then names it in ``Deploy.parts_sha256``."""
        return put_partition(self, model_bytes, timeout_s=timeout_s)

    def undeploy(self, deployment_id: str = "", timeout_s: float | None = None) -> int:
        """Remove a deployment's stages from the worker (all for ''); returns how many."""
        reply = self.request(messages.Undeploy(deployment_id=deployment_id), timeout_s=timeout_s)
        return int(reply.header.data["num_removed"])

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Ask the worker process to exit."""
        self.request(messages.Shutdown(), timeout_s=timeout_s)

    def close(self) -> None:
        """Close the socket."""
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resource_samples(reply: Message, where: str, sent_s: float, received_s: float) -> ResourceSamples:
    """A resources reply's samples, every number checked (a worker's reply is still a peer's numbers)."""
    data = reply.header.data

    def number(key: str, **limits: Any) -> float:
        return check_number(data.get(key) if isinstance(data, dict) else None, f"{where}'s resources {key}",
                            error=TransportError, **limits)

    interval_s = number("interval_s", low=MIN_RESOURCE_INTERVAL_S, high=MAX_RESOURCE_INTERVAL_S)
    num_cpus = int(number("num_cpus", low=1, high=_MAX_CPUS, whole=True))
    now_s = number("now_unix_s", low=0)
    series = []
    for name in messages.RESOURCE_SERIES:
        arr = reply.arrays.get(name)
        if arr is None or arr.dtype != np.float64 or arr.ndim != 1 or len(arr) > MAX_RESOURCE_SAMPLES \
                or (series and len(arr) != len(series[0])):
            raise TransportError(f"{where}'s resources reply has no {name} series of float64 samples like "
                                 "the others", "check the worker's splitinfer version")
        series.append(np.array(arr))  # own the memory past the frame
    times, cpu, rss, util, used = series
    checks = ((times, "time_unix_s", math.inf), (cpu, "cpu_percent", 100.0 * num_cpus),
              (rss, "rss_bytes", math.inf), (util[~np.isnan(util)], "gpu_util_percent", 100.0),
              (used[~np.isnan(used)], "gpu_memory_bytes", math.inf))  # NaN: a GPU reading missing
    for values, name, high in checks:
        if len(values):  # NaN, infinities and the range, through the extremes (NaN wins either)
            for value in (values.min(), values.max()):
                check_number(float(value), f"a {name} sample from {where}", low=0, high=high,
                             error=TransportError)
    # Shift the worker's times to this clock only when the two clocks differ by more than the round
    # trip could hide: the worker read its clock somewhere between sent_s and received_s.
    offset_s = now_s - (sent_s + received_s) / 2
    offset_s = offset_s if abs(offset_s) > received_s - sent_s else 0.0
    error, gpu = data.get("error", ""), data.get("gpu", "")
    return ResourceSamples(times - offset_s, cpu, rss, util, used, interval_s, data.get("sampling") is True,
                           num_cpus, gpu[:_MAX_TEXT] if isinstance(gpu, str) else "",
                           error[:_MAX_TEXT] if isinstance(error, str) else "", offset_s)
