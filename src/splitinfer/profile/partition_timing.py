"""``PartitionTiming``: what timing one partition on one device gives, wherever it ran; and
``CompressionTiming``: what timing one compression of a cut's tensors on one device gives.

Records of their own, importing nothing but numpy and msgspec: the wire client returns them, and
the wire must not load the graph layer (nor ONNX) that timing a partition needs
(:func:`splitinfer.profile.timing.time_partition`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np

from splitinfer.errors import ModelError, ShapeError, SplitinferError, TransportError, WorkerError

MAX_COMPRESSIONS = 16  # compressions one time_compression request may time (5 names, a few settings)


@dataclass(frozen=True)
class PartitionTiming:
    """Timings of one partition on one device: the session created untimed, warm-up, timed runs."""

    times_s: list[float]  # compute times scaled by the device's emulated slowdown: what the device takes
    compute_times_s: list[float]  # measured ONNX Runtime run times
    create_s: float  # inference session creation, not part of the timings
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # the partition's outputs, when asked for
    remeasured: bool = False  # its spread stayed wide and a second measurement was kept (profile/rounds.py)
    weight_bytes: int | None = None  # memory its session allocated when created (None: not measured)
    activation_bytes: int | None = None  # ... and the pages its first run touched beyond its outputs
    # ... and what creating it held for a moment beyond what it kept (its bytes' copies, the parsed
    # model), read before the first run
    transient_bytes: int | None = None
    # Of ``weight_bytes``, the pages mapped from the partition's file (a cached partition's weights):
    # resident once a run reads them, not when the session is created (plan/memory.py's creation).
    mapped_bytes: int | None = None
    # When its runs happened, on the clock of the machine that ran them (Unix seconds, time.time()):
    # from before the first warm-up to after the last timed run. Alone in its set, its runs are back to
    # back, so a power meter's samples in this window are the partition's power (profile/energy_windows.py).
    window_s: tuple[float, float] | None = None


@dataclass(frozen=True)
class PartitionFailure:
    """A partition of a timed set that cannot run on the device, and why."""

    error: Exception  # the ModelError (ShapeError) or WorkerError timing it alone would have raised


@dataclass(frozen=True)
class CompressionTiming:
    """What one compression costs on one device for one cut's tensors (all of them together)."""

    compress_s: float  # median seconds to compress them all on the sender, scaled by its slowdown
    decompress_s: float  # median seconds to restore them all on the receiver, scaled by its slowdown
    wire_bytes: int  # bytes on the wire: payloads and params (tensors it does not take travel raw)
    raw_bytes: int  # the tensors' own bytes


MAX_TIMED_PARTITIONS = 1_024  # partitions one timing request may carry (blocks, pairs, the whole model)
# Runs one timing reply may carry, all partitions together: 9 bytes each keeps the header far under
# the wire's 1 MiB limit.
MAX_TIMED_RUNS = 60_000
_ERRORS = {"shape": ShapeError, "model": ModelError, "worker": WorkerError}


def timing_to_wire(timing: PartitionTiming | PartitionFailure) -> dict[str, Any]:
    """One partition's result as a timing reply carries it (outputs travel apart, as tensors)."""
    if isinstance(timing, PartitionFailure):
        e = timing.error
        kind = "shape" if isinstance(e, ShapeError) else "model" if isinstance(e, ModelError) else "worker"
        problem, fix = (e.problem, e.fix or "") if isinstance(e, SplitinferError) else (str(e), "")
        return {"error": problem, "fix": fix, "kind": kind}
    return {"compute_times_s": timing.compute_times_s, "create_s": timing.create_s,
            "remeasured": timing.remeasured, "weight_bytes": timing.weight_bytes,
            "activation_bytes": timing.activation_bytes, "transient_bytes": timing.transient_bytes,
            "mapped_bytes": timing.mapped_bytes,
            "window_s": list(timing.window_s) if timing.window_s is not None else None}


class _Timed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    compute_times_s: list[float]
    create_s: float
    remeasured: bool = False
    weight_bytes: int | None = None
    activation_bytes: int | None = None
    transient_bytes: int | None = None
    mapped_bytes: int | None = None
    window_s: tuple[float, float] | None = None


class _Failed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    error: str
    fix: str = ""
    kind: Literal["shape", "model", "worker"] = "worker"


def timing_from_wire(data: object, slowdown: float) -> PartitionTiming | PartitionFailure:
    """:func:`timing_to_wire` read back; times scaled by ``slowdown``. TransportError if malformed."""
    try:
        if isinstance(data, dict) and "error" in data:
            failed = msgspec.convert(data, _Failed)
            return PartitionFailure(_ERRORS[failed.kind](failed.error, failed.fix))
        timed = msgspec.convert(data, _Timed)
    except msgspec.ValidationError as e:
        raise TransportError(f"a timing reply is malformed: {e}",
                             "check the worker's splitinfer version") from None
    window = timed.window_s
    if window is not None and not (math.isfinite(window[0]) and math.isfinite(window[1])
                                   and 0 <= window[0] <= window[1]):
        raise TransportError(f"a timing reply's window_s {window!r} is not a time span",
                             "check the worker's splitinfer version and its clock")
    return PartitionTiming(times_s=[t * slowdown for t in timed.compute_times_s],
                           compute_times_s=timed.compute_times_s, create_s=timed.create_s,
                           remeasured=timed.remeasured, weight_bytes=timed.weight_bytes,
                           activation_bytes=timed.activation_bytes, transient_bytes=timed.transient_bytes,
                           mapped_bytes=timed.mapped_bytes, window_s=window)
