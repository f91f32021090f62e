"""Failure handling: notice dead or hung workers, re-plan without them, and move pending requests over.

The session's monitor thread (:meth:`Recovery.watch`) polls :class:`~._heartbeat.Heartbeat`;
a worker that died or fell silent is reported to :meth:`Recovery.on_dead`. The
monitor also checks the oldest pending request against its expected completion
time (:mod:`._overdue`); when it is overdue, the pipeline's workers are probed for
health and one that does not answer within the probe window is dead too (a hung
worker is noticed within about a second of the first overdue request, without
waiting for ``dead_after_s``). When a dead device runs a stage of the current
pipeline, a recovery thread asks ``replan(excluded_devices)`` for new stages,
deploys them, and hands the new pipeline (and plan) to the session, which swaps
both under its lock and re-sends what is pending. Without ``replan``, or when no
plan remains, the session breaks: every pending and later request fails with the
reason. A dead worker that answers again (a stopped process continued, a link
back up) is told to drop the stages of every pipeline it was part of that the
session has left (``undeploy``); it is then available to later re-plans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from splitinfer.errors import SplitinferError, WorkerError
from splitinfer.runtime.coordinator._heartbeat import Heartbeat
from splitinfer.runtime.coordinator._overdue import Overdue
from splitinfer.runtime.coordinator.pipeline import Pipeline, StageSpec

if TYPE_CHECKING:
    from splitinfer.plan import Plan
    from splitinfer.runtime.coordinator._requests import Pending
    from splitinfer.runtime.wire.client import WorkerClient

log = logging.getLogger("splitinfer.session")


@dataclass(frozen=True)
class Replacement:
    """What a re-plan returns: the new stages and, when known, the plan they come from."""

    stages: tuple[StageSpec, ...]
    plan: Plan | None = None


# replan(excluded_devices) -> new stages (a sequence of StageSpec, or a Replacement with its plan)
Replan = Callable[[frozenset[str]], "Sequence[StageSpec] | Replacement"]
# expire(now_unix_s): fail requests past their deadline; return (ready pipeline, its plan, oldest
# pending request), or None when the session is not ready or nothing is pending
Expire = Callable[[float], "tuple[Pipeline, Plan | None, Pending] | None"]


class Recoverable(Protocol):
    """What recovery needs of a session."""

    def begin_recovery(self, device: str) -> Pipeline | None:
        """If the ready pipeline runs a stage on ``device``, hold new requests back and return it."""
        ...

    def deploy(self, stages: Sequence[StageSpec]) -> Pipeline:
        """Deploy a new pipeline (not yet used)."""
        ...

    def discard(self, pipeline: Pipeline) -> None:
        """Undeploy a pipeline that will not be used."""
        ...

    def adopt(self, pipeline: Pipeline, plan: Plan | None) -> None:
        """Swap in the new pipeline and plan, re-send pending requests, drop the old pipeline."""
        ...

    def fail(self, error: SplitinferError) -> None:
        """Break the session: fail every pending and later request with ``error``."""
        ...

    def worker_client(self, device: str, timeout_s: float = 10.0) -> WorkerClient:
        """A new client for a device's worker (the caller closes it)."""
        ...


