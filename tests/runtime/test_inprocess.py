"""A worker running in a thread of the test process: the protocol and heartbeats without processes."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import zmq
from helpers.runtime_models import mlp_parts, whole_and_parts

from splitinfer.runtime import WorkerClient
from splitinfer.runtime.coordinator._heartbeat import Heartbeat
from splitinfer.runtime.device.config import WorkerConfig, parse_config
from splitinfer.runtime.device.worker import Worker
from splitinfer.runtime.wire import codec, messages


@pytest.fixture
def worker():
    w = Worker(WorkerConfig(name="inproc", listen="tcp://127.0.0.1:*", num_threads=1), b"tok")
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    yield w, thread
    w.stop.set()
    thread.join(5)


def test_in_process_worker_profiles_and_stops(worker):
    w, thread = worker
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    with WorkerClient(w.address, b"tok") as client:
        feeds = {"t0": np.ones((2, 8), np.float32)}
        result = client.time_partition(parts[0][0], feeds, min_runs=3, max_runs=3)
        assert len(result.times_s) == 3
        client.shutdown()
    thread.join(5)
    assert not thread.is_alive()


def test_a_worker_lets_go_of_each_control_request_once_answered(worker):
    # Its control loop held the last request until the next arrived: a profile's feeds, a partition's
    # bytes, kept for as long as the worker idled.
    w, _ = worker
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))

    def held() -> list[messages.Message]:
        # type(), not isinstance(): it would read __class__ of every object, and some modules' warn
        return [o for o in gc.get_objects()
                if type(o) is messages.Message and isinstance(o.header, messages.TimePartition)]

    with WorkerClient(w.address, b"tok") as client:
        client.time_partition(parts[0][0], {"t0": np.ones((2, 8), np.float32)}, min_runs=3, max_runs=3)
        end = time.monotonic() + 2.0  # the reply can arrive before the control thread has returned
        while held() and time.monotonic() < end:
            time.sleep(0.05)
        assert held() == []


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
    assert config == WorkerConfig(name="n", providers=("A", "B", "C"), num_threads=2, max_frame_bytes=2 << 20)
    with pytest.raises(SystemExit):
        parse_config([])
    assert WorkerConfig(name="x").max_frame_bytes == codec.DEFAULT_MAX_FRAME_BYTES


def _deploy(client: WorkerClient, deployment_id: str, part, result_address: str, slowdown: float) -> None:
    model, inputs, outputs = part
    client.request(messages.Deploy(
        deployment_id=deployment_id, stage=0, device="inproc", slowdown=slowdown,
        inputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in inputs],
        outputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in outputs],
        route=messages.Route(result_address, True), reply_to=result_address), blobs=[model])


def test_short_stages_run_on_the_io_thread_yet_wait_behind_a_long_one(worker):
    """The fast path (an idle device runs a short stage on its IO thread) keeps arrival order."""
    w, _ = worker
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    context = zmq.Context()
    try:
        coordinator = context.socket(zmq.PULL)
        result_address = f"tcp://127.0.0.1:{coordinator.bind_to_random_port('tcp://127.0.0.1')}"
        sender = context.socket(zmq.DEALER)
        sender.connect(w.address)
        with WorkerClient(w.address, b"tok") as client:
            _deploy(client, "fast", parts[0], result_address, slowdown=1.0)
            _deploy(client, "slow", parts[0], result_address, slowdown=5000.0)  # well over 2 ms busy
        x = np.ones((2, 8), np.float32)

        def send(deployment_id: str, request_id: int) -> None:
            header = messages.Infer(request_id=request_id, deployment_id=deployment_id, stage=0,
                                 deadline_unix_s=time.time() + 30)
            sender.send_multipart(codec.encode(header, b"tok", arrays=[("t0", x)]))

        def result() -> messages.Message:
            assert coordinator.poll(10_000), "no result"
            return codec.decode(coordinator.recv_multipart(), b"tok")

        send("fast", 1)
        assert result().header.request_id == 1
        assert w.num_inline == 1  # idle device, short stage: run by the IO thread
        send("slow", 2)
        send("fast", 3)
        slow, fast = result(), result()
        assert [slow.header.request_id, fast.header.request_id] == [2, 3]
        (slow_stamp,), (fast_stamp,) = slow.header.stamps, fast.header.stamps
        assert slow_stamp.wait_s > 0.002
        # One thing at a time, in arrival order: the short stage started after the long one ended.
        slow_end = slow_stamp.start_unix_s + slow_stamp.compute_s + slow_stamp.wait_s
        assert fast_stamp.start_unix_s >= slow_end - 1e-3
        assert w.num_inline == 1  # neither the long stage nor the one queued behind it ran inline
    finally:
        context.destroy(linger=0)


def test_a_failure_no_check_foresaw_still_replies_with_a_fix(worker, monkeypatch):
    from splitinfer.errors import WorkerError
    from splitinfer.runtime.device import worker as worker_module

    def broken(device, msg):
        raise RuntimeError("something no check foresaw\nwith a second line")

    monkeypatch.setattr(worker_module, "handle_control", broken)
    w, _ = worker
    with WorkerClient(w.address, b"tok") as client:
        with pytest.raises(WorkerError) as caught:
            client.info()
        assert caught.value.problem.endswith("RuntimeError: something no check foresaw")
        assert "worker's log" in caught.value.fix
        assert client.health()["name"] == "inproc"  # still serving
