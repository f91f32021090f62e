"""Transport benchmarks for the runtime: per-hop overhead and streaming throughput.

1. Round trip coordinator -> process -> coordinator (2 hops), one request at a
   time, for 4 KB, 800 KB and 3.2 MB float32 tensors:
   - raw: pyzmq PUSH/PULL to a relay process, copy=False (the floor), each hop
     stamped one way like splitinfer's own timing records;
   - echo: splitinfer's codec (header + MAC + blob) through a worker's IO thread;
   - stage: a deployed one-stage Identity partition through the full data path
     (IO thread -> compute thread -> ONNX Runtime -> outgoing link), also shown
     minus the stage's measured compute time.
   Goal: our one-way hop / raw one-way hop <= 1.5 (median of rounds of fresh
   processes; the coordinator and the far end each pinned to a CPU of its own).
2. Ray actor chain, when ray is installed (skipped otherwise).
3. Streaming throughput of a 3-stage chain whose stage times are dominated by
   declared slowdowns, against the bottleneck bound 1 / max(device busy time).
   Goal: >= 90% of the bound.
4. CurveZMQ cost (raw pyzmq and splitinfer, plain vs CURVE, loopback and emulated
   links; mac_tensors too): in bench_curve.py, ``python benchmarks/bench_curve.py [--quick]``.

Prints medians and ratios measured in this one run. ``python benchmarks/bench_transport.py [--quick]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import onnx
import zmq
from onnx import TensorProto, helper, numpy_helper

from splitinfer.cluster import parse_cluster
from splitinfer.runtime import StageSpec, deploy_stages
from splitinfer.types import TensorSpec

SIZES_BYTES = {"4 KB": 4_000, "800 KB": 800_000, "3.2 MB": 3_200_000}
PARTS = ("hop in", "worker queue", "compute", "hop out", "rest", "result hand-off")


def build_model(nodes, inputs, outputs, inits=()) -> bytes:
    """A checked float32 ONNX model of ``nodes`` (inputs/outputs as (name, shape) pairs)."""
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                               for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _relay(port_in: int, port_out: int) -> None:
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.connect(f"tcp://127.0.0.1:{port_in}")
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port_out}")
    stamps = []  # kept here and sent at the end, so that the relayed messages carry nothing extra
    while True:
        frames = pull.recv_multipart(copy=False)
        received = time.time()
        if len(frames[0]) == 0:
            break
        sent = time.time()
        push.send_multipart(frames, copy=False)
        stamps.append((received, sent))
    push.send(np.array(stamps, dtype=np.float64).tobytes())
    context.destroy(linger=0)


class RawPipe:
    """A raw pyzmq PUSH/PULL pipe through a relay process, copy=False: the floor.

    Hops are stamped like splitinfer's own: wall clock just before the send call and just
    after the receive call returns, on each side.
    """

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.push, self.pull = self.context.socket(zmq.PUSH), self.context.socket(zmq.PULL)
        port_out = self.push.bind_to_random_port("tcp://127.0.0.1")
        port_in = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.relay = mp.get_context("spawn").Process(target=_relay, args=(port_out, port_in))
        self.relay.start()
        self._stamps: list[tuple[float, float]] = []  # (sent, received) at this end

    def round_trip(self, payload: np.ndarray) -> float:
        start = time.perf_counter()
        sent = time.time()
        self.push.send_multipart([payload], copy=False)
        self.pull.recv_multipart(copy=False)
        self._stamps.append((sent, time.time()))
        return time.perf_counter() - start

    def close(self) -> list[float]:
        """Stop the relay; the one-way hop times of every round trip (in, out, in, out, ...)."""
        self.push.send(b"")
        relay_stamps = np.frombuffer(self.pull.recv(), dtype=np.float64).reshape(-1, 2)
        self.relay.join(5)
        self.context.destroy(linger=0)
        hops = []
        for (sent, received), (relay_received, relay_sent) in zip(self._stamps, relay_stamps, strict=True):
            hops += [relay_received - sent, received - relay_sent]
        return hops


def identity_stage(device: str, num_bytes: int) -> StageSpec:
    """A one-stage Identity partition on ``device`` for a float32 tensor of ``num_bytes``."""
    n = num_bytes // 4
    model = build_model([helper.make_node("Identity", ["x"], ["y"])], [("x", [n])], [("y", [n])])
    spec = TensorSpec("x", "float32", (n,))
    return StageSpec(0, device, model, (spec,), (TensorSpec("y", "float32", (n,)),))


def print_goals(goals: list[tuple[str, bool]]) -> int:
    """Print each goal as met / NOT met; the exit code: 1 if any is missed."""
    for text, met in goals:
        print(f"{'met    ' if met else 'NOT met'}  {text}")
    return 0 if all(met for _, met in goals) else 1


def _identity_session(num_bytes: int):
    stage = identity_stage("a", num_bytes)
    return deploy_stages([stage], parse_cluster({"devices": [{"name": "a", "num_threads": 1}]}))


def _pin(far_pids: list[int]) -> bool:
    """Coordinator on CPU 0, the far end on CPU 1, as two machines would each have their own CPU.

    Left to itself, the scheduler sometimes puts both ends on one core (cheap wake-ups) and
    sometimes not, run to run: ratios between setups measured in different placements mean
    little. Returns False where affinity cannot be set (not Linux, one CPU).
    """
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return False
    first, second = sorted(os.sched_getaffinity(0))[:2]
    for pid, cpu in [(os.getpid(), first), *((p, second) for p in far_pids)]:
        for tid in os.listdir(f"/proc/{pid}/task"):  # every thread: ZeroMQ's IO thread too
            os.sched_setaffinity(int(tid), {cpu})
    return True


def bench_hops(num_bytes: int, repeats: int, pin: bool = True) -> dict[str, float]:
    """Medians (s) for raw and stage round trips and one-way hops, interleaved in blocks of 10 so
    load drifts cancel (block 0 warms up and is not counted), then echo round trips."""
    raw_pipe = RawPipe()
    session = _identity_session(num_bytes)
    client = session.worker_client("a")
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinned = pin and _pin([raw_pipe.relay.pid, *session.worker_pids.values()])
    x = np.ones(num_bytes // 4, np.float32)
    raw, total, transport, hops = [], [], [], []
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    try:
        for block in range(repeats // 10 + 1):
            for _ in range(10):
                t = raw_pipe.round_trip(x)
                if block:
                    raw.append(t)
            for _ in range(10):
                start = time.perf_counter()
                session.run(None, {"x": x})
                elapsed = time.perf_counter() - start
                timing = session.last_timing
                if block:
                    total.append(elapsed)
                    transport.append(elapsed - timing.stages[0].compute_s)
                    hops.extend(h.transfer_s for h in timing.hops)
                    _split(timing, elapsed, parts)
        # Echo apart: interleaved, its differently sized allocations slowed the next stage requests.
        echo = [client.echo(num_bytes) for _ in range(repeats + 10)][10:]
    finally:
        client.close()
        session.close()
        raw_hops = raw_pipe.close()[2 * 10:]  # without block 0
        if pinned and all_cpus is not None:
            for tid in os.listdir(f"/proc/{os.getpid()}/task"):
                os.sched_setaffinity(int(tid), all_cpus)
    med = statistics.median
    return {"raw": med(raw), "raw hop": med(raw_hops), "echo": med(echo), "stage": med(total),
            "transport": med(transport), "hop": med(hops), "pinned": float(pinned),
            **{k: med(v) for k, v in parts.items()}}


def _split(timing, elapsed_s: float, parts: dict[str, list[float]]) -> None:
    """Where one stage round trip went: the two hops, the worker's queue (decode + hand-off from its IO
    thread to its compute thread), compute, the coordinator's hand-off of the result to the caller
    (decode, timing record, waking the caller) and the rest (encoding on both sides)."""
    stage = timing.stages[0]
    hop_in, hop_out = timing.hops[0].transfer_s, timing.hops[1].transfer_s
    parts["hop in"].append(hop_in)
    parts["worker queue"].append(stage.queue_s)
    parts["compute"].append(stage.compute_s)
    parts["hop out"].append(hop_out)
    parts["rest"].append(timing.latency_s - hop_in - hop_out - stage.queue_s - stage.compute_s)
    parts["result hand-off"].append(elapsed_s - timing.latency_s)


def bench_ray(num_bytes: int, repeats: int) -> float | None:
    """Median round trip through a 1-actor Ray chain (2 hops); None without ray."""
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

    @ray.remote
    class Relay:
        def forward(self, x):
            return x

    actor = Relay.remote()
    x = np.ones(num_bytes // 4, np.float32)
    times = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        ray.get(actor.forward.remote(x))
        if i >= 5:
            times.append(time.perf_counter() - start)
    ray.shutdown()
    return statistics.median(times)


def bench_streaming(num_requests: int) -> tuple[float, float, float, list[float]]:
    """(throughput, bound, in-stream bound, per-device busy medians) for a slowdown-dominated chain."""
    size, slowdowns = 192, {"a": 12.0, "b": 24.0, "c": 16.0}
    rng = np.random.default_rng(0)
    stages = []
    for k, device in enumerate(slowdowns):
        w = numpy_helper.from_array((rng.standard_normal((size, size)) / size).astype(np.float32), f"w{k}")
        model = build_model([helper.make_node("MatMul", [f"h{k}", f"w{k}"], [f"h{k + 1}"])],
                       [(f"h{k}", [size, size])], [(f"h{k + 1}", [size, size])], [w])
        stages.append(StageSpec(k, device, model, (TensorSpec(f"h{k}", "float32", (size, size)),),
                                (TensorSpec(f"h{k + 1}", "float32", (size, size)),)))
    devices = [{"name": d, "num_threads": 1, "slowdown": s} for d, s in slowdowns.items()]
    cluster = parse_cluster({"devices": devices,
                             "links": [{"from": "a", "to": "b", "measure": True},
                                       {"from": "b", "to": "c", "measure": True},
                                       {"from": "c", "to": "a", "measure": True}]})
    x = rng.standard_normal((size, size)).astype(np.float32)
    with deploy_stages(stages, cluster) as session:
        busy: list[list[float]] = [[] for _ in stages]
        for _ in range(10):  # calibrate: what each device spends per request, one at a time
            session.run(None, {"h0": x})
            for k, s in enumerate(session.last_timing.stages):
                busy[k].append(s.busy_s)
        busy_medians = [statistics.median(b) for b in busy]
        bound = 1.0 / max(busy_medians)
        done, stream_busy = [], [[] for _ in stages]
        for result in session.stream(({"h0": x} for _ in range(num_requests)), max_in_flight=8):
            done.append(time.perf_counter())
            for k, s in enumerate(result.timing.stages):
                stream_busy[k].append(s.busy_s)
    # Steady state: from the first result to the last (the pipeline fill is not throughput).
    measured = (len(done) - 1) / (done[-1] - done[0])
    # Compute slows down when 3 workers share 2 cores, and slowdown multiplies that: the bound
    # from the stage times seen during the stream shows what pipelining itself loses.
    stream_bound = 1.0 / max(statistics.fmean(b) for b in stream_busy)
    return measured, bound, stream_bound, busy_medians


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and one round")
    parser.add_argument("--rounds", type=int, default=None,
                        help="fresh processes per tensor size (default 3, 1 with --quick)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place both ends (default: one CPU each)")
    args = parser.parse_args(argv)
    repeats = 40 if args.quick else 200
    rounds = args.rounds or (1 if args.quick else 3)
    print(f"coordinator -> process -> coordinator, 2 hops, medians over {repeats} interleaved requests "
          f"per round, {rounds} round(s) of fresh processes (ms)")
    print(f"{'tensor':>8} {'round':>5} {'raw rtt':>8} {'echo':>8} {'stage':>8} {'stage-cmp':>9} "
          f"{'raw hop':>8} {'our hop':>8} {'hop/raw':>8} {'rtt/raw':>8}")
    goals = []
    breakdowns = {}
    pinned = False
    for label, num_bytes in SIZES_BYTES.items():
        ratios = []
        for k in range(rounds):
            m = bench_hops(num_bytes, repeats if num_bytes < 1_000_000 else max(40, repeats // 2),
                           pin=not args.no_pin)
            pinned = bool(m["pinned"])
            breakdowns[label] = m
            ratios.append(m["hop"] / m["raw hop"])
            print(f"{label:>8} {k + 1:>5} {m['raw'] * 1e3:8.3f} {m['echo'] * 1e3:8.3f} "
                  f"{m['stage'] * 1e3:8.3f} {m['transport'] * 1e3:9.3f} {m['raw hop'] * 1e3:8.3f} "
                  f"{m['hop'] * 1e3:8.3f} "
                  f"{ratios[-1]:8.2f} {m['transport'] / m['raw']:8.2f}")
        ratio = statistics.median(ratios)
        spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f})" if rounds > 1 else ""
        goals.append((f"per-hop overhead {label}: {ratio:.2f}x raw{spread} (goal <= 1.5x)", ratio <= 1.5))
    print("  raw hop, our hop: one-way, wall clock from just before the send call to just after the")
    print("  receive call returns (the encoded tensor leaves one process's hands and is in the next's),")
    print("  medians of both directions; stage-cmp = stage round trip minus the Identity's compute;")
    print("  coordinator on one CPU, the far end on another" if pinned else "  placement: the scheduler's")
    print("  where the last round's stage round trip went (us; worker queue = its decode and, for long")
    print("  stages, the IO->compute thread hand-off; result hand-off = the coordinator's decode,")
    print("  timing record and return to the caller):")
    for label, m in breakdowns.items():
        print(f"  {label:>8}: " + ", ".join(f"{k} {m[k] * 1e6:.0f}" for k in PARTS))
    for label, num_bytes in SIZES_BYTES.items():
        ray_s = bench_ray(num_bytes, max(10, repeats // 4))
        if ray_s is not None:
            print(f"  a Ray actor round trip (its own object transfer), {label}: {ray_s * 1e3:.3f} ms")
    if bench_ray(1, 1) is None:
        print("  ray: not installed, Ray actor chain skipped")
    num_requests = 40 if args.quick else 150
    measured, bound, stream_bound, busy = bench_streaming(num_requests)
    print(f"\nstreaming, 3 stages on 3 devices, slowdowns 12/24/16, {num_requests} requests, 8 in flight")
    busy_text = ", ".join(f"{b * 1e3:.1f}" for b in busy)
    print(f"  device busy per request, calibrated one at a time (ms): {busy_text}")
    print(f"  bound {bound:.2f} req/s, measured {measured:.2f} req/s: {measured / bound:.3f} of the bound")
    print(f"  bound from stage times during the stream {stream_bound:.2f} req/s: "
          f"{measured / stream_bound:.3f} of it (goal >= 0.9)")
    goals.append((f"streaming: {measured / stream_bound:.2f} of the bound (goal >= 0.9)",
                  measured / stream_bound >= 0.9))
    print()
    return print_goals(goals)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
