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

A decoder's hops are measured as its generation steps run (``stateful``): the trivial stage keeps a
state pair, as a decoder's stages keep their cache (device/_state.py), and the requests are the steps of
one sequence; each step counts from the caller's call to its return, since steps follow one another
from the generation loop and a token's time is all of it, not the request's submit-to-result time
alone. So what a step pays beyond its stages' compute (the state's bookkeeping on the worker, the
coordinator's call) is in a decoder's plans: measured on this project's machine, 0.67-0.77 ms per hop
against 0.55-0.66 ms for the same stage stateless, in three alternating pairs of measurements
(``python benchmarks/bench_generation.py`` prints where a step's time goes).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import msgspec
import numpy as np
from onnx import TensorProto, helper

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


PAST, PRESENT = "past", "present"  # the stateful trivial stage's state pair
SEQUENCE = "messaging"


def stateful_trivial_partition(num_floats: int = 1) -> bytes:
    """:func:`trivial_partition` with a state pair, as a decoder's stage has: ``past`` [1, 1, t, 1] in,
    ``present`` (the past and one more step, [1, 1, t + 1, 1]) out."""
    shape = [num_floats]
    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Identity", [TRIVIAL_INPUT], ["y"]),
         helper.make_node("Concat", [PAST, "one"], [PRESENT], axis=2)], "trivial_stateful",
        [helper.make_tensor_value_info(TRIVIAL_INPUT, TensorProto.FLOAT, shape),
         helper.make_tensor_value_info(PAST, TensorProto.FLOAT, [1, 1, "past", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info(PRESENT, TensorProto.FLOAT, [1, 1, "present", 1])], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # what every supported ONNX Runtime reads
    return model.SerializeToString()


def _stage(device: str, num_floats: int, stateful: bool) -> StageSpec:
    x, y = TensorSpec(TRIVIAL_INPUT, "float32", (num_floats,)), TensorSpec("y", "float32", (num_floats,))
    if not stateful:
        return StageSpec(0, device, trivial_partition(num_floats), (x,), (y,))
    past, present = (TensorSpec(name, "float32", (1, 1, -1, 1)) for name in (PAST, PRESENT))
    return StageSpec(0, device, stateful_trivial_partition(num_floats), (x, past), (y, present),
                     state=((PAST, PRESENT),))


def _overheads(cluster: Cluster, device: str, token: bytes | None, num_floats: int,
               stateful: bool = False) -> list[float]:
    """Per request of ``num_floats`` floats, after warm-up: its latency less the stage's busy time; when
    ``stateful``, per step of one sequence through a stage that keeps state, from call to return."""
    feeds = {TRIVIAL_INPUT: np.zeros(num_floats, dtype=np.float32)}
    out = []
    with deploy_stages([_stage(device, num_floats, stateful)], cluster, token=token) as session:
        for k in range(NUM_WARMUP + NUM_REQUESTS):
            start = time.perf_counter()
            if stateful:
                session.run(None, feeds, sequence=SEQUENCE, sequence_start=k == 0)
            else:
                session.run(None, feeds)
            wall_s = time.perf_counter() - start
            timing = session.last_timing
            if timing is not None and k >= NUM_WARMUP:
                taken = wall_s if stateful else timing.latency_s
                out.append(max(0.0, taken - sum(s.busy_s for s in timing.stages)))
        if stateful:
            session.end_sequences([SEQUENCE])
    return out


def measure_messaging(cluster: Cluster, device: str, addresses: Mapping[str, str], token: bytes | None,
                      large_bytes: int = MIN_LARGE_BYTES, *, stateful: bool = False) -> HopCost:
    """``device``'s hop cost through its running worker (``addresses``: device -> worker address).

    ``large_bytes``: the larger tensor (at least 256 KiB; the model's input is a good choice). A
    request's two hops each carry the tensor, so half its overhead is one hop; the fit runs
    through the medians of the two sizes. ``stateful``: a decoder's hops, measured as its steps run
    (see the module). SplitinferError if the worker cannot take the stage.
    """
    here = cluster.device(device)
    # The running worker alone, reached at its address (so nothing is started), with no link to emulate.
    running = msgspec.structs.replace(here, address=addresses[device], slowdown=HELD_BUSY)
    view = msgspec.structs.replace(cluster, devices=(running,), links=(), backend="local", source=device,
                                   sink=device)
    large = max(large_bytes, MIN_LARGE_BYTES)
    sizes = (SMALL_BYTES // 4, large // 4)
    small_s = statistics.median(_overheads(view, device, token, sizes[0], stateful)) / 2
    large_s = statistics.median(_overheads(view, device, token, sizes[1], stateful)) / 2
    per_byte = max(0.0, (large_s - small_s) / ((sizes[1] - sizes[0]) * 4))
    fixed = max(0.0, small_s - per_byte * SMALL_BYTES)
    return HopCost(fixed_s=fixed, s_per_byte=per_byte, n=2 * NUM_REQUESTS)
