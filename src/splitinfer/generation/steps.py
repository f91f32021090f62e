"""What one step of a decoder is fed beside its state: the new token ids, and the mask and positions an
export may ask for.

Hugging Face's exports (optimum's) take ``input_ids`` [batch, new tokens] and the pasts, and often
``attention_mask`` [batch, past + new tokens] and ``position_ids`` [batch, new tokens]. Generation runs
one sequence with no padding, so the mask is all ones and the positions count on from the past's
length. The whole-model reference (:mod:`splitinfer.generation.reference`) and the split model's loop
(:mod:`splitinfer.runtime.generate`) both build a step's feeds here: they feed alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

INPUT_IDS, ATTENTION_MASK, POSITION_IDS = "input_ids", "attention_mask", "position_ids"
# Every input a step feeds but the pasts: a decoder that takes another cannot be fed here.
STEP_INPUTS = frozenset({INPUT_IDS, ATTENTION_MASK, POSITION_IDS})


def step_feeds(token_ids: Any, past: int, dtypes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The feeds of a step of new ``token_ids`` after ``past`` tokens, for a decoder whose inputs but
    its pasts are ``dtypes`` (name -> numpy dtype): the ids [1, n]; where the decoder takes them, ones
    [1, past + n] as ``attention_mask`` and past .. past + n - 1 [1, n] as ``position_ids``; each in
    the dtype the decoder declares."""
    ids = np.asarray(token_ids).reshape(1, -1)
    n = ids.shape[1]
    feeds = {INPUT_IDS: ids.astype(dtypes.get(INPUT_IDS, np.int64))}
    if ATTENTION_MASK in dtypes:
        feeds[ATTENTION_MASK] = np.ones((1, past + n), dtypes[ATTENTION_MASK])
    if POSITION_IDS in dtypes:
        feeds[POSITION_IDS] = np.arange(past, past + n).astype(dtypes[POSITION_IDS])[None, :]
    return feeds
