"""A decoder's generation planned by its own measures: time to first token, time per output token, tokens/s.

A decoder loaded with no shapes is profiled at its prefill (the prompt in one pass, empty caches) and at
decode steps (one new token after a past) of two context lengths (:func:`splitinfer.graph.state.
decoder_sizes`). Each named objective is a plan for one of them:

- ``ttft``, the time to first token: the fastest prefill (latency at the prefill size);
- ``tpot``, the time per output token: the fastest decode step at the mean past of a generation that
  ends at ``context`` tokens;
- ``tokens``, tokens per second of ``in_flight`` sequences generating at once: the greatest throughput of
  decode steps (a pipeline kept full by the sequences), at the same past.

A decode step reads its layers' whole past, so its time grows with the past, linearly (attention is one
dot product per past token). Its blocks' times at a past between or beyond the two profiled are read off
the straight line through them, per block, device and statistic (:func:`decode_at`); the line never falls
with the past (a fall between two measurements is noise). Memory counts each stage's cache for
``context`` tokens of every sequence (``BlockInfo.state_bytes_per_token``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from splitinfer.cluster import Cluster
from splitinfer.errors import ProfileError
from splitinfer.graph.state import is_past
from splitinfer.plan.problem import Problem
from splitinfer.profile.problem import STATS, build_problem
from splitinfer.profile.schema import DeviceProfile, Profile, Stats

# name: (what it is, the planner's objective)
GENERATION_OBJECTIVES = {"ttft": ("time to first token", "latency"),
                         "tpot": ("time per output token", "latency"),
                         "tokens": ("tokens per second", "throughput")}


@dataclass(frozen=True)
class GenerationProblem:
    """What to solve for a named objective: the problem, the planner's objective, and the past (tokens of
    context a decode step reads; 0 for the prefill) its times are for."""

    problem: Problem
    objective: str
    past: float
    profile: Profile


def past_of(profile: Profile) -> int | None:
    """The past length of ``profile``'s own size (the pasts' third axis), None if it has no pasts or
    they differ."""
    shapes = profile.model.input_shapes
    lengths = {dims[2] for name, dims in shapes.items() if is_past(name) and len(dims) == 4}
    return lengths.pop() if len(lengths) == 1 else None


def prefill_profile(profile: Profile) -> Profile:
    """The profiled size whose pasts are empty (the prompt in one pass)."""
    for size in (profile, *profile.other_sizes):
        if past_of(size) == 0:
            return size
    raise _not_a_decoder(profile)


def decode_profiles(profile: Profile) -> list[tuple[int, Profile]]:
    """(past, profile) of each profiled decode step (non-empty pasts), shortest past first."""
    steps = [(past, size) for size in (profile, *profile.other_sizes) if (past := past_of(size))]
    return sorted(steps, key=lambda p: p[0])


def decode_at(profile: Profile, past: float) -> Profile:
    """The decode step's profile at ``past`` tokens of context: the profiled one when it is at that past,
    else each block's times on the line through the two profiled decode sizes nearest in past (see the
    module); the rest (memory, cut bytes, links) is the nearest's."""
    steps = decode_profiles(profile)
    if not steps:
        raise _not_a_decoder(profile)
    exact = [p for c, p in steps if c == past]
    if exact:
        return exact[0]
    if len(steps) == 1:
        return steps[0][1]
    # the two nearest in past (the two shortest below the shortest, the two longest beyond the longest)
    (c1, p1), (c2, p2) = sorted(sorted(steps, key=lambda s: abs(s[0] - past))[:2], key=lambda s: s[0])
    devices = {name: _line(dev, p2.devices.get(name), (past - c1) / (c2 - c1))
               for name, dev in p1.devices.items()}
    return msgspec.structs.replace(p1, devices=devices, other_sizes=())


def generation_problem(profile: Profile, cluster: Cluster | None, objective: str, *, context: int = 0,
                       in_flight: int = 1, **options: Any) -> GenerationProblem:
    """The problem that plans ``objective`` (a key of :data:`GENERATION_OBJECTIVES`) for ``profile``'s
    decoder on ``cluster``. ``context``: tokens per sequence, prompt and generated (0: the prefill's prompt
    and as many again); ``in_flight``: sequences generating at once. ``options``: further
    :func:`~splitinfer.profile.problem.build_problem` arguments (``stat``, ``sink``)."""
    if objective not in GENERATION_OBJECTIVES:
        raise ProfileError(f"unknown generation objective {objective!r}",
                           f"use one of: {', '.join(GENERATION_OBJECTIVES)}")
    prefill = prefill_profile(profile)
    prompt = _prompt_len(prefill)
    context = context or 2 * prompt
    if objective == "ttft":
        chosen, past = prefill, 0.0
    else:  # the mean past of the steps after the prompt: prompt, prompt + 1, ..., context - 1
        past = (min(prompt, context - 1) + context - 1) / 2
        chosen = decode_at(profile, past)
    problem = build_problem(chosen, cluster, in_flight=in_flight, context=context, **options)
    return GenerationProblem(problem, GENERATION_OBJECTIVES[objective][1], past, chosen)


def _prompt_len(prefill: Profile) -> int:
    """The prefill's new tokens: the longest open axis of its inputs that are not pasts."""
    dims = [d for name, shape in prefill.model.input_shapes.items() if not is_past(name) for d in shape[1:]]
    return max(dims, default=1)


def _line(near: DeviceProfile, far: DeviceProfile | None, t: float) -> DeviceProfile:
    """``near``'s timings moved ``t`` of the way to ``far``'s (``t`` outside [0, 1]: beyond them)."""
    if far is None or len(far.blocks) != len(near.blocks):
        return near

    def one(a: Stats | None, b: Stats | None) -> Stats | None:
        if a is None or b is None:
            return a
        moved: Mapping[str, float] = {f: max(0.0, getattr(a, f) + t * max(0.0, getattr(b, f) - getattr(a, f)))
                                      for f in STATS}
        return msgspec.structs.replace(a, **moved)

    pairs = tuple(one(a, b) for a, b in zip(near.pairs, far.pairs, strict=True)) \
        if len(near.pairs) == len(far.pairs) else near.pairs
    return msgspec.structs.replace(
        near, blocks=tuple(one(a, b) for a, b in zip(near.blocks, far.blocks, strict=True)),
        whole_model=one(near.whole_model, far.whole_model), pairs=pairs, segments=())


def _not_a_decoder(profile: Profile) -> ProfileError:
    return ProfileError(f"the profile of {profile.model.name} has no decoder sizes (a prefill with empty "
                        "caches and decode steps)",
                        "profile a decoder with its cache (past_key_values.N.key/value in, present.N.* out) "
                        "given no input shapes: it is profiled at its prefill and decode steps")
