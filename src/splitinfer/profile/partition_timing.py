"""``PartitionTiming``: what timing one partition on one device gives, wherever it ran.

A record of its own, importing nothing but numpy: the wire client returns it, and
the wire must not load the graph layer (nor ONNX) that timing a partition needs
(:func:`splitinfer.profile.timing.time_partition`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PartitionTiming:
    """Timings of one partition on one device: the session created untimed, warm-up, timed runs."""

    times_s: list[float]  # compute times scaled by the device's emulated slowdown: what the device takes
    compute_times_s: list[float]  # measured ONNX Runtime run times
    create_s: float  # inference session creation, not part of the timings
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # the partition's outputs, when asked for
