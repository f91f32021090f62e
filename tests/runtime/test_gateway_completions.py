"""POST /v1/completions: a decoder split over two workers answers token ids, whole or streamed as
server-sent events, the same as the whole model; bad bodies are 400s (issue 20, item 3)."""

from __future__ import annotations

import json

import pytest
from helpers.decoders import decoder_stages, load_decoder
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts
from starlette.testclient import TestClient

from splitinfer import zoo
from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.gateway import make_app

PROMPT = [5, 17, 42, 7]


@pytest.fixture(scope="module")
def served():
    proto = zoo.build_small("gpt2")
    stages = decoder_stages(load_decoder(proto, len(PROMPT)), "ab")
    with deploy_stages(stages, local_cluster(["a", "b"]), timeout_s=30) as session, \
            TestClient(make_app(session)) as client:
        yield client, proto


def _want(proto, n, **sampling):
    return [t for t, _ in reference_generate(whole_model_step(proto), PROMPT,
                                             Sampling(max_new_tokens=n, **sampling))]


def test_a_whole_answer_equals_the_whole_models_tokens(served):
    client, proto = served
    reply = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    choice = body["choices"][0]
    assert choice["tokens"] == _want(proto, 12) and choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 12}
    stop = _want(proto, 12)[3]
    reply = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "stop": [stop]})
    tokens = reply.json()["choices"][0]["tokens"]
    assert tokens[-1] == stop and len(tokens) <= 4 and reply.json()["choices"][0]["finish_reason"] == "stop"


def test_a_stream_sends_each_token_as_an_event_then_done(served):
    client, proto = served
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0.7, "top_k": 20, "seed": 3, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    tokens = [json.loads(e)["choices"][0]["token"] for e in events[:-1]]
    assert tokens == _want(proto, 8, temperature=0.7, top_k=20, seed=3)


@pytest.mark.parametrize(("body", "says"), [
    (b"{}", "not a completions request"),
    (b'{"prompt": []}', "prompt has 0 tokens"),
    (b'{"prompt": [1], "top_p": 2}', "Sampling.top_p"),
    (b'{"prompt": [[[[[[1]]]]]]}', "not a completions request"),
    (b'{"prompt": [1], "mystery": 1}', "not a completions request"),
    (b"[" * 100_000, "not a completions request"),
])
def test_bad_bodies_are_400_with_one_line(served, body, says):
    client, _ = served
    reply = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and says in reply.json()["error"]


def test_a_model_that_is_no_decoder_says_so():
    _, parts = whole_and_parts(mlp_parts(1))
    with deploy_stages(stages_on(parts, ["a"]), local_cluster(["a"]), timeout_s=30) as session, \
            TestClient(make_app(session)) as client:
        reply = client.post("/v1/completions", json={"prompt": [1, 2]})
    assert reply.status_code == 400 and "no cache kept on its stages" in reply.json()["error"]
