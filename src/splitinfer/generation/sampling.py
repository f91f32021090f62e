"""Choosing tokens from logits, and the generation loop, whatever runs the model.

Plain numpy. :func:`generate` asks a ``run_step`` function for the logits of the last position
after feeding it tokens (the prompt first, a prefill; then one token per *decode step*) and knows
nothing of where the model's state lives: in one ONNX Runtime session
(:func:`splitinfer.generation.reference.whole_model_step`) or on the devices of a split model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.errors import InputError
from splitinfer.units import check_number

MAX_NEW_TOKENS = 1_000_000
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen, and when generation stops.

    ``temperature``: 0 is greedy decoding (the highest logit, the lowest id of a tie), else logits are
    divided by it before ``top_k`` (0: off) keeps the k highest and ``top_p`` (1: off) the fewest
    tokens whose probability reaches p (nucleus sampling); one draw from a generator seeded with
    ``seed`` then picks among them. ``stop_ids``: tokens that end generation (the stop token is
    yielded); ``max_new_tokens``: at most this many tokens are generated. Every value is checked:
    :class:`InputError` naming the field (``Sampling.top_p``) otherwise.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: tuple[int, ...] = ()
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        check_number(self.temperature, "Sampling.temperature", low=0, error=InputError,
                     fix="0 for greedy decoding")
        check_number(self.top_k, "Sampling.top_k", low=0, whole=True, error=InputError,
                     fix="0 for all tokens")
        check_number(self.top_p, "Sampling.top_p", low=0, low_open=True, high=1, error=InputError,
                     fix="1 for all tokens")
        check_number(self.seed, "Sampling.seed", low=0, high=MAX_SEED, whole=True, error=InputError)
        check_number(self.max_new_tokens, "Sampling.max_new_tokens", low=1, high=MAX_NEW_TOKENS, whole=True,
                     error=InputError)
        if isinstance(self.stop_ids, str | bytes) or not isinstance(self.stop_ids, Sequence):
            raise InputError(f"Sampling.stop_ids is {self.stop_ids!r}",
                             "give a tuple of token ids, e.g. (2,)")
        for i, token in enumerate(self.stop_ids):
            check_number(token, f"Sampling.stop_ids[{i}]", low=0, whole=True, error=InputError)
        # A list is accepted and kept as a tuple: the dataclass stays hashable.
        object.__setattr__(self, "stop_ids", tuple(int(t) for t in self.stop_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


NUCLEUS_CANDIDATES = 1024  # top-p without top-k: the highest logits the nucleus is looked for among first


def next_token(logits_row: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """The token ``sampling`` chooses from one position's logits ([vocab]); ``rng`` is drawn from once
    unless decoding is greedy. The same logits, settings and generator state give the same token."""
    row = np.asarray(logits_row)
    if row.ndim != 1 or row.size == 0 or not np.issubdtype(row.dtype, np.floating):
        raise InputError(f"logits of shape {row.shape} and dtype {row.dtype} are not one position's",
                         "give a non-empty 1-D float array: the logits of the last position")
    if not np.isfinite(row).all():
        raise InputError("the logits hold NaN or infinity", "check the model's outputs")
    if sampling.greedy:
        return int(np.argmax(row))  # the first of a tie: the lowest id
    # In float64: the probabilities of 50,000 tokens summed keep their precision. exp() sees logits
    # less the highest, so that no temperature overflows it.
    scaled = row.astype(np.float64) / sampling.temperature
    top = scaled.max()
    if 0 < sampling.top_k < scaled.size:
        order = _highest(scaled, sampling.top_k)
        probs = np.exp(scaled[order] - top)
        probs /= probs.sum()
    elif sampling.top_p < 1:
        # The nucleus is nearly always among the highest few hundred logits: sort those alone, and the
        # whole row only when their probability falls short of p.
        weights = np.exp(scaled - top)
        total = weights.sum()
        order = _highest(scaled, min(scaled.size, NUCLEUS_CANDIDATES))
        if weights[order].sum() < (sampling.top_p - 1e-12) * total:
            order = np.argsort(-scaled, kind="stable")
        probs = weights[order] / total
    else:  # temperature alone: every token may be drawn; the draw walks them in id order (no sort)
        probs = np.exp(scaled - top)
        probs /= probs.sum()
        order = np.arange(scaled.size)
    if sampling.top_p < 1:
        cumulative = np.cumsum(probs)
        # The fewest tokens whose probability reaches p (a hair below p counts: float sums).
        keep = int(np.searchsorted(cumulative, sampling.top_p - 1e-12)) + 1
        order, probs = order[:keep], probs[:keep]
    cumulative = np.cumsum(probs)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(order[min(pick, order.size - 1)])


def _highest(scaled: np.ndarray, count: int) -> np.ndarray:
    """The ids of the ``count`` highest scores, highest first and tied ones in id order: what a stable
    sort of the whole row would put first, sorting only the scores at or above the count-th (a full
    sort of a 50,000-token vocabulary costs milliseconds a token)."""
    if count >= scaled.size:
        return np.argsort(-scaled, kind="stable")
    bound = np.partition(scaled, scaled.size - count)[scaled.size - count]
    candidates = np.flatnonzero(scaled >= bound)  # in id order, every tie at the bound included
    return candidates[np.argsort(-scaled[candidates], kind="stable")][:count]


def generate(run_step: Callable[[np.ndarray], np.ndarray], prompt_ids: Sequence[int] | np.ndarray,
             sampling: Sampling | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Generate tokens after ``prompt_ids``: yields (token id, the logits row it was chosen from).

    ``run_step(token_ids)`` is given int64 [1, n]: the whole prompt at the first call, then the last
    token chosen; it keeps the model's state between calls (its past keys and values) and returns
    the logits of the last position fed ([vocab]; of a [1, n, vocab] or [n, vocab] result the last
    row). Generation stops after ``sampling.max_new_tokens`` tokens or a token of
    ``sampling.stop_ids`` (yielded); ``run_step`` is not called for a token that is not fed on.
    """
    sampling = Sampling() if sampling is None else sampling
    if not isinstance(sampling, Sampling):
        raise InputError(f"sampling is {sampling!r}", "give a Sampling(...) or None for greedy decoding")
    prompt = np.asarray(prompt_ids)
    if prompt.ndim == 2 and prompt.shape[0] == 1:
        prompt = prompt[0]
    is_ids = prompt.ndim == 1 and prompt.size > 0 and np.issubdtype(prompt.dtype, np.integer)
    if not is_ids or prompt.min() < 0:
        raise InputError(f"prompt_ids of shape {prompt.shape} and dtype {prompt.dtype} are not token ids",
                         "give a non-empty sequence of token ids >= 0")
    rng = np.random.default_rng(sampling.seed)
    stop = set(sampling.stop_ids)
    row = _last_row(run_step(prompt.astype(np.int64)[None, :]))
    for count in range(1, sampling.max_new_tokens + 1):
        token = next_token(row, sampling, rng)
        yield token, row
        if token in stop or count == sampling.max_new_tokens:
            return
        row = _last_row(run_step(np.array([[token]], dtype=np.int64)))


def _last_row(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim == 0 or math.prod(logits.shape[:-1]) == 0:
        raise InputError(f"run_step returned logits of shape {logits.shape}",
                         "return the last position's logits, [vocab] or [1, n, vocab]")
    return logits.reshape(-1, logits.shape[-1])[-1]
