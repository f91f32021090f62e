"""Emulation honesty: declared links and slowdowns add what they declare, no more, no less.

The machine is shared and noisy: tolerances are generous, medians are used.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import zmq
from helpers.runtime_models import heavy_parts, local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.runtime import LinkShaper, deploy_stages
from splitinfer.runtime.wire.link import LinkSender


def test_shaper_serialises_bytes_and_overlaps_latency():
    shaper = LinkShaper(bandwidth_bps=1000.0, latency_s=0.5)
    # three 100-byte messages at t=0: the link is busy 0.1 s each, latency overlaps
    assert [shaper.schedule(100, 0.0) for _ in range(3)] == pytest.approx([0.6, 0.7, 0.8])
    # an idle link starts from "now", not from when it was last busy
    assert shaper.schedule(100, 10.0) == pytest.approx(10.6)
    free = LinkShaper()
    assert not free.is_shaped and free.schedule(10**9, 3.0) == 3.0
    assert LinkShaper(latency_s=0.01).schedule(10**9, 1.0) == pytest.approx(1.01)


def test_link_sender_delivers_a_burst_on_schedule():
    context = zmq.Context()
    try:
        sink = context.socket(zmq.ROUTER)
        port = sink.bind_to_random_port("tcp://127.0.0.1")
        sender = LinkSender(context, f"tcp://127.0.0.1:{port}", bandwidth_bps=1e6, latency_s=0.05)
        start = time.perf_counter()
        for i in range(4):
            sender.send([str(i).encode(), bytes(20_000)], 20_000)
        arrivals = []
        for _ in range(4):
            assert sink.poll(5000)
            sink.recv_multipart()
            arrivals.append(time.perf_counter() - start)
        sender.close()
        expected = [0.05 + 0.02 * (i + 1) for i in range(4)]  # latency once, bytes one after the other
        for got, want in zip(arrivals, expected, strict=True):
            assert want - 0.002 <= got <= want + 0.03
    finally:
        context.destroy(linger=0)


def test_declared_link_hop_time_matches_latency_plus_bytes_over_bandwidth():
    # 8 Mbit/s = 1e6 bytes/s, 20 ms; a 100 kB tensor crosses a->b and the result b->a.
    _, parts = whole_and_parts(mlp_parts(2, width=500, batch=50, layers_per_part=1))
    link = {"from": "a", "to": "b", "bandwidth": "8Mbit/s", "latency": "20ms"}
    cluster = local_cluster(["a", "b"], links=[link])
    num_bytes = 50 * 500 * 4
    expected = 0.020 + num_bytes / 1e6
    with deploy_stages(stages_on(parts, ["a", "b"]), cluster) as session:
        x = np.zeros((50, 500), np.float32)
        hops_ab, hops_ba = [], []
        for _ in range(6):
            session.run(None, {"t0": x})
            hops = session.last_timing.hops
            assert [(h.src, h.dst) for h in hops] == [("a", "a"), ("a", "b"), ("b", "a")]
            assert hops[1].num_bytes == num_bytes
            hops_ab.append(hops[1].transfer_s)
            hops_ba.append(hops[2].transfer_s)
    for measured in (statistics.median(hops_ab), statistics.median(hops_ba)):
        assert expected * 0.97 <= measured <= expected * 1.15, (measured, expected)


def test_slowdown_3_makes_the_stage_take_3x_its_compute():
    # Two equal stages: 'fast' (slowdown 1) then 'slow' (slowdown 3). Streamed, the pipeline's
    # period is the slow stage's time, measured from outside (the coordinator's clock).
    _, parts = whole_and_parts(heavy_parts(2, size=512, repeats=2))
    cluster = local_cluster(["fast", "slow"], slowdown={"slow": 3.0})
    with deploy_stages(stages_on(parts, ["fast", "slow"]), cluster) as session:
        x = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
        session.run(None, {"h0": x})
        done, computes, walls = [], [], []
        for result in session.stream(({"h0": x} for _ in range(16)), max_in_flight=4):
            done.append(time.perf_counter())
            slow = result.timing.stages[1]
            computes.append(slow.compute_s)
            walls.append(slow.busy_s)  # compute plus the measured wall time of the wait
    compute = statistics.median(computes)
    assert statistics.median(walls) == pytest.approx(3 * compute, rel=0.15)
    period = (done[-1] - done[0]) / (len(done) - 1)
    assert period == pytest.approx(3 * statistics.fmean(computes), rel=0.25), (period, compute)

