"""Stages as the runtime sees them, chain checks, and deploying one pipeline onto workers.

A pipeline is one deployment of a chain of stages: stage k's outputs are
exactly stage k+1's inputs; the coordinator (standing in for the source
device) sends stage 0's inputs and receives the last stage's outputs (at the
sink device). Each stage's worker is told where to send its outputs and which
declared link to emulate on the way.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import zmq

from splitinfer.cluster import Cluster, Device
from splitinfer.compression import Compression, parse_compression
from splitinfer.errors import ClusterError, ErrorCode, ShapeError, SplitinferError, WorkerError
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.client import WorkerClient
from splitinfer.runtime.wire.curve import Keyring
from splitinfer.runtime.wire.link import LinkSender
from splitinfer.types import TensorSpec


@dataclass(frozen=True)
class LazyPart:
    """A partition whose weights stay on disk (a model over 2 GB): read in (``load``) only while it is put
    on its worker, one such stage at a time, so a deploy never holds the whole model."""

    load: Callable[[], bytes]


def part_bytes(part: bytes | LazyPart) -> bytes:
    """The partition's bytes (a LazyPart's read in now)."""
    return part.load() if isinstance(part, LazyPart) else part


# Stages whose parts are read in from disk deploy one at a time (the others in parallel).
_READING_IN = threading.Lock()


@dataclass(frozen=True)
class StageSpec:
    """One partition placed on a device."""

    index: int
    device: str  # a device name of the Cluster
    model_bytes: bytes | LazyPart  # a standalone ONNX partition (read in when deployed: LazyPart)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    compression: str = ""  # how its inputs travel to it, when they cross a link (see splitinfer.compression)
    # Early exits (graph/exits.py) it evaluates: its partition as parts (``model_bytes`` the first,
    # ``more_parts`` the rest, split after the blocks that make exits), each exit after its part.
    exits: tuple[StageExit, ...] = ()
    more_parts: tuple[bytes | LazyPart, ...] = ()
    # Its state pairs (past, present) (graph/state.py): fed and kept on its worker per sequence; the
    # rest of its inputs and outputs are what travels.
    state: tuple[tuple[str, str], ...] = ()

    @property
    def carried_inputs(self) -> tuple[TensorSpec, ...]:
        """Its inputs but its pasts: what reaches it."""
        pasts = {p for p, _ in self.state}
        return tuple(s for s in self.inputs if s.name not in pasts)

    @property
    def carried_outputs(self) -> tuple[TensorSpec, ...]:
        """Its outputs but its presents: what it sends on."""
        presents = {q for _, q in self.state}
        return tuple(s for s in self.outputs if s.name not in presents)


@dataclass(frozen=True)
class StageExit:
    """An exit a stage evaluates after its part ``part``: a request whose every sample passes the rule
    stops there (``rule_graph``: the ONNX graph of an ``onnx`` rule)."""

    output: str
    rule: str
    threshold: float = 0.0
    part: int = 0
    rule_graph: bytes = b""


def clocks_of(device: Device) -> messages.Clocks | None:
    """The clocks a device's configuration sets (``cluster.Configuration``), as its worker is told them;
    None when it sets none."""
    if not (device.cpu_max_khz or device.gpu_clocks_mhz or device.reset_clocks):
        return None
    return messages.Clocks(cpu_max_khz=device.cpu_max_khz or 0,
                           gpu_clocks_mhz=list(device.gpu_clocks_mhz or ()), restore=device.reset_clocks)


def hop_compression(stages: Sequence[StageSpec], k: int) -> str:
    """How the hop into stage ``k`` carries its tensors: the stage's ``compression``, except between
    stages on one device, which hand their outputs on as they are ('' = raw)."""
    if k and stages[k - 1].device == stages[k].device:
        return ""
    return stages[k].compression


def _describe(specs: Sequence[TensorSpec]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {s.name: (s.dtype, tuple(s.shape)) for s in specs}


def check_chain(stages: Sequence[StageSpec], cluster: Cluster) -> None:
    """Stages must be indexed 0..n-1 on known devices, chained tensor for tensor, over existing links."""
    if not stages:
        raise ClusterError("no stages to deploy", "give at least one stage")
    for k, stage in enumerate(stages):
        if stage.index != k:
            raise ClusterError(f"stage at position {k} has index {stage.index}",
                               "list stages in order with indexes 0, 1, 2, ...")
        cluster.device(stage.device)  # raises for unknown devices
        if stage.compression:
            parse_compression(stage.compression)  # PlanError naming the known ones
        if not stage.inputs or not stage.outputs:
            raise ShapeError(f"stage {k} has no inputs or no outputs", "give each stage its tensor specs")
        if k and _describe(stages[k - 1].carried_outputs) != _describe(stage.carried_inputs):
            raise ShapeError(f"stage {k - 1}'s outputs {_describe(stages[k - 1].carried_outputs)} are not "
                             f"stage {k}'s inputs {_describe(stage.carried_inputs)}",
                             "split the model so that consecutive partitions share their cut tensors")
    devices = [cluster.source, *(s.device for s in stages)]
    if cluster.sink is not None:
        devices.append(cluster.sink)
        for stage in stages:  # an early exit's result goes from its stage to the sink
            if stage.exits:
                link_shaping(cluster, stage.device, cluster.sink)
    for src, dst in itertools.pairwise(devices):
        link_shaping(cluster, src, dst)


def link_shaping(cluster: Cluster, src: str, dst: str) -> tuple[float | None, float | None]:
    """(bandwidth_bps, latency_s) to emulate from src to dst; (None, None) when free or measured."""
    if src == dst:
        return None, None
    link = cluster.link(src, dst)
    if link is None:
        raise ClusterError(f"devices {src!r} and {dst!r} are not connected",
                           "add a link between them to cluster.yaml, or place the stages elsewhere")
    if cluster.network == "netns":  # the kernel enforces the rate (runtime/netns.py); latency stays here
        return None, link.latency_s
    return link.bandwidth_bps, link.latency_s


@dataclass
class Pipeline:
    """One deployment of a chain of stages, with the coordinator's shaped uplink to stage 0."""

    deployment_id: str
    stages: tuple[StageSpec, ...]
    uplink: LinkSender
    # The tensors' bytes into each stage, then the result's, uncompressed: a hop's size where the
    # sender does not report what it sent (timing.build_timing).
    hop_bytes: tuple[int, ...]

    @functools.cached_property
    def _uplink_compression(self) -> Compression | None:
        spec = hop_compression(self.stages, 0)
        return parse_compression(spec) if spec else None  # parsed once, not per request

    def compress_inputs(self, arrays: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, Any]]:
        """The model inputs as the uplink sends them: compressed as stage 0 asks, where it can."""
        compression = self._uplink_compression
        return list(arrays) if compression is None else [(n, compression.carry(a)) for n, a in arrays]

    @property
    def devices(self) -> frozenset[str]:
        """Devices this pipeline runs on."""
        return frozenset(s.device for s in self.stages)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model inputs (stage 0's, but its pasts)."""
        return self.stages[0].carried_inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model outputs (the last stage's, but its presents)."""
        return self.stages[-1].carried_outputs


def _route(stages: Sequence[StageSpec], k: int, cluster: Cluster, addresses: Mapping[str, str],
           result_address: str, keyring: Keyring | None) -> messages.Route:
    device = stages[k].device
    if k == len(stages) - 1:
        sink = cluster.sink if cluster.sink is not None else device
        bandwidth, latency = link_shaping(cluster, device, sink)
        return messages.Route(result_address, True, bandwidth, latency, server_key=_own_key(keyring))
    nxt = stages[k + 1].device
    if nxt == device:
        return messages.Route(None)
    bandwidth, latency = link_shaping(cluster, device, nxt)
    return messages.Route(addresses[nxt], False, bandwidth, latency, hop_compression(stages, k + 1),
                          keyring.public(nxt) if keyring else "")


def _exit_rules(stage: StageSpec) -> list[messages.ExitRule]:
    rules, blob = [], 1 + len(stage.more_parts)  # rule graphs follow the parts
    for e in stage.exits:
        graph = e.rule == "onnx"
        rules.append(messages.ExitRule(e.output, e.rule, e.threshold, e.part, blob if graph else -1))
        blob += graph
    return rules


def _exit_route(stage: StageSpec, cluster: Cluster, result_address: str,
                keyring: Keyring | None) -> messages.Route | None:
    """Where a stage's early exits send their results: the coordinator, shaped as the link to the sink."""
    if not stage.exits:
        return None
    sink = cluster.sink if cluster.sink is not None else stage.device
    bandwidth, latency = link_shaping(cluster, stage.device, sink)
    return messages.Route(result_address, True, bandwidth, latency, server_key=_own_key(keyring))


def _own_key(keyring: Keyring | None) -> str:
    return keyring.own.public.decode() if keyring else ""


def _metas(specs: Sequence[TensorSpec]) -> list[messages.TensorMeta]:
    return [messages.TensorMeta(s.name, s.dtype, tuple(s.shape)) for s in specs]


def deploy_pipeline(stages: Sequence[StageSpec], cluster: Cluster, *, clients: Mapping[str, WorkerClient],
                    addresses: Mapping[str, str], result_address: str, context: zmq.Context,
                    keyring: Keyring | None = None, timeout_s: float = 120.0,
                    on_reply: object = None) -> Pipeline:
    """Deploy every stage (in parallel across workers) and open the uplink; all or nothing. With CURVE
    (``keyring``), each stage is told the public key of where it sends, and the uplink is encrypted."""
    check_chain(stages, cluster)
    deployment_id = secrets.token_hex(8)
    headers = [messages.Deploy(deployment_id=deployment_id, stage=k, device=s.device, inputs=_metas(s.inputs),
                            outputs=_metas(s.outputs),
                            route=_route(stages, k, cluster, addresses, result_address, keyring),
                            reply_to=result_address, reply_key=_own_key(keyring),
                            slowdown=cluster.device(s.device).slowdown, num_parts=1 + len(s.more_parts),
                            clocks=clocks_of(cluster.device(s.device)),
                            exits=_exit_rules(s), exit_route=_exit_route(s, cluster, result_address, keyring),
                            state=[list(p) for p in s.state])
               for k, s in enumerate(stages)]

    def deploy_one(k: int) -> None:
        stage = stages[k]
        graphs = [e.rule_graph for e in stage.exits if e.rule == "onnx"]
        parts = [stage.model_bytes, *stage.more_parts]
        lazy = any(isinstance(p, LazyPart) for p in parts)
        with _READING_IN if lazy else contextlib.nullcontext():
            deploy_by_hash(clients[stage.device], headers[k], [part_bytes(p) for p in parts], graphs,
                           timeout_s)

    with ThreadPoolExecutor(max_workers=len(stages)) as pool:
        outcomes = [pool.submit(deploy_one, k) for k in range(len(stages))]
        errors = [f.exception() for f in outcomes]
    failed = [e for e in errors if e is not None]
    if failed:
        undeploy_pipeline(deployment_id, {s.device for s in stages}, clients)
        first = failed[0]
        if isinstance(first, SplitinferError):
            raise first
        raise ClusterError(f"deploying the stages failed: {first}", "check the workers' logs") from first
    bandwidth, latency = link_shaping(cluster, cluster.source, stages[0].device)
    uplink = LinkSender(context, addresses[stages[0].device], bandwidth_bps=bandwidth, latency_s=latency,
                        on_reply=on_reply,  # type: ignore[arg-type]
                        curve=keyring.client(stages[0].device) if keyring else None)
    hop_bytes = (*(sum(t.num_bytes for t in s.carried_inputs) for s in stages),
                 sum(t.num_bytes for t in stages[-1].carried_outputs))
    return Pipeline(deployment_id, tuple(stages), uplink, hop_bytes)


def deploy_by_hash(client: WorkerClient, header: messages.Deploy, parts: Sequence[bytes],
                   rule_graphs: Sequence[bytes], timeout_s: float) -> None:
    """Deploy one stage: each part put on the worker by its SHA-256 (sent only when the worker lacks it,
    resumed where a broken transfer left it), then the deploy names them by hash; inline, as deploys
    always were, when the worker cannot keep them (an older worker, its cache off or too small). A part
    evicted between its upload and the deploy (another stage's upload made room) is put there again."""
    for attempt in range(2):
        uploads = [client.put_partition(part, timeout_s=timeout_s) for part in parts]
        if any(u is None for u in uploads):
            client.request(header, blobs=[*parts, *rule_graphs], timeout_s=timeout_s)
            return
        hashes = [u.sha256 for u in uploads if u is not None]
        try:
            client.request(msgspec.structs.replace(header, parts_sha256=hashes), blobs=list(rule_graphs),
                           timeout_s=timeout_s)
            return
        except WorkerError as e:
            if attempt or e.code != ErrorCode.MISSING_PARTITION:
                raise


def end_sequences(pipeline: Pipeline, clients: Mapping[str, WorkerClient], sequences: Sequence[str]) -> int:
    """Free ``sequences``' state on the pipeline's stages that keep some; how many states were freed."""
    freed = 0
    for device in sorted({s.device for s in pipeline.stages if s.state}):
        end = messages.EndSequences(deployment_id=pipeline.deployment_id, sequences=list(sequences))
        with contextlib.suppress(SplitinferError):  # a worker gone has freed them already
            freed += int(clients[device].request(end).header.data["num_freed"])
    return freed


def undeploy_pipeline(deployment_id: str, devices: set[str] | frozenset[str],
                      clients: Mapping[str, WorkerClient], timeout_s: float = 1.0) -> None:
    """Best effort: ask each device's worker to drop the deployment's stages."""
    for device in devices:
        with contextlib.suppress(SplitinferError):
            clients[device].undeploy(deployment_id, timeout_s=timeout_s)


def reachable_ip(address: str) -> str:
    """This machine's IP on the route to ``tcp://host:port`` (no packet is sent)."""
    host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())
