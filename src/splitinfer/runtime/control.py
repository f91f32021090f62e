"""A worker's control requests: deploy, undeploy, device info, profile, probe, shutdown.

These run on the worker's control thread, so building an ONNX Runtime session
or timing a partition never holds up the IO thread (health stays answered).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import onnxruntime as ort
import psutil
import zmq

import splitinfer
from splitinfer.errors import WorkerError, first_line
from splitinfer.runtime import codec
from splitinfer.runtime.codec import Message, wire_error
from splitinfer.runtime.execution import (
    StageRunner,
    build_session,
    check_signature,
    profile_partition,
)
from splitinfer.runtime.link import LinkSender, connect_dealer
from splitinfer.types import TensorSpec

if TYPE_CHECKING:
    from splitinfer.runtime.worker import Worker


@dataclass
class DeployedStage:
    """A stage installed on a worker."""

    header: codec.Deploy
    runner: StageRunner
    link: LinkSender | None  # None: the next stage is on this worker
    reply_link: LinkSender

    @functools.cached_property
    def where(self) -> dict[str, Any]:
        """What error replies about this stage's requests say about where they failed."""
        return {"deployment_id": self.header.deployment_id, "stage": self.header.stage}


def handle_control(worker: Worker, identity: bytes, msg: Message) -> None:
    """Answer one control request (raises on failure; the caller turns that into an error reply)."""
    header = msg.header
    rid = header.request_id
    if isinstance(header, codec.Deploy):
        data = deploy_stage(worker, header, msg)
    elif isinstance(header, codec.Undeploy):
        data = {"num_removed": undeploy(worker, header.deployment_id)}
    elif isinstance(header, codec.Info):
        data = device_info(worker)
    elif isinstance(header, codec.Profile):
        _profile(worker, identity, header, msg)
        return
    elif isinstance(header, codec.Probe):
        data = probe(worker.context, worker.token, header)
    elif isinstance(header, codec.Shutdown):
        worker.reply(identity, codec.Done(request_id=rid))
        worker.stop.set()
        return
    else:
        raise wire_error("unknown_kind", f"a worker does not handle {type(header).__name__} messages",
                         "send one of: health, info, echo, deploy, undeploy, profile, probe, infer, shutdown")
    worker.reply(identity, codec.Done(request_id=rid, data=data))


def _specs(metas: list[codec.TensorMeta]) -> tuple[TensorSpec, ...]:
    for m in metas:
        if m.dtype not in codec.ALLOWED_DTYPES:
            raise wire_error("dtype", f"stage tensor {m.name!r} has dtype {m.dtype!r}",
                             f"use one of {', '.join(sorted(codec.ALLOWED_DTYPES))}")
    return tuple(TensorSpec(m.name, m.dtype, tuple(m.shape)) for m in metas)


def deploy_stage(worker: Worker, header: codec.Deploy, msg: Message) -> dict[str, Any]:
    """Build the stage's ORT session once, check its signature, warm it up and install it."""
    if len(msg.blobs) != 1:
        raise wire_error("malformed", f"deploy carries {len(msg.blobs)} blobs",
                         "send exactly one blob: the ONNX partition")
    route = header.route
    if header.stage < 0 or header.slowdown < 1 or (route.address is None and route.to_coordinator):
        raise wire_error("malformed", f"deploy of stage {header.stage} has an invalid stage index, slowdown "
                         f"{header.slowdown} or route {route}",
                         "use stage >= 0, slowdown >= 1 and a route address for the last stage")
    inputs, outputs = _specs(header.inputs), _specs(header.outputs)
    start = time.perf_counter()
    session = build_session(msg.blobs[0], worker.config.providers, worker.config.threads)
    create_s = time.perf_counter() - start
    check_signature(session, inputs, outputs)
    runner = StageRunner(session, inputs, outputs, header.slowdown)
    try:
        warmup_s = runner.warm_up(max(0, header.num_warmup))
    except Exception as e:  # ORT run errors: declared shapes that the partition rejects
        raise WorkerError(f"warm-up of stage {header.stage} failed: {first_line(e)}",
                          "declare the partition's real input shapes in the stage spec") from None
    link = None if route.address is None else worker.acquire_link(route.address, route.bandwidth_bps,
                                                                   route.latency_s, route.to_coordinator)
    stage = DeployedStage(header, runner, link, worker.acquire_link(header.reply_to, None, None, True))
    with worker.lock:
        old = worker.stages.pop((header.deployment_id, header.stage), None)
        worker.stages[(header.deployment_id, header.stage)] = stage
    if old is not None:
        _release(worker, old)
    return {"create_s": create_s, "warmup_s": warmup_s, "address": worker.address}


