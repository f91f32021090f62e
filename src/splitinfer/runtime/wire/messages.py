"""The messages workers and coordinators exchange: msgspec structs, tagged by ``kind``.

A message's header is one of the structs below (encoded as msgpack by
:mod:`splitinfer.runtime.wire.codec`); tensors and blobs travel beside it. Requests
a worker answers: ``health``, ``info``, ``echo``, ``deploy``, ``undeploy``,
``time_partition``, ``time_compression``, ``probe``, ``resources``, ``shutdown``, ``partition_status``,
``partition_chunk``; on the data path:
``infer`` (a stage's inputs, worker to worker) and ``outputs`` (the last stage's, to the coordinator);
replies: ``done`` and ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import msgspec
import numpy as np

from splitinfer.errors import SplitinferError, code_of, error_from_code


class TensorMeta(msgspec.Struct, frozen=True, array_like=True):
    """Name, numpy dtype name and shape of one tensor's bytes; ``inline``: they ride in the head frame.
    ``compression`` (a name of :mod:`splitinfer.compression`): the bytes are a compressed payload
    (dtype uint8, one dimension) and ``params`` say how to restore the tensor. ``parts``: how many
    frames carry its bytes, in order (more than one on an encrypted link: see codec.encode)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    inline: bool = False
    compression: str = ""
    params: dict[str, Any] = {}
    parts: int = 1


class StageStamp(msgspec.Struct, frozen=True, array_like=True):
    """What one stage adds to a request's timing record (wall clock, seconds)."""

    stage: int
    device: str
    inbound_sent_unix_s: float  # the message with this stage's inputs was sent (its head's send time)
    recv_unix_s: float  # ... and arrived at the worker (or was handed over on the same worker)
    start_unix_s: float  # compute began
    compute_s: float  # ONNX Runtime run, perf_counter
    wait_s: float  # emulated slowdown wait after the run
    # What the stage sent on: its outputs' bytes, compressed ones as payload and params (codec.sent_bytes);
    # -1: not reported (a worker from before this field).
    sent_bytes: int = -1


class Route(msgspec.Struct, frozen=True):
    """Where a stage sends its outputs and the link shaping to apply on the way."""

    address: str | None = None  # None: the next stage is on this same worker (free hop)
    to_coordinator: bool = False  # last stage: send a Result instead of an Infer
    bandwidth_bps: float | None = None
    latency_s: float | None = None
    compression: str = ""  # how the stage's outputs travel (splitinfer.compression text form; "" = raw)
    server_key: str = ""  # CURVE: the public key of whoever listens at ``address`` ("" = plain TCP)


class ExitRule(msgspec.Struct, frozen=True, array_like=True):
    """An early exit a stage evaluates (graph/exits.py): after running its part ``part``, a request stops
    with ``output`` when the rule holds for every sample: ``softmax_max`` (top probability >= threshold),
    ``entropy`` (<= threshold) or ``onnx`` (the rule graph in blob ``blob`` returns true)."""

    output: str
    rule: str
    threshold: float = 0.0
    part: int = 0
    blob: int = -1


class _Base(msgspec.Struct, tag_field="kind", kw_only=True):
    request_id: int = 0
    blobs: list[int] = []
    tensors: list[TensorMeta] = []


# Requests a worker answers.
class Health(_Base, tag="health"):
    """Liveness check; the only kind a worker answers without the token."""


class Info(_Base, tag="info"):
    """Ask for device information (CPU, memory, providers, versions)."""


class Echo(_Base, tag="echo"):
    """Send back the payload blob, or ``num_reply_bytes`` zero bytes if given."""

    num_reply_bytes: int | None = None


