"""The coordinator's result socket, read by whichever thread needs a result next.

Results arrive on one PULL socket. A background thread that reads it and
completes futures wakes the waiting caller through a second thread switch,
which costs as much as a whole loopback hop for small tensors. So a caller
that waits for a result reads the socket itself (leader/follower): it takes
the socket, dispatches whatever arrives (its own result and anyone else's)
until its future is done, then hands the socket on. The background thread
reads only while some submitted request has nobody waiting for it
(``submit`` without a wait, done-callbacks) and no caller waits; a caller
that needs the socket while the background thread holds it wakes that
thread through an in-process socket. A synchronous ``run`` therefore wakes
no other thread.

A ZeroMQ socket may be used by one thread at a time: ``_reader`` (guarded by
``_lock``) says who holds it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import zmq

from splitinfer.runtime.wire.sockets import Waker, open_socket

log = logging.getLogger("splitinfer.session")
_BATCH = 100  # messages dispatched per wake-up before checking whether to hand the socket on
_READ_TIMEOUT_MS = 50
_ids = itertools.count()


class Inbox:
    """Read ``sock`` from the waiting caller's thread, or from :meth:`serve` when nobody waits.

    ``dispatch(frames, received_unix_s)`` handles one message; ``num_pending()`` counts
    submitted requests that still expect a reply.
    """

    def __init__(self, context: zmq.Context, sock: zmq.Socket, dispatch: Callable[[list[Any], float], None],
                 num_pending: Callable[[], int]) -> None:
        self._sock = sock
        sock.setsockopt(zmq.RCVTIMEO, _READ_TIMEOUT_MS)
        self._dispatch = dispatch
        self._num_pending = num_pending
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)  # callers: the socket is free or a future is done
        self._idle = threading.Condition(self._lock)  # background: requests nobody waits for
        self._reader: str | None = None  # None, "caller" or "background"
        self._num_waiting = 0
        self._closed = False
        wake_address = f"inproc://inbox-{next(_ids)}"
        self._wake_pull = open_socket(context, zmq.PULL, bind=wake_address)
        self._waker = Waker(context, wake_address)

    def _background_has_work(self) -> bool:  # call with _lock held
        # A waiting caller reads everything that arrives (anyone's results) while it waits.
        return self._reader is None and not self._num_waiting and self._num_pending() > 0

    # ---- the caller's side ------------------------------------------------------------------
    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Announce a caller that will wait: enter it *before* submitting, so that the
        background thread does not start reading for a request about to be waited for."""
        with self._lock:
            self._num_waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._num_waiting -= 1
                if self._background_has_work():
                    self._idle.notify()

    def submitted(self) -> None:
        """A request was sent: start the background reader if nobody will wait for it."""
        with self._lock:
            if self._background_has_work():
                self._idle.notify()

    def wait(self, future: Future, timeout_s: float) -> bool:
        """Read results until ``future`` is done or ``timeout_s`` passes; True when done."""
        deadline = time.monotonic() + timeout_s
        future.add_done_callback(self._on_done)  # a result dispatched by another thread wakes us
        with self.waiting():
            while not future.done() and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with self._lock:
                    if self._reader is not None:
                        if self._reader == "background":
                            self._wake_background()
                        self._turn.wait(remaining)
                        continue
                    self._reader = "caller"
                try:
                    self._read(lambda: future.done() or self._closed, deadline)
                finally:
                    self._release()
        return future.done()

    def _wake_background(self) -> None:  # call with _lock held
        self._waker.wake()

    def _on_done(self, _future: Future) -> None:
        with self._lock:
            self._turn.notify_all()

    # ---- the background thread --------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        """Read results nobody waits for, until ``stop`` is set (run it on a thread)."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_pull, zmq.POLLIN)
        while not stop.is_set():
            with self._lock:
                if not self._background_has_work():
                    self._idle.wait(0.1)
                    continue
                self._reader = "background"
            try:
                while not stop.is_set() and not self._num_waiting and self._num_pending() > 0:
                    events = dict(poller.poll(100))
                    if self._wake_pull in events:
                        self._drain_wakes()
                    if self._sock in events:
                        self._drain()
            except Exception:  # results nobody waits for depend on this thread: it must outlive any bug
                log.exception("reading results")
            finally:
                self._release()

    def _drain_wakes(self) -> None:
        while True:
            try:
                self._wake_pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    # ---- reading ----------------------------------------------------------------------------
    def _read(self, done: Callable[[], bool], deadline: float) -> None:
        # A blocking receive (no poller to build, nothing to do after waking but dispatch), bounded
        # by RCVTIMEO so that a future failed by another thread (its deadline, a dead worker) ends
        # the wait within _READ_TIMEOUT_MS.
        while not done() and time.monotonic() < deadline:
            try:
                frames = self._sock.recv_multipart(copy=False)
            except zmq.Again:
                continue
            self._dispatch(frames, time.time())

    def _drain(self) -> None:
        for _ in range(_BATCH):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._dispatch(frames, time.time())

    def _release(self) -> None:
        with self._lock:
            self._reader = None
            self._turn.notify_all()
            if self._background_has_work():
                self._idle.notify()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop readers and close the wake sockets; the result socket stays its owner's.

        Call after :meth:`serve` has returned: waits (bounded) for a reading caller to let go
        of the socket, so that the owner may close it.
        """
        with self._lock:
            self._closed = True
            self._turn.notify_all()
            self._turn.wait_for(lambda: self._reader is None, timeout_s)
        self._waker.close()
        self._wake_pull.close(linger=0)
