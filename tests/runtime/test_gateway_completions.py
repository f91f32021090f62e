"""POST /v1/completions: a decoder split over two workers answers token ids, whole or streamed as
server-sent events, the same as the whole model; with a tokenizer, a text prompt and text answers;
bad bodies are 400s (issue 20, item 3)."""

from __future__ import annotations

import json

import pytest
from helpers.cli import one_error_line, run_cli
from helpers.decoders import decoder_stages, load_decoder
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts
from helpers.text import SMALL_VOCAB, save_tokenizer
from starlette.testclient import TestClient

from splitinfer import zoo
from splitinfer.errors import InputError
from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate
from splitinfer.generation.tokenizer import load_tokenizer
from splitinfer.runtime import deploy_stages, gateway
from splitinfer.runtime.gateway import make_app

PROMPT = [5, 17, 42, 7]
TEXT = "karé 🦊 the quick brown fox"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    proto = zoo.build_small("gpt2")
    stages = decoder_stages(load_decoder(proto, len(PROMPT)), "ab")
    with deploy_stages(stages, local_cluster(["a", "b"]), timeout_s=30) as session:
        yield session, proto, save_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def served(deployed):
    session, proto, _ = deployed
    with TestClient(make_app(session)) as client:
        yield client, proto


@pytest.fixture(scope="module")
def served_text(deployed):
    """The same session behind a second app that has a tokenizer."""
    session, proto, path = deployed
    with TestClient(make_app(session, tokenizer=path, resource_interval_s=0)) as client:
        yield client, proto, load_tokenizer(path)


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


def _events(client, body):
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as reply:
        assert reply.status_code == 200, reply.read()
        events = [line[len("data: "):] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e)["choices"][0] for e in events[:-1]]


def test_a_text_prompt_is_encoded_and_answered_with_text(served_text):
    client, proto, tok = served_text
    ids = tok.encode(TEXT)
    reply = client.post("/v1/completions", json={"prompt": TEXT, "max_tokens": 24})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    choice = body["choices"][0]
    want = [t for t, _ in reference_generate(whole_model_step(proto), ids, Sampling(max_new_tokens=24))]
    assert choice["tokens"] == want and choice["text"] == tok.decode(want)
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 24}
    by_ids = client.post("/v1/completions", json={"prompt": ids, "max_tokens": 24}).json()["choices"][0]
    assert by_ids["tokens"] == want and by_ids["text"] == choice["text"]


def test_a_text_stream_sends_each_tokens_text_and_they_join_into_the_whole(served_text):
    client, _, tok = served_text
    body = {"prompt": TEXT, "max_tokens": 40, "temperature": 1.5, "seed": 5}
    choices = _events(client, body)
    tokens = [c["token"] for c in choices if "token" in c]
    assert len(tokens) == 40 and all("text" in c for c in choices)
    assert "".join(c["text"] for c in choices) == tok.decode(tokens)
    whole = client.post("/v1/completions", json=body).json()["choices"][0]
    assert whole["tokens"] == tokens and whole["text"] == tok.decode(tokens)
    # Token ids in, text out too; and the app without a tokenizer sends no text.
    assert "".join(c["text"] for c in _events(client, {**body, "prompt": tok.encode(TEXT)})) == whole["text"]


def test_an_app_without_a_tokenizer_sends_no_text(served):
    client, _ = served
    assert "text" not in client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}
                                     ).json()["choices"][0]
    assert all("text" not in c for c in _events(client, {"prompt": PROMPT, "max_tokens": 2}))


def test_a_text_prompt_without_a_tokenizer_is_a_400_naming_the_flag(served):
    client, _ = served
    reply = client.post("/v1/completions", json={"prompt": TEXT})
    assert reply.status_code == 400
    assert "has no tokenizer" in reply.json()["error"] and "--tokenizer" in reply.json()["error"]


