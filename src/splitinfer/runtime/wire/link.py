"""Outgoing links: a ZeroMQ DEALER per destination, with declared bandwidth and latency emulated.

Emulation happens on the sending side. A link is busy for ``bytes / bandwidth``
per message, one message after the other (a serialising token bucket with no
burst), and each message then takes ``latency`` to arrive, without holding up
the next one: messages in flight overlap, as on a real wire. The real transfer
time on loopback comes on top; emulation only adds what is declared.

An unshaped link sends from the caller's thread under a lock (no thread
hand-off on the hot path); a shaped link has a small scheduler thread that
sleeps until each message's delivery time.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from splitinfer.runtime.wire.curve import Curve
from splitinfer.runtime.wire.replay import Sender
from splitinfer.runtime.wire.sockets import connect_dealer

_DRAIN_INTERVAL_S = 0.01
# On an encrypted link a large tensor travels in frames of about this size, so that the receiver's IO
# thread decrypts one while the sender's encrypts the next (codec.encode; benchmarks/bench_curve.py).
CURVE_PART_BYTES = 256 * 1024


class LinkShaper:
    """Delivery times for messages on one link (pure: the clock is passed in)."""

    def __init__(self, bandwidth_bps: float | None = None, latency_s: float | None = None) -> None:
        if bandwidth_bps is not None and bandwidth_bps <= 0:
            raise ValueError("bandwidth_bps must be positive")
        self.bandwidth_bps = bandwidth_bps
        self.latency_s = latency_s or 0.0
        self._free_at_s = 0.0  # when the link finishes serialising what it already accepted

    @property
    def is_shaped(self) -> bool:
        """True when the link adds any delay at all."""
        return self.bandwidth_bps is not None or self.latency_s > 0

    def schedule(self, num_bytes: int, now_s: float) -> float:
        """Accept a message of ``num_bytes`` at ``now_s``; return when it should arrive."""
        start = max(now_s, self._free_at_s)
        busy = num_bytes / self.bandwidth_bps if self.bandwidth_bps else 0.0
        self._free_at_s = start + busy
        return self._free_at_s + self.latency_s


class LinkSender:
    """Send multipart messages to one address through an emulated link.

    To a worker (a ROUTER) the link is a DEALER, and ``on_reply`` is called
    (from the sending thread) with the frames of any message the worker sends
    back on this connection, e.g. error replies. To the coordinator, which
    never answers, it is a PUSH (``to_coordinator``): its PULL socket then
    receives one frame less per message than a ROUTER would. Encode what goes
    on the link with ``sender=link.sender`` (each socket numbers its own
    messages: wire/replay.py) and ``part_bytes=link.part_bytes``.
    """

    def __init__(self, context: zmq.Context, address: str, *, bandwidth_bps: float | None = None,
                 latency_s: float | None = None, to_coordinator: bool = False,
                 on_reply: Callable[[list[bytes]], None] | None = None, curve: Curve | None = None) -> None:
        self.address = address
        self.shaper = LinkShaper(bandwidth_bps, latency_s)
        self.sender = Sender()
        self.part_bytes = CURVE_PART_BYTES if curve is not None else None  # codec.encode's part_bytes
        self._on_reply = on_reply
        self._can_reply = not to_coordinator
        self._sock = connect_dealer(context, address, zmq.PUSH if to_coordinator else zmq.DEALER, curve=curve)
        self._next_drain_s = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._queue: collections.deque[tuple[float, Sequence[Any]]] = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        if self.shaper.is_shaped:
            self._thread = threading.Thread(target=self._run, name=f"link->{address}", daemon=True)
            self._thread.start()

    def send(self, frames: Sequence[Any], num_bytes: int) -> None:
        """Queue (shaped) or send (unshaped) one message; ``num_bytes`` is its payload size."""
        replies: list[list[bytes]] = []
        with self._lock:
            if self._closed:
                return
            if self._thread is None:
                replies = self._send_now(frames)
            else:
                deliver_at = self.shaper.schedule(num_bytes, time.perf_counter())
                self._queue.append((deliver_at, frames))
                self._wake.notify()
        self._deliver_replies(replies)

    def _send_now(self, frames: Sequence[Any]) -> list[list[bytes]]:
        # Replies (errors: the coordinator gets a copy of each anyway) are drained now and then,
        # not on every send: checking costs as much as a tenth of a small message's hop.
        replies = []
        now = time.monotonic()
        if self._can_reply and now >= self._next_drain_s:
            self._next_drain_s = now + _DRAIN_INTERVAL_S
            while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                replies.append(self._sock.recv_multipart())
        self._sock.send_multipart(frames, copy=False)
        return replies

    def _deliver_replies(self, replies: list[list[bytes]]) -> None:
        # Outside our lock: the callback may take its owner's lock, which may be held
        # by a thread waiting in send() for ours.
        if self._on_reply is not None:
            for reply in replies:
                self._on_reply(reply)

    def _run(self) -> None:
        while True:
            replies: list[list[bytes]] = []
            with self._lock:
                if self._closed:
                    return
                if not self._queue:
                    self._wake.wait(0.2)
                    continue
                deliver_at, frames = self._queue[0]
                delay = deliver_at - time.perf_counter()
                if delay > 0:
                    # Delivery times only grow (FIFO link), so waiting on the head is exact.
                    self._wake.wait(delay)
                    continue
                self._queue.popleft()
                replies = self._send_now(frames)
                # Let go of the message: held here, a stage's output stayed resident until the next one.
                del frames
            self._deliver_replies(replies)

    @property
    def num_queued(self) -> int:
        """Messages accepted but not yet delivered (shaped links only)."""
        return len(self._queue)

    def close(self) -> None:
        """Stop the scheduler and close the socket; queued messages are dropped."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            self._sock.close(linger=0)
