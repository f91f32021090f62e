"""What a hop between the coordinator and a device costs the runtime, measured as it runs.

A plan whose first stage runs on the source still sends its input from the coordinator to that
stage's worker, and a last stage on the sink still sends its result back: no link, but encoding,
the sockets, decoding and the hand-offs between threads. The planner charges each such hop the
device's ``messaging`` (``plan/problem.Messaging``): ``fixed_s + s_per_byte x bytes``.

Measured by deploying one trivial stage (an Identity on a float tensor) on the device's running
worker and timing requests end to end: what a request takes beyond the stage's own busy time is
its two hops, each carrying the tensor; the medians of a small and a large tensor give the fit.
The stage is held busy for milliseconds, as a real stage is, by the emulated slowdown
(``HELD_BUSY``): a worker runs a stage that short on its IO thread, and a coordinator that waits
that little wakes up fast, so an Identity run as it is would show a third of what a hop costs a
real stage (0.12 ms against 0.32-0.39 ms per hop, measured on this project's machine).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

import msgspec
import numpy as np

from splitinfer.cluster import Cluster
from splitinfer.profile.device import TRIVIAL_INPUT, trivial_partition
from splitinfer.profile.schema import HopCost
from splitinfer.runtime.coordinator.deploy import deploy_stages
from splitinfer.runtime.coordinator.pipeline import StageSpec
from splitinfer.types import TensorSpec

SMALL_BYTES = 4  # one float
MIN_LARGE_BYTES = 256 * 1024  # large enough that its bytes, not the fixed cost, dominate
NUM_WARMUP = 3
NUM_REQUESTS = 15  # per size
HELD_BUSY = 300.0  # the emulated slowdown that holds the Identity busy for milliseconds


def _overheads(cluster: Cluster, device: str, token: bytes | None, num_floats: int) -> list[float]:
    """Per request of ``num_floats`` floats, after warm-up: its latency less the stage's busy time."""
    spec = TensorSpec(TRIVIAL_INPUT, "float32", (num_floats,))
    stage = StageSpec(0, device, trivial_partition(num_floats), (spec,),
                      (TensorSpec("y", "float32", (num_floats,)),))
    feeds = {TRIVIAL_INPUT: np.zeros(num_floats, dtype=np.float32)}
    out = []
    with deploy_stages([stage], cluster, token=token) as session:
        for k in range(NUM_WARMUP + NUM_REQUESTS):
            session.run(None, feeds)
            timing = session.last_timing
            if timing is not None and k >= NUM_WARMUP:
                out.append(max(0.0, timing.latency_s - sum(s.busy_s for s in timing.stages)))
    return out


def measure_messaging(cluster: Cluster, device: str, addresses: Mapping[str, str], token: bytes | None,
                      large_bytes: int = MIN_LARGE_BYTES) -> HopCost:
    """``device``'s hop cost through its running worker (``addresses``: device -> worker address).

    ``large_bytes``: the larger tensor (at least 256 KiB; the model's input is a good choice). A
    request's two hops each carry the tensor, so half its overhead is one hop; the fit runs
    through the medians of the two sizes. SplitinferError if the worker cannot take the stage.
    """
    here = cluster.device(device)
    # The running worker alone, reached at its address (so nothing is started), with no link to emulate.
    running = msgspec.structs.replace(here, address=addresses[device], slowdown=HELD_BUSY)
    view = msgspec.structs.replace(cluster, devices=(running,), links=(), backend="local", source=device,
                                   sink=device)
    large = max(large_bytes, MIN_LARGE_BYTES)
    sizes = (SMALL_BYTES // 4, large // 4)
    small_s = statistics.median(_overheads(view, device, token, sizes[0])) / 2
    large_s = statistics.median(_overheads(view, device, token, sizes[1])) / 2
    per_byte = max(0.0, (large_s - small_s) / ((sizes[1] - sizes[0]) * 4))
    fixed = max(0.0, small_s - per_byte * SMALL_BYTES)
    return HopCost(fixed_s=fixed, s_per_byte=per_byte, n=2 * NUM_REQUESTS)