class Clocks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Device clocks a configuration sets before the work runs (device/_clocks.py); 0 / empty: as they are."""

    cpu_max_khz: int = 0  # cpufreq scaling_max_freq of every CPU
    gpu_clocks_mhz: list[int] = []  # NVML application clocks: [memory, graphics]
    restore: bool = False  # first put back the clocks as the worker found them (the default configuration)


class Deploy(_Base, tag="deploy"):
    """Install a stage: blob 0 is the ONNX partition."""

    deployment_id: str
    stage: int
    device: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    route: Route
    reply_to: str  # the coordinator's address, for errors about this stage's requests
    reply_key: str = ""  # CURVE: the coordinator's public key ("" = plain TCP)
    slowdown: float = 1.0
    num_warmup: int = 2
    # Early exits: the partition comes as ``num_parts`` blobs run in turn (split after the blocks that
    # make exits), the exits' rules after them, and where a request that exits sends its result.
    num_parts: int = 1
    exits: list[ExitRule] = []
    exit_route: Route | None = None
    clocks: Clocks | None = None  # the device's configuration's clocks, set before the stage is built
    # The parts named by their SHA-256 (hex) instead of sent: the worker holds them (uploaded with
    # ``partition_chunk``, or in its --model-dir); the blobs are then the exits' rule graphs alone.
    parts_sha256: list[str] = []
    # Its state pairs [past, present] (graph/state.py): fed and kept on this worker per sequence.
    state: list[list[str]] = []


class Undeploy(_Base, tag="undeploy"):
    """Drop every stage of a deployment (or all stages when ``deployment_id`` is empty)."""

    deployment_id: str = ""


class TimePartition(_Base, tag="time_partition"):
    """Time an ONNX partition (blob 0) on the given input tensors."""

    num_warmup: int = 3
    min_runs: int = 10
    max_runs: int = 100
    budget_s: float = 2.0
    rel_precision: float = 0.05
    slowdown: float = 1.0  # the device's emulated slowdown: times_s = compute_times_s x slowdown
    return_outputs: bool = False
    clocks: Clocks | None = None  # the configuration being profiled: its clocks, set before timing
    # Partitions the worker holds (put by hash, wire/partitions.py), timed before those in the blobs.
    parts_sha256: list[str] = []
    rest_s: float = 0.0  # idle before each timed run (profile/rounds.py's rule Rest)


class EndSequences(_Base, tag="end_sequences"):
    """Free these sequences' state on the deployment's stages here (device/_state.py)."""

    deployment_id: str
    sequences: list[str] = []


class TimeCompression(_Base, tag="time_compression"):
    """Time compressing and restoring the given tensors (one cut's) with each compression (text form)."""

    compressions: list[str] = []
    num_warmup: int = 1
    min_runs: int = 3
    max_runs: int = 50
    budget_s: float = 0.5  # shared by all the compressions
    rel_precision: float = 0.1
    slowdown: float = 1.0  # the device's emulated slowdown: the medians are scaled by it


class Probe(_Base, tag="probe"):
    """Time echo round trips from this worker to another worker."""

    address: str
    sizes_bytes: list[int]
    num_repeats: int = 5
    timeout_s: float = 5.0
    server_key: str = ""  # CURVE: the other worker's public key ("" = plain TCP)


class Resources(_Base, tag="resources"):
    """Sample this worker's CPU, memory and GPU use every ``interval_s`` (start sampling if it is off;
    the latest request sets the interval) and send back the samples taken after ``since_unix_s`` (the
    worker's wall clock). The reply is a ``done``: ``data`` has ``interval_s``, ``sampling``, ``gpu``,
    ``error``, ``num_cpus`` and ``now_unix_s``; the samples travel as one float64 tensor per
    :data:`RESOURCE_SERIES` name, all of one length (at most the worker's ring buffer; NaN where a GPU
    reading is missing): numbers in bulk ride as tensors, checked by the codec, not in the header.
    ``stop``: stop sampling once answered."""

    since_unix_s: float = 0.0
    interval_s: float = 0.1
    stop: bool = False


# The tensors a resources reply carries, in this order: parallel series, one value per sample.
RESOURCE_SERIES = ("time_unix_s", "cpu_percent", "rss_bytes", "gpu_util_percent", "gpu_memory_bytes")


class Shutdown(_Base, tag="shutdown"):
    """Stop the worker process."""


class Infer(_Base, tag="infer"):
    """Tensors for one stage of one request."""

    deployment_id: str
    stage: int
    deadline_unix_s: float
    stamps: list[StageStamp] = []
    full_depth: bool = False  # run every stage: no early exit (for evaluation)
    # A step of a sequence (a decoder's generation): stages with state feed its pasts and keep its
    # presents (device/_state.py); ``sequence_start``: its first step, fed empty pasts.
    sequence: str = ""
    sequence_start: bool = False


# Replies.
class Outputs(_Base, tag="outputs"):
    """The last stage's outputs, sent to the coordinator; or, ``exit`` set, the one output of the early
    exit that answered (sent by the stage that made it)."""

    deployment_id: str
    stamps: list[StageStamp] = []
    exit: str = ""


class ErrorReply(_Base, tag="error"):
    """A refused or failed message; ``code`` is machine-readable."""

    code: str
    problem: str
    fix: str = ""
    deployment_id: str = ""
    stage: int = -1


class Done(_Base, tag="done"):
    """Generic success reply; ``data`` carries plain values (health, info, timings), nested at most
    as deep as the codec lets any header be (``codec.MAX_HEADER_DEPTH``)."""

    data: dict[str, Any] = {}


# Shipping partitions (device/_partitions.py): a worker keeps them on disk by SHA-256, so a deploy of a
# partition it holds sends only the hash; one it lacks travels in chunks, resumed where a transfer broke.
MAX_CHUNK_BYTES = 4 << 20  # a chunk's bytes at most (and at most the worker's --max-frame-bytes)


class PartitionStatus(_Base, tag="partition_status"):
    """Does the worker hold the partition ``sha256`` (hex) of ``size_bytes`` bytes, in its cache or its
    --model-dir? The reply is a ``done``: ``data`` has ``have`` (bool), ``source`` (``cache``, ``model_dir``
    or ""), ``offset`` (the bytes a transfer of it left pending, to send on from), ``max_chunk_bytes`` and
    ``max_bytes`` (its cache's bound: a larger partition cannot be uploaded, and travels inline in the
    deploy)."""

    sha256: str
    size_bytes: int


class PartitionChunk(_Base, tag="partition_chunk"):
    """Bytes ``offset`` to ``offset + len(blob 0)`` of the partition ``sha256`` (``size_bytes`` in all);
    ``chunk_sha256``: the blob's own SHA-256. The worker appends them to its pending file when ``offset`` is
    what it holds; the last one completes it (the whole file's SHA-256 checked, then it joins the cache).
    The reply is a ``done``: ``data`` has ``offset`` (the bytes it holds now) and ``complete``."""

    sha256: str
    size_bytes: int
    offset: int
    chunk_sha256: str


Header = Union[  # noqa: UP007 (msgspec needs a real Union for tagged decoding)
    Health, Info, Echo, Deploy, Undeploy, EndSequences, TimePartition, TimeCompression, Probe, Resources,
    Shutdown, Infer, Outputs, ErrorReply, Done, PartitionStatus, PartitionChunk
]
NEEDS_NO_AUTH = (Health,)



@dataclass
class Message:
    """A decoded message: the header, raw blobs and read-only arrays in header order."""

    header: Any
    blobs: list[memoryview] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    authenticated: bool = True  # the head's MAC is valid (or no token is configured)
    tensors_authenticated: bool = False  # ... and it covers every blob and tensor byte (mac_tensors)
    sent_unix_s: float = 0.0  # when the sender handed it to its socket (from the head)
    sender: int = 0  # the sender's nonce and this message's number in its sequence (wire/replay.py)
    seq: int = 0


def error_reply(request_id: int, err: BaseException, **where: Any) -> ErrorReply:
    """The ErrorReply for an exception; its code comes from :func:`splitinfer.errors.code_of`."""
    problem = getattr(err, "problem", None) or f"{type(err).__name__}: {err}"
    fix = getattr(err, "fix", None) or ""
    return ErrorReply(request_id=request_id, code=code_of(err), problem=problem, fix=fix, **where)


def error_of_reply(reply: ErrorReply, where: str) -> SplitinferError:
    """The exception an error reply stands for (the same class the worker raised), prefixed by ``where``."""
    return error_from_code(reply.code, f"{where}: {reply.problem}", reply.fix or None)
