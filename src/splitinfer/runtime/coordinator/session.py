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
``dead_after_s``, a hung one within about a second of its first overdue request
(recovery.py); requests in flight are then re-sent on a new pipeline from ``replan(excluded_devices)``,
or fail with a WorkerError. What the token and CURVE protect: wire/codec.py and wire/curve.py.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from splitinfer.cluster import Cluster
from splitinfer.errors import ClusterError, DeadlineError, ModelError, SplitinferError, WorkerError
from splitinfer.graph.feeds import request_arrays
from splitinfer.runtime.coordinator import _workers as workers
from splitinfer.runtime.coordinator import pipeline as pipelines
from splitinfer.runtime.coordinator._heartbeat import Heartbeat
from splitinfer.runtime.coordinator._inbox import Inbox
from splitinfer.runtime.coordinator._requests import InFlight, Pending
from splitinfer.runtime.coordinator.options import SessionOptions
from splitinfer.runtime.coordinator.pipeline import Pipeline, StageSpec, deploy_pipeline, undeploy_pipeline
from splitinfer.runtime.coordinator.recovery import Recovery, Replan
from splitinfer.runtime.coordinator.timing import RequestTiming, Result, build_timing, result_outputs
from splitinfer.runtime.launch.start import Launcher, cluster_keyring, start_workers
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.client import MAX_WAIT_S, WorkerClient
from splitinfer.runtime.wire.replay import ReplayGuard
from splitinfer.types import TensorSpec, check_feeds
from splitinfer.units import check_number

if TYPE_CHECKING:
    from splitinfer.graph import Model
    from splitinfer.plan import Plan

log = logging.getLogger("splitinfer.session")
# How long a waiting caller waits past a request's deadline before giving up on its own: the
# monitor fails the future at the deadline, so this only guards against a stuck monitor.
DEADLINE_MARGIN_S = 5.0


