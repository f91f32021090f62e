"""A worker running in a thread of the test process: the protocol and heartbeats without processes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from runtime_test_models import mlp_parts, whole_and_parts

from splitinfer.runtime import WorkerClient, codec
from splitinfer.runtime.heartbeat import Heartbeat
from splitinfer.runtime.worker import Worker, WorkerConfig, parse_config


@pytest.fixture
def worker():
    w = Worker(WorkerConfig(name="inproc", listen="tcp://127.0.0.1:*", threads=1), b"tok")
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    yield w, thread
    w.stop.set()
    thread.join(5)


def test_in_process_worker_profiles_and_stops(worker):
    w, thread = worker
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    with WorkerClient(w.address, b"tok") as client:
        result = client.profile(parts[0][0], {"t0": np.ones((2, 8), np.float32)}, min_runs=3, max_runs=3)
        assert len(result.times_s) == 3
        client.shutdown()
    thread.join(5)
    assert not thread.is_alive()


def test_heartbeat_reports_a_stopped_worker_within_dead_after(worker):
    w, thread = worker
    context = zmq.Context()
    try:
        heartbeat = Heartbeat(context, {"inproc": w.address}, interval_s=0.1, dead_after_s=0.5)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert heartbeat.poll(0.05) == []
        w.stop.set()
        thread.join(5)
        stopped = time.monotonic()
        dead = []
        while not dead and time.monotonic() - stopped < 3:
            dead = heartbeat.poll(0.05)
        assert [name for name, _ in dead] == ["inproc"] and "missed heartbeats" in dead[0][1]
        assert time.monotonic() - stopped < 0.5 + 0.1 + 0.2
        heartbeat.close()
    finally:
        context.destroy(linger=0)


def test_heartbeat_trusts_process_exit_at_once():
    context = zmq.Context()
    try:
        heartbeat = Heartbeat(context, {"gone": "tcp://127.0.0.1:9"}, has_exited=lambda name: True)
        assert heartbeat.poll(0.01) == [("gone", "exited")]
        assert heartbeat.poll(0.01) == []  # reported once
        heartbeat.close()
    finally:
        context.destroy(linger=0)


def test_worker_flags_come_from_the_config_fields():
    config = parse_config(["--name", "n", "--providers", "A,B", "C", "--threads", "2",
                           "--max-frame-bytes", "2MiB"])
    assert config == WorkerConfig(name="n", providers=("A", "B", "C"), threads=2, max_frame_bytes=2 << 20)
    with pytest.raises(SystemExit):
        parse_config([])
    assert WorkerConfig(name="x").max_frame_bytes == codec.DEFAULT_MAX_FRAME_BYTES
