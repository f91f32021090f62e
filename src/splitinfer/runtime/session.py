"""The coordinator: deploy stages onto workers and run requests through them.

``deploy_stages(stages, cluster)`` starts workers for ``local`` devices,
deploys the chain and returns a :class:`Session`::

    with deploy_stages(stages, cluster) as session:
        (y,) = session.run(None, {"x": x})            # like onnxruntime.InferenceSession.run
        future = session.submit({"x": x})              # -> Future[Result]
        for result in session.stream(feeds, max_in_flight=8):
            print(result.outputs, result.timing.latency_s)

Many requests are in flight at once (pipelining); results are matched to
requests by id. Every request has a deadline; the caller always gets a result
or an exception. Heartbeats notice a dead or silent worker within
``dead_after_s`` (+ one heartbeat); requests in flight are then re-sent on a
new pipeline from ``replan(excluded_devices)``, or fail with a WorkerError.
See :mod:`splitinfer.runtime.codec` for what the shared token protects.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from splitinfer.cluster import Cluster
from splitinfer.errors import AuthError, ClusterError, DeadlineError, ModelError, SplitinferError, WorkerError
from splitinfer.runtime import codec
from splitinfer.runtime.client import WorkerClient
from splitinfer.runtime.execution import check_feeds
from splitinfer.runtime.heartbeat import Heartbeat
from splitinfer.runtime.inbox import Inbox
from splitinfer.runtime.launcher import Launcher, session_token, start_workers
from splitinfer.runtime.pipeline import (
    Pipeline,
    StageSpec,
    check_chain,
    deploy_pipeline,
    reachable_ip,
    undeploy_pipeline,
)
from splitinfer.runtime.timing import RequestTiming, Result, build_timing
from splitinfer.types import TensorSpec

if TYPE_CHECKING:
    from splitinfer.graph import Model
    from splitinfer.plan import Plan

log = logging.getLogger("splitinfer.session")
Replan = Callable[[frozenset[str]], Sequence[StageSpec]]


@dataclass(frozen=True)
class SessionOptions:
    """How a session deploys, waits and watches its workers."""

    timeout_s: float = 30.0  # default deadline of each request
    heartbeat_interval_s: float = 0.5  # how often each worker is asked for health
    dead_after_s: float = 1.9  # a worker silent this long is dead (noticed within this + 0.05 s)
    deploy_timeout_s: float = 120.0  # building and warming up one stage's ONNX Runtime session
    connect_timeout_s: float = 5.0  # a worker must answer health this fast when the session starts
    startup_timeout_s: float = 60.0  # local worker processes must be ready this fast
    coordinator_host: str | None = None  # address workers use to reach this process (None: found)


@dataclass
class _Pending:
    request_id: int
    arrays: list[tuple[str, np.ndarray]]
    future: Future
    submitted_unix_s: float
    deadline_unix_s: float
    num_attempts: int = 0
    deployment_id: str = field(default="")


class Session:
    """A deployed pipeline; create it with :func:`deploy_stages`."""

    def __init__(self, cluster: Cluster, *, token: bytes, replan: Replan | None,
                 options: SessionOptions) -> None:
        self.cluster = cluster
        self.options = options
        self.timeout_s = options.timeout_s
        self._last_result: Result | None = None
        self.num_replans = 0
        self.plan: Plan | None = None  # the plan the stages come from (set by runtime.deploy)
        self.model: Model | None = None  # the whole model (set by runtime.deploy)
        self._token = token
        self._replan = replan
        self._context = zmq.Context()
        self._lock = threading.RLock()
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._ids = itertools.count(1)
        self._pipeline: Pipeline | None = None
        self._state = "starting"  # starting | ready | recovering | broken | closed
        self._broken: SplitinferError | None = None
        self._dead: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._launcher: Launcher | None = None
        self._clients: dict[str, WorkerClient] = {}
        self.addresses: dict[str, str] = {}
        self._result_sock = self._context.socket(zmq.PULL)  # workers' results and errors: never answered
        self._result_sock.setsockopt(zmq.LINGER, 0)
        self._result_sock.setsockopt(zmq.RCVHWM, 0)
        self.result_address = self._bind_result(options.coordinator_host)
        self._inbox = Inbox(self._context, self._result_sock, self._on_frames, lambda: len(self._pending))
        atexit.register(self.close)

    @property
    def last_timing(self) -> RequestTiming | None:
        """The timing record of the last :meth:`run` (None before the first)."""
        return None if self._last_result is None else self._last_result.timing

    # ---- start -------------------------------------------------------------------------------
    @property
    def _host_known_late(self) -> bool:
        # Ray places workers on nodes known only once they start, and netns workers reach us through
        # a bridge made when they start: _start picks the advertised host then.
        return self.cluster.backend == "ray" or self.cluster.network == "netns"

    def _bind_result(self, host: str | None) -> str:
        remote = [d for d in self.cluster.devices if not d.is_local]
        if host is None:
            host = reachable_ip(remote[0].address) if remote else "127.0.0.1"
        bind_host = "0.0.0.0" if remote or self._host_known_late else host
        port = self._result_sock.bind_to_random_port(f"tcp://{bind_host}")
        return f"tcp://{host}:{port}"

    def _start(self, stages: Sequence[StageSpec]) -> None:
        self._launcher, addresses = start_workers(self.cluster, self._token,
                                                  startup_timeout_s=self.options.startup_timeout_s)
        self.addresses.update(addresses)
        if self._host_known_late and self.options.coordinator_host is None and addresses:
            port = self.result_address.rsplit(":", 1)[1]
            self.result_address = f"tcp://{reachable_ip(next(iter(addresses.values())))}:{port}"
        needed = {s.device for s in stages}
        for name, address in self.addresses.items():
            client = WorkerClient(address, self._token, context=self._context, name=name)
            self._clients[name] = client
            try:
                found = client.health(timeout_s=self.options.connect_timeout_s)["name"]
            except DeadlineError:
                if name in needed:
                    port = address.rsplit(":", 1)[-1]
                    raise ClusterError(f"no worker answers for device {name!r} at {address}",
                                       f"start one on that machine: splitinfer worker --name {name} "
                                       f"--listen tcp://0.0.0.0:{port} --token-file TOKEN") from None
                self._dead.add(name)  # a spare that is down: replans will avoid it
                continue
            if found != name:
                raise ClusterError(f"the worker at {address} is named {found!r}, the cluster expects "
                                   f"{name!r}",
                                   "fix the address in cluster.yaml or the worker's --name")
        self._pipeline = self._deploy(stages)
        self._state = "ready"
        for target, args, name in ((self._inbox.serve, (self._stop,), "results"),
                                   (self._monitor_loop, (), "monitor")):
            thread = threading.Thread(target=target, args=args, name=f"session-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _deploy(self, stages: Sequence[StageSpec]) -> Pipeline:
        return deploy_pipeline(stages, self.cluster, clients=self._clients, addresses=self.addresses,
                               result_address=self.result_address, context=self._context, token=self._token,
                               timeout_s=self.options.deploy_timeout_s, on_reply=self._on_frames)

    # ---- public API --------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model inputs: what ``feeds`` must contain."""
        assert self._pipeline is not None
        return self._pipeline.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model outputs, in the order ``run(None, ...)`` returns them."""
        assert self._pipeline is not None
        return self._pipeline.outputs

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """The stages currently deployed (they change after a replan)."""
        assert self._pipeline is not None
        return self._pipeline.stages

    @property
    def state(self) -> str:
        """starting | ready | recovering (re-planning after a failure) | broken | closed."""
        return self._state

    @property
    def dead_devices(self) -> frozenset[str]:
        """Devices whose workers died or stopped answering."""
        return frozenset(self._dead)

    @property
    def worker_pids(self) -> dict[str, int]:
        """Process ids of the local workers this session started."""
        return self._launcher.pids if self._launcher else {}

    def worker_client(self, device: str, timeout_s: float = 10.0) -> WorkerClient:
        """A new client for a device's worker (info, echo, profile, probe), with this session's token.

        The caller closes it. Profile runs compete with the session's own requests for that device.
        """
        if device not in self.addresses:
            raise ClusterError(f"no worker for device {device!r} in this session",
                               f"use one of: {', '.join(self.addresses)}")
        return WorkerClient(self.addresses[device], self._token, timeout_s=timeout_s, name=device)

    def submit(self, feeds: Mapping[str, np.ndarray], deadline_s: float | None = None) -> Future:
        """Send one request; the Future gives a :class:`Result` or raises (deadline, worker failure)."""
        if self._state == "closed":
            raise WorkerError("the session is closed", "deploy the stages again to run more requests")
        arrays = {name: np.asarray(value) for name, value in feeds.items()}
        check_feeds(arrays, self.inputs, "session input")
        now = time.time()
        timeout = self.timeout_s if deadline_s is None else deadline_s
        future: Future = Future()
        future.set_running_or_notify_cancel()
        pending = _Pending(next(self._ids), [(s.name, arrays[s.name]) for s in self.inputs], future, now,
                           now + timeout)
        with self._lock:
            if self._state == "broken":
                future.set_exception(self._broken or WorkerError("the pipeline is broken", None))
                return future
            self._pending[pending.request_id] = pending
            heapq.heappush(self._deadlines, (pending.deadline_unix_s, pending.request_id))
            if self._state == "ready":
                self._send(pending)
            # while recovering, the new pipeline sends everything still pending
        self._inbox.submitted()
        return future

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray], *,
            deadline_s: float | None = None) -> list[np.ndarray]:
        """Run one request and wait: the call shape of ``onnxruntime.InferenceSession.run``."""
        known = [s.name for s in self.outputs]
        for name in output_names or ():
            if name not in known:
                raise ModelError(f"{name!r} is not an output of the model", f"ask for some of {known}")
        with self._inbox.waiting():  # this thread reads its own result: no thread switch on the way
            result = self._wait(self.submit(feeds, deadline_s), deadline_s)
        self._last_result = result
        return result.as_list(output_names)

    def stream(self, feeds: Iterable[Mapping[str, np.ndarray]], *, max_in_flight: int = 8,
               deadline_s: float | None = None) -> Iterator[Result]:
        """Results in input order, keeping up to ``max_in_flight`` requests in the pipeline."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        window: deque[Future] = deque()
        for item in feeds:
            window.append(self.submit(item, deadline_s))
            if len(window) >= max_in_flight:
                yield self._wait(window.popleft(), deadline_s)
        while window:
            yield self._wait(window.popleft(), deadline_s)

    def _wait(self, future: Future, deadline_s: float | None) -> Result:
        # The monitor fails the future at its deadline; the margin only guards against a stuck monitor.
        timeout = (self.timeout_s if deadline_s is None else deadline_s) + 5.0
        if not self._inbox.wait(future, timeout):
            raise DeadlineError(f"no result within {timeout:g} s", "give the request a longer deadline")
        return future.result()

    # ---- sending and receiving -------------------------------------------------------------
    def _send(self, pending: _Pending) -> None:
        pipeline = self._pipeline
        assert pipeline is not None
        header = codec.Infer(request_id=pending.request_id, deployment_id=pipeline.deployment_id, stage=0,
                             deadline_unix_s=pending.deadline_unix_s)
        frames = codec.encode(header, self._token, arrays=pending.arrays)
        pending.num_attempts += 1
        pending.deployment_id = pipeline.deployment_id
        pipeline.uplink.send(frames, pipeline.hop_bytes[0])

    def _on_frames(self, frames: list[Any], received_unix_s: float | None = None) -> None:
        received_unix_s = received_unix_s or time.time()
        try:
            msg = codec.decode(frames, self._token)
        except SplitinferError as e:
            log.warning("dropping an undecodable message: %s", e)
            return
        if not msg.authenticated:
            log.warning("dropping a %s message without a valid token MAC", type(msg.header).__name__)
            return
        header = msg.header
        if isinstance(header, codec.Result):
            self._complete(header, msg, received_unix_s)
        elif isinstance(header, codec.ErrorReply):
            self._fail_request(header)

    def _complete(self, header: codec.Result, msg: codec.Message, received_unix_s: float) -> None:
        with self._lock:
            pending = self._pending.pop(header.request_id, None)
            pipeline = self._pipeline
        if pending is None or pipeline is None:
            return  # late duplicate (re-sent request) or already failed by its deadline
        source = self.cluster.source
        sink = self.cluster.sink if self.cluster.sink is not None else header.stamps[-1].device

        def timing() -> RequestTiming:
            return build_timing(header.request_id, submitted_unix_s=pending.submitted_unix_s,
                                received_unix_s=received_unix_s, result_sent_unix_s=msg.sent_unix_s,
                                stamps=header.stamps, source=source, sink=sink, hop_bytes=pipeline.hop_bytes,
                                num_attempts=pending.num_attempts)
        arrays = msg.arrays
        outputs = {s.name: arrays[s.name] for s in self.outputs if s.name in arrays}
        if len(outputs) != len(self.outputs):
            pending.future.set_exception(WorkerError(f"result of request {header.request_id} lacks outputs "
                                                     f"(got {sorted(arrays)})", "redeploy the stages"))
            return
        pending.future.set_result(Result(header.request_id, outputs, timing))

    def _fail_request(self, reply: codec.ErrorReply) -> None:
        with self._lock:
            pending = self._pending.get(reply.request_id)
            if pending is None or (reply.deployment_id and reply.deployment_id != pending.deployment_id):
                return  # an error from an abandoned pipeline: the request was re-sent elsewhere
            del self._pending[reply.request_id]
        where = f"request {reply.request_id} at stage {reply.stage}" if reply.stage >= 0 else \
            f"request {reply.request_id}"
        cls = {"auth": AuthError, "deadline": DeadlineError}.get(reply.code, WorkerError)
        pending.future.set_exception(cls(f"{where}: {reply.problem}", reply.fix or None))

    def _fail_all(self, make_error: Callable[[], Exception]) -> None:
        with self._lock:
            doomed = list(self._pending.values())
            self._pending.clear()
        for pending in doomed:
            if not pending.future.done():
                pending.future.set_exception(make_error())

    # ---- monitor: deadlines and heartbeats ----------------------------------------------------
    def _expire(self, now: float) -> None:
        expired = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, rid = heapq.heappop(self._deadlines)
                pending = self._pending.pop(rid, None)
                if pending is not None:
                    expired.append(pending)
        for pending in expired:
            waited = now - pending.submitted_unix_s
            pending.future.set_exception(DeadlineError(
                f"request {pending.request_id} got no result within its deadline ({waited:.2f} s)",
                "give requests a longer deadline (deadline_s=...) or use faster devices"))

    def _monitor_loop(self) -> None:
        launcher = self._launcher

        def has_exited(name: str) -> bool:
            return launcher is not None and name in launcher.pids and not launcher.is_alive(name)

        heartbeat = Heartbeat(self._context, self.addresses, interval_s=self.options.heartbeat_interval_s,
                              dead_after_s=self.options.dead_after_s, has_exited=has_exited)
        heartbeat.dead.update(self._dead)
        try:
            while not self._stop.is_set():
                try:
                    for name, reason in heartbeat.poll(0.05):
                        log.warning("worker %r %s", name, reason)
                        self._on_dead(name, reason)
                    self._expire(time.time())
                except Exception:  # the monitor must outlive any bug: deadlines depend on it
                    log.exception("session monitor")
        finally:
            heartbeat.close()

    def _on_dead(self, name: str, reason: str) -> None:
        with self._lock:
            self._dead.add(name)
            pipeline = self._pipeline
            if self._state != "ready" or pipeline is None or name not in pipeline.devices:
                return
            self._state = "recovering"
        thread = threading.Thread(target=self._recover, args=(f"device {name!r} {reason}",),
                                  name="session-recover", daemon=True)
        thread.start()

    def _recover(self, why: str) -> None:
        """Deploy a new pipeline without the dead devices and re-send what is pending."""
        while not self._stop.is_set():
            excluded = frozenset(self._dead)
            try:
                if self._replan is None:
                    raise WorkerError(why, "restart the worker, or pass replan= to deploy_stages so that "
                                      "requests move to the remaining devices")
                stages = list(self._replan(excluded))
                used = {s.device for s in stages} & excluded
                if used:
                    raise WorkerError(f"{why}; the new plan still uses {sorted(used)}",
                                      "make replan() avoid the excluded devices")
                pipeline = self._deploy(stages)
            except Exception as e:  # replan raises InfeasibleError etc.; deploy may fail on a dying worker
                if not isinstance(e, SplitinferError):
                    e = WorkerError(f"{why}; replanning failed: {type(e).__name__}: {e}", "check replan()")
                elif self._replan is not None and not e.problem.startswith(why):
                    e = type(e)(f"{why}; no plan remains: {e.problem}", e.fix)
                self._break(e)
                return
            if pipeline.devices & frozenset(self._dead):  # another device died meanwhile: again
                undeploy_pipeline(pipeline.deployment_id, pipeline.devices - self._dead, self._clients)
                pipeline.uplink.close()
                continue
            with self._lock:
                old, self._pipeline = self._pipeline, pipeline
                self.num_replans += 1
                self._state = "ready"
                for pending in list(self._pending.values()):
                    self._send(pending)
            if old is not None:
                old.uplink.close()
                undeploy_pipeline(old.deployment_id, old.devices - self._dead, self._clients)
            return

    def _break(self, error: SplitinferError) -> None:
        with self._lock:
            self._state = "broken"
            self._broken = error
        self._fail_all(lambda: type(error)(error.problem, error.fix))

    # ---- close -------------------------------------------------------------------------------
    def close(self) -> None:
        """Undeploy the stages, stop local workers, fail whatever is still pending."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._fail_all(lambda: WorkerError("the session was closed before the request completed",
                                           "keep the session open until results arrive"))
        self._inbox.close()
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.uplink.close()
            remote = {d for d in pipeline.devices - self._dead if not self.cluster.device(d).is_local}
            undeploy_pipeline(pipeline.deployment_id, remote, self._clients)
        for client in self._clients.values():
            client.close()
        if self._launcher is not None:
            self._launcher.close()
        self._result_sock.close(linger=0)
        self._context.destroy(linger=0)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def deploy_stages(stages: Sequence[StageSpec], cluster: Cluster, *, token: bytes | None = None,
                  replan: Replan | None = None, options: SessionOptions | None = None,
                  **overrides: Any) -> Session:
    """Start local workers, deploy the chain of stages and return a running :class:`Session`.

    ``token``: the shared secret (default: the cluster's ``token_file``, else a random one,
    which only local workers can know). ``replan(excluded_devices)`` returns new stages when
    a device fails (None: requests on a failed device fail). ``options`` (or keyword
    overrides of its fields, e.g. ``timeout_s=5``): see :class:`SessionOptions`.
    """
    options = dataclasses.replace(options or SessionOptions(), **overrides)
    check_chain(stages, cluster)
    token = token if token is not None else session_token(cluster)
    session = Session(cluster, token=token, replan=replan, options=options)
    try:
        session._start(stages)
    except BaseException:
        session.close()
        raise
    return session
