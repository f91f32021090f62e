"""CurveZMQ cost: what encrypting every connection adds to a round trip.

Section 4 of the transport benchmarks (bench_transport.py has sections 1-3, and the helpers used here).

Round trip coordinator -> process -> coordinator (2 hops), one request at a time, for 4 KB, 800 KB
and 3.2 MB float32 tensors, plain against CURVE (Curve25519 handshake once, XSalsa20-Poly1305 on every
frame, in each side's ZeroMQ IO thread):
- raw: pyzmq PAIR sockets to an echo process, copy=False; CURVE with ``zmq.curve_keypair()`` keys and
  no ZAP handler (the cipher's own cost: the floor for what CURVE can add);
- splitinfer: a deployed one-stage Identity partition (the ``stage`` round trip of bench_transport),
  a plain cluster against one with ``curve: {keys: DIR}``; on loopback, and on links emulated by the
  sender (1 Gbit/s and 100 Mbit/s, 0.5 ms, source -> device and back);
- on loopback also the token's MAC over the tensor bytes (``mac_tensors: true``) against the token's
  MAC over the head only (informational).
Each configuration runs in fresh processes, all of its sessions alive at once and measured in
interleaved blocks (the first block warms up and is not counted), so that load drifts cancel;
medians, then for each figure the median over rounds of fresh processes (CURVE's cost varies from
one set of processes to the next: 7 rounds on loopback, 3 on links); the coordinator on one CPU and
every far process on another, as in bench_transport.
Goals: (a) loopback, 800 KB and 3.2 MB: what CURVE adds to splitinfer's two hops (the round trip less
the stage's compute, as bench_transport's "transport") <= 1.2 x what it adds to raw's (4 KB is bound by
fixed per-message costs and is printed only; what it adds with the compute is printed beside);
(b) 1 Gbit/s: CURVE round trip <= 1.2 x plain, each size; (c) 100 Mbit/s: <= 1.05 x plain, each size.
``python benchmarks/bench_curve.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import zmq
from bench_transport import SIZES_BYTES, _pin, identity_stage, print_goals  # this folder is on sys.path

from splitinfer.cluster import parse_cluster
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.wire.curve import write_key_pair

TOKEN = b"bench-curve-token-0123456789abcdef"
LINKS = {"loopback": None, "1 Gbit/s": "1Gbit/s", "100 Mbit/s": "100Mbit/s"}
LATENCY = "0.5ms"
GOAL_ADDED, GOAL_1G, GOAL_100M = 1.2, 1.2, 1.05


def _echo(port: int, public: bytes | None, secret: bytes | None, parent: int) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    if secret is not None:
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.rcvtimeo = 1000
    sock.connect(f"tcp://127.0.0.1:{port}")
    while True:
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.Again:
            if os.getppid() != parent:  # the benchmark died without stopping us
                break
            continue
        if len(frames[0]) == 0:
            break
        sock.send_multipart(frames, copy=False)
    context.destroy(linger=0)


class RawEcho:
    """pyzmq PAIR to an echo process, copy=False; CURVE (the echo is the server) when ``curve``."""

    def __init__(self, curve: bool) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PAIR)
        server_public = server_secret = None
        if curve:
            server_public, server_secret = zmq.curve_keypair()
            self.sock.curve_publickey, self.sock.curve_secretkey = zmq.curve_keypair()
            self.sock.curve_serverkey = server_public
        self.sock.sndtimeo = self.sock.rcvtimeo = 30_000  # a lost echo raises rather than hangs the run
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.process = mp.get_context("spawn").Process(
            target=_echo, args=(port, server_public, server_secret, os.getpid()), daemon=True)
        self.process.start()

    def round_trip(self, payload: np.ndarray) -> None:
        self.sock.send_multipart([payload], copy=False)
        self.sock.recv_multipart(copy=False)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send(b"", zmq.NOBLOCK)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        self.context.destroy(linger=0)


def _cluster(keys: str | None, link: str | None, mac_tensors: bool = False):
    """One worker ``a``; with a link, the coordinator stands in for a source device ``src`` joined to
    ``a`` both ways (its idle worker runs too)."""
    devices = [{"name": "a", "num_threads": 1}]
    data: dict = {"devices": devices}
    if link is not None:
        data = {"devices": [{"name": "src", "num_threads": 1}, *devices], "source": "src", "sink": "src",
                "links": [{"from": "src", "to": "a", "bandwidth": link, "latency": LATENCY}]}
    if keys is not None:
        data["curve"] = {"keys": keys}
    if mac_tensors:
        data["mac_tensors"] = True
    return parse_cluster(data)


def interleaved(calls: dict[str, Callable[[], float | None]], repeats: int, block: int) -> dict[str, float]:
    """Median seconds per call of each, in blocks of ``block`` calls taking turns (in reverse order
    every other round, so that no call always follows the same one); block 0 warms up. A call that
    returns seconds (its stage's compute) also gets ``NAME transport``: the call less those."""
    times: dict[str, list[float]] = {}
    for k in range(-(-repeats // block) + 1):
        for name, call in list(calls.items())[::-1 if k % 2 else 1]:
            for _ in range(block):
                start = time.perf_counter()
                compute = call()
                elapsed = time.perf_counter() - start
                if k:
                    times.setdefault(name, []).append(elapsed)
                    if compute is not None:
                        times.setdefault(f"{name} transport", []).append(elapsed - compute)
    return {name: statistics.median(t) for name, t in times.items()}


def _stage_call(session, x: np.ndarray) -> Callable[[], float]:
    def call() -> float:
        session.run(None, {"x": x})
        return session.last_timing.stages[0].compute_s

    return call


def measure(num_bytes: int, link: str | None, keys: str, repeats: int, block: int,
            pin: bool = True) -> dict[str, float]:
    """Medians (s) for one size on one link: splitinfer plain and CURVE; on loopback also raw plain and
    CURVE and splitinfer with mac_tensors. Fresh processes, pinned while measured."""
    x = np.ones(num_bytes // 4, np.float32)
    stage = identity_stage("a", num_bytes)
    with contextlib.ExitStack() as stack:
        calls: dict[str, Callable[[], float | None]] = {}
        far: list[int] = []
        if link is None:
            for name, curve in (("raw plain", False), ("raw curve", True)):
                raw = RawEcho(curve)
                stack.callback(raw.close)
                far.append(raw.process.pid)  # type: ignore[arg-type]
                calls[name] = (lambda r: lambda: r.round_trip(x))(raw)  # type: ignore[misc]
        variants = {"plain": _cluster(None, link), "curve": _cluster(keys, link)}
        if link is None:
            variants["mac"] = _cluster(None, link, mac_tensors=True)
        for name, cluster in variants.items():
            session = stack.enter_context(deploy_stages([stage], cluster, token=TOKEN))
            far += list(session.worker_pids.values())
            calls[name] = _stage_call(session, x)
        all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        pinned = pin and _pin(far)
        try:
            medians = interleaved(calls, repeats, block)
        finally:
            if pinned and all_cpus is not None:
                for tid in os.listdir(f"/proc/{os.getpid()}/task"):
                    os.sched_setaffinity(int(tid), all_cpus)
    return {**medians, "pinned": float(pinned)}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f}"


def _row(label: str, link: str, m: dict[str, float]) -> str:
    raw, raw_added = f"{'-':>9} {'-':>9} {'-':>6}", f"{'-':>9}"
    if "raw plain" in m:
        raw = f"{_ms(m['raw plain'])} {_ms(m['raw curve'])} {m['raw curve'] / m['raw plain']:6.2f}"
        raw_added = _ms(m["raw curve"] - m["raw plain"])
    return (f"{link:>10} {label:>7} {raw} {_ms(m['plain'])} {_ms(m['curve'])} "
            f"{m['curve'] / m['plain']:6.2f} {raw_added} {_ms(m['curve'] - m['plain'])} "
            f"{_ms(m['curve transport'] - m['plain transport'])}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--rounds", type=int, default=None,
                        help="fresh processes per configuration, medians of their medians (default 3, "
                             "1 with --quick)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place both ends (default: one CPU each)")
    args = parser.parse_args(argv)
    repeats = 40 if args.quick else 100
    slow_repeats = 6 if args.quick else 20  # emulated links: 3.2 MB takes ~0.5 s a round trip at 100 Mbit/s
    rounds = args.rounds or (1 if args.quick else 3)
    # Loopback rounds are cheap, and its goal is a ratio of two differences, which varies most from one
    # set of processes to the next (1.1-1.6x in three rounds on this machine): more rounds there.
    loop_rounds = args.rounds or (1 if args.quick else 7)
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as keys:
        for name in ("coordinator", "src", "a"):
            write_key_pair(keys, name)
        print(f"CurveZMQ cost: round trip coordinator -> process -> coordinator, medians (ms) over {repeats} "
              f"requests each on loopback, {slow_repeats} on emulated links ({LATENCY} one way), "
              f"median of {loop_rounds} round(s) of fresh processes on loopback, {rounds} on links")
        print(f"{'link':>10} {'tensor':>7} {'raw':>9} {'raw CURVE':>9} {'ratio':>6} {'ours':>9} "
              f"{'our CURVE':>9} {'ratio':>6} {'raw +':>9} {'our +':>9} {'hops +':>9}")
        for link_label, link in LINKS.items():
            for label, num_bytes in SIZES_BYTES.items():
                slow = link is not None and num_bytes >= 100_000
                runs = [measure(num_bytes, link, keys, slow_repeats if slow else repeats, 2 if slow else 10,
                                pin=not args.no_pin) for _ in range(rounds if link else loop_rounds)]
                m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                results[link_label, label] = m
                print(_row(label, link_label, m), flush=True)
    pinned = all(m["pinned"] for m in results.values())
    print("  raw: pyzmq PAIR echo, copy=False; ours: a one-stage Identity session (Session.run);")
    print("  +: what CURVE adds (CURVE minus plain); hops +: what it adds to ours less the stage's compute")
    print("  (the Identity's ONNX Runtime run, as the worker timed it: no part of a hop); emulated links")
    print("  delay each message by size/bandwidth +")
    print("  latency in the sender, then send it on loopback, so CURVE's cipher time adds on top of them:")
    print("  the cipher's floor on a link is plain + raw's loopback + (shown with each link goal);")
    print("  4 KB: bound by fixed per-message costs (a few us of cipher), printed for information only;")
    print("  coordinator on one CPU, the far end on another" if pinned else "  placement: the scheduler's")
    print("\ntoken's MAC over the head only vs also over tensor bytes (mac_tensors: true), loopback (ms)")
    for label in SIZES_BYTES:
        m = results["loopback", label]
        print(f"  {label:>7}: token {m['plain'] * 1e3:.3f}, + mac_tensors {m['mac'] * 1e3:.3f} "
              f"({m['mac'] / m['plain']:.2f}x, +{(m['mac'] - m['plain']) * 1e3:.3f}), "
              f"CURVE {m['curve'] * 1e3:.3f}")
    goals = []
    for label in ("800 KB", "3.2 MB"):
        m = results["loopback", label]
        ours, raw = m["curve transport"] - m["plain transport"], m["raw curve"] - m["raw plain"]
        whole = (m["curve"] - m["plain"]) / raw
        goals.append((f"loopback {label}: CURVE adds {ours * 1e3:.3f} ms to our hops, {raw * 1e3:.3f} ms to "
                      f"raw's: {ours / raw:.2f}x (goal <= {GOAL_ADDED}x; with the stage's compute "
                      f"{whole:.2f}x)", ours <= GOAL_ADDED * raw))
    for link_label, goal in (("1 Gbit/s", GOAL_1G), ("100 Mbit/s", GOAL_100M)):
        for label in SIZES_BYTES:
            m, loop = results[link_label, label], results["loopback", label]
            ratio = m["curve"] / m["plain"]
            floor = (m["plain"] + loop["raw curve"] - loop["raw plain"]) / m["plain"]
            goals.append((f"{link_label} {label}: CURVE round trip {ratio:.3f}x plain (goal <= {goal}x; "
                          f"plain + raw's loopback +: {floor:.3f}x)", ratio <= goal))
    print()
    return print_goals(goals)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