def _release(worker: Worker, stage: Any) -> None:
    if stage.link is not None:
        worker.release_link(stage.link)
    worker.release_link(stage.reply_link)


def undeploy(worker: Worker, deployment_id: str) -> int:
    """Remove the stages of one deployment (all stages for ''); returns how many."""
    with worker.lock:
        keys = [k for k in worker.stages if not deployment_id or k[0] == deployment_id]
        removed = [worker.stages.pop(k) for k in keys]
    for stage in removed:
        _release(worker, stage)
    return len(removed)


def device_info(worker: Worker) -> dict[str, Any]:
    """CPU, memory, providers and library versions of this worker's machine."""
    memory = psutil.virtual_memory()
    return {
        "name": worker.config.name, "address": worker.address, "hostname": socket.gethostname(),
        "pid": os.getpid(), "num_cpus": os.cpu_count(), "num_physical_cpus": psutil.cpu_count(logical=False),
        "cpu_freq_mhz": getattr(psutil.cpu_freq(), "current", None) if hasattr(psutil, "cpu_freq") else None,
        "memory_total_bytes": memory.total, "memory_available_bytes": memory.available,
        "providers": list(worker.config.providers), "threads": worker.config.threads,
        "available_providers": ort.get_available_providers(),
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
        "versions": {"python": platform.python_version(), "onnxruntime": ort.__version__,
                     "numpy": np.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                     "msgspec": msgspec.__version__, "splitinfer": splitinfer.__version__},
    }


def _profile(worker: Worker, identity: bytes, header: codec.Profile, msg: Message) -> None:
    if len(msg.blobs) != 1:
        raise wire_error("malformed", f"profile carries {len(msg.blobs)} blobs",
                         "send exactly one blob: the ONNX partition")
    if not (header.slowdown >= 1 and header.min_runs >= 1 and header.max_runs >= 1 and header.budget_s >= 0):
        raise wire_error("malformed", "profile has slowdown < 1, runs < 1 or a negative budget",
                         "use slowdown >= 1, min_runs/max_runs >= 1 and budget_s >= 0")
    outcome = profile_partition(msg.blobs[0], msg.arrays, providers=worker.config.providers,
                                threads=worker.config.threads, slowdown=header.slowdown,
                                warmup=header.warmup, min_runs=header.min_runs, max_runs=header.max_runs,
                                budget_s=header.budget_s, rel_precision=header.rel_precision)
    data = {"times_s": outcome.times_s, "compute_times_s": outcome.compute_times_s,
            "create_s": outcome.create_s, "slowdown": header.slowdown}
    arrays = list(outcome.outputs.items()) if header.return_outputs else []
    worker.reply(identity, codec.Done(request_id=header.request_id, data=data), arrays=arrays)


def probe(context: zmq.Context, token: bytes | None, header: codec.Probe) -> dict[str, Any]:
    """Echo round trips from here to ``header.address``, one warm-up then ``num_repeats`` per size."""
    if not header.address.startswith(("tcp://", "ipc://", "inproc://")) or header.num_repeats < 1 \
            or any(s < 0 for s in header.sizes_bytes):
        raise wire_error("malformed", f"probe of {header.address!r} with sizes {header.sizes_bytes}",
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
                frames = codec.encode(codec.Echo(request_id=rid), token, blobs=[payload])
                sock.send_multipart(frames, copy=False)
                _await_echo(sock, rid, token, header)
                if i:  # the first round trip also opens the connection
                    times.append(time.perf_counter() - start)
            rtts.append(times)
    finally:
        sock.close(linger=0)
    return {"address": header.address, "sizes_bytes": list(header.sizes_bytes), "rtts_s": rtts}


def _await_echo(sock: zmq.Socket, rid: int, token: bytes | None, header: codec.Probe) -> None:
    deadline = time.perf_counter() + header.timeout_s
    while True:
        remaining_ms = int(max(0.0, deadline - time.perf_counter()) * 1000)
        if not sock.poll(remaining_ms):
            raise WorkerError(f"probe target {header.address} did not answer within {header.timeout_s} s",
                              "check that a worker listens there and that this worker can reach it")
        reply = codec.decode(sock.recv_multipart(copy=False), token).header
        if isinstance(reply, codec.ErrorReply):
            raise WorkerError(f"probe target {header.address} refused: {reply.problem}", reply.fix or None)
        if reply.request_id == rid:
            return