class Recovery:
    """Watches for dead devices and re-plans around them (one recovery at a time)."""

    def __init__(self, session: Recoverable, replan: Replan | None, stop: threading.Event,
                 dead: set[str]) -> None:
        self._session = session
        self._replan = replan
        self._stop = stop
        self._lock = threading.Lock()
        self._dead = dead  # shared with the session, which reports spares found dead at start
        self._running = False
        self._overdue = Overdue()
        # Pipelines the session has left or is leaving (deployment id -> devices): a device that
        # answers again may still hold their stages.
        self._retired: dict[str, frozenset[str]] = {}

    @property
    def dead(self) -> frozenset[str]:
        """Devices whose workers died or stopped answering."""
        with self._lock:
            return frozenset(self._dead)

    def watch(self, heartbeat: Heartbeat, expire: Expire) -> None:
        """The session's monitor thread: heartbeats, dead and revived workers, deadlines, overdue requests."""
        try:
            while not self._stop.is_set():
                try:
                    for name, reason in heartbeat.poll(0.05):
                        log.warning("worker %r %s", name, reason)
                        self.on_dead(name, reason)
                    for name in heartbeat.take_revived():
                        self.on_revived(name)
                    now = time.time()
                    oldest = expire(now)
                    if oldest is not None:
                        self._check_overdue(heartbeat, now, *oldest)
                except Exception:  # the monitor must outlive any bug: deadlines depend on it
                    log.exception("session monitor")
        finally:
            heartbeat.close()

    def _check_overdue(self, heartbeat: Heartbeat, now: float, pipeline: Pipeline, plan: Plan | None,
                       oldest: Pending) -> None:
        overdue = self._overdue.check(pipeline, plan, oldest, now)
        if overdue is None or heartbeat.probing:
            return
        why = f"request {oldest.request_id} was overdue ({overdue[0]:.2f} s, expected {overdue[1]:.2f} s)"
        gone = pipeline.devices & self.dead
        for name in gone:  # died while another recovery ran: nobody has re-planned around it yet
            self.on_dead(name, f"is dead and {why}")
        if not gone:
            log.info("%s: probing %s", why, ", ".join(sorted(pipeline.devices)))
            heartbeat.probe(pipeline.devices, why)

    def on_dead(self, name: str, reason: str) -> None:
        """A worker died: start a recovery if the pipeline uses it (and none is running)."""
        with self._lock:
            self._dead.add(name)
            if self._running:
                return
            pipeline = self._session.begin_recovery(name)
            if pipeline is None:
                return
            self._retired[pipeline.deployment_id] = pipeline.devices
            self._running = True
        threading.Thread(target=self._run, args=(f"device {name!r} {reason}",), name="session-recover",
                         daemon=True).start()

    def _run(self, why: str) -> None:
        try:
            self._recover(why)
        finally:
            with self._lock:
                self._running = False

    def _recover(self, why: str) -> None:
        while not self._stop.is_set():
            excluded = self.dead
            try:
                replacement = self._new_stages(why, excluded)
                pipeline = self._session.deploy(replacement.stages)
            except Exception as e:  # replan raises InfeasibleError etc.; deploy may fail on a dying worker
                self._session.fail(self._explain(why, e))
                return
            if pipeline.devices & self.dead:  # another device died meanwhile: again
                with self._lock:
                    self._retired[pipeline.deployment_id] = pipeline.devices
                self._session.discard(pipeline)
                continue
            self._session.adopt(pipeline, replacement.plan)
            return

    def on_revived(self, name: str) -> None:
        """A dead worker answers again: drop its stages of pipelines the session left, then let it serve."""
        with self._lock:
            if self._stop.is_set():
                return
            retired = sorted(d for d, devices in self._retired.items() if name in devices)
        threading.Thread(target=self._drop_retired, args=(name, retired), name="session-revive",
                         daemon=True).start()

    def _drop_retired(self, name: str, deployment_ids: list[str]) -> None:
        try:
            with self._session.worker_client(name, timeout_s=2.0) as client:
                removed = sum(client.undeploy(d, timeout_s=2.0) for d in deployment_ids)
        except SplitinferError as e:  # it stays excluded; if it fell silent again, this runs when it is back
            log.warning("worker %r answers again but did not drop its old stages: %s", name, e.problem)
            return
        with self._lock:
            self._dead.discard(name)
        log.warning("worker %r answers again: dropped %d stage(s) of %d pipeline(s) left without it; "
                    "later re-plans may use it", name, removed, len(deployment_ids))

    def _new_stages(self, why: str, excluded: frozenset[str]) -> Replacement:
        if self._replan is None:
            raise WorkerError(why, "restart the worker, or pass replan= to deploy_stages so that "
                              "requests move to the remaining devices")
        result = self._replan(excluded)
        replacement = result if isinstance(result, Replacement) else Replacement(tuple(result))
        used = {s.device for s in replacement.stages} & excluded
        if used:
            raise WorkerError(f"{why}; the new plan still uses {sorted(used)}",
                              "make replan() avoid the excluded devices")
        log.warning("re-planned without %s", sorted(excluded))
        return replacement

    def _explain(self, why: str, error: Exception) -> SplitinferError:
        if not isinstance(error, SplitinferError):
            return WorkerError(f"{why}; replanning failed: {type(error).__name__}: {error}", "check replan()")
        if self._replan is not None and not error.problem.startswith(why):
            return type(error)(f"{why}; no plan remains: {error.problem}", error.fix)
        return error
