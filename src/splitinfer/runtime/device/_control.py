"""A worker's control requests: deploy, undeploy, device info, time a partition, probe.

These run on the worker's control thread, so building an ONNX Runtime session
or timing a partition never holds up the IO thread (health stays answered).
Handlers see their worker only through :class:`DeviceContext` and return the
reply's data; the worker sends it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import zmq

from splitinfer.errors import ErrorCode, TransportError, WorkerError, first_line
from splitinfer.graph.inference import create_inference_session
from splitinfer.host import host_info
from splitinfer.profile.timing import time_partition
from splitinfer.runtime.device._execution import StageRunner, check_signature
from splitinfer.runtime.device._stages import StageTable
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.messages import Message
from splitinfer.runtime.wire.sockets import connect_dealer
from splitinfer.types import TensorSpec


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


Reply = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]  # the Done reply's data, and its tensors


def handle_control(device: DeviceContext, msg: Message) -> Reply:
    """Answer one control request (raises on failure; the caller turns that into an error reply)."""
    header = msg.header
    if isinstance(header, messages.Deploy):
        return deploy_stage(device, header, msg), []
    if isinstance(header, messages.Undeploy):
        return {"num_removed": device.stages.remove(header.deployment_id)}, []
    if isinstance(header, messages.Info):
        return device_info(device), []
    if isinstance(header, messages.TimePartition):
        return _time_partition(device, header, msg)
    if isinstance(header, messages.Probe):
        return probe(device.context, device.token, header), []
    raise TransportError(f"a worker does not handle {type(header).__name__} messages",
                         "send one of: health, info, echo, deploy, undeploy, time_partition, probe, infer, "
                         "shutdown", code=ErrorCode.UNKNOWN_KIND)


def _specs(metas: list[messages.TensorMeta]) -> tuple[TensorSpec, ...]:
    for m in metas:
        if m.dtype not in codec.ALLOWED_DTYPES:
            allowed = ", ".join(sorted(codec.ALLOWED_DTYPES))
            raise TransportError(f"stage tensor {m.name!r} has dtype {m.dtype!r}", f"use one of {allowed}",
                                 code=ErrorCode.DTYPE)
    return tuple(TensorSpec(m.name, m.dtype, tuple(m.shape)) for m in metas)


def deploy_stage(device: DeviceContext, header: messages.Deploy, msg: Message) -> dict[str, Any]:
    """Build the stage's ORT session once, check its signature, warm it up and install it."""
    if len(msg.blobs) != 1:
        raise _malformed(f"deploy carries {len(msg.blobs)} blobs",
                         "send exactly one blob: the ONNX partition")
    route = header.route
    if header.stage < 0 or not header.slowdown >= 1 or (route.address is None and route.to_coordinator):
        raise _malformed(f"deploy of stage {header.stage} has an invalid stage index, slowdown "
                         f"{header.slowdown} or route {route}",
                         "use stage >= 0, slowdown >= 1 and a route address for the last stage")
    inputs, outputs = _specs(header.inputs), _specs(header.outputs)
    start = time.perf_counter()
    session = create_inference_session(msg.blobs[0], device.providers, device.num_threads)
    create_s = time.perf_counter() - start
    check_signature(session, inputs, outputs)
    runner = StageRunner(session, inputs, outputs, header.slowdown)
    try:
        warmup_s = runner.warm_up(max(0, header.num_warmup))
    except Exception as e:  # ORT run errors: declared shapes that the partition rejects
        raise WorkerError(f"warm-up of stage {header.stage} failed: {first_line(e)}",
                          "declare the partition's real input shapes in the stage spec") from None
    device.stages.install(header, runner)
    return {"create_s": create_s, "warmup_s": warmup_s, "address": device.address}


def device_info(device: DeviceContext) -> dict[str, Any]:
    """This worker's machine (:func:`splitinfer.host.host_info`), its identity, providers and threads."""
    return {**host_info(), "name": device.name, "address": device.address, "pid": os.getpid(),
            "providers": list(device.providers), "num_threads": device.num_threads,
            "available_providers": ort.get_available_providers()}


def _time_partition(device: DeviceContext, header: messages.TimePartition, msg: Message) -> Reply:
    if len(msg.blobs) != 1:
        raise _malformed(f"time_partition carries {len(msg.blobs)} blobs",
                         "send exactly one blob: the ONNX partition")
    if not (header.slowdown >= 1 and header.min_runs >= 1 and header.max_runs >= 1 and header.budget_s >= 0):
        raise _malformed("time_partition has slowdown < 1, runs < 1 or a negative budget",
                         "use slowdown >= 1, min_runs/max_runs >= 1 and budget_s >= 0")
    timing = time_partition(msg.blobs[0], msg.arrays, providers=device.providers,
                            num_threads=device.num_threads, slowdown=header.slowdown,
                            num_warmup=header.num_warmup, min_runs=header.min_runs, max_runs=header.max_runs,
                            budget_s=header.budget_s, rel_precision=header.rel_precision)
    data = {"times_s": timing.times_s, "compute_times_s": timing.compute_times_s,
            "create_s": timing.create_s, "slowdown": header.slowdown}
    return data, list(timing.outputs.items()) if header.return_outputs else []


def probe(context: zmq.Context, token: bytes | None, header: messages.Probe) -> dict[str, Any]:
    """Echo round trips from here to ``header.address``, one warm-up then ``num_repeats`` per size."""
    if not header.address.startswith(("tcp://", "ipc://", "inproc://")) or header.num_repeats < 1 \
            or any(s < 0 for s in header.sizes_bytes):
        raise _malformed(f"probe of {header.address!r} with sizes {header.sizes_bytes}",
                         "give a tcp:// address, sizes >= 0 and num_repeats >= 1")
    sock = connect_dealer(context, header.address)
    rtts: list[list[float]] = []
    try:
        rid = 0
        for size in header.sizes_bytes:
            payload = bytes(size)
            times = []
            for i in range(header.num_repeats + 1):
                rid += 1
                start = time.perf_counter()
                frames = codec.encode(messages.Echo(request_id=rid), token, blobs=[payload])
                sock.send_multipart(frames, copy=False)
                _await_echo(sock, rid, token, header)
                if i:  # the first round trip also opens the connection
                    times.append(time.perf_counter() - start)
            rtts.append(times)
    finally:
        sock.close(linger=0)
    return {"address": header.address, "sizes_bytes": list(header.sizes_bytes), "rtts_s": rtts}


def _await_echo(sock: zmq.Socket, rid: int, token: bytes | None, header: messages.Probe) -> None:
    deadline = time.perf_counter() + header.timeout_s
    while True:
        remaining_ms = int(max(0.0, deadline - time.perf_counter()) * 1000)
        if not sock.poll(remaining_ms):
            raise WorkerError(f"probe target {header.address} did not answer within {header.timeout_s} s",
                              "check that a worker listens there and that this worker can reach it")
        reply = codec.decode(sock.recv_multipart(copy=False), token).header
        if isinstance(reply, messages.ErrorReply):
            raise WorkerError(f"probe target {header.address} refused: {reply.problem}", reply.fix or None)
        if reply.request_id == rid:
            return


def _malformed(problem: str, fix: str) -> TransportError:
    return TransportError(problem, fix, code=ErrorCode.MALFORMED)
