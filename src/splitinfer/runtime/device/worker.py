"""The device worker: a long-running process that hosts stages and answers control requests.

Run it with ``splitinfer worker --name edge --listen tcp://0.0.0.0:5555 --token-file T``
or ``python -m splitinfer.runtime.device ...`` (:mod:`.process`). Threads:

- IO (the main thread): owns the ROUTER socket. It decodes and validates each
  message, answers ``health`` and ``echo`` itself, queues ``infer`` messages
  for the compute loop and everything else for the control loop, and forwards
  replies that other threads put on the in-process outbox.
- compute: one loop per worker (a device computes one thing at a time), runs
  stages in arrival order and hands outputs to the stage's outgoing link, or
  straight back to its own queue when the next stage is on this worker.
  Fast path: when the device is idle (nothing queued or running) and a stage's
  last run kept it busy for at most ``INLINE_MAX_BUSY_S``, the IO thread runs
  it itself. A thread hand-off costs tens of microseconds, as much as a whole
  loopback hop; a short stage delays health answers by less than that limit.
- control: deploy/undeploy, device info, profile, probe and resources requests.

A worker survives any bad message: it answers with an ``error`` reply naming
the problem and keeps serving. It exits on ``shutdown``, SIGTERM/SIGINT, and
(when launched by a coordinator) when that coordinator dies.
See :mod:`splitinfer.runtime.wire.codec` for what the token protects.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import secrets
import threading
import time
from typing import Any

import zmq

from splitinfer.errors import (
    AuthError,
    DeadlineError,
    ErrorCode,
    SplitinferError,
    TransportError,
    WorkerError,
    first_line,
)
from splitinfer.runtime.device._control import DeviceContext, handle_control, memory_scope
from splitinfer.runtime.device._execution import start_runtime
from splitinfer.runtime.device._exits import run_request
from splitinfer.runtime.device._forward import forward
from splitinfer.runtime.device._partition_cache import open_store
from splitinfer.runtime.device._stages import DeployedStage, StageTable
from splitinfer.runtime.device.config import WorkerConfig
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.curve import Curve, Gate, KeyPair, open_gate, user_id
from splitinfer.runtime.wire.link import LinkSender
from splitinfer.runtime.wire.messages import NEEDS_NO_AUTH, Message
from splitinfer.runtime.wire.replay import ReplayGuard, Sender
from splitinfer.runtime.wire.sockets import Waker, open_socket, worker_context

log = logging.getLogger("splitinfer.worker")
_WAKE = "inproc://wake"
INLINE_MAX_BUSY_S = 0.002
_PEER_KINDS = (messages.Infer, messages.Echo, messages.Health)  # what a peer worker's CURVE key may send


class Worker:
    """State shared by the IO, compute and control threads of one worker process."""

    def __init__(self, config: WorkerConfig, token: bytes | None) -> None:
        self.config = config
        self.token = token
        # First: a cache folder that cannot be used stops the worker before it opens a socket.
        self.partitions = open_store(config.name, config.cache_dir, config.cache_max_bytes, config.model_dir,
                                     config.max_frame_bytes, config.providers, config.optimize_ahead)
        start_runtime(config.providers, config.num_threads)
        self.context = worker_context()
        self.gate: Gate | None = None
        try:
            self.keys, self.gate = self._curve(config)  # CurveZMQ (wire/curve.py), or None and None
            self.router = open_socket(self.context, zmq.ROUTER, bind=config.listen, recv_timeout_ms=200,
                                      curve=Curve(self.keys) if self.keys else None)
        except BaseException:
            self._close_gate()
            raise
        self.address = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        # Other threads' replies wait in the outbox; a wake message to the ROUTER's own in-process endpoint
        # gets the IO thread to send them: it blocks in one recv (no poller on the hot path). The nonce never
        # leaves this process.
        self.router.bind(_WAKE)
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._wake_nonce = secrets.token_bytes(16)
        self._waker = Waker(self.context, _WAKE, kind=zmq.DEALER, payload=self._wake_nonce)
        self._io_thread: int | None = None  # the thread that owns the ROUTER socket
        self.compute_queue: queue.Queue[tuple[bytes | None, Message, float]] = queue.Queue()
        self.control_queue: queue.Queue[tuple[bytes, Message]] = queue.Queue()
        self.stages = StageTable(self._open_link)
        self.device = DeviceContext(config.name, self.address, config.providers, config.num_threads,
                                    self.stages, self.context, token, config.max_frame_bytes, self.keys,
                                    config.mac_tensors, partitions=self.partitions)
        self.stop = threading.Event()
        # Set by signal handlers, which take no lock: Event.set() could deadlock with stop.set() (SIGTERM).
        self.signalled = False
        self.started_s = time.time()
        self.num_served = 0
        self.num_errors = 0
        self.num_inline = 0  # requests the IO thread ran itself (the fast path for short stages)
        self._sender = Sender()  # numbers the replies on the ROUTER (wire/replay.py)
        self._replays = ReplayGuard()  # signed messages accepted: on the ROUTER and as link replies

    def _curve(self, config: WorkerConfig) -> tuple[KeyPair | None, Gate | None]:
        if config.curve_secret_key is None:
            return None, None
        return open_gate(self.context, config.curve_secret_key, config.curve_coordinator_keys or "",
                         config.curve_peer_keys or "")

    def _close_gate(self) -> None:
        if self.gate is not None:
            self.gate.stop()
        self.context.destroy(linger=0)
        self.partitions.close()

    # ---- replies -------------------------------------------------------------------------
    def reply(self, identity: bytes | None, header: Any, **payload: Any) -> None:
        """Send a reply to the peer ``identity`` from any thread (others go through the outbox)."""
        if identity is None:
            return
        frames = [identity, *codec.encode(header, self.token, sender=self._sender,
                                          mac_tensors=self.config.mac_tensors, **payload)]
        if threading.get_ident() == self._io_thread:
            self.router.send_multipart(frames, copy=False)
            return
        self._outbox.append(frames)
        self._waker.wake()

    def reply_error(self, identity: bytes | None, request_id: int, err: Exception, **where: Any) -> None:
        """Answer with an ErrorReply and count it."""
        self.num_errors += 1
        self.reply(identity, messages.error_reply(request_id, err, **where))

    # ---- links ---------------------------------------------------------------------------
    def _open_link(self, address: str, bandwidth_bps: float | None, latency_s: float | None,
                   to_coordinator: bool, server_key: str) -> LinkSender:
        curve = self.device.curve_to(server_key, address)
        return LinkSender(self.context, address, bandwidth_bps=bandwidth_bps, latency_s=latency_s,
                          to_coordinator=to_coordinator, on_reply=self._on_link_reply, curve=curve)

    def _on_link_reply(self, frames: list[bytes]) -> None:
        try:
            msg = codec.decode(frames, self.token)
            if self.token and msg.authenticated:
                self._replays.check(msg)
        except SplitinferError:
            return
        header = msg.header
        if isinstance(header, messages.ErrorReply):
            log.warning("next hop refused request %s: %s", header.request_id, header.problem)

    # ---- IO thread -----------------------------------------------------------------------
    def handle_incoming(self, identity: bytes, frames: list[Any]) -> None:
        """Decode one message from the ROUTER and route it; never raises: the IO thread is the
        worker process, and no message a peer sends (nor a bug it reaches) may end it."""
        try:
            if self.gate is not None and not self.gate.may_control(user_id(frames[0])):
                self._handle(identity, frames, time.time(), peer=True)
            else:
                self._handle(identity, frames, time.time())
        except Exception as e:
            log.exception("unexpected failure handling a message")
            with contextlib.suppress(Exception):  # the reply may be what fails
                self.reply_error(identity, -1, e)

    def _handle(self, identity: bytes, frames: list[Any], recv_unix_s: float, peer: bool = False) -> None:
        try:
            msg = codec.decode(frames, self.token, max_frame_bytes=self.config.max_frame_bytes)
        except SplitinferError as e:
            self.reply_error(identity, -1, e)
            return
        header = msg.header
        if not msg.authenticated and not isinstance(header, NEEDS_NO_AUTH):
            err = AuthError(f"worker {self.config.name!r} refuses a {type(header).__name__} message without "
                            "a valid token MAC", "use the worker's shared token (cluster token_file)")
            self.reply_error(identity, header.request_id, err)
            return
        if self.token and not isinstance(header, NEEDS_NO_AUTH):
            try:
                self._replays.check(msg)  # each signed message once, and only fresh (wire/replay.py)
            except TransportError as e:
                self.reply_error(identity, header.request_id, e)
                return
        refusal = self._refusal(msg, peer)
        if refusal is not None:
            self.reply_error(identity, header.request_id, refusal)
            return
        if isinstance(header, messages.Infer):  # the hot path first
            if self._is_short_and_idle(header):
                self.num_inline += 1
                self._compute_guarded(identity, msg, recv_unix_s)
            else:
                self.compute_queue.put((identity, msg, recv_unix_s))
        elif isinstance(header, messages.Health):
            self.reply(identity, messages.Done(request_id=header.request_id, data=self.health()))
        elif isinstance(header, messages.Echo):
            size = header.num_reply_bytes
            blob = bytes(size) if size is not None and 0 <= size <= self.config.max_frame_bytes else None
            blobs = [blob] if blob is not None else list(msg.blobs)
            self.reply(identity, messages.Done(request_id=header.request_id), blobs=blobs)
        elif isinstance(header, messages.Outputs | messages.ErrorReply | messages.Done):
            err = TransportError(f"a worker does not take {type(header).__name__} messages",
                                 "send results and replies to the coordinator", code=ErrorCode.UNEXPECTED)
            self.reply_error(identity, header.request_id, err)
        else:
            self.control_queue.put((identity, msg))

    def _refusal(self, msg: Message, peer: bool) -> AuthError | None:
        """Why a message that passed the codec is still refused: a peer's control request, or
        tensors without a MAC when this worker requires one."""
        header = msg.header
        if peer and not isinstance(header, _PEER_KINDS):
            return AuthError(f"worker {self.config.name!r} takes {type(header).__name__} messages only from "
                             "the coordinator keys it trusts", "send it from the coordinator "
                             "(a peer worker's key may send only stage inputs, echo and health)")
        if self.config.mac_tensors and (msg.blobs or msg.arrays) and not msg.tensors_authenticated \
                and not isinstance(header, NEEDS_NO_AUTH):
            return AuthError(f"worker {self.config.name!r} requires MACs over tensor bytes (--mac-tensors) "
                             f"and this {type(header).__name__} message has none",
                             "set mac_tensors: true in cluster.yaml (WorkerClient(mac_tensors=True))")
        return None

    def health(self) -> dict[str, Any]:
        """Liveness figures, cheap enough to answer from the IO thread."""
        return {"name": self.config.name, "pid": os.getpid(), "uptime_s": time.time() - self.started_s,
                "num_stages": len(self.stages), "num_queued": self.compute_queue.qsize(),
                "num_served": self.num_served, "num_inline": self.num_inline, "num_errors": self.num_errors}

    def serve(self) -> None:
        """The IO loop (main thread) until stopped."""
        self._io_thread = threading.get_ident()
        next_check_s = 0.0
        while not self.stop.is_set() and not self.signalled:
            try:
                frames = self.router.recv_multipart(copy=False)  # at most RCVTIMEO (200 ms)
                if not self._is_wake(frames):
                    self.handle_incoming(frames[0].bytes, frames[1:])
                # Its tensors live as long as its work, not until the next message arrives: a stage would
                # otherwise hold the tensors entering it twice (the last request's and the running one's).
                del frames
            except zmq.Again:
                pass
            except Exception:  # this thread is the process: whatever a message caused, keep serving
                log.exception("receiving a message")
            if self._outbox:
                self._forward_outbox()
            if time.monotonic() > next_check_s:
                next_check_s = time.monotonic() + 0.2
                if self.config.parent_pid is not None and os.getppid() != self.config.parent_pid:
                    log.warning("coordinator (pid %s) is gone: stopping", self.config.parent_pid)
                    self.stop.set()

    def _is_wake(self, frames: list[Any]) -> bool:
        return len(frames) == 2 and len(frames[1]) == len(self._wake_nonce) and \
            frames[1].bytes == self._wake_nonce

    def _forward_outbox(self) -> None:
        while self._outbox:
            try:
                self.router.send_multipart(self._outbox.popleft(), copy=False)
            except Exception:  # one reply that cannot go out must not hold back the others
                log.exception("sending a reply")

    # ---- compute thread ------------------------------------------------------------------
    def _is_short_and_idle(self, header: messages.Infer) -> bool:
        # unfinished_tasks counts queued and running items; only this (IO) thread puts work in
        # while the device is idle, so once it reads 0 no other request can start before this one.
        if self.compute_queue.unfinished_tasks:
            return False
        stage = self.stages.get(header.deployment_id, header.stage)
        return stage is not None and stage.runner.last_busy_s <= INLINE_MAX_BUSY_S

    def compute_loop(self) -> None:
        """Run queued stage inputs one at a time, forever."""
        while not self.stop.is_set():
            try:
                identity, msg, recv_unix_s = self.compute_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._compute_guarded(identity, msg, recv_unix_s)
            finally:
                self.compute_queue.task_done()
            del msg  # as in serve: not held until the next request

    def _compute_guarded(self, identity: bytes | None, msg: Message, recv_unix_s: float) -> None:
        try:
            self._compute_one(identity, msg, recv_unix_s)
        except Exception as e:  # never let one request kill the loop
            log.exception("unexpected failure running a stage")
            with contextlib.suppress(Exception):  # nor its error reply
                self.reply_error(identity, msg.header.request_id, _unexpected(e))

    def _compute_one(self, identity: bytes | None, msg: Message, recv_unix_s: float) -> None:
        header: messages.Infer = msg.header
        stage = self.stages.get(header.deployment_id, header.stage)
        if stage is None:
            err = WorkerError(f"worker {self.config.name!r} hosts no stage {header.stage} of deployment "
                              f"{header.deployment_id!r}", "deploy the stage before sending requests to it",
                              code=ErrorCode.UNKNOWN_STAGE)
            self.reply_error(identity, header.request_id, err)
            return
        where = stage.where
        if not time.time() <= header.deadline_unix_s:  # NaN never lies ahead: it has expired
            err = DeadlineError(f"request {header.request_id} reached stage {header.stage} after its "
                                "deadline", "give requests a longer deadline")
            self._fail(stage, identity, header.request_id, err, where)
            return
        start_unix_s = time.time()
        try:
            outputs, compute_s, wait_s, exited = run_request(stage.runner, msg.arrays, header)
        except SplitinferError as e:  # inputs that do not fit, a sequence's lost state: the caller gets it
            self._fail(stage, identity, header.request_id, e, where)
            return
        except Exception as e:  # ONNX Runtime's own run errors
            err = WorkerError(f"stage {header.stage} failed on {self.config.name!r}: {first_line(e)}",
                              "check the partition and its inputs")
            self._fail(stage, identity, header.request_id, err, where)
            return
        self.num_served += 1
        stamp = messages.StageStamp(header.stage, self.config.name, msg.sent_unix_s, recv_unix_s,
                                    start_unix_s, compute_s, wait_s)
        self._forward(stage, header, outputs, stamp, exited)

    def _fail(self, stage: DeployedStage, identity: bytes | None, request_id: int, err: Exception,
              where: dict[str, Any]) -> None:
        # The sender learns why, and so does the coordinator, which owns the request's future.
        self.reply_error(identity, request_id, err, **where)
        frames = codec.encode(messages.error_reply(request_id, err, **where), self.token,
                              sender=stage.reply_link.sender, mac_tensors=self.config.mac_tensors)
        stage.reply_link.send(frames, 0)

    def _forward(self, stage: DeployedStage, header: messages.Infer, outputs: list[Any],
                 stamp: messages.StageStamp, exited: str = "") -> None:
        def hand_over(msg: Message) -> None:  # the next stage is on this worker: a free hop
            self.compute_queue.put((None, msg, msg.sent_unix_s))
        forward(stage, header, outputs, stamp, exited, token=self.token, mac_tensors=self.config.mac_tensors,
                hand_over=hand_over)

    # ---- lifecycle -----------------------------------------------------------------------
    def run_forever(self) -> None:
        """Start the compute and control threads, serve until stopped, then clean up."""
        threads = [threading.Thread(target=self.compute_loop, name="compute", daemon=True),
                   threading.Thread(target=self._control_loop, name="control", daemon=True)]
        for t in threads:
            t.start()
        try:
            self.serve()
        finally:
            self.stop.set()
            for t in threads:  # let them finish what they hold before their sockets go away
                t.join(timeout=1.0)
            # Replies queued just before the stop (e.g. to 'shutdown') still go out.
            self._forward_outbox()
            self.router.close(linger=500)
            self.device.resources.stop()
            self.device.clocks.restore()  # a configuration's clocks: the device as it was found
            self.stages.close()
            self._waker.close()
            self._close_gate()

    def _control_loop(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.control_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with memory_scope(item[1].header):
                self._control_one(*item)
                del item  # its message (a partition's bytes, a profile's feeds) goes now, not at the next

    def _control_one(self, identity: bytes, msg: Message) -> None:
        try:
            if isinstance(msg.header, messages.Shutdown):
                self.reply(identity, messages.Done(request_id=msg.header.request_id))
                self.stop.set()
                return
            data, arrays = handle_control(self.device, msg)
            self.reply(identity, messages.Done(request_id=msg.header.request_id, data=data), arrays=arrays)
        except Exception as e:  # every failure becomes an error reply
            if not isinstance(e, SplitinferError):
                log.exception("control request failed")
                e = _unexpected(e)
            with contextlib.suppress(Exception):  # which must not end the loop either
                self.reply_error(identity, msg.header.request_id, e)


def _unexpected(err: Exception) -> WorkerError:
    """What an error reply says of a failure no check foresaw: its type and first line, and a fix."""
    return WorkerError(f"{type(err).__name__}: {first_line(err)}",
                       "the worker's log has the traceback; report it if the request was valid")
