"""A worker's control requests: deploy, undeploy, device info, time a partition or compressions, probe,
resources (sampled by :mod:`._resources`).

These run on the worker's control thread, so building an ONNX Runtime session
or timing a partition never holds up the IO thread (health stays answered).
Handlers see their worker only through :class:`DeviceContext` and return the
reply's data; the worker sends it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import zmq

from splitinfer.cluster import MAX_LATENCY_S, MAX_SLOWDOWN
from splitinfer.compression import parse_compression
from splitinfer.errors import AuthError, ErrorCode, PlanError, TransportError, WorkerError, first_line
from splitinfer.graph.inference import create_inference_session
from splitinfer.host import host_info, max_num_threads, release_freed_memory, returning_freed_memory
from splitinfer.profile.partition_timing import (
    MAX_COMPRESSIONS,
    MAX_TIMED_PARTITIONS,
    MAX_TIMED_RUNS,
    PartitionFailure,
    PartitionTiming,
    timing_to_wire,
)
from splitinfer.profile.timing import (
    MAX_PARTITION_BUDGET_S,
    MAX_REST_S,
    MAX_RUNS,
    MAX_WARMUP,
    time_compression,
    time_partitions,
)
from splitinfer.runtime.device._clocks import ClockControl
from splitinfer.runtime.device._execution import StageRunner, check_signature
from splitinfer.runtime.device._exits import ExitingRunner, exiting_runner
from splitinfer.runtime.device._partitions import PartitionStore, handle_partition, with_parts
from splitinfer.runtime.device._resources import ResourceSampler
from splitinfer.runtime.device._stages import StageTable
from splitinfer.runtime.device._state import with_state
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.client import MAX_PROBE_REPEATS, MAX_PROBE_SIZES, MAX_PROBE_TIMEOUT_S
from splitinfer.runtime.wire.codec import DEFAULT_MAX_FRAME_BYTES
from splitinfer.runtime.wire.curve import Curve, KeyPair
from splitinfer.runtime.wire.messages import Message
from splitinfer.runtime.wire.replay import ReplayGuard
from splitinfer.runtime.wire.sockets import connect_dealer
from splitinfer.types import TensorSpec
from splitinfer.units import check_address, check_number

MAX_STAGE = 10_000  # a stage index beyond any pipeline
MAX_PARTS = 64  # a stage's parts (and its exits): more exits than any model has
_MAX_COMPRESSION_CHARS = 100  # a compression's text form: a name and a setting or two

MAX_CPU_KHZ = 100_000_000  # 100 GHz: no CPU clock is higher
MAX_GPU_MHZ = 100_000


@dataclass(frozen=True)
class DeviceContext:
    """What control handlers may use of their worker: its identity, options, stage table and sockets."""

    name: str
    address: str
    providers: tuple[str, ...]
    num_threads: int
    stages: StageTable
    context: zmq.Context
    token: bytes | None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    keys: KeyPair | None = None  # this worker's CURVE pair (None: plain TCP)
    mac_tensors: bool = False  # the token's MAC covers tensor and model bytes too
    resources: ResourceSampler = field(default_factory=ResourceSampler)  # sampling starts when asked
    clocks: ClockControl = field(default_factory=ClockControl)  # a configuration's clocks (DVFS)
    partitions: PartitionStore | None = None  # partitions kept on disk (device/_partitions.py)

    def curve_to(self, server_key: str, address: str) -> Curve | None:
        """CURVE settings to connect to ``address``, whose public key a trusted message named."""
        if self.keys is None and not server_key:
            return None
        if self.keys is None:
            raise AuthError(f"worker {self.name!r} was told a CURVE key for {address} but has no key pair",
                            "start it with --curve-secret-key and --curve-coordinator-keys")
        if not server_key:
            raise AuthError(f"worker {self.name!r} uses CURVE and was given no public key for {address}",
                            "give the coordinator a cluster.yaml with the same curve: keys")
        try:
            return Curve(self.keys, server_key.encode("ascii"))
        except UnicodeEncodeError:
            raise AuthError(f"the public key given for {address} is not Z85 text",
                            "give the 40-character key from its .key file") from None


Reply = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]  # the Done reply's data, and its tensors


def handle_control(device: DeviceContext, msg: Message) -> Reply:
    """Answer one control request (raises on failure; the caller turns that into an error reply)."""
    header = msg.header
    if isinstance(header, messages.Deploy):
        return deploy_stage(device, header, msg), []
    if isinstance(header, messages.Undeploy):
        removed = device.stages.remove(header.deployment_id)
        release_freed_memory()  # the stages' sessions: an idle worker holds none of their memory
        return {"num_removed": removed}, []
    if isinstance(header, messages.EndSequences):
        return {"num_freed": device.stages.end_sequences(header.deployment_id, header.sequences)}, []
    if isinstance(header, messages.Info):
        return device_info(device), []
    if isinstance(header, messages.TimePartition):
        return _time_partition(device, header, msg)
    if isinstance(header, messages.TimeCompression):
        return _time_compression(header, msg), []
    if isinstance(header, messages.Probe):
        return probe(device, header), []
    if isinstance(header, messages.Resources):
        return device.resources.answer(header, device.providers)
    if isinstance(header, messages.PartitionStatus | messages.PartitionChunk):
        return handle_partition(device.partitions, header, msg), []
    raise TransportError(f"a worker does not handle {type(header).__name__} messages",
                         "send one of: health, info, echo, deploy, undeploy, end_sequences, time_partition, "
                         "time_compression, probe, resources, partition_status, partition_chunk, infer, "
                         "shutdown", code=ErrorCode.UNKNOWN_KIND)


def _specs(metas: list[messages.TensorMeta]) -> tuple[TensorSpec, ...]:
    for m in metas:
        if m.dtype not in codec.ALLOWED_DTYPES:
            allowed = ", ".join(sorted(codec.ALLOWED_DTYPES))
            raise TransportError(f"stage tensor {m.name!r} has dtype {m.dtype!r}", f"use one of {allowed}",
                                 code=ErrorCode.DTYPE)
    return tuple(TensorSpec(m.name, m.dtype, tuple(m.shape)) for m in metas)


def memory_scope(header: Any) -> contextlib.AbstractContextManager[None]:
    """Where a control request runs: a partition's chunk, or a deploy (its session created, warmed up as
    profiling measured a block's first runs: profile/timing.py), with what it frees handed back to the
    system at once (host.returning_freed_memory), its message included: else a worker keeps a chunk's
    worth (4 MiB) for good, and a stage's first runs take pages the worker freed before. A timing request
    runs as a deployed stage would (its runs' buffers kept), and what it freed, its sessions and its
    message, goes back once it is done: else a worker that profiled held it until its next deploy
    (mobilenetv2's blocks timed in one process: 46-79 MB, 1 MB after), and a plan deployed after
    profiling grew it by less than its stage, or shrank it."""
    if isinstance(header, messages.PartitionChunk | messages.Deploy):
        return returning_freed_memory()
    if isinstance(header, messages.TimePartition | messages.TimeCompression):
        return _handed_back_after()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _handed_back_after() -> Iterator[None]:
    try:
        yield
    finally:
        release_freed_memory()


def deploy_stage(device: DeviceContext, header: messages.Deploy, msg: Message) -> dict[str, Any]:
    """Build the stage's ORT session once, check its signature, warm it up and install it."""
    _check_deploy(header)
    msg = with_parts(device.partitions, header, msg)  # the parts it names by hash, from this worker's disk
    rule_blobs = sum(1 for r in header.exits if r.rule == "onnx")
    if len(msg.blobs) != header.num_parts + rule_blobs:
        raise _malformed(f"deploy carries {len(msg.blobs)} blobs, not {header.num_parts + rule_blobs}",
                         "send the partition's parts, then the exits' rule graphs")
    _check_threads(device)
    inputs, outputs = _specs(header.inputs), _specs(header.outputs)
    device.clocks.apply(header.clocks)  # before the session: its warm-up runs at the new clock too
    start = time.perf_counter()
    sessions = [create_inference_session(b, device.providers, device.num_threads)
                for b in msg.blobs[:header.num_parts]]
    create_s = time.perf_counter() - start
    if header.num_parts == 1 and not header.exits:
        check_signature(sessions[0], inputs, outputs)
        runner: StageRunner | ExitingRunner = StageRunner(sessions[0], inputs, outputs, header.slowdown)
    else:
        runner = exiting_runner(header, sessions, msg.blobs, inputs, outputs, device.providers,
                                device.num_threads)
    runner = with_state(runner, header)  # a decoder's cache kept here per sequence (device/_state.py)
    try:
        warmup_s = runner.warm_up(header.num_warmup)  # in the deploy's memory_scope
    except Exception as e:  # ORT run errors: declared shapes that the partition rejects
        raise WorkerError(f"warm-up of stage {header.stage} failed: {first_line(e)}",
                          "declare the partition's real input shapes in the stage spec") from None
    device.stages.install(header, runner)
    release_freed_memory()  # the partition's bytes and their copies: not resident once the session holds it
    return {"create_s": create_s, "warmup_s": warmup_s, "address": device.address}


def _check_deploy(header: messages.Deploy) -> None:
    """TransportError (code malformed) naming the first field of a deploy that no stage can have."""
    route = header.route
    _number(header.stage, "deploy stage", low=0, high=MAX_STAGE, whole=True)
    _number(header.slowdown, "deploy slowdown", low=1, high=MAX_SLOWDOWN)
    _check_clocks(header.clocks, "deploy")
    _number(header.num_warmup, "deploy num_warmup", low=0, high=MAX_WARMUP, whole=True)
    check_address(header.reply_to, "deploy reply_to", schemes=("tcp", "ipc"), error=TransportError)
    if route.address is None and route.to_coordinator:
        raise _malformed("deploy of the last stage has no route address",
                         "give route.address: the coordinator's result address")
    _check_key(header.reply_key, "deploy reply_key")
    _check_route(route, "route")
    if route.compression:
        try:
            parse_compression(route.compression)
        except PlanError as e:
            raise _malformed(f"deploy route.compression: {e.problem}", e.fix or "") from None
    _number(header.num_parts, "deploy num_parts", low=1, high=MAX_PARTS, whole=True)
    if len(header.exits) > MAX_PARTS:
        raise _malformed(f"deploy lists {len(header.exits)} exits", f"list at most {MAX_PARTS}")
    for r in header.exits:
        _number(r.threshold, f"deploy exit {r.output!r} threshold")
    if header.exits and (header.exit_route is None or header.exit_route.address is None):
        raise _malformed("deploy has exits but no exit_route address",
                         "give exit_route: where a request that exits sends its result")
    if header.exit_route is not None:
        _check_route(header.exit_route, "exit_route")


def _check_route(route: messages.Route, what: str) -> None:
    """Where a stage sends: the address, the key of whoever listens there, the emulated shaping."""
    if route.address is not None:
        check_address(route.address, f"deploy {what}.address", schemes=("tcp", "ipc"), error=TransportError)
    _check_key(route.server_key, f"deploy {what}.server_key")
    if route.bandwidth_bps is not None:
        _number(route.bandwidth_bps, f"deploy {what}.bandwidth_bps", low=0, low_open=True)
    if route.latency_s is not None:
        _number(route.latency_s, f"deploy {what}.latency_s", low=0, high=MAX_LATENCY_S)


def _check_threads(device: DeviceContext) -> None:
    # The worker checks its threads when it starts; this covers a DeviceContext made another way.
    _number(device.num_threads, f"worker {device.name!r} num_threads", low=0, high=max_num_threads(),
            whole=True, fix="restart the worker with fewer --num-threads")


def _number(value: object, what: str, **limits: Any) -> None:
    check_number(value, what, error=TransportError, **limits)


def device_info(device: DeviceContext) -> dict[str, Any]:
    """This worker's machine (:func:`splitinfer.host.host_info`), its identity, providers and threads."""
    return {**host_info(), "name": device.name, "address": device.address, "pid": os.getpid(),
            "providers": list(device.providers), "num_threads": device.num_threads,
            "available_providers": ort.get_available_providers()}


def _check_clocks(clocks: messages.Clocks | None, kind: str) -> None:
    if clocks is None:
        return
    _number(clocks.cpu_max_khz, f"{kind} clocks.cpu_max_khz", low=0, high=MAX_CPU_KHZ, whole=True)
    if clocks.gpu_clocks_mhz and len(clocks.gpu_clocks_mhz) != 2:
        raise _malformed(f"{kind} clocks.gpu_clocks_mhz has {len(clocks.gpu_clocks_mhz)} values",
                         "give two: the memory clock and the graphics clock, in MHz")
    for mhz in clocks.gpu_clocks_mhz:
        _number(mhz, f"{kind} clocks.gpu_clocks_mhz", low=1, high=MAX_GPU_MHZ, whole=True)


def _check_timing(header: messages.TimePartition | messages.TimeCompression, kind: str) -> None:
    """The timing settings both timing requests carry, each within its range."""
    _number(header.slowdown, f"{kind} slowdown", low=1, high=MAX_SLOWDOWN)
    _number(header.num_warmup, f"{kind} num_warmup", low=0, high=MAX_WARMUP, whole=True)
    _number(header.min_runs, f"{kind} min_runs", low=1, high=MAX_RUNS, whole=True)
    _number(header.max_runs, f"{kind} max_runs", low=1, high=MAX_RUNS, whole=True)
    _number(header.budget_s, f"{kind} budget_s", low=0, high=MAX_PARTITION_BUDGET_S)
    _number(header.rel_precision, f"{kind} rel_precision", low=0, high=1)


def _time_partition(device: DeviceContext, header: messages.TimePartition, msg: Message) -> Reply:
    """Time the partitions (named by hash, then one per blob) together in rounds; each one's result."""
    msg = with_parts(device.partitions, header, msg, MAX_TIMED_PARTITIONS)
    if not 1 <= len(msg.blobs) <= MAX_TIMED_PARTITIONS:
        raise _malformed(f"time_partition carries {len(msg.blobs)} blobs",
                         f"send 1 to {MAX_TIMED_PARTITIONS} blobs: the ONNX partitions")
    if header.return_outputs and len(msg.blobs) != 1:
        raise _malformed("time_partition asks for outputs of several partitions",
                         "ask for outputs with one partition only")
    _check_timing(header, "time_partition")
    _check_clocks(header.clocks, "time_partition")
    _number(header.rest_s, "time_partition rest_s", low=0, high=MAX_REST_S)
    if len(msg.blobs) * header.max_runs > MAX_TIMED_RUNS:
        raise _malformed(f"time_partition asks for up to {len(msg.blobs)} x {header.max_runs} runs",
                         f"ask for at most {MAX_TIMED_RUNS} runs in all: fewer partitions or max_runs")
    _check_threads(device)
    device.clocks.apply(header.clocks)
    timings = time_partitions(msg.blobs, msg.arrays, providers=device.providers,
                              num_threads=device.num_threads, slowdown=header.slowdown,
                              num_warmup=header.num_warmup, min_runs=header.min_runs,
                              max_runs=header.max_runs, budget_s=header.budget_s,
                              rel_precision=header.rel_precision, rest_s=header.rest_s)
    first = timings[0]
    if len(timings) == 1 and isinstance(first, PartitionFailure):
        raise first.error  # one partition fails the request as it failed: an error reply, as ever
    data = {"partitions": [timing_to_wire(t) for t in timings], "slowdown": header.slowdown}
    return data, list(first.outputs.items()) if header.return_outputs and isinstance(first, PartitionTiming) \
        else []


def _time_compression(header: messages.TimeCompression, msg: Message) -> dict[str, Any]:
    if msg.blobs:
        raise _malformed(f"time_compression carries {len(msg.blobs)} blobs",
                         "send none: the tensors to compress travel as the message's tensors")
    _number(len(header.compressions), "time_compression's number of compressions", low=0,
            high=MAX_COMPRESSIONS, whole=True)
    for text in header.compressions:
        if len(text) > _MAX_COMPRESSION_CHARS:
            raise _malformed(f"time_compression compression {text[:40]!r}... has {len(text)} characters",
                             f"give at most {_MAX_COMPRESSION_CHARS}, e.g. int8:per_channel:axis=1")
        try:
            parse_compression(text)
        except PlanError as e:
            raise _malformed(f"time_compression compression: {e.problem}", e.fix or "") from None
    _check_timing(header, "time_compression")
    timings = time_compression(msg.arrays, header.compressions, slowdown=header.slowdown,
                               num_warmup=header.num_warmup, min_runs=header.min_runs,
                               max_runs=header.max_runs, budget_s=header.budget_s,
                               rel_precision=header.rel_precision)
    return {"timings": {text: dataclasses.asdict(t) for text, t in timings.items()},
            "slowdown": header.slowdown}


def _check_key(key: str, what: str) -> None:
    if key and (len(key) != 40 or not key.isascii()):
        raise _malformed(f"{what} has {len(key)} characters", "give the 40-character Z85 public key, or ''")


def probe(device: DeviceContext, header: messages.Probe) -> dict[str, Any]:
    """Echo round trips from here to ``header.address``, one warm-up then ``num_repeats`` per size."""
    token, max_frame_bytes = device.token, device.max_frame_bytes
    check_address(header.address, "probe address", schemes=("tcp", "ipc"), error=TransportError)
    _number(len(header.sizes_bytes), "probe's number of sizes", low=1, high=MAX_PROBE_SIZES, whole=True)
    for size in header.sizes_bytes:
        _number(size, "probe size", low=0, high=max_frame_bytes, whole=True,
                fix="sizes in bytes, at most this worker's --max-frame-bytes")
    _number(header.num_repeats, "probe num_repeats", low=1, high=MAX_PROBE_REPEATS, whole=True)
    _number(header.timeout_s, "probe timeout_s", low=0, low_open=True, high=MAX_PROBE_TIMEOUT_S)
    _check_key(header.server_key, "probe server_key")
    sock = connect_dealer(device.context, header.address, curve=device.curve_to(header.server_key,
                                                                               header.address))
    rtts: list[list[float]] = []
    replays = ReplayGuard()  # the target's signed replies, each accepted once
    try:
        rid = 0
        for size in header.sizes_bytes:
            payload = bytes(size)
            times = []
            for i in range(header.num_repeats + 1):
                rid += 1
                start = time.perf_counter()
                frames = codec.encode(messages.Echo(request_id=rid), token, blobs=[payload],
                                      mac_tensors=device.mac_tensors)
                sock.send_multipart(frames, copy=False)
                _await_echo(sock, rid, token, header, replays)
                if i:  # the first round trip also opens the connection
                    times.append(time.perf_counter() - start)
            rtts.append(times)
    finally:
        sock.close(linger=0)
    return {"address": header.address, "sizes_bytes": list(header.sizes_bytes), "rtts_s": rtts}


def _await_echo(sock: zmq.Socket, rid: int, token: bytes | None, header: messages.Probe,
                replays: ReplayGuard) -> None:
    deadline = time.perf_counter() + header.timeout_s
    while True:
        remaining_ms = int(max(0.0, deadline - time.perf_counter()) * 1000)
        if not sock.poll(remaining_ms):
            raise WorkerError(f"probe target {header.address} did not answer within {header.timeout_s} s",
                              "check that a worker listens there and that this worker can reach it")
        msg = codec.decode(sock.recv_multipart(copy=False), token)
        if token:
            if not msg.authenticated:
                continue  # not from a holder of the token: neither an answer nor a refusal
            try:
                replays.check(msg)
            except TransportError:
                continue  # a replayed reply, ignored as a late one is
        reply = msg.header
        if isinstance(reply, messages.ErrorReply):
            raise WorkerError(f"probe target {header.address} refused: {reply.problem}", reply.fix or None)
        if reply.request_id == rid:
            return


def _malformed(problem: str, fix: str) -> TransportError:
    return TransportError(problem, fix, code=ErrorCode.MALFORMED)
