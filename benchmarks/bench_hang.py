"""Hung worker: the time from SIGSTOP of a stage's worker to the session treating it as failed.

A 3-stage MLP on 3 local workers streams requests at 8 in flight; one worker is stopped
(SIGSTOP: a hang, not a death) and the session must notice from its overdue requests,
not from missed heartbeats (``dead_after_s`` is set to 30 s here, so heartbeats alone
would take 30 s). Each run stops the worker of the next stage position, measures the time
until the device is among ``session.dead_devices`` and until the stream flows again on
the re-planned pipeline, continues the worker (SIGCONT) and measures until it answers
again holding no stage.

Goal: median time from SIGSTOP to failed < 2 s (a request becomes overdue about
0.25 s + 3 x its latency after it was sent; a probe then gives the workers 0.5 s to answer health).

``python benchmarks/bench_hang.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from collections import deque

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from bench_soak import BATCH, DEVICES, WIDTH, mlp_stages
from bench_transport import print_goals

from splitinfer.cluster import parse_cluster
from splitinfer.runtime import StageSpec, deploy_stages

GOAL_S = 2.0


def _stream(session, stop: threading.Event, done: list[float]) -> None:
    """Keep 8 requests in flight until ``stop``; record when each result arrived."""
    x = np.ones((BATCH, WIDTH), np.float32)
    window: deque = deque()
    while not stop.is_set():
        window.append(session.submit({"t0": x}))
        if len(window) >= 8:
            window.popleft().result(timeout=30)
            done.append(time.monotonic())
        time.sleep(0.002)
    for future in window:
        future.result(timeout=30)


def one_run(stages: list[StageSpec], cluster, position: int) -> tuple[float, float, float, str]:
    def replan(excluded: frozenset[str]) -> list[StageSpec]:
        alive = [d for d in DEVICES if d not in excluded]
        return [StageSpec(s.index, alive[k % len(alive)], s.model_bytes, s.inputs, s.outputs)
                for k, s in enumerate(stages)]

    with deploy_stages(stages, cluster, replan=replan, timeout_s=30.0, dead_after_s=30.0) as session:
        victim = stages[position].device
        pid = session.worker_pids[victim]
        stop, done = threading.Event(), []
        streamer = threading.Thread(target=_stream, args=(session, stop, done), daemon=True)
        streamer.start()
        time.sleep(1.0)  # latencies measured, steady state
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            while victim not in session.dead_devices:
                if time.monotonic() - stopped > 30:
                    raise RuntimeError(f"{victim} not treated as failed within 30 s")
                time.sleep(0.002)
            failed = time.monotonic()
            while not [t for t in done if t > failed] and time.monotonic() - failed < 30:
                time.sleep(0.002)
            flowing = min([t for t in done if t > failed], default=float("nan"))
        finally:
            os.kill(pid, signal.SIGCONT)
        continued = time.monotonic()
        with session.worker_client(victim, timeout_s=2.0) as client:
            while victim in session.dead_devices or client.health(timeout_s=5.0)["num_stages"]:
                if time.monotonic() - continued > 30:
                    raise RuntimeError(f"{victim} did not come back without its old stage")
                time.sleep(0.01)
        back = time.monotonic()
        stop.set()
        streamer.join(timeout=60)
        assert session.num_replans == 1
    return failed - stopped, flowing - stopped, back - continued, victim


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args(argv)
    _, stages = mlp_stages()
    cluster = parse_cluster({"devices": [{"name": d, "num_threads": 1} for d in DEVICES],
                             "links": [{"from": a, "to": b, "measure": True}
                                       for i, a in enumerate(DEVICES) for b in DEVICES[i + 1:]],
                             "source": DEVICES[0]})
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    failed, flowing, back = [], [], []
    for run in range(args.runs):
        position = run % len(DEVICES)
        f, s, b, victim = one_run(stages, cluster, position)
        failed.append(f)
        flowing.append(s)
        back.append(b)
        print(f"run {run + 1}: stage {position} ({victim}) stopped -> failed {f:.3f} s, -> results flow "
              f"again {s:.3f} s; continued -> answers without its old stage {b:.3f} s", flush=True)
    median = statistics.median(failed)
    print(f"median over {args.runs} runs: stopped -> failed {median:.3f} s (min {min(failed):.3f}, "
          f"max {max(failed):.3f}); -> results flow again {statistics.median(flowing):.3f} s; "
          f"continued -> back without its old stage {statistics.median(back):.3f} s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    return print_goals([(f"median time from SIGSTOP to failed {median:.3f} s < {GOAL_S:g} s",
                         median < GOAL_S)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