class Session:
    """A deployed pipeline; create it with :func:`deploy_stages`."""

    def __init__(self, cluster: Cluster, *, token: bytes | None, replan: Replan | None,
                 options: SessionOptions, plan: Plan | None = None, model: Model | None = None) -> None:
        self.cluster = cluster
        self.options = options
        self.timeout_s = options.timeout_s
        self._last_result: Result | None = None
        self.num_replans = 0
        self._plan = plan
        self._model = model
        self._token = token
        self._keyring = cluster_keyring(cluster)  # CURVE (wire/curve.py), or None
        self._context = zmq.Context()
        self._lock = threading.RLock()
        self._pending = InFlight()  # guarded by _lock
        self._pipeline: Pipeline | None = None
        self._state = "starting"  # starting | ready | recovering | broken | closed
        self._broken: SplitinferError | None = None
        self._dead: set[str] = set()
        self._stop = threading.Event()
        self._recovery = Recovery(self, replan, self._stop, self._dead)
        self._clients: dict[str, WorkerClient] = {}
        self.addresses: dict[str, str] = {}
        # Workers' results and error copies arrive here; the session never answers them.
        self._result_sock, gate = workers.open_result_socket(self._context, self._keyring)
        self.result_address = workers.bind_result_socket(self._result_sock, cluster, options.coordinator_host)
        self._inbox = Inbox(self._context, self._result_sock, self._on_frames, lambda: len(self._pending))
        self._replays = ReplayGuard()  # what _on_frames accepted, from any thread that reads results
        # Released by close(), else at interpreter exit: the finalizer holds these, not the session.
        self._resources = workers.SessionResources(self._stop, self._context, self._result_sock, gate)
        self._finalizer = weakref.finalize(self, self._resources.release)

    @property
    def plan(self) -> Plan | None:
        """The plan the deployed stages come from (None when deployed from bare stages)."""
        return self._plan

    @property
    def model(self) -> Model | None:
        """The whole model the stages were cut from, when the session was deployed from one."""
        return self._model

    @property
    def last_timing(self) -> RequestTiming | None:
        """The timing record of the last :meth:`run` (None before the first)."""
        return None if self._last_result is None else self._last_result.timing

    # ---- start -------------------------------------------------------------------------------
    def _start(self, stages: Sequence[StageSpec]) -> None:
        self._resources.launcher, addresses = start_workers(self.cluster, self._token,
                                                            startup_timeout_s=self.options.startup_timeout_s)
        self.addresses.update(addresses)
        self.result_address = workers.readvertise(self.result_address, self.cluster, addresses,
                                          self.options.coordinator_host)
        self._clients, down = workers.connect_clients(self.addresses, self._token, self._context,
                                              {s.device for s in stages}, self.options.connect_timeout_s,
                                              self._keyring, self.cluster.mac_tensors)
        self._dead.update(down)
        self._pipeline = self.deploy(stages)
        self._state = "ready"
        heartbeat = Heartbeat(self._context, self.addresses, interval_s=self.options.heartbeat_interval_s,
                              dead_after_s=self.options.dead_after_s, has_exited=self._resources.has_exited,
                              keyring=self._keyring)
        heartbeat.dead.update(self._dead)
        for target, args, name in ((self._inbox.serve, (self._stop,), "results"),
                                   (self._recovery.watch, (heartbeat, self._expire), "monitor")):
            thread = threading.Thread(target=target, args=args, name=f"session-{name}", daemon=True)
            thread.start()
            self._resources.threads.append(thread)

    def deploy(self, stages: Sequence[StageSpec]) -> Pipeline:
        """Deploy a pipeline of ``stages`` on this session's workers (recovery uses it for new plans)."""
        return deploy_pipeline(stages, self.cluster, clients=self._clients, addresses=self.addresses,
                               result_address=self.result_address, context=self._context,
                               keyring=self._keyring, timeout_s=self.options.deploy_timeout_s,
                               on_reply=self._on_frames)

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
        return self._recovery.dead

    @property
    def launcher(self) -> Launcher | None:
        """What started this session's workers (None before start); it stops them on close."""
        return self._resources.launcher

    @property
    def worker_pids(self) -> dict[str, int]:
        """Process ids of the local workers this session started."""
        launcher = self._resources.launcher
        return launcher.pids if launcher is not None else {}

    def worker_client(self, device: str, timeout_s: float = 10.0) -> WorkerClient:
        """A new client for a device's worker (info, echo, profile, probe), with this session's token and
        keys. The caller closes it. Profile runs compete with the session's own requests for that device."""
        if device not in self.addresses:
            raise ClusterError(f"no worker for device {device!r} in this session",
                               f"use one of: {', '.join(self.addresses)}")
        return WorkerClient.to_device(self.addresses[device], self._token, device, keyring=self._keyring,
                                      mac_tensors=self.cluster.mac_tensors, timeout_s=timeout_s)

    def submit(self, feeds: Mapping[str, np.ndarray], deadline_s: float | None = None, *, sequence: str = "",
               sequence_start: bool = False) -> Future:
        """Send one request (a step of ``sequence``: device/_state.py); its Future gives a Result."""
        if self._state == "closed":
            raise WorkerError("the session is closed", "deploy the stages again to run more requests")
        timeout = self.timeout_s if deadline_s is None else check_number(
            deadline_s, "deadline_s", low=0, low_open=True, high=MAX_WAIT_S, fix="seconds from now")
        arrays = request_arrays(feeds, self._model.fixed_inputs if self._model is not None else None)
        check_feeds(arrays, self.inputs, "session input")
        now = time.time()
        future: Future = Future()
        future.set_running_or_notify_cancel()
        ordered = [(s.name, arrays[s.name]) for s in self.inputs]
        with self._lock:
            if self._state == "broken":
                future.set_exception(self._broken or WorkerError("the pipeline is broken", None))
                return future
            pending = self._pending.add(ordered, future, now, timeout, sequence, sequence_start)
            if self._state == "ready":
                self._send(pending)
            # while recovering, the new pipeline sends everything still pending
        self._inbox.submitted()
        return future

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray], *,
            deadline_s: float | None = None, **step: Any) -> list[np.ndarray]:
        """Run one request and wait: ``onnxruntime.InferenceSession.run``'s call (``step``: see submit)."""
        known = [s.name for s in self.outputs]
        for name in output_names or ():
            if name not in known:
                raise ModelError(f"{name!r} is not an output of the model", f"ask for some of {known}")
        with self._inbox.waiting():  # this thread reads its own result: no thread switch on the way
            result = self._wait(self.submit(feeds, deadline_s, **step), deadline_s)
        self._last_result = result
        return result.as_list(output_names or known)  # None for outputs an early exit did not make

    def stream(self, feeds: Iterable[Mapping[str, np.ndarray]], *, max_in_flight: int = 8,
               deadline_s: float | None = None) -> Iterator[Result]:
        """Results in input order, keeping up to ``max_in_flight`` requests in the pipeline."""
        check_number(max_in_flight, "max_in_flight", low=1, whole=True)
        window: deque[Future] = deque()
        for item in feeds:
            window.append(self.submit(item, deadline_s))
            if len(window) >= max_in_flight:
                yield self._wait(window.popleft(), deadline_s)
        while window:
            yield self._wait(window.popleft(), deadline_s)

    def end_sequences(self, sequences: Sequence[str]) -> int:
        """Free these sequences' state on the stages that keep some (device/_state.py); how many freed."""
        return pipelines.end_sequences(self._pipeline, self._clients, sequences) if self._pipeline else 0

    def _wait(self, future: Future, deadline_s: float | None) -> Result:
        timeout = (self.timeout_s if deadline_s is None else deadline_s) + DEADLINE_MARGIN_S
        if not self._inbox.wait(future, timeout):
            raise DeadlineError(f"no result within {timeout:g} s", "give the request a longer deadline")
        return future.result()

    # ---- sending and receiving -------------------------------------------------------------
    def _send(self, pending: Pending) -> None:
        pipeline = self._pipeline
        assert pipeline is not None
        header = messages.Infer(request_id=pending.request_id, deployment_id=pipeline.deployment_id, stage=0,
                                deadline_unix_s=pending.deadline_unix_s, full_depth=self.options.full_depth,
                                sequence=pending.sequence, sequence_start=pending.sequence_start)
        arrays = pipeline.compress_inputs(pending.arrays)
        frames = codec.encode(header, self._token, arrays=arrays, sender=pipeline.uplink.sender,
                              mac_tensors=self.cluster.mac_tensors, part_bytes=pipeline.uplink.part_bytes)
        pending.sent_on(pipeline.deployment_id, codec.sent_bytes(arrays))
        pipeline.uplink.send(frames, codec.payload_bytes(arrays))

    def _on_frames(self, frames: list[Any], received_unix_s: float | None = None) -> None:
        # Never raises: it runs on whichever thread reads results (a caller waiting in run()), and
        # no message a peer sends may end that thread or reach that caller as its exception.
        received_unix_s = received_unix_s or time.time()
        try:
            msg = codec.decode(frames, self._token)
            unsigned_tensors = self.cluster.mac_tensors and msg.arrays and not msg.tensors_authenticated
            if not msg.authenticated or unsigned_tensors:
                log.warning("dropping a %s message without a valid token MAC", type(msg.header).__name__)
                return
            self._replays.check(msg)
            header = msg.header
            if isinstance(header, messages.Outputs):
                self._complete(header, msg, received_unix_s)
            elif isinstance(header, messages.ErrorReply):
                self._fail_request(header)
        except SplitinferError as e:
            log.warning("dropping a message from a worker: %s", e)
        except Exception:
            log.exception("dropping a message from a worker that could not be handled")

    def _complete(self, header: messages.Outputs, msg: messages.Message, received_unix_s: float) -> None:
        with self._lock:
            pending = self._pending.pop(header.request_id)
            pipeline = self._pipeline
        if pending is None or pipeline is None:
            return  # late duplicate (re-sent request) or already failed by its deadline
        source = self.cluster.source
        sink = self.cluster.sink if self.cluster.sink is not None else header.stamps[-1].device

        def timing() -> RequestTiming:
            return build_timing(header.request_id, submitted_unix_s=pending.submitted_unix_s,
                                received_unix_s=received_unix_s, result_sent_unix_s=msg.sent_unix_s,
                                stamps=header.stamps, source=source, sink=sink, hop_bytes=pipeline.hop_bytes,
                                num_attempts=pending.num_attempts, upload_bytes=pending.sent_bytes)
        try:
            outputs = result_outputs(header, msg.arrays, self.outputs)
        except WorkerError as e:
            pending.future.set_exception(e)
            return
        pending.future.set_result(Result(header.request_id, outputs, timing, header.exit))

    def _fail_request(self, reply: messages.ErrorReply) -> None:
        with self._lock:
            pending = self._pending.get(reply.request_id)
            if pending is None or (reply.deployment_id and reply.deployment_id != pending.deployment_id):
                return  # an error from an abandoned pipeline: the request was re-sent elsewhere
            self._pending.pop(reply.request_id)
        where = f"request {reply.request_id} at stage {reply.stage}" if reply.stage >= 0 else \
            f"request {reply.request_id}"
        pending.future.set_exception(messages.error_of_reply(reply, where))

    def _fail_all(self, make_error: Callable[[], Exception]) -> None:
        with self._lock:
            doomed = self._pending.pop_all()
        for pending in doomed:
            if not pending.future.done():
                pending.future.set_exception(make_error())

    # ---- monitor: deadlines; the ready pipeline's oldest request for the overdue check (recovery.py)
    def _expire(self, now: float) -> tuple[Pipeline, Plan | None, Pending] | None:
        with self._lock:
            expired = self._pending.pop_expired(now)
            pipeline = self._pipeline if self._state == "ready" and len(self._pending) else None
            oldest = None if pipeline is None else (pipeline, self._plan, next(iter(self._pending)))
        for pending in expired:
            waited = now - pending.submitted_unix_s
            pending.future.set_exception(DeadlineError(
                f"request {pending.request_id} got no result within its deadline ({waited:.2f} s)",
                "give requests a longer deadline (deadline_s=...) or use faster devices"))
        return oldest

    # ---- recovery's side (see recovery.py) --------------------------------------------------
    def begin_recovery(self, device: str) -> Pipeline | None:
        """If the pipeline runs a stage on ``device``, hold new requests until :meth:`adopt`; return it."""
        with self._lock:
            if self._state != "ready" or self._pipeline is None or device not in self._pipeline.devices:
                return None
            self._state = "recovering"
            return self._pipeline

    def discard(self, pipeline: Pipeline) -> None:
        """Undeploy a pipeline that will not be used, from the devices still alive."""
        pipeline.uplink.close()
        undeploy_pipeline(pipeline.deployment_id, pipeline.devices - self._recovery.dead, self._clients)

    def adopt(self, pipeline: Pipeline, plan: Plan | None) -> None:
        """Swap in a new pipeline and its plan together, re-send what is pending, drop the old one."""
        with self._lock:
            if self._state == "closed":
                old = pipeline
            else:
                old, self._pipeline, self._plan = self._pipeline, pipeline, plan
                self.num_replans += 1
                self._state = "ready"
                for pending in self._pending:
                    self._send(pending)
        if old is not None:
            self.discard(old)

    def fail(self, error: SplitinferError) -> None:
        """Break the session: every pending and later request fails with ``error``."""
        with self._lock:
            if self._state != "closed":
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
        self._resources.stop_threads()
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
        self._finalizer()  # local workers, sockets, context

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
