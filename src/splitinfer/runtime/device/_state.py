"""A stage's state kept on its worker, per sequence: a decoder's key/value cache (graph/state.py).

A stage whose partition holds state pairs (``Deploy.state``: past <- present) runs through a
:class:`StatefulRunner`: a request of sequence S feeds the pasts S's previous step left here (empty ones
when the request starts S: ``Infer.sequence_start``), and the presents it makes are kept for S's next
step instead of being sent on. So the cache never crosses a link. A sequence's state is freed when the
coordinator ends it (``end_sequences``), when it has been idle for ``idle_s``, or, least recently used
first, when the stage's states pass ``budget_bytes`` or :data:`MAX_SEQUENCES` sequences; a later step
of a sequence whose state is gone is refused with code ``state_lost``, and the coordinator starts it
again from its tokens (prefill).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from splitinfer.errors import ErrorCode, WorkerError
from splitinfer.runtime.device._execution import StageRunner
from splitinfer.runtime.wire.messages import Deploy

DEFAULT_STATE_BYTES = 1 << 30  # a stage's states, all sequences together
DEFAULT_IDLE_S = 600.0  # a sequence not stepped for this long is freed
MAX_SEQUENCE_CHARS = 128
MAX_SEQUENCES = 4096  # sequences a stage holds state for: many tiny ones would pass the bytes budget


class StatefulRunner:
    """A StageRunner whose state pairs are fed and kept here, per sequence."""

    def __init__(self, runner: StageRunner, pairs: Sequence[tuple[str, str]], *,
                 budget_bytes: int = DEFAULT_STATE_BYTES, idle_s: float = DEFAULT_IDLE_S) -> None:
        self.runner = runner
        self.pairs = tuple((past, present) for past, present in pairs)
        self.budget_bytes, self.idle_s = budget_bytes, idle_s
        pasts, presents = {p for p, _ in self.pairs}, {q for _, q in self.pairs}
        self._pasts = [s for s in runner.inputs if s.name in pasts]
        self.inputs = tuple(s for s in runner.inputs if s.name not in pasts)  # what a request carries
        self.output_names = [n for n in runner.output_names if n not in presents]  # what goes on
        self._kept_at = [runner.output_names.index(q) for _, q in self.pairs]
        self._sent_at = [runner.output_names.index(n) for n in self.output_names]
        self._states: OrderedDict[str, tuple[float, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()  # the compute thread steps; the control thread ends sequences

    @property
    def slowdown(self) -> float:
        return self.runner.slowdown

    @property
    def last_busy_s(self) -> float:
        return self.runner.last_busy_s

    @property
    def held_bytes(self) -> int:
        """The bytes of every sequence's state held now."""
        return sum(a.nbytes for _, state in self._states.values() for a in state.values())

    @property
    def sequences(self) -> list[str]:
        """The sequences whose state is held, least recently stepped first."""
        return list(self._states)

    def warm_up(self, num_runs: int) -> float:
        return self.runner.warm_up(num_runs)

    def run(self, feeds: Mapping[str, np.ndarray], sequence: str,
            start: bool) -> tuple[list[np.ndarray], float, float]:
        """One step of ``sequence``: its pasts fed, its presents kept; the other outputs returned."""
        if not sequence or len(sequence) > MAX_SEQUENCE_CHARS:
            raise WorkerError(f"this stage keeps a cache per sequence and the request names "
                              f"{'none' if not sequence else 'one of ' + str(len(sequence)) + ' characters'}",
                              f"send requests with a sequence id of 1 to {MAX_SEQUENCE_CHARS} characters "
                              "(Session.generate does)", code=ErrorCode.MALFORMED)
        with self._lock:
            self._expire(time.monotonic())
            held = None if start else self._states.get(sequence)
        if held is None and not start:
            raise WorkerError(f"this stage holds no state of sequence {sequence!r} (freed: idle, over the "
                              "stage's state budget, or the worker restarted)",
                              "start the sequence again from its tokens so far", code=ErrorCode.STATE_LOST)
        pasts = held[1] if held is not None else self._empty(feeds)
        outs, compute_s, wait_s = self.runner.run({**feeds, **pasts})
        state = {past: outs[k] for (past, _), k in zip(self.pairs, self._kept_at, strict=True)}
        with self._lock:
            self._states[sequence] = (time.monotonic(), state)
            self._states.move_to_end(sequence)
            self._evict()
        return [outs[k] for k in self._sent_at], compute_s, wait_s

    def end(self, sequences: Sequence[str]) -> int:
        """Free these sequences' state; how many were held."""
        with self._lock:
            return sum(self._states.pop(s, None) is not None for s in sequences)

    def _empty(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Empty pasts (the first step): each open axis 0, but a batch axis as the request's."""
        batch = next((np.shape(a)[0] for a in feeds.values() if np.ndim(a)), 1)
        return {s.name: np.zeros([batch if a == 0 and d < 0 else max(d, 0) for a, d in enumerate(s.shape)],
                                 dtype=s.dtype) for s in self._pasts}

    def _expire(self, now: float) -> None:
        while self._states and now - next(iter(self._states.values()))[0] > self.idle_s:
            self._states.popitem(last=False)

    def _evict(self) -> None:
        while len(self._states) > MAX_SEQUENCES or \
                (len(self._states) > 1 and self.held_bytes > self.budget_bytes):
            self._states.popitem(last=False)


def with_state(runner: Any, header: Deploy) -> Any:
    """The deploy's runner, wrapped to keep its state pairs per sequence when it has any."""
    if not header.state:
        return runner
    if not isinstance(runner, StageRunner):
        raise WorkerError("a stage with early exits cannot keep state", "deploy a decoder without exits",
                          code=ErrorCode.MALFORMED)
    names = {s.name for s in runner.inputs}, set(runner.output_names)
    pairs = []
    for pair in header.state:
        if len(pair) != 2 or pair[0] not in names[0] or pair[1] not in names[1]:
            raise WorkerError(f"deploy state {pair!r} is not [an input, an output] of the partition",
                              "name each state pair as [past input, present output]",
                              code=ErrorCode.MALFORMED)
        pairs.append((pair[0], pair[1]))
    if len(set(pairs)) != len(pairs):
        raise WorkerError("deploy names a state pair twice", "name each once", code=ErrorCode.MALFORMED)
    return StatefulRunner(runner, pairs)


def end_sequences(runners: Sequence[Any], sequences: Sequence[str]) -> int:
    """Free ``sequences`` on every stateful runner given; how many states were freed."""
    return sum(r.end(sequences) for r in runners if isinstance(r, StatefulRunner))
