"""What every gateway request passes (in process, no workers): the bearer token, the per-client limit,
request ids and the log lines that carry them, internal errors, and the settings' ranges."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re

import httpx
import numpy as np
import pytest
from helpers.gateway import FakeSession, X, metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from splitinfer.runtime.gateway import ERROR_KINDS, SettingError, make_app

NPY = {"content-type": "application/x-npy"}
ERRORS = "splitinfer_request_errors_total"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_metrics_list_every_error_kind_from_the_start():
    text = TestClient(make_app(FakeSession())).get("/metrics").text
    kinds = {s.labels["kind"] for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == ERRORS}
    assert kinds == set(ERROR_KINDS) and "disconnect" in kinds
    assert all(metric(text, ERRORS, kind=kind) == 0 for kind in ERROR_KINDS)


def test_a_token_guards_everything_but_healthz():
    client = TestClient(make_app(FakeSession(), token="s3cret-token"))
    good = {**NPY, "authorization": "Bearer s3cret-token"}
    for given in (None, "Bearer wrong", "Basic s3cret-token", "Bearer s3cret-token-and-more"):
        headers = NPY if given is None else {**NPY, "authorization": given}
        reply = client.post("/v1/infer", content=_npy(X), headers=headers)
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
        assert reply.headers["connection"] == "close" and "Authorization: Bearer" in reply.json()["error"]
    reply = client.post("/v1/infer", content=_npy(X), headers=good)
    assert reply.status_code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(reply.content)), X * 2)
    assert client.post("/v1/infer", content=_npy(X), headers={**good, "authorization": "bearer s3cret-token"}
                       ).status_code == 200  # the scheme is case-insensitive
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers={"authorization": "Bearer s3cret-token"}).text
    assert metric(text, ERRORS, kind="unauthorized") == 4
    assert metric(text, "splitinfer_requests_total") == 6


def test_a_client_over_its_in_flight_limit_gets_429_while_others_get_in():
    session = FakeSession(hold=True)
    app = make_app(session, max_in_flight_per_client=2)

    async def scenario() -> list[int]:
        def client(host: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://gateway")

        async with client("10.0.0.1") as a, client("10.0.0.2") as b:
            first = [asyncio.create_task(a.post("/v1/infer", content=_npy(X), headers=NPY)) for _ in range(2)]
            while session.num_submitted < 2:
                await asyncio.sleep(0.01)
            refused = await a.post("/v1/infer", content=_npy(X), headers=NPY)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "client 10.0.0.1 has 2 requests in flight, the limit is 2" in refused.json()["error"]
            assert (await a.get("/healthz")).status_code == 200  # outside the limit
            other = asyncio.create_task(b.post("/v1/infer", content=_npy(X), headers=NPY))
            while session.num_submitted < 3:
                await asyncio.sleep(0.01)
            session.gate.set()
            replies = [await t for t in (*first, other)]
            again = await a.post("/v1/infer", content=_npy(X), headers=NPY)  # answered ones free their slot
            return [r.status_code for r in (*replies, again)]

    assert asyncio.run(scenario()) == [200, 200, 200, 200]
    assert metric(TestClient(app).get("/metrics").text, ERRORS, kind="throttled") == 1


def test_every_response_carries_a_request_id_and_the_log_lines_name_it(caplog):
    client = TestClient(make_app(FakeSession(), token="s3cret-token"))
    auth = {"authorization": "Bearer s3cret-token"}
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/healthz").headers["x-request-id"] != generated
    for path, headers in (("/healthz", {}), ("/metrics", {}), ("/nowhere", auth), ("/metrics", auth)):
        reply = client.get(path, headers={**headers, "x-request-id": "client-id_1.2:3"})
        assert reply.headers["x-request-id"] == "client-id_1.2:3"
    for insane in ("x" * 129, "has space", "semi;colon", ""):
        reply = client.get("/healthz", headers={"x-request-id": insane})
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
    with caplog.at_level(logging.INFO, logger="splitinfer.gateway"):
        reply = client.post("/v1/infer", content=b"nope", headers={**NPY, **auth, "x-request-id": "req-42"})
    assert reply.status_code == 400 and reply.headers["x-request-id"] == "req-42"
    lines = [r.getMessage() for r in caplog.records if "req-42" in r.getMessage()]
    assert any("400 the body is not a readable .npy array" in line for line in lines), lines
    assert any("POST /v1/infer -> 400 in" in line for line in lines), lines


def test_an_internal_error_is_500_naming_the_request_and_logged_with_its_traceback(caplog):
    client = TestClient(make_app(FakeSession(fail=RuntimeError("secret detail"))))
    with caplog.at_level(logging.INFO, logger="splitinfer.gateway"):
        reply = client.post("/v1/infer", content=_npy(X), headers={**NPY, "x-request-id": "req-500"})
    assert reply.status_code == 500
    assert reply.json()["error"] == "internal error: RuntimeError; the gateway's log has request req-500"
    logged = [r for r in caplog.records if "req-500" in r.getMessage() and r.exc_info]
    assert logged and "secret detail" in str(logged[0].exc_info[1])
    assert metric(client.get("/metrics").text, ERRORS, kind="internal") == 1


SETTINGS = [
    ("max_body_bytes", -1, "whole number of bytes from 1 to 17179869184"),
    ("max_body_bytes", 0, "from 1 to"),
    ("max_body_bytes", 2**40, "from 1 to"),
    ("max_body_bytes", 1.5, "whole number"),
    ("max_body_bytes", True, "whole number"),
    ("max_in_flight_per_client", 0, "whole number of requests from 1 to 10000"),
    ("max_in_flight_per_client", 10**6, "from 1 to 10000"),
    ("body_timeout_s", math.nan, "number of seconds from 0.01 to 3600"),
    ("body_timeout_s", math.inf, "from 0.01 to 3600"),
    ("body_timeout_s", -1.0, "from 0.01 to 3600"),
    ("body_timeout_s", 0, "from 0.01 to 3600"),
    ("token", "", "not a usable bearer token"),
    ("token", "two words", "without spaces"),
    ("token", "caf\u00e9", "visible ASCII"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), SETTINGS, ids=[f"{n}={v!r}" for n, v, _ in SETTINGS])
def test_settings_out_of_range_raise_a_value_error_naming_the_argument(name, value, allowed):
    with pytest.raises(SettingError) as caught:
        make_app(FakeSession(), **{name: value})
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message.startswith(name) and allowed in message and "--" not in message
