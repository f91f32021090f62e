"""Generating tokens with a decoder: sampling, the generation loop, and its whole-model reference.

- ``sampling``: :class:`Sampling` (temperature, top-k, top-p, seed, stop ids, max new tokens; each
  checked), :func:`next_token` (one position's logits to a token) and :func:`generate` (the loop: a
  prefill of the prompt, then one decode step per token) over any ``run_step`` function. Plain numpy.
- ``reference``: :func:`whole_model_step`, the ``run_step`` of the whole decoder in one ONNX Runtime
  session that keeps its key/value cache itself (ONNX Runtime imported only when it opens one).
- ``steps``: :func:`~splitinfer.generation.steps.step_feeds`, what a step feeds beside the cache (the ids,
  and an export's ``attention_mask`` and ``position_ids``), alike for the reference and a split model.

>>> from splitinfer import zoo
>>> from splitinfer.generation import Sampling, generate, whole_model_step
>>> step = whole_model_step(zoo.build_small("gpt2"))
>>> tokens = [t for t, _ in generate(step, [1, 2, 3], Sampling(max_new_tokens=16))]
"""

from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling, generate, next_token

__all__ = ["Sampling", "generate", "next_token", "whole_model_step"]
