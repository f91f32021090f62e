"""Failure handling: notice dead workers, re-plan without them, and move pending requests over.

The session's monitor thread polls :class:`~._heartbeat.Heartbeat`; a worker that
died or fell silent is reported to :meth:`Recovery.on_dead`. When it runs a stage
of the current pipeline, a recovery thread asks ``replan(excluded_devices)`` for
new stages, deploys them, and hands the new pipeline (and plan) to the session,
which swaps both under its lock and re-sends what is pending. Without ``replan``,
or when no plan remains, the session breaks: every pending and later request
fails with the reason.
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
from splitinfer.runtime.coordinator.pipeline import Pipeline, StageSpec

if TYPE_CHECKING:
    from splitinfer.plan import Plan

log = logging.getLogger("splitinfer.session")


@dataclass(frozen=True)
class Replacement:
    """What a re-plan returns: the new stages and, when known, the plan they come from."""

    stages: tuple[StageSpec, ...]
    plan: Plan | None = None


# replan(excluded_devices) -> new stages (a sequence of StageSpec, or a Replacement with its plan)
Replan = Callable[[frozenset[str]], "Sequence[StageSpec] | Replacement"]


class Recoverable(Protocol):
    """What recovery needs of a session."""

    def begin_recovery(self, device: str) -> bool:
        """If the ready pipeline runs a stage on ``device``, hold new requests back and say True."""
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

    @property
    def dead(self) -> frozenset[str]:
        """Devices whose workers died or stopped answering."""
        with self._lock:
            return frozenset(self._dead)

    def watch(self, heartbeat: Heartbeat, expire: Callable[[float], None]) -> None:
        """The session's monitor thread: heartbeats, dead workers, and ``expire(now)`` for deadlines."""
        try:
            while not self._stop.is_set():
                try:
                    for name, reason in heartbeat.poll(0.05):
                        log.warning("worker %r %s", name, reason)
                        self.on_dead(name, reason)
                    expire(time.time())
                except Exception:  # the monitor must outlive any bug: deadlines depend on it
                    log.exception("session monitor")
        finally:
            heartbeat.close()

    def on_dead(self, name: str, reason: str) -> None:
        """A worker died: start a recovery if the pipeline uses it (and none is running)."""
        with self._lock:
            self._dead.add(name)
            if self._running or not self._session.begin_recovery(name):
                return
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
                self._session.discard(pipeline)
                continue
            self._session.adopt(pipeline, replacement.plan)
            return

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
