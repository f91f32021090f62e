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
import queue
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitinfer.errors import ErrorCode, ModelError, WorkerError, code_of
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as sample_tokens
from splitinfer.generation.steps import INPUT_IDS, STEP_INPUTS, step_feeds
from splitinfer.generation.tokenizer import Detokenizer
from splitinfer.runtime.coordinator.session import Session
from splitinfer.units import check_number

LOGITS = "logits"
log = logging.getLogger("splitinfer.generate")
MAX_IN_FLIGHT = 256  # sequences stepping at once


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
    check_decoder(session)
    # An export's attention_mask and position_ids are fed too; a stage past the first that reads them
    # gets them (or what the model made of them) from the stage before, as any tensor it needs.
    dtypes = {s.name: s.dtype for s in session.inputs}
    history: list[int] = []

    def run(ids: Sequence[int], past: int) -> np.ndarray:
        (logits,) = session.run([LOGITS], step_feeds(ids, past, dtypes), deadline_s=deadline_s,
                                sequence=sequence, sequence_start=past == 0)
        return logits

    def run_step(token_ids: np.ndarray) -> np.ndarray:
        ids = [int(t) for t in np.asarray(token_ids).reshape(-1)]
        past = len(history)
        history.extend(ids)
        try:
            return run(ids, past)
        except WorkerError as e:
            if past == 0 or code_of(e) != ErrorCode.STATE_LOST:
                raise
            log.warning("sequence %s lost its cache (%s): running its %d tokens again", sequence,
                        e.problem, len(history))
            return run(history, 0)

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


def with_text(tokens: Iterable[Token], detokenizer: Detokenizer | None
              ) -> Iterator[tuple[Token | None, str | None]]:
    """Each token with the text it adds (None without a ``detokenizer``), then, with one, ``(None, the text
    held back to the end)``. A stop string of the detokenizer's ends the tokens at the one whose text
    completes it. Close the token generator when done with it (it frees the sequence's caches)."""
    for token in tokens:
        yield token, None if detokenizer is None else detokenizer.push(token.id)
        if detokenizer is not None and detokenizer.stopped:
            break
    if detokenizer is not None:
        yield None, detokenizer.flush()


def generate_many(session: Session, prompts: Sequence[Sequence[int] | np.ndarray],
                  sampling: Sampling | None = None, *, max_in_flight: int = 4,
                  deadline_s: float | None = None) -> Iterator[tuple[int, Token]]:
    """Several sequences at once: (which prompt, its next token) as tokens come, up to ``max_in_flight``
    sequences stepping together, so that while one stage computes a step of one sequence the others
    compute other sequences' (a pipeline kept full); each sequence as :func:`generate` alone."""
    check_number(max_in_flight, "max_in_flight", low=1, high=MAX_IN_FLIGHT, whole=True)
    check_decoder(session)
    done = object()
    tokens: queue.Queue[tuple[int, Any]] = queue.Queue()

    def one(k: int) -> None:
        try:
            for token in generate(session, prompts[k], sampling, deadline_s=deadline_s):
                tokens.put((k, token))
        except BaseException as e:  # handed to the caller's thread
            tokens.put((k, e))
        tokens.put((k, done))

    with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="sequence") as pool:
        for k in range(len(prompts)):
            pool.submit(one, k)
        left = len(prompts)
        while left:
            k, item = tokens.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield k, item


def check_decoder(session: Session) -> None:
    """ModelError unless the session's model is a decoder whose stages keep its cache."""
    inputs = [s.name for s in session.inputs]
    outputs = [s.name for s in session.outputs]
    cached = any(s.state for s in session.stages)
    if INPUT_IDS not in inputs or not set(inputs) <= STEP_INPUTS or LOGITS not in outputs or not cached:
        raise ModelError(f"the deployed model takes {inputs} and gives {outputs}, with "
                         f"{'a' if cached else 'no'} cache kept on its stages",
                         "deploy a decoder exported with past key/values (input_ids and, optionally, "
                         "attention_mask and position_ids in, logits out), such as the zoo's gpt2 or llama")
