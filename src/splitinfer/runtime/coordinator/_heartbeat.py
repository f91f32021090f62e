"""Heartbeats: notice a worker that died or stopped answering.

Each worker gets a ``health`` message every ``interval_s`` on its own DEALER;
a worker is declared dead when nothing came back for ``dead_after_s``, or at
once when its local process has exited. Health needs no token, so replies are
not checked beyond their arrival. One owner thread uses this object.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping

import zmq

from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.sockets import open_socket


class Heartbeat:
    """Send health requests and report newly dead workers."""

    def __init__(self, context: zmq.Context, addresses: Mapping[str, str], *, interval_s: float = 0.5,
                 dead_after_s: float = 1.5, has_exited: Callable[[str], bool] | None = None) -> None:
        self.interval_s = interval_s
        self.dead_after_s = dead_after_s
        self.dead: set[str] = set()
        self._has_exited = has_exited or (lambda name: False)
        self._sockets: dict[str, zmq.Socket] = {}
        self._poller = zmq.Poller()
        for name, address in addresses.items():
            sock = open_socket(context, zmq.DEALER, connect=address)
            self._sockets[name] = sock
            self._poller.register(sock, zmq.POLLIN)
        self._names = {sock: name for name, sock in self._sockets.items()}
        self._last_seen = dict.fromkeys(self._sockets, time.monotonic())
        self._next_beat_s = 0.0
        self._message = codec.encode(messages.Health(), None)

    def poll(self, max_wait_s: float) -> list[tuple[str, str]]:
        """Beat if due, collect replies for up to ``max_wait_s``; return [(name, reason)] newly dead."""
        now = time.monotonic()
        if now >= self._next_beat_s:
            for name, sock in self._sockets.items():
                if name not in self.dead:
                    with contextlib.suppress(zmq.Again):  # a full queue: that peer is silent anyway
                        sock.send_multipart(self._message, zmq.NOBLOCK)
            self._next_beat_s = now + self.interval_s
        wait_s = min(max_wait_s, max(0.001, self._next_beat_s - now))
        for sock, _ in self._poller.poll(int(wait_s * 1000)):
            while sock.poll(0):
                sock.recv_multipart()
            self._last_seen[self._names[sock]] = time.monotonic()
        newly_dead = []
        now = time.monotonic()
        for name, seen in self._last_seen.items():
            if name in self.dead:
                continue
            exited = self._has_exited(name)
            if exited or now - seen > self.dead_after_s:
                self.dead.add(name)
                newly_dead.append((name, "exited" if exited else f"missed heartbeats for {now - seen:.1f} s"))
        return newly_dead

    def close(self) -> None:
        """Close the sockets."""
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
