"""Generation through a deployed decoder: the prompt in one pass, then one token per step (issue 20).

The decoder's stages keep their layers' cache on their own workers, per sequence (device/_state.py): a
step sends only the new token ids to the first stage and the hidden state on from stage to stage, never
the cache. Sampling (greedy, temperature, top-k, top-p, a seed, stop ids) is the library's
(:mod:`splitinfer.generation.sampling`), the same loop the whole-model reference runs, so a split model
and the whole one choose alike. Typical use::

    with deploy(plan, cluster, "gpt2.onnx", profile="profile.json") as session:
        for token in generate(session, [464, 2068, 7586], Sampling(max_new_tokens=32)):
            print(token.id)
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.errors import ErrorCode, ModelError, WorkerError, code_of
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as sample_tokens
from splitinfer.runtime.coordinator.session import Session

INPUT_IDS, LOGITS = "input_ids", "logits"
log = logging.getLogger("splitinfer.generate")


@dataclass(frozen=True)
class Token:
    """One generated token: its id, the logits it was chosen from, and when it arrived (seconds since
    the prompt was sent: the first token's is the time to first token)."""

    id: int
    logits: np.ndarray
    at_s: float


def session_step(session: Session, sequence: str, deadline_s: float | None = None
                 ) -> Callable[[np.ndarray], np.ndarray]:
    """A ``run_step`` for :func:`splitinfer.generation.generate` over the session's pipeline: its first
    call starts ``sequence`` on the stages (empty caches), each later one continues it. A step whose
    stage lost the sequence's cache (its worker failed and the session re-planned, or it restarted, or
    freed it) is answered by running every token so far again as a new start (a prefill), which
    rebuilds the caches where the stages are now: greedy decoding then continues as it would have."""
    _check_decoder(session)
    history: list[int] = []

    def run(ids: Sequence[int], start: bool) -> np.ndarray:
        (logits,) = session.run([LOGITS], {INPUT_IDS: np.asarray(ids, dtype=np.int64).reshape(1, -1)},
                                deadline_s=deadline_s, sequence=sequence, sequence_start=start)
        return logits

    def run_step(token_ids: np.ndarray) -> np.ndarray:
        ids = [int(t) for t in np.asarray(token_ids).reshape(-1)]
        start = not history
        history.extend(ids)
        try:
            return run(ids, start)
        except WorkerError as e:
            if start or code_of(e) != ErrorCode.STATE_LOST:
                raise
            log.warning("sequence %s lost its cache (%s): running its %d tokens again", sequence,
                        e.problem, len(history))
            return run(history, True)

    return run_step


def generate(session: Session, prompt_ids: Sequence[int] | np.ndarray, sampling: Sampling | None = None, *,
             sequence: str | None = None, deadline_s: float | None = None) -> Iterator[Token]:
    """Tokens after ``prompt_ids``, as they come (see the module). The sequence's state is freed on the
    stages when the generator finishes or is closed. ``deadline_s``: of each step."""
    name = sequence or secrets.token_hex(8)
    start = time.perf_counter()
    try:
        for token, row in sample_tokens(session_step(session, name, deadline_s), prompt_ids, sampling):
            yield Token(token, row, time.perf_counter() - start)
    finally:
        session.end_sequences([name])


def _check_decoder(session: Session) -> None:
    inputs = [s.name for s in session.inputs]
    outputs = [s.name for s in session.outputs]
    cached = any(s.state for s in session.stages)
    if inputs != [INPUT_IDS] or LOGITS not in outputs or not cached:
        raise ModelError(f"the deployed model takes {inputs} and gives {outputs}, with "
                         f"{'a' if cached else 'no'} cache kept on its stages",
                         "deploy a decoder exported with past key/values (input_ids in, logits out), such as "
                         "the zoo's gpt2 or llama")
