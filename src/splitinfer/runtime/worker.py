"""The device worker: a long-running process that hosts stages and answers control requests.

Run it with ``splitinfer worker --name edge --listen tcp://0.0.0.0:5555 --token-file T``
or ``python -m splitinfer.runtime.worker ...``. Threads:

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
- control: deploy/undeploy, device info, profile and probe requests.

A worker survives any bad message: it answers with an ``error`` reply naming
the problem and keeps serving. It exits on ``shutdown``, SIGTERM/SIGINT, and
(when launched by a coordinator) when that coordinator dies.
See :mod:`splitinfer.runtime.codec` for what the token protects.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import dataclasses
import logging
import os
import queue
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from splitinfer.errors import ShapeError, SplitinferError, WorkerError, first_line
from splitinfer.runtime import codec
from splitinfer.runtime.codec import NEEDS_NO_AUTH, Message, read_token
from splitinfer.runtime.control import DeployedStage, handle_control
from splitinfer.runtime.link import LinkSender
from splitinfer.units import parse_size_bytes

log = logging.getLogger("splitinfer.worker")
_WAKE = "inproc://wake"
INLINE_MAX_BUSY_S = 0.002


@dataclass(frozen=True)
class WorkerConfig:
    """Options of one worker process (the CLI flags are generated from these fields)."""

    name: str = field(metadata={"help": "device name of this worker (as in cluster.yaml)"})
    listen: str = field(default="tcp://0.0.0.0:5555",
                        metadata={"help": "address to bind; tcp://127.0.0.1:* picks a free port"})
    providers: tuple[str, ...] = field(default=("CPUExecutionProvider",),
                                       metadata={"help": "ONNX Runtime execution providers, in order"})
    threads: int = field(default=0, metadata={"help": "intra-op threads (0 = ONNX Runtime's default)"})
    token_file: str | None = field(default=None, metadata={
        "help": "file holding the shared token ('-' = read one line from stdin); none = no auth"})
    max_frame_bytes: int = field(default=codec.DEFAULT_MAX_FRAME_BYTES,
                                 metadata={"help": "largest frame accepted (e.g. 1GiB)"})
    parent_pid: int | None = field(default=None, metadata={
        "help": "exit when this process dies (set by the local launcher)", "hidden": True})
    die_with_parent: bool = field(default=False, metadata={
        "help": "ask the kernel for SIGTERM when the parent thread dies (Linux)", "hidden": True})
    watch_stdin: bool = field(default=False, metadata={
        "help": "exit when stdin closes (set by the local launcher)", "hidden": True})


class Worker:
    """State shared by the IO, compute and control threads of one worker process."""

    def __init__(self, config: WorkerConfig, token: bytes | None) -> None:
        self.config = config
        self.token = token
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        self.router.bind(config.listen)
        self.address = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        # Replies from other threads wait in the outbox; a wake message to the ROUTER's own
        # in-process endpoint gets the IO thread to send them. So the IO thread blocks in one
        # recv (no poller on the hot path). The nonce never leaves this process.
        self.router.bind(_WAKE)
        self.router.setsockopt(zmq.RCVTIMEO, 200)
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._wake_nonce = secrets.token_bytes(16)
        self._local = threading.local()
        self._io_thread: int | None = None  # the thread that owns the ROUTER socket
        self.compute_queue: queue.Queue[tuple[bytes | None, Message, float]] = queue.Queue()
        self.control_queue: queue.Queue[tuple[bytes, Message]] = queue.Queue()
        self.stages: dict[tuple[str, int], DeployedStage] = {}
        self.lock = threading.Lock()  # guards stages and links
        self.links: dict[tuple[str, float | None, float | None, bool], tuple[LinkSender, int]] = {}
        self.stop = threading.Event()
        # Set by signal handlers, which must take no lock: Event.set() could deadlock with the
        # main thread's own stop.set() when SIGTERM and the parent-pid check coincide.
        self.signalled = False
        self.started_s = time.time()
        self.num_served = 0
        self.num_errors = 0
        self.num_inline = 0  # requests the IO thread ran itself (the fast path for short stages)

    # ---- replies -------------------------------------------------------------------------
    def reply(self, identity: bytes | None, header: Any, **payload: Any) -> None:
        """Send a reply to the peer ``identity`` from any thread (others go through the outbox)."""
        if identity is None:
            return
        frames = [identity, *codec.encode(header, self.token, **payload)]
        if threading.get_ident() == self._io_thread:
            self.router.send_multipart(frames, copy=False)
            return
        self._outbox.append(frames)
        wake = getattr(self._local, "wake", None)
        if wake is None:
            wake = self._local.wake = self.context.socket(zmq.DEALER)
            wake.setsockopt(zmq.LINGER, 0)
            wake.connect(_WAKE)
        with contextlib.suppress(zmq.Again):  # wakes already queued will do
            wake.send(self._wake_nonce, zmq.NOBLOCK)

    def reply_error(self, identity: bytes | None, request_id: int, err: Exception, **where: Any) -> None:
        """Answer with an ErrorReply and count it."""
        self.num_errors += 1
        self.reply(identity, codec.error_reply(request_id, err, **where))

    # ---- links ---------------------------------------------------------------------------
    def acquire_link(self, address: str, bandwidth_bps: float | None, latency_s: float | None,
                     to_coordinator: bool = False) -> LinkSender:
        """A shared sender per (address, shaping): stages sending to one device share its link."""
        key = (address, bandwidth_bps, latency_s, to_coordinator)
        with self.lock:
            sender, count = self.links.get(key, (None, 0))
            if sender is None:
                sender = LinkSender(self.context, address, bandwidth_bps=bandwidth_bps, latency_s=latency_s,
                                    to_coordinator=to_coordinator, on_reply=self._on_link_reply)
            self.links[key] = (sender, count + 1)
            return sender

    def release_link(self, sender: LinkSender) -> None:
        """Drop one reference; close the sender when no stage uses it any more."""
        with self.lock:
            for key, (s, count) in list(self.links.items()):
                if s is sender:
                    if count <= 1:
                        del self.links[key]
                        s.close()
                    else:
                        self.links[key] = (s, count - 1)

    def _on_link_reply(self, frames: list[bytes]) -> None:
        try:
            header = codec.decode(frames, self.token).header
        except SplitinferError:
            return
        if isinstance(header, codec.ErrorReply):
            log.warning("next hop refused request %s: %s", header.request_id, header.problem)

    # ---- IO thread -----------------------------------------------------------------------
    def handle_incoming(self, identity: bytes, frames: list[Any]) -> None:
        """Decode one message from the ROUTER and route it; never raises."""
        recv_unix_s = time.time()
        try:
            msg = codec.decode(frames, self.token, max_frame_bytes=self.config.max_frame_bytes)
        except SplitinferError as e:
            self.reply_error(identity, -1, e)
            return
        header = msg.header
        if not msg.authenticated and not isinstance(header, NEEDS_NO_AUTH):
            err = codec.wire_error("auth", f"worker {self.config.name!r} refuses a {type(header).__name__} "
                                   "message without a valid token MAC",
                                   "use the worker's shared token (cluster token_file)")
            self.reply_error(identity, header.request_id, err)
            return
        if isinstance(header, codec.Infer):  # the hot path first
            if self._is_short_and_idle(header):
                self.num_inline += 1
                self._compute_guarded(identity, msg, recv_unix_s)
            else:
                self.compute_queue.put((identity, msg, recv_unix_s))
        elif isinstance(header, codec.Health):
            self.reply(identity, codec.Done(request_id=header.request_id, data=self.health()))
        elif isinstance(header, codec.Echo):
            size = header.num_reply_bytes
            blob = bytes(size) if size is not None and 0 <= size <= self.config.max_frame_bytes else None
            blobs = [blob] if blob is not None else list(msg.blobs)
            self.reply(identity, codec.Done(request_id=header.request_id), blobs=blobs)
        elif isinstance(header, codec.Result | codec.ErrorReply | codec.Done):
            err = codec.wire_error("unexpected", f"a worker does not take {type(header).__name__} messages",
                                   "send results and replies to the coordinator")
            self.reply_error(identity, header.request_id, err)
        else:
            self.control_queue.put((identity, msg))

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
            except zmq.Again:
                frames = None
            if frames is not None and not self._is_wake(frames):
                self.handle_incoming(frames[0].bytes, frames[1:])
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
            self.router.send_multipart(self._outbox.popleft(), copy=False)

    # ---- compute thread ------------------------------------------------------------------
    def _is_short_and_idle(self, header: codec.Infer) -> bool:
        # unfinished_tasks counts queued and running items; only this (IO) thread puts work in
        # while the device is idle, so once it reads 0 no other request can start before this one.
        if self.compute_queue.unfinished_tasks:
            return False
        stage = self.stages.get((header.deployment_id, header.stage))
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

    def _compute_guarded(self, identity: bytes | None, msg: Message, recv_unix_s: float) -> None:
        try:
            self._compute_one(identity, msg, recv_unix_s)
        except Exception as e:  # never let one request kill the loop
            log.exception("unexpected failure running a stage")
            self.reply_error(identity, msg.header.request_id, e)

    def _compute_one(self, identity: bytes | None, msg: Message, recv_unix_s: float) -> None:
        header: codec.Infer = msg.header
        key = (header.deployment_id, header.stage)
        stage = self.stages.get(key)
        if stage is None:
            err = codec.wire_error("unknown_stage", f"worker {self.config.name!r} hosts no stage "
                                   f"{header.stage} of deployment {header.deployment_id!r}",
                                   "deploy the stage before sending requests to it")
            self.reply_error(identity, header.request_id, err)
            return
        where = stage.where
        if time.time() > header.deadline_unix_s:
            err = codec.wire_error("deadline", f"request {header.request_id} reached stage {header.stage} "
                                   "after its deadline", "give requests a longer deadline")
            self._fail(stage, identity, header.request_id, err, where)
            return
        start_unix_s = time.time()
        try:
            outputs, compute_s, wait_s = stage.runner.run(msg.arrays)
        except ShapeError as e:
            self._fail(stage, identity, header.request_id, codec.wire_error("input", e.problem, e.fix or ""),
                       where)
            return
        except Exception as e:  # ONNX Runtime's own run errors
            err = WorkerError(f"stage {header.stage} failed on {self.config.name!r}: {first_line(e)}",
                              "check the partition and its inputs")
            self._fail(stage, identity, header.request_id, err, where)
            return
        self.num_served += 1
        stamp = codec.StageStamp(header.stage, self.config.name, msg.sent_unix_s, recv_unix_s, start_unix_s,
                                 compute_s, wait_s)
        self._forward(stage, header, outputs, [*header.stamps, stamp])

    def _fail(self, stage: DeployedStage, identity: bytes | None, request_id: int, err: Exception,
              where: dict[str, Any]) -> None:
        # The sender learns why, and so does the coordinator, which owns the request's future.
        self.reply_error(identity, request_id, err, **where)
        stage.reply_link.send(codec.encode(codec.error_reply(request_id, err, **where), self.token), 0)

    def _forward(self, stage: DeployedStage, header: codec.Infer, outputs: list[Any],
                 stamps: list[codec.StageStamp]) -> None:
        names = stage.runner.output_names
        route = stage.header.route
        if stage.link is None:  # same worker: a free hop, no serialisation
            nxt = codec.Infer(request_id=header.request_id, deployment_id=header.deployment_id,
                              stage=header.stage + 1, deadline_unix_s=header.deadline_unix_s, stamps=stamps)
            now = time.time()  # handed over and received at once
            self.compute_queue.put((None, Message(nxt, arrays=dict(zip(names, outputs, strict=True)),
                                                  sent_unix_s=now), now))
            return
        if route.to_coordinator:
            out: Any = codec.Result(request_id=header.request_id, deployment_id=header.deployment_id,
                                    stamps=stamps)
        else:
            out = codec.Infer(request_id=header.request_id, deployment_id=header.deployment_id,
                              stage=header.stage + 1, deadline_unix_s=header.deadline_unix_s, stamps=stamps)
        frames = codec.encode(out, self.token, arrays=list(zip(names, outputs, strict=True)))
        stage.link.send(frames, sum(int(o.nbytes) for o in outputs))

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
            with self.lock:
                for sender, _ in self.links.values():
                    sender.close()
                self.links.clear()
            self.context.destroy(linger=0)

    def _control_loop(self) -> None:
        while not self.stop.is_set():
            try:
                identity, msg = self.control_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                handle_control(self, identity, msg)
            except Exception as e:  # every failure becomes an error reply
                if not isinstance(e, SplitinferError):
                    log.exception("control request failed")
                self.reply_error(identity, msg.header.request_id, e)


def _die_with_parent(parent_pid: int, use_pdeathsig: bool) -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGTERM when the parent *thread* dies (Linux only),
    # so the launcher asks for it only from its main thread. The parent-pid check in the
    # IO loop covers other systems and the race before this call.
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)
        except OSError:
            pass
    if os.getppid() != parent_pid:
        sys.exit(0)


def _watch_stdin(stop: threading.Event) -> None:
    # The launcher holds our stdin open; EOF means it is gone, however it died.
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def serve_worker(config: WorkerConfig) -> None:
    """Run a worker in this process until it is stopped (blocks)."""
    if config.parent_pid is not None:
        _die_with_parent(config.parent_pid, config.die_with_parent)
    token = read_token(config.token_file)
    try:
        worker = Worker(config, token)
    except zmq.ZMQError as e:
        raise WorkerError(f"cannot listen on {config.listen}: {e}",
                          "pick a free port and an address of this machine, "
                          "e.g. tcp://0.0.0.0:5555") from None
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(worker, "signalled", True))
    if token is None:
        log.warning("no token: anyone who can reach %s can deploy models and run requests", worker.address)
    if config.watch_stdin:
        threading.Thread(target=_watch_stdin, args=(worker.stop,), daemon=True).start()
    print(f"READY {worker.address}", flush=True)
    worker.run_forever()


def build_parser(prog: str = "splitinfer worker") -> argparse.ArgumentParser:
    """Command-line flags generated from :class:`WorkerConfig`'s fields."""
    parser = argparse.ArgumentParser(prog=prog, description="Run a splitinfer device worker.")
    for f in dataclasses.fields(WorkerConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = argparse.SUPPRESS if f.metadata.get("hidden") else f.metadata["help"]
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", help=help_text)
        elif f.name == "providers":
            parser.add_argument(flag, nargs="+", default=list(f.default), help=help_text)
        elif f.name == "max_frame_bytes":
            parser.add_argument(flag, type=parse_size_bytes, default=f.default, help=help_text)
        elif f.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=help_text)
        else:
            kind = int if f.type in ("int", "int | None") else str
            parser.add_argument(flag, type=kind, default=f.default, help=help_text)
    return parser


def parse_config(argv: list[str], prog: str = "splitinfer worker") -> WorkerConfig:
    """A WorkerConfig from command-line arguments."""
    args = vars(build_parser(prog).parse_args(argv))
    providers = tuple(p for item in args["providers"] for p in item.split(",") if p)
    return WorkerConfig(**{**args, "providers": providers})


def main(argv: list[str] | None = None) -> int:
    """``python -m splitinfer.runtime.worker``: run a worker; errors become one line, exit 2."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(message)s")
    try:
        serve_worker(parse_config(sys.argv[1:] if argv is None else argv,
                                  prog="python -m splitinfer.runtime.worker"))
    except SplitinferError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
