"""Overdue requests: when a pipeline's requests should be done, and when to probe its workers.

A hung worker (stopped, deadlocked) holds the requests that reach it; their stage
stamps come back only with the result, so the session cannot see where a request
waits. What it can see is time: each request is expected to complete within

    FLOOR_S + FACTOR x (the plan's predicted latency, or the median of recent measured
                        latencies of this pipeline, whichever is larger)

of being sent (DEFAULT_EXPECTED_S before either is known). The monitor checks the
oldest pending request (ids grow with time, so it is the first to be overdue);
when it is overdue, :class:`Overdue` says so, and the monitor probes the pipeline's
workers for health (:meth:`~._heartbeat.Heartbeat.probe`): a worker that does not
answer within the probe window is dead. A slow worker answers (its IO thread is
not its compute thread), so being late alone never kills a device. Probes are at
least PROBE_INTERVAL_S apart. Measured latencies come from a sample of requests:
the oldest pending one at each check is timed when its future completes.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from splitinfer.plan import Plan
    from splitinfer.runtime.coordinator._requests import Pending
    from splitinfer.runtime.coordinator.pipeline import Pipeline

FLOOR_S = 0.25  # added to every expected latency: scheduling noise on a loaded machine
FACTOR = 3.0  # times the predicted or measured latency (queueing behind other requests)
DEFAULT_EXPECTED_S = 1.0  # before the pipeline has a plan or a measurement
PROBE_INTERVAL_S = 0.5  # at most one probe of the pipeline's workers this often
NUM_SAMPLES = 32  # recent measured latencies kept per pipeline
MIN_SAMPLES = 3  # measured latencies needed before their median counts


class Overdue:
    """Expected completion times of one session's requests (used by the monitor thread only)."""

    def __init__(self) -> None:
        self._deployment_id = ""
        self._since_unix_s = 0.0  # when the current pipeline was first seen (re-sent requests start then)
        self._samples: deque[float] = deque(maxlen=NUM_SAMPLES)  # appended from completing threads
        self._timed_id = -1  # the request whose completion is being timed
        self._next_probe_unix_s = 0.0

    def expected_s(self, plan: Plan | None) -> float:
        """How long a request on the current pipeline may take before it is overdue."""
        samples = list(self._samples)
        bases = [plan.latency_s] if plan is not None else []
        if len(samples) >= MIN_SAMPLES:
            bases.append(statistics.median(samples))
        return FLOOR_S + FACTOR * max(bases) if bases else DEFAULT_EXPECTED_S

    def check(self, pipeline: Pipeline, plan: Plan | None, oldest: Pending,
              now_unix_s: float) -> tuple[float, float] | None:
        """(seconds ``oldest`` has taken, seconds expected) when it is overdue and the pipeline's workers
        should be probed now, else None."""
        if pipeline.deployment_id != self._deployment_id:
            # A new pipeline: requests re-sent on it start now; the old one's latencies do not count.
            self._since_unix_s = now_unix_s if self._deployment_id else 0.0
            self._deployment_id = pipeline.deployment_id
            self._samples.clear()
        start = max(oldest.submitted_unix_s, self._since_unix_s)
        if oldest.request_id != self._timed_id:
            self._timed_id = oldest.request_id
            oldest.future.add_done_callback(functools.partial(self._record, pipeline.deployment_id, start))
        taken_s, expected_s = now_unix_s - start, self.expected_s(plan)
        if taken_s <= expected_s or now_unix_s < self._next_probe_unix_s:
            return None
        self._next_probe_unix_s = now_unix_s + PROBE_INTERVAL_S
        return taken_s, expected_s

    def _record(self, deployment_id: str, start_unix_s: float, future: Future) -> None:
        # Runs on whichever thread completed the future: a deque append is atomic.
        if deployment_id == self._deployment_id and not future.cancelled() and future.exception() is None:
            self._samples.append(time.time() - start_unix_s)
