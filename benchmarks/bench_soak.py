"""Soak: 100,000 requests through a 3-stage pipeline; memory and file descriptors must stay flat.

A tiny MLP cut into 3 stages on 3 local workers (loopback), streamed at 8 requests
in flight. Every ``--sample-every`` requests the RSS and the open file descriptor
count of the coordinator (this process) and of every worker are sampled (psutil).
Prints the median latency and throughput per tenth of the run, each process's RSS
after warm-up (request ``--warmup``) and at the end, and its fd counts.

Goals, per process, from the end of warm-up to the end of the run:
- RSS growth < 2% (the median of the last 5 samples against the median of the first 5
  after warm-up, so one sample caught mid-allocation does not decide);
- fd count constant: the count most samples show (the mode) is the same at the end as just
  after warm-up. Samples above it are counted and shown: ONNX Runtime's telemetry thread opens
  2 eventfds and 2 sockets for a few milliseconds every few seconds (a DNS lookup of its
  collector), which a sample may catch; a leak instead raises the mode.

``python benchmarks/bench_soak.py [--requests N] [--in-flight K]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import psutil
from bench_transport import build_model, print_goals  # this folder is on sys.path
from onnx import helper, numpy_helper

from splitinfer.cluster import parse_cluster
from splitinfer.runtime import StageSpec, deploy_stages
from splitinfer.types import TensorSpec

DEVICES = ("a", "b", "c")
WIDTH, BATCH = 32, 4
GOAL_RSS_GROWTH = 0.02
NUM_EDGE_SAMPLES = 5


def mlp_stages() -> tuple[bytes, list[StageSpec]]:
    """The whole model and one stage per device: MatMul + Add + Relu each, t0 -> t1 -> t2 -> t3."""
    rng = np.random.default_rng(0)
    shape = (BATCH, WIDTH)
    nodes, inits, stages = [], [], []
    for k, device in enumerate(DEVICES):
        w = numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32),
                                    f"w{k}")
        b = numpy_helper.from_array(rng.standard_normal(WIDTH).astype(np.float32) * 0.1, f"b{k}")
        part = [helper.make_node("MatMul", [f"t{k}", f"w{k}"], [f"m{k}"]),
                helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"]),
                helper.make_node("Relu", [f"a{k}"], [f"t{k + 1}"])]
        nodes += part
        inits += [w, b]
        model = build_model(part, [(f"t{k}", shape)], [(f"t{k + 1}", shape)], [w, b])
        stages.append(StageSpec(k, device, model,
                                (TensorSpec(f"t{k}", "float32", shape),),
                                (TensorSpec(f"t{k + 1}", "float32", shape),)))
    return build_model(nodes, [("t0", shape)], [(f"t{len(DEVICES)}", shape)], inits), stages


def _sample(procs: dict[str, psutil.Process]) -> dict[str, tuple[int, int]]:
    return {name: (p.memory_info().rss, p.num_fds()) for name, p in procs.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=None,
                        help="requests before the baseline (default: 10%% of them)")
    parser.add_argument("--sample-every", type=int, default=None, help="default: requests / 100")
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args(argv)
    num = args.requests
    warmup = args.warmup if args.warmup is not None else num // 10
    every = args.sample_every or max(1, num // 100)

    whole, stages = mlp_stages()
    x = np.random.default_rng(0).standard_normal((BATCH, WIDTH)).astype(np.float32)
    import onnxruntime as ort

    expected = ort.InferenceSession(whole, providers=["CPUExecutionProvider"]).run(None, {"t0": x})[0]
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    cluster = parse_cluster({"devices": [{"name": d, "num_threads": 1} for d in DEVICES],
                             "links": [{"from": a, "to": b, "measure": True}
                                       for i, a in enumerate(DEVICES) for b in DEVICES[i + 1:]],
                             "source": DEVICES[0]})
    with deploy_stages(stages, cluster, timeout_s=30.0) as session:
        procs = {"coordinator": psutil.Process()}
        procs.update({name: psutil.Process(pid) for name, pid in sorted(session.worker_pids.items())})
        samples: list[tuple[int, dict[str, tuple[int, int]]]] = [(0, _sample(procs))]
        latencies = np.empty(num)  # allocated up front: a growing list would count as growth
        feeds = ({"t0": x} for _ in range(num))
        start = time.perf_counter()
        for i, result in enumerate(session.stream(feeds, max_in_flight=args.in_flight), start=1):
            latencies[i - 1] = result.timing.latency_s
            if i == 1:
                np.testing.assert_allclose(result.outputs["t3"], expected, atol=1e-4)
            if i % every == 0 or i == num:
                samples.append((i, _sample(procs)))
        wall_s = time.perf_counter() - start
        np.testing.assert_allclose(result.outputs["t3"], expected, atol=1e-4)
        assert session.num_replans == 0 and not session.dead_devices

    print(f"{num} requests in {wall_s:.1f} s: {num / wall_s:.0f} requests/s, {args.in_flight} in flight, "
          f"sampled every {every}, warm-up {warmup}")
    tenth = max(1, num // 10)
    print("median latency per tenth of the run (ms): " + " ".join(
        f"{np.median(latencies[k:k + tenth]) * 1e3:.2f}" for k in range(0, num, tenth)))
    after = [s for i, s in samples if i >= warmup]
    first, last = after[:NUM_EDGE_SAMPLES], after[-NUM_EDGE_SAMPLES:]
    goals = []
    print(f"{'process':12} {'RSS start':>10} {'after warm-up':>14} {'end':>10} {'growth':>8}   fds (start, "
          "after warm-up: min-max, end)")
    for name in procs:
        rss0, fds0 = samples[0][1][name]
        base = statistics.median(s[name][0] for s in first)
        end = statistics.median(s[name][0] for s in last)
        growth = (end - base) / base
        fds = [s[name][1] for s in after]
        trend = [s[name][0] for i, s in samples if i % tenth == 0 and i]
        print(f"{name:12} RSS per tenth of the run (MiB): " + " ".join(f"{r / 2**20:.1f}" for r in trend))
        print(f"{name:12} {rss0 / 2**20:8.1f} MiB {base / 2**20:12.1f} MiB {end / 2**20:8.1f} MiB "
              f"{growth:+8.2%}   {fds0}, {min(fds)}-{max(fds)}, {fds[-1]}")
        goals.append((f"{name}: RSS growth after warm-up {growth:+.2%} < {GOAL_RSS_GROWTH:.0%}",
                      growth < GOAL_RSS_GROWTH))
        steady, final = statistics.mode(fds[:len(fds) // 2]), statistics.mode(fds[len(fds) // 2:])
        blips = sum(f != steady for f in fds)
        goals.append((f"{name}: fd count constant after warm-up ({steady} -> {final}; {blips} of {len(fds)} "
                      f"samples differ, range {min(fds)}-{max(fds)})", steady == final))
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    return print_goals(goals)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
