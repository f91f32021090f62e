"""Replay protection: who sent a message, its place in that sender's sequence, and what a receiver accepted.

Every message's head carries, under the MAC, its send time, a random 64-bit
*sender nonce* and that sender's sequence number (:class:`Sender`; one per
socket). A receiver (:class:`ReplayGuard`) accepts a signed message once, and
only when:

- its send time is within ``REPLAY_WINDOW_S`` of the receiver's clock (either
  way: clocks may disagree by less than that);
- its sequence number was not accepted from that nonce before. Numbers may
  arrive out of order by up to ``REORDER_WINDOW``: threads that share a sender
  number their messages when they encode them, and may hand them to the socket
  in another order (the worker's replies go out directly from its IO thread,
  or through its outbox from the others). A bitmap per nonce, as IPsec's
  anti-replay window, keeps this exact without a lock around encode and send;
- from a nonce it does not know, it was sent after the receiver started (less
  ``START_SKEW_S``) and after the newest message of any nonce it forgot to make
  room. So a message captured from an earlier run (a signed ``shutdown``) does
  not work on a worker restarted with the same token.

Unsigned messages (health, or no token configured) are not checked: without a
token anyone can write any message, so replaying one gains nothing.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
import weakref

from splitinfer.errors import ErrorCode, TransportError
from splitinfer.runtime.wire.messages import Message

REPLAY_WINDOW_S = 60.0
START_SKEW_S = 1.0  # a receiver accepts new senders' messages sent up to this long before it started
REORDER_WINDOW = 1024  # sequence numbers accepted below a sender's highest, each once
MAX_SENDERS = 4096  # nonces a receiver tracks; past that it forgets the stalest (see _make_room)
_MASK = (1 << REORDER_WINDOW) - 1
_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


class Sender:
    """One sender's identity on the wire: a random nonce and its next sequence number.

    Give each socket its own: messages on different sockets (a shaped link's queue, a
    direct reply) reach a receiver in any order, which one sequence could not tolerate.
    """

    def __init__(self) -> None:
        self.nonce = secrets.randbits(64)
        self._seq = itertools.count(1)
        _senders.add(self)

    def next_seq(self) -> int:
        """The next sequence number; threads sharing a sender never get the same one."""
        # next() on itertools.count is a single C call: atomic under the GIL.
        return next(self._seq)

    def _renew(self) -> None:
        self.nonce = secrets.randbits(64)
        self._seq = itertools.count(1)


def _renew_after_fork() -> None:
    # A forked child would otherwise send with its parent's nonces and numbers, and the parent's
    # next messages would look like replays of the child's.
    for sender in list(_senders):
        sender._renew()


os.register_at_fork(after_in_child=_renew_after_fork)
DEFAULT_SENDER = Sender()  # for callers that do not say which socket they send on


class ReplayGuard:
    """What one receiver accepted from each sender nonce; :meth:`check` refuses replays. Thread-safe."""

    def __init__(self, *, window_s: float = REPLAY_WINDOW_S, max_senders: int = MAX_SENDERS,
                 started_unix_s: float | None = None) -> None:
        self.window_s = window_s
        self._max_senders = max_senders
        started = time.time() if started_unix_s is None else started_unix_s
        self._floor_unix_s = started - START_SKEW_S  # unknown nonces: only messages sent after this
        # nonce -> [highest sequence number, bitmap of the REORDER_WINDOW numbers up to it, newest send time]
        self._seen: dict[int, list] = {}
        self._lock = threading.Lock()
        self.num_refused = 0

    def check(self, msg: Message, now_unix_s: float | None = None) -> None:
        """Accept ``msg`` (a signed message) or raise a TransportError with code ``replay``."""
        now = time.time() if now_unix_s is None else now_unix_s
        sent = msg.sent_unix_s
        if not abs(now - sent) <= self.window_s:  # NaN too
            raise self._refuse(msg, f"was sent {now - sent:.1f} s before it arrived (by the clocks of "
                               f"sender and receiver), outside the replay window of {self.window_s:g} s")
        with self._lock:
            entry = self._seen.get(msg.sender)
            if entry is None:
                if not sent > self._floor_unix_s:
                    raise self._refuse(msg, "was sent before this receiver started, by a sender it "
                                       "does not know")
                if len(self._seen) >= self._max_senders:
                    self._make_room(now)
                self._seen[msg.sender] = [msg.seq, 1, sent]
                return
            highest, accepted, newest = entry
            ahead = msg.seq - highest
            if ahead > 0:
                entry[0] = msg.seq
                entry[1] = ((accepted << ahead) | 1) & _MASK if ahead < REORDER_WINDOW else 1
            elif -ahead >= REORDER_WINDOW or accepted >> -ahead & 1:
                raise self._refuse(msg, f"repeats message {msg.seq} of its sender (or comes "
                                   f"{REORDER_WINDOW} or more behind its newest)")
            else:
                entry[1] = accepted | 1 << -ahead
            if sent > newest:
                entry[2] = sent

    def _make_room(self, now: float) -> None:  # call with _lock held
        # Nonces silent for a window: any message of theirs is refused by its age anyway.
        stale = [nonce for nonce, entry in self._seen.items() if entry[2] < now - self.window_s]
        for nonce in stale:
            del self._seen[nonce]
        if len(self._seen) >= self._max_senders:
            # Forget the nonce with the oldest newest message, and refuse from unknown nonces
            # everything up to it: every message it sent is then refused, as it was before.
            nonce = min(self._seen, key=lambda n: self._seen[n][2])
            self._floor_unix_s = max(self._floor_unix_s, self._seen.pop(nonce)[2])

    def _refuse(self, msg: Message, why: str) -> TransportError:
        self.num_refused += 1
        kind = type(msg.header).__name__
        return TransportError(f"a signed {kind} message (request {msg.header.request_id}) {why}: refused "
                              "as a replay",
                              "send a new message, not a captured one; if the sender is genuine, "
                              "synchronise the machines' clocks (NTP)", code=ErrorCode.REPLAY)
