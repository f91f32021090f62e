"""Transport with stages under Ray (backend: ray) against standalone local workers, in one run.

Round trip coordinator -> stage -> coordinator (2 hops), one request at a time,
for one float32 tensor of 4 KB, 800 KB and 3.2 MB, through a deployed one-stage
Identity partition:

- local: the worker is a process started by the local launcher (backend: local);
- ray: the worker runs inside a Ray actor on the node that offers
  ``splitinfer:ray`` (backend: ray), tensors still on ZeroMQ;
- ray object: for context, the same tensor through a plain Ray actor method
  (``ray.get(actor.forward.remote(x))``), Ray's own data path (same node when
  Ray runs here).

Requests alternate between the setups in blocks of 10 so load drifts cancel.
Goal: ray / local <= 1.2. Without ray installed it says so and exits 0.
``python benchmarks/bench_ray.py [--quick] [--address RAY_ADDRESS]`` (default: a
one-node Ray started here; with --address, some node must offer ``splitinfer:ray``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from bench_transport import SIZES_BYTES, identity_stage, print_goals  # this folder is on sys.path

from splitinfer.cluster import parse_cluster
from splitinfer.runtime import Session, deploy_stages

RAY_DEVICE = "ray"
GOAL_RATIO = 1.2


def _session(backend: str, device: str, num_bytes: int, address: str | None) -> Session:
    doc = {"backend": backend, "devices": [{"name": device, "num_threads": 1}]}
    if address is not None:
        doc["address"] = address
    return deploy_stages([identity_stage(device, num_bytes)], parse_cluster(doc))


def _time_run(session: Session, x: np.ndarray) -> float:
    start = time.perf_counter()
    session.run(None, {"x": x})
    return time.perf_counter() - start


def bench_size(ray, relay, num_bytes: int, repeats: int, address: str) -> dict[str, float]:
    """Medians (s) of the local, ray and ray-object round trips for one tensor size."""
    local = _session("local", "a", num_bytes, None)
    on_ray = _session("ray", RAY_DEVICE, num_bytes, address)
    x = np.ones(num_bytes // 4, np.float32)
    times: dict[str, list[float]] = {"local": [], "ray": [], "ray object": []}
    try:
        for block in range(repeats // 10 + 1):  # block 0 warms everything up
            for name, once in (("local", lambda: _time_run(local, x)), ("ray", lambda: _time_run(on_ray, x)),
                               ("ray object", lambda: _ray_round_trip(ray, relay, x))):
                for _ in range(10):
                    t = once()
                    if block:
                        times[name].append(t)
    finally:
        on_ray.close()
        local.close()
    return {name: statistics.median(values) for name, values in times.items()}


def _ray_round_trip(ray, relay, x: np.ndarray) -> float:
    start = time.perf_counter()
    ray.get(relay.forward.remote(x))
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start one here)")
    args = parser.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("ray is not installed (pip install 'splitinfer[ray]'): benchmark skipped")
        return 0
    if args.address is None:
        ray.init(num_cpus=2, resources={f"splitinfer:{RAY_DEVICE}": 1}, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    repeats = 40 if args.quick else 200
    print(f"coordinator -> stage -> coordinator, 2 hops, Identity stage, medians over {repeats} "
          "interleaved requests (ms)")
    print(f"{'tensor':>8} {'local':>8} {'ray':>8} {'ray/local':>9} {'ray object':>11}")
    goals = []

    @ray.remote(num_cpus=0)
    class Relay:
        def forward(self, x):
            return x

    relay = Relay.remote()
    try:
        for label, num_bytes in SIZES_BYTES.items():
            num_repeats = repeats if num_bytes < 1_000_000 else max(40, repeats // 2)
            m = bench_size(ray, relay, num_bytes, num_repeats, address)
            ratio = m["ray"] / m["local"]
            goals.append((f"{label}: stage under Ray {ratio:.2f}x a standalone worker "
                          f"(goal <= {GOAL_RATIO}x)", ratio <= GOAL_RATIO))
            print(f"{label:>8} {m['local'] * 1e3:8.3f} {m['ray'] * 1e3:8.3f} {ratio:9.2f} "
                  f"{m['ray object'] * 1e3:11.3f}")
    finally:
        ray.shutdown()
    print("  local = worker process from the local launcher; ray = worker inside a Ray actor (ZeroMQ);")
    print("  ray object = the tensor through a Ray actor method (Ray's object transfer), for context")
    print()
    return print_goals(goals)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
