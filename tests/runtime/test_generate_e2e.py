"""Generation through three real workers equals the whole decoder's, token for token, with every step's
logits within 1e-4 (issue 20, item 6); each stage keeps its layers' cache, freed at the end."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.decoders import decoder_stages, load_decoder
from helpers.runtime_models import local_cluster

from splitinfer import zoo
from splitinfer.errors import ModelError
from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.generate import generate

PROMPT = [5, 17, 42, 7, 99, 3, 12, 8]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_generation_through_three_workers_equals_the_whole_model(name):
    proto = zoo.build_small(name)
    stages = decoder_stages(load_decoder(proto, len(PROMPT)))
    assert all(s.state for s in stages[:2])  # the caches are spread over the stages
    want = list(reference_generate(whole_model_step(proto), PROMPT, Sampling(max_new_tokens=64)))
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), timeout_s=30) as session:
        got = list(generate(session, PROMPT, Sampling(max_new_tokens=64), sequence="s1"))
        assert session.end_sequences(["s1"]) == 0  # freed when generation ended
        # sampled, seeded: the same draws as the whole model's
        sampling = Sampling(temperature=0.8, top_k=50, top_p=0.9, seed=7, max_new_tokens=16)
        drawn = [t.id for t in generate(session, PROMPT, sampling)]
    assert [t.id for t in got] == [t for t, _ in want]
    assert max(float(np.abs(g.logits - row).max()) for g, (_, row) in zip(got, want, strict=True)) < 1e-4
    assert got[0].at_s <= got[-1].at_s
    assert drawn == [t for t, _ in reference_generate(whole_model_step(proto), PROMPT, sampling)]


def test_generation_needs_a_decoder_with_its_cache_on_the_stages():
    from helpers.runtime_models import mlp_parts, stages_on, whole_and_parts

    _, parts = whole_and_parts(mlp_parts(1))
    with deploy_stages(stages_on(parts, ["a"]), local_cluster(["a"]), timeout_s=30) as session, \
            pytest.raises(ModelError, match="no cache kept on its stages"):
        next(generate(session, [1, 2, 3]))


def test_many_sequences_at_once_each_equal_the_whole_model():
    from splitinfer.runtime.generate import generate_many

    proto = zoo.build_small("gpt2")
    prompts = [PROMPT, [1, 2, 3], [900, 4], [7] * 10, [33, 44, 55, 66]]
    sampling = Sampling(max_new_tokens=12)
    want = {k: [t for t, _ in reference_generate(whole_model_step(proto), p, sampling)]
            for k, p in enumerate(prompts)}
    got: dict[int, list[int]] = {k: [] for k in range(len(prompts))}
    with deploy_stages(decoder_stages(load_decoder(proto, len(PROMPT))), local_cluster(["a", "b", "c"]),
                       timeout_s=30) as session:
        for k, token in generate_many(session, prompts, sampling, max_in_flight=3):
            got[k].append(token.id)
        assert session.end_sequences(["anything"]) == 0
    assert got == want