def test_text_prompts_are_bounded_before_and_after_encoding(served_text, monkeypatch):
    client, _, tok = served_text
    reply = client.post("/v1/completions", json={"prompt": ""})
    assert reply.status_code == 400 and "prompt has 0 tokens" in reply.json()["error"]
    monkeypatch.setattr(gateway._completions, "MAX_PROMPT_CHARS", 10)
    reply = client.post("/v1/completions", json={"prompt": "x" * 11})
    assert reply.status_code == 400 and "the prompt has 11 characters" in reply.json()["error"]
    monkeypatch.setattr(gateway._completions, "MAX_PROMPT_TOKENS", 3)
    reply = client.post("/v1/completions", json={"prompt": "🦊🦊"})
    says = f"prompt has {len(tok.encode('🦊🦊'))} tokens"
    assert reply.status_code == 400 and says in reply.json()["error"]


def test_a_bad_or_unfitting_tokenizer_is_refused_when_the_app_is_made(deployed, tmp_path):
    session, _, _ = deployed
    (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
    for path, says in [(tmp_path / "missing.json", "cannot read the tokenizer"),
                       (tmp_path / "bad.json", "is not a tokenizer.json")]:
        with pytest.raises(InputError, match=says) as caught:
            make_app(session, tokenizer=path)
        assert str(path) in caught.value.line()
    big = save_tokenizer(tmp_path, SMALL_VOCAB + 1)
    with pytest.raises(InputError, match=f"has {SMALL_VOCAB + 1} token ids, the model's logits cover 1000"):
        make_app(session, tokenizer=big)
    with pytest.raises(gateway.SettingError, match="tokenizer is int"):
        make_app(session, tokenizer=3)


def test_serve_refuses_a_bad_tokenizer_file_in_one_line_before_deploying(capsys, tmp_path):
    code, _, err = run_cli(capsys, "serve", tmp_path / "plan.json", "--tokenizer", tmp_path / "none.json",
                           "--port", 1)
    assert code == 2 and "--tokenizer: cannot read the tokenizer" in one_error_line(err)


def test_a_stop_string_ends_the_text_before_it_whole_or_streamed(served_text):
    client, proto, tok = served_text
    ids = tok.encode(TEXT)
    want = [t for t, _ in reference_generate(whole_model_step(proto), ids, Sampling(max_new_tokens=24))]
    whole = tok.decode(want)
    stop = whole[len(whole) // 2:len(whole) // 2 + 3]  # three characters from the middle of the answer
    before = whole[:whole.index(stop)]
    body = {"prompt": TEXT, "max_tokens": 24, "stop": [stop, 999_999]}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["text"] == before and choice["finish_reason"] == "stop"
    # the tokens end with the one whose text completed the stop string
    assert choice["tokens"] == want[:len(choice["tokens"])] and stop in tok.decode(choice["tokens"])
    assert stop not in tok.decode(choice["tokens"][:-1])
    events = _events(client, body)
    assert "".join(c["text"] for c in events) == before
    assert [c["token"] for c in events if "token" in c] == choice["tokens"]
    # a single string is a list of one
    assert client.post("/v1/completions", json={**body, "stop": stop}).json()["choices"][0]["text"] == before


@pytest.mark.parametrize("stop, says", [
    (["\n"] * 17, "stop has 17 entries"),
    ([""], "a stop string is empty or too long"),
    (["x" * 257], "a stop string is empty or too long"),
    ([[1]], "not a completions request"),
])
def test_bad_stops_are_400_with_one_line(served_text, stop, says):
    client, *_ = served_text
    reply = client.post("/v1/completions", json={"prompt": TEXT, "stop": stop})
    assert reply.status_code == 400 and says in reply.json()["error"]


def test_stop_strings_without_a_tokenizer_are_a_400_naming_the_flag(served):
    client, _ = served
    reply = client.post("/v1/completions", json={"prompt": [1, 2], "stop": ["\n"]})
    assert reply.status_code == 400 and "--tokenizer" in reply.json()["error"]
