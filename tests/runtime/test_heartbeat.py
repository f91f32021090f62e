"""The coordinator's heartbeat against a stand-in worker: probes, pauses, starvation, revival.

The stand-in answers health on a ROUTER, late when asked (a congested link), or not at all
while paused (like SIGSTOP). Workers that really die are the fault tests' (test_faults.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import pytest
import zmq

from splitinfer.runtime.coordinator import _heartbeat
from splitinfer.runtime.coordinator._heartbeat import Heartbeat
from splitinfer.runtime.wire import codec, messages


class _HealthPeer:
    """A stand-in worker that answers health ``delay_s`` late (a congested link), or not while paused."""

    def __init__(self, context: zmq.Context, delay_s: float) -> None:
        self._sock = context.socket(zmq.ROUTER)
        self.address = f"tcp://127.0.0.1:{self._sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.delay_s = delay_s
        self.paused = threading.Event()  # like SIGSTOP: requests queue up, nothing is answered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due: deque = deque()
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.005)
                continue
            if self._sock.poll(5):
                identity, *frames = self._sock.recv_multipart()
                due.append((time.monotonic() + self.delay_s, identity, codec.decode(frames, None).header))
            while due and due[0][0] <= time.monotonic():
                _, identity, header = due.popleft()
                reply = codec.encode(messages.Done(request_id=header.request_id), None)
                self._sock.send_multipart([identity, *reply])
        self._sock.close(linger=0)

    def pause(self) -> None:
        """Stop answering, once its loop has seen it."""
        self.paused.set()
        time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


Watch = Callable[..., tuple[_HealthPeer, Heartbeat]]


@pytest.fixture
def watch() -> Iterator[Watch]:
    """``watch(delay_s, **heartbeat_options)``: a stand-in worker answering ``delay_s`` late and a
    heartbeat watching it as "w"; both closed after the test."""
    context = zmq.Context()
    made: list[tuple[_HealthPeer, Heartbeat]] = []

    def make(delay_s: float = 0.0, **options: float) -> tuple[_HealthPeer, Heartbeat]:
        peer = _HealthPeer(context, delay_s)
        made.append((peer, Heartbeat(context, {"w": peer.address}, **options)))
        return made[-1]

    try:
        yield make
    finally:
        for peer, heartbeat in made:
            heartbeat.close()
            peer.close()
        context.destroy(linger=0)


def _poll_for(heartbeat: Heartbeat, seconds: float) -> list:
    dead: list = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        dead += heartbeat.poll(0.02)
    return dead


def _first_dead(heartbeat: Heartbeat, within_s: float, *, wait_s: float = 0.02, away_s: float = 0.0) -> list:
    """Poll (``away_s`` apart) until a worker is reported dead, for at most ``within_s``."""
    dead: list = []
    start = time.monotonic()
    while not dead and time.monotonic() - start < within_s:
        time.sleep(away_s)
        dead = heartbeat.poll(wait_s)
    return dead


def test_a_probe_waits_longer_for_a_worker_whose_health_round_trips_are_slow(watch):
    # Health takes 0.3 s there and back (a congested link): a 0.1 s probe window would call it
    # dead; the window grows to 3 x its slowest recent round trip. Stopped, it is dead after that.
    peer, heartbeat = watch(0.3, interval_s=0.1, dead_after_s=30.0, probe_window_s=0.1)
    assert _poll_for(heartbeat, 1.5) == []  # round trips measured
    heartbeat.probe(["w"], "request 1 was overdue")
    assert heartbeat.probing
    assert _poll_for(heartbeat, 1.5) == [] and not heartbeat.probing
    peer.pause()
    heartbeat.probe(["w"], "request 2 was overdue")
    probed = time.monotonic()
    dead = _first_dead(heartbeat, 3.0)
    assert dead == [("w", dead[0][1])] and "answered no health probe" in dead[0][1], dead
    assert "request 2 was overdue" in dead[0][1]
    assert 0.8 < time.monotonic() - probed < 1.5  # 3 x 0.3 s, not 0.1 s


def test_a_pause_of_the_whole_machine_is_not_the_workers_silence(watch, monkeypatch):
    # A paused VM wakes with its clock moved on, and the heartbeat's thread may run before a worker has
    # had a turn to answer: that pause is nobody's silence. A worker that stays silent is still dead.
    jump = [0.0]
    real = time.monotonic

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return real() + jump[0]

    monkeypatch.setattr(_heartbeat, "time", Clock)
    peer, heartbeat = watch(interval_s=0.1, dead_after_s=1.0)
    assert _poll_for(heartbeat, 0.3) == []
    peer.pause()  # it answers nothing until it resumes
    jump[0] += 3.0  # the machine was paused 3 s: both sides wake together
    assert heartbeat.poll(0.01) == []  # the heartbeat's thread ran first
    peer.paused.clear()
    assert _poll_for(heartbeat, 0.5) == []
    peer.pause()  # now it really stops answering
    stopped = real()
    dead = _first_dead(heartbeat, 3.0)
    assert [name for name, _ in dead] == ["w"] and "missed heartbeats" in dead[0][1]
    assert real() - stopped < 1.0 + 0.1 + 0.3


def test_a_heartbeat_starved_poll_after_poll_still_sees_a_dead_worker(watch):
    # A busy process runs the heartbeat's thread late every time: only what passes the pause allowance
    # is forgiven, so silence still adds up.
    peer, heartbeat = watch(interval_s=0.1, dead_after_s=1.0)
    assert _poll_for(heartbeat, 0.3) == []
    peer.paused.set()
    dead = _first_dead(heartbeat, 6.0, wait_s=0.01, away_s=0.4)  # away 0.4 s between polls, every time
    assert [name for name, _ in dead] == ["w"], "a starved heartbeat never saw the silence"


def test_a_dead_worker_that_answers_again_is_reported_once_as_revived(watch):
    peer, heartbeat = watch(interval_s=0.05, dead_after_s=30.0, probe_window_s=0.2, revive_interval_s=0.2)
    assert _poll_for(heartbeat, 0.3) == []
    peer.pause()  # it answers nothing from now on
    heartbeat.probe(["w"], "a request was overdue")
    assert [name for name, _ in _poll_for(heartbeat, 0.5)] == ["w"]
    assert _poll_for(heartbeat, 0.6) == [] and heartbeat.take_revived() == []  # still stopped
    peer.paused.clear()
    _poll_for(heartbeat, 0.5)
    assert heartbeat.take_revived() == ["w"] and "w" not in heartbeat.dead
    assert _poll_for(heartbeat, 0.5) == [] and heartbeat.take_revived() == []  # watched as usual again
