"""Per-request records: a request's outputs and where its time went, stage by stage and hop by hop.

Every message's head carries its send time (``time.time()``, taken once it is
encoded, just before the socket send); workers stamp when a message arrives
(just after the socket receive) and when compute starts, and measure compute
and emulated wait with ``perf_counter``. A hop's transfer time is arrival minus
send time, so it includes link queueing, emulated bandwidth and latency, and
the real transfer, but not encoding or decoding (those fall in the stage's
queue time and the coordinator's hand-off). Across
machines, clock offsets enter hop times: synchronise clocks (NTP/PTP) first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from splitinfer.errors import WorkerError
from splitinfer.runtime.wire.messages import Outputs, StageStamp
from splitinfer.types import TensorSpec


@dataclass(frozen=True)
class StageTiming:
    """One stage of one request, as measured in its worker."""

    stage: int
    device: str
    queue_s: float  # waiting in the worker before compute started
    compute_s: float  # ONNX Runtime run
    wait_s: float  # emulated slowdown wait

    @property
    def busy_s(self) -> float:
        """What the device spent on this stage: compute plus emulated wait."""
        return self.compute_s + self.wait_s


@dataclass(frozen=True)
class HopTiming:
    """One hop of one request: source -> stage 0, stage k -> k+1, last stage -> sink."""

    src: str  # device names; src == dst is a free same-device hop
    dst: str
    to_stage: int  # the stage that received it; len(stages) = the sink (coordinator)
    num_bytes: int  # sent: a compressed tensor's payload and params (what a plan's Hop.num_bytes predicts)
    transfer_s: float


@dataclass(frozen=True)
class RequestTiming:
    """Everything measured for one request."""

    request_id: int
    latency_s: float  # submit to result, end to end, including any retry
    stages: tuple[StageTiming, ...]
    hops: tuple[HopTiming, ...]
    num_attempts: int = 1  # > 1 when the request was re-sent on a new pipeline

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def build_timing(request_id: int, *, submitted_unix_s: float, received_unix_s: float,
                 result_sent_unix_s: float, stamps: Sequence[StageStamp], source: str, sink: str,
                 hop_bytes: Sequence[int], num_attempts: int = 1, upload_bytes: int = -1) -> RequestTiming:
    """Assemble a RequestTiming from the stamps a result carries back.

    The last hop is the result's, which the last stage sent at ``result_sent_unix_s`` and the
    coordinator received at ``received_unix_s``. A hop's bytes are what its sender sent: the
    coordinator's ``upload_bytes`` into stage 0, then each stage's stamp (``sent_bytes``: the next
    hop's). Where a sender reports nothing (-1: a worker from before stamps carried it),
    ``hop_bytes`` stands in: the tensors into stage k, then the result's, uncompressed.
    """
    stages = tuple(StageTiming(s.stage, s.device, max(0.0, s.start_unix_s - s.recv_unix_s), s.compute_s,
                               s.wait_s) for s in stamps)
    hops = []
    prev_device, sent = source, upload_bytes
    for k, s in enumerate(stamps):
        hops.append(HopTiming(prev_device, s.device, s.stage, _bytes(sent, hop_bytes, k),
                              s.recv_unix_s - s.inbound_sent_unix_s))
        prev_device, sent = s.device, s.sent_bytes
    hops.append(HopTiming(prev_device, sink, len(stamps), _bytes(sent, hop_bytes, len(hop_bytes) - 1),
                          received_unix_s - result_sent_unix_s))
    return RequestTiming(request_id, received_unix_s - submitted_unix_s, stages, tuple(hops), num_attempts)


def _bytes(sent: int, hop_bytes: Sequence[int], k: int) -> int:
    """The bytes a sender reported, else the uncompressed ``hop_bytes[k]`` (0 when there is none)."""
    if sent >= 0:
        return int(sent)
    return int(hop_bytes[k]) if 0 <= k < len(hop_bytes) else 0


@dataclass(frozen=True)
class Result:
    """The outputs of one request (read-only, zero-copy arrays) and where its time went."""

    request_id: int
    outputs: dict[str, np.ndarray]
    # Assembling the timing record costs as much as a small tensor's hop: done when first read.
    make_timing: Callable[[], RequestTiming] = field(repr=False, compare=False)
    exit: str = ""  # the early exit that answered ('' : the model's end); ``outputs`` then holds it alone

    @functools.cached_property
    def timing(self) -> RequestTiming:
        """Where this request's time went, stage by stage and hop by hop."""
        return self.make_timing()

    def as_list(self, output_names: Sequence[str] | None = None) -> list[np.ndarray | None]:
        """Outputs in the given order (all it holds, in the model's order, for None); None for an
        output an early exit did not make."""
        if output_names is None:
            return list(self.outputs.values())
        return [self.outputs.get(n) for n in output_names]


def result_outputs(header: Outputs, arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
                   ) -> dict[str, np.ndarray]:
    """A result's outputs by name, in the model's order: every model output, or an early exit's one;
    WorkerError when the message holds neither."""
    names = [s.name for s in specs]
    if header.exit:
        if header.exit in names and header.exit in arrays:
            return {header.exit: arrays[header.exit]}
        raise WorkerError(f"request {header.request_id} left at exit {header.exit!r}, which its result "
                          f"does not hold as a model output (got {sorted(arrays)[:8]})",
                          "redeploy the stages")
    outputs = {n: arrays[n] for n in names if n in arrays}
    if len(outputs) != len(names):
        raise WorkerError(f"result of request {header.request_id} lacks outputs (got {sorted(arrays)[:8]})",
                          "redeploy the stages")
    return outputs
