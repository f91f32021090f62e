"""Per-request records: a request's outputs and where its time went, stage by stage and hop by hop.

Workers stamp wall-clock times (``time.time()``) when a message arrives, when
compute starts and when outputs are handed to the outgoing link, and measure
compute and emulated wait with ``perf_counter``. A hop's transfer time is
what the receiver observes: arrival minus hand-off, so it includes link
queueing, emulated bandwidth and latency, and the real transfer. Across
machines, clock offsets enter hop times: synchronise clocks (NTP/PTP) first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from splitinfer.runtime.codec import StageStamp


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
    num_bytes: int
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


def build_timing(request_id: int, *, submitted_unix_s: float, sent_unix_s: float, received_unix_s: float,
                 stamps: Sequence[StageStamp], source: str, sink: str, hop_bytes: Sequence[int],
                 num_attempts: int = 1) -> RequestTiming:
    """Assemble a RequestTiming from the stamps a result carries back.

    ``hop_bytes[k]`` is the payload into stage k; the last entry is the result's.
    """
    stages = tuple(StageTiming(s.stage, s.device, max(0.0, s.start_unix_s - s.recv_unix_s), s.compute_s,
                               s.wait_s) for s in stamps)
    hops = []
    prev_device, prev_sent = source, sent_unix_s
    for k, s in enumerate(stamps):
        hops.append(HopTiming(prev_device, s.device, s.stage, int(hop_bytes[k]) if k < len(hop_bytes) else 0,
                              s.recv_unix_s - prev_sent))
        prev_device, prev_sent = s.device, s.sent_unix_s
    hops.append(HopTiming(prev_device, sink, len(stamps), int(hop_bytes[-1]) if hop_bytes else 0,
                          received_unix_s - prev_sent))
    return RequestTiming(request_id, received_unix_s - submitted_unix_s, stages, tuple(hops), num_attempts)


@dataclass(frozen=True)
class Result:
    """The outputs of one request (read-only, zero-copy arrays) and where its time went."""

    request_id: int
    outputs: dict[str, np.ndarray]
    timing: RequestTiming

    def as_list(self, output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Outputs in the given order (all, in the model's order, for None)."""
        if output_names is None:
            return list(self.outputs.values())
        return [self.outputs[n] for n in output_names]
