"""The one place ZeroMQ sockets (and a worker's context) get their options, and the in-process wake-up
between threads.

Every socket splitinfer opens lingers 0 ms on close (a closed pipeline drops
what it had queued: the coordinator re-sends or fails those requests itself)
and has unbounded queues (pipelining is bounded by the caller, and a high-water
mark would silently drop or block messages instead).
"""

from __future__ import annotations

import contextlib
import threading

import zmq

from splitinfer.errors import TransportError
from splitinfer.runtime.wire.curve import Curve

_ZERO_COPY_RECV = 10  # libzmq's ZMQ_ZERO_COPY_RECV, a draft context option (4.3)


def worker_context() -> zmq.Context:
    """A worker's ZeroMQ context: each message it receives is in a buffer of its own, let go with the
    message. With libzmq's default (zero-copy receive) a large message's bytes stay in its connection's
    receive buffer until the next message comes: a partition's chunk (up to 4 MiB) stayed resident through
    the deploy that followed it, counted against the stage. Where libzmq lacks the option, its default."""
    context = zmq.Context()
    with contextlib.suppress(zmq.ZMQError):
        context.set(_ZERO_COPY_RECV, 0)
    return context


def open_socket(context: zmq.Context, kind: int, *, connect: str | None = None, bind: str | None = None,
                recv_timeout_ms: int | None = None, curve: Curve | None = None) -> zmq.Socket:
    """A socket of ``kind`` with no linger and unbounded queues, connected or bound as asked;
    a CurveZMQ client or server when ``curve`` is given (:mod:`.curve`)."""
    sock = context.socket(kind)
    try:
        if curve is not None:
            curve.apply(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if recv_timeout_ms is not None:
            sock.setsockopt(zmq.RCVTIMEO, recv_timeout_ms)
        if bind is not None:
            sock.bind(bind)
        if connect is not None:
            sock.connect(connect)
    except BaseException:  # a socket that cannot bind or connect is closed, not left open
        sock.close(linger=0)
        raise
    return sock


def connect_dealer(context: zmq.Context, address: str, kind: int = zmq.DEALER, *,
                   curve: Curve | None = None) -> zmq.Socket:
    """A DEALER (or PUSH) connected to ``address``; TransportError naming it when ZeroMQ refuses it."""
    try:
        return open_socket(context, kind, connect=address, curve=curve)
    except zmq.ZMQError as e:
        raise TransportError(f"cannot connect to {address!r}: {e.strerror}",
                             "give a worker address like tcp://HOST:PORT (port 1 to 65535)") from None


class Waker:
    """Wakes the thread that blocks on a socket bound at ``address`` (``inproc://``), from any thread.

    A ZeroMQ socket belongs to one thread, so each waking thread gets its own sending
    socket, made on its first :meth:`wake`. A wake never blocks: when one is already
    queued, the reader will wake anyway.
    """

    def __init__(self, context: zmq.Context, address: str, *, kind: int = zmq.PUSH,
                 payload: bytes = b"") -> None:
        self._context = context
        self._address = address
        self._kind = kind
        self._payload = payload
        self._local = threading.local()
        self._lock = threading.Lock()
        self._socks: list[zmq.Socket] = []
        self._closed = False

    def wake(self) -> None:
        """Queue one wake-up message for the reader."""
        sock = getattr(self._local, "sock", None)
        if sock is None:
            with self._lock:
                if self._closed:
                    return
                sock = self._local.sock = open_socket(self._context, self._kind, connect=self._address)
                self._socks.append(sock)
        with contextlib.suppress(zmq.Again, zmq.ContextTerminated):
            sock.send(self._payload, zmq.NOBLOCK)

    def close(self) -> None:
        """Close every thread's sending socket."""
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close(linger=0)
