"""The requests a session has in flight: their futures by request id, and their deadlines.

The session's lock guards this table (submit checks the session's state and adds a
request in one step); completing or failing a future happens outside it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np


@dataclass
class Pending:
    """One request in flight: its inputs (kept to re-send after a re-plan) and its future."""

    request_id: int
    arrays: list[tuple[str, np.ndarray]]
    future: Future
    submitted_unix_s: float
    deadline_unix_s: float
    num_attempts: int = 0
    deployment_id: str = ""  # the pipeline it was last sent on
    sent_bytes: int = -1  # what its last send put on the uplink (codec.sent_bytes); -1: not sent yet
    sequence: str = ""  # the sequence it is a step of (a decoder's state kept on the stages), and
    sequence_start: bool = False  # whether it is that sequence's first step

    def sent_on(self, deployment_id: str, num_bytes: int) -> None:
        """Count one more send, on the pipeline ``deployment_id``, of ``num_bytes`` (the upload hop's)."""
        self.num_attempts += 1
        self.deployment_id = deployment_id
        self.sent_bytes = num_bytes


class InFlight:
    """Pending requests by id, with a heap of deadlines for the monitor."""

    def __init__(self) -> None:
        self._by_id: dict[int, Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self._by_id.values()))

    def add(self, arrays: list[tuple[str, np.ndarray]], future: Future, now_unix_s: float,
            timeout_s: float, sequence: str = "", sequence_start: bool = False) -> Pending:
        """A new pending request with the next id."""
        pending = Pending(next(self._ids), arrays, future, now_unix_s, now_unix_s + timeout_s,
                          sequence=sequence, sequence_start=sequence_start)
        self._by_id[pending.request_id] = pending
        heapq.heappush(self._deadlines, (pending.deadline_unix_s, pending.request_id))
        return pending

    def get(self, request_id: int) -> Pending | None:
        return self._by_id.get(request_id)

    def pop(self, request_id: int) -> Pending | None:
        """Remove and return a request (None: already completed, failed or expired)."""
        pending = self._by_id.pop(request_id, None)
        # Completed requests leave their deadlines in the heap until due: rebuild it now and then,
        # so that it holds about what is in flight, not every request of the last timeout_s.
        if len(self._deadlines) > 2 * len(self._by_id) + 1024:
            self._deadlines = [(p.deadline_unix_s, p.request_id) for p in self._by_id.values()]
            heapq.heapify(self._deadlines)
        return pending

    def pop_expired(self, now_unix_s: float) -> list[Pending]:
        """Remove and return the requests whose deadline has passed."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now_unix_s:
            _, request_id = heapq.heappop(self._deadlines)
            pending = self._by_id.pop(request_id, None)
            if pending is not None:
                expired.append(pending)
        return expired

    def pop_all(self) -> list[Pending]:
        """Remove and return every request."""
        doomed = list(self._by_id.values())
        self._by_id.clear()
        self._deadlines.clear()
        return doomed
