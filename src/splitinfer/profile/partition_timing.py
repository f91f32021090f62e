"""``PartitionTiming``: what timing one partition on one device gives, wherever it ran; and
``CompressionTiming``: what timing one compression of a cut's tensors on one device gives.

Records of their own, importing nothing but numpy: the wire client returns them, and
the wire must not load the graph layer (nor ONNX) that timing a partition needs
(:func:`splitinfer.profile.timing.time_partition`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_COMPRESSIONS = 16  # compressions one time_compression request may time (5 names, a few settings)


@dataclass(frozen=True)
class PartitionTiming:
    """Timings of one partition on one device: the session created untimed, warm-up, timed runs."""

    times_s: list[float]  # compute times scaled by the device's emulated slowdown: what the device takes
    compute_times_s: list[float]  # measured ONNX Runtime run times
    create_s: float  # inference session creation, not part of the timings
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # the partition's outputs, when asked for


@dataclass(frozen=True)
class CompressionTiming:
    """What one compression costs on one device for one cut's tensors (all of them together)."""

    compress_s: float  # median seconds to compress them all on the sender, scaled by its slowdown
    decompress_s: float  # median seconds to restore them all on the receiver, scaled by its slowdown
    wire_bytes: int  # bytes on the wire: payloads and params (tensors it does not take travel raw)
    raw_bytes: int  # the tensors' own bytes
