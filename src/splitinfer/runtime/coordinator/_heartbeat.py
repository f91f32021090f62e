"""Heartbeats: notice a worker that died, stopped answering, or answers again.

Each worker gets a ``health`` message every ``interval_s`` on its own DEALER;
a worker is declared dead when nothing came back for ``dead_after_s``, or at
once when its local process has exited. :meth:`Heartbeat.probe` asks some
workers at once (the session's overdue-request check): one that has not
answered within its probe window is declared dead. A worker's IO thread
answers health whatever its compute thread does, so a slow worker answers and
a hung (stopped) one does not. The window is ``probe_window_s``, or 3 x the
worker's slowest recent health round trip when that is longer (a congested
link delays health too; each request carries an id, echoed in the reply, so
round trips are exact). Dead workers are still asked every
``revive_interval_s`` (unless their process exited); one that answers is
reported by :meth:`Heartbeat.take_revived` and watched as usual again.
Silence counts only while this side listens: time the owner thread did not run
(what passes ``PAUSE_S`` between two polls, or of a poll's return after the
wait it asked for) is not a worker's silence: every clock the heartbeat keeps
moves on by it. A machine that pauses (a virtual machine's vCPUs
descheduled by its host, a laptop's sleep) wakes with its clock moved on, and
this thread may run before any worker has had a turn to answer. The fidelity
benchmark twice in a row saw all six workers of two sessions declared dead at
the same moment on an idle 2-core VM, each answering again a second later: only
a pause of the whole machine silences six processes at once.
Health needs no token, so replies are not checked beyond their arrival. One
owner thread uses this object.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import zmq

from splitinfer.errors import SplitinferError
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.curve import Keyring
from splitinfer.runtime.wire.sockets import open_socket

PROBE_WINDOW_S = 0.5  # a probed worker that has not answered health this long is dead
RTT_FACTOR = 3.0  # ... or this many times its slowest recent round trip, when longer
NUM_RTTS = 8  # recent round trips kept per worker (4 s of heartbeats at the default interval)
MAX_UNANSWERED = 64  # health requests remembered per worker (a hung worker answers none)
REVIVE_INTERVAL_S = 1.0  # how often a dead worker is asked whether it answers again
PAUSE_S = 0.25  # the owner thread away this long past what it asked for: a pause, not the workers' silence


class Heartbeat:
    """Send health requests; report newly dead workers, and dead ones that answer again."""

    def __init__(self, context: zmq.Context, addresses: Mapping[str, str], *, interval_s: float = 0.5,
                 dead_after_s: float = 1.5, has_exited: Callable[[str], bool] | None = None,
                 probe_window_s: float = PROBE_WINDOW_S,
                 revive_interval_s: float = REVIVE_INTERVAL_S, keyring: Keyring | None = None) -> None:
        self.interval_s = interval_s
        self.dead_after_s = dead_after_s
        self.probe_window_s = probe_window_s
        self.revive_interval_s = revive_interval_s
        self.dead: set[str] = set()
        self._has_exited = has_exited or (lambda name: False)
        self._sockets: dict[str, zmq.Socket] = {}
        self._poller = zmq.Poller()
        for name, address in addresses.items():
            sock = open_socket(context, zmq.DEALER, connect=address,
                               curve=keyring.client(name) if keyring else None)
            self._sockets[name] = sock
            self._poller.register(sock, zmq.POLLIN)
        self._names = {sock: name for name, sock in self._sockets.items()}
        self._last_seen = dict.fromkeys(self._sockets, time.monotonic())
        self._next_beat_s = 0.0
        self._next_revive_s = 0.0
        self._probes: dict[str, tuple[float, str]] = {}  # name -> (probe sent, why it was probed)
        self._dead_since: dict[str, float] = {}
        self._revived: list[str] = []
        self._ids = itertools.count(1)
        self._unanswered: dict[str, dict[int, float]] = {name: {} for name in self._sockets}  # id -> sent
        self._rtts: dict[str, deque[float]] = {name: deque(maxlen=NUM_RTTS) for name in self._sockets}
        self._returned_s: float | None = None  # when the last poll returned

    def probe_window_s_of(self, name: str) -> float:
        """How long a probe of ``name`` waits for its answer."""
        return max(self.probe_window_s, RTT_FACTOR * max(self._rtts[name], default=0.0))

    @property
    def probing(self) -> bool:
        """True while a probe waits for an answer."""
        return bool(self._probes)

    def probe(self, names: Iterable[str], why: str) -> None:
        """Ask ``names`` for health now; :meth:`poll` reports those silent past their probe window as dead."""
        now = time.monotonic()
        for name in names:
            if name in self._sockets and name not in self.dead and name not in self._probes:
                self._send(name)
                self._probes[name] = (now, why)

    def poll(self, max_wait_s: float) -> list[tuple[str, str]]:
        """Beat if due, collect replies for up to ``max_wait_s``; return [(name, reason)] newly dead."""
        now = time.monotonic()
        if self._returned_s is not None:
            self._discount(now - self._returned_s)
        if now >= self._next_beat_s:
            revive = now >= self._next_revive_s
            for name in self._sockets:
                if name not in self.dead or (revive and not self._has_exited(name)):
                    self._send(name)
            self._next_beat_s = now + self.interval_s
            if revive:
                self._next_revive_s = now + self.revive_interval_s
        wait_s = min(max_wait_s, max(0.001, self._next_beat_s - now))
        events = self._poller.poll(int(wait_s * 1000))
        self._discount(time.monotonic() - now - wait_s)
        for sock, _ in events:
            name = self._names[sock]
            while sock.poll(0):
                self._answered(name, sock.recv_multipart(copy=False))
        self._returned_s = time.monotonic()
        return self._newly_dead(self._returned_s)

    def _discount(self, away_s: float) -> None:
        """This thread was away ``away_s`` beyond what it asked for: what passes ``PAUSE_S`` counts as
        nobody's silence (last seen, probes, requests in flight all move on by it), and a beat is due.
        Only the excess: a thread starved poll after poll (a busy process) still sees a dead worker, later."""
        excess = away_s - PAUSE_S
        if excess <= 0:
            return
        for name in self._last_seen:
            self._last_seen[name] += excess
        self._probes = {name: (sent + excess, why) for name, (sent, why) in self._probes.items()}
        self._dead_since = {name: t + excess for name, t in self._dead_since.items()}
        for unanswered in self._unanswered.values():  # a round trip across the pause tells nothing
            for request_id in unanswered:
                unanswered[request_id] += excess
        self._next_beat_s = 0.0

    def take_revived(self) -> list[str]:
        """Workers declared dead that answered since the last call (each reported once per revival)."""
        revived, self._revived = self._revived, []
        return revived

    def _send(self, name: str) -> None:
        request_id = next(self._ids)
        with contextlib.suppress(zmq.Again):  # a full queue: that peer is silent anyway
            self._sockets[name].send_multipart(codec.encode(messages.Health(request_id=request_id), None),
                                               zmq.NOBLOCK)
        unanswered = self._unanswered[name]
        unanswered[request_id] = time.monotonic()
        if len(unanswered) > MAX_UNANSWERED:
            del unanswered[next(iter(unanswered))]

    def _answered(self, name: str, frames: list[Any]) -> None:
        now = time.monotonic()
        self._last_seen[name] = now
        try:
            request_id = codec.decode(frames, None).header.request_id
        except SplitinferError:
            return
        unanswered = self._unanswered[name]
        sent = unanswered.pop(request_id, None)
        if sent is None:
            return  # forgotten (asked long ago), or not ours
        if name in self.dead:
            # Alive again once it answers what it was asked after being declared dead; what it
            # answers late from before tells no round trip, nor does what it was asked until now.
            if sent >= self._dead_since.get(name, 0.0) and not self._has_exited(name):
                self.dead.discard(name)
                self._revived.append(name)
                self._rtts[name].clear()
                for earlier in [i for i in unanswered if i < request_id]:
                    del unanswered[earlier]
            return
        self._rtts[name].append(now - sent)
        probe = self._probes.get(name)
        if probe is not None and sent >= probe[0]:  # it answered what it was asked since the probe
            del self._probes[name]

    def _newly_dead(self, now: float) -> list[tuple[str, str]]:
        newly_dead = []
        for name, seen in self._last_seen.items():
            if name in self.dead:
                continue
            exited = self._has_exited(name)
            probe = self._probes.get(name)
            if exited:
                reason = "exited"
            elif now - seen > self.dead_after_s:
                reason = f"missed heartbeats for {now - seen:.1f} s"
            elif probe is not None and now - probe[0] > self.probe_window_s_of(name):
                reason = f"answered no health probe for {now - probe[0]:.2f} s after {probe[1]}"
            else:
                continue
            self.dead.add(name)
            self._dead_since[name] = now
            self._probes.pop(name, None)
            newly_dead.append((name, reason))
        return newly_dead

    def close(self) -> None:
        """Close the sockets."""
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
