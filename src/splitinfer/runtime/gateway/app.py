"""The Starlette app: /v1/infer, /v1/completions, /healthz and /metrics over a :class:`Session` (see the
package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from splitinfer.data import Preprocess
from splitinfer.errors import DeadlineError, InputError, SplitinferError, http_status_of
from splitinfer.generation.tokenizer import Tokenizer
from splitinfer.runtime.coordinator.session import DEADLINE_MARGIN_S, Session
from splitinfer.runtime.coordinator.timing import Result
from splitinfer.runtime.gateway._bodies import (
    JSON_TYPE,
    NPY_TYPES,
    BodyTimeout,
    BodyTooLarge,
    encode_tensor,
    npy_bytes,
    parse_json,
    parse_npy,
    read_body,
)
from splitinfer.runtime.gateway._completions import COMPLETIONS_PATH, complete, parse_completion, stream
from splitinfer.runtime.gateway._guard import Guard
from splitinfer.runtime.gateway._images import IMAGE_TYPES, check_labels, image_feeds, image_steps, top_labels
from splitinfer.runtime.gateway._metrics import CONTENT_TYPE, Metrics
from splitinfer.runtime.gateway._resources import ResourcePoller
from splitinfer.runtime.gateway._settings import (
    BODY_TIMEOUT_S_RANGE,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
    MAX_BODY_BYTES_RANGE,
    MAX_IN_FLIGHT_PER_CLIENT_RANGE,
    RESOURCE_INTERVAL_S_RANGE,
    check_seconds,
    check_token,
    check_tokenizer,
    check_whole,
)
from splitinfer.runtime.generate import check_decoder

log = logging.getLogger("splitinfer.gateway")
INFER_PATH = "/v1/infer"
# Refusals the gateway makes itself, before errors.http_status_of maps the rest.
_OWN_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (BodyTooLarge, 413, "too_large"),
    (BodyTimeout, 408, "body_timeout"),
)


def _status_of(error: Exception) -> tuple[int, str]:
    return next(((status, kind) for cls, status, kind in _OWN_STATUS if isinstance(error, cls)),
                None) or http_status_of(error)


async def _infer(session: Session, feeds: dict[str, np.ndarray]) -> Result:
    future = session.submit(feeds)
    try:
        waited = asyncio.wrap_future(future)
        return await asyncio.wait_for(waited, timeout=session.timeout_s + DEADLINE_MARGIN_S)
    except DeadlineError:  # a TimeoutError too: the session's own, with its clearer message
        raise
    except TimeoutError:
        raise DeadlineError(f"no result within {session.timeout_s + DEADLINE_MARGIN_S:g} s",
                            "retry later or give the gateway a longer --timeout") from None


def _answer(result: Result, as_npy: bool, labels: list[str] | None, num_samples: int | None) -> Response:
    if as_npy:
        first = next(iter(result.outputs.values()))
        headers = {"X-Splitinfer-Latency-S": repr(result.timing.latency_s)}
        if result.exit:  # an early exit answered: its tensor is the one sent
            headers["X-Splitinfer-Exit"] = result.exit
        return Response(npy_bytes(first), media_type="application/x-npy", headers=headers)
    doc: dict[str, Any] = {"outputs": {name: encode_tensor(a) for name, a in result.outputs.items()},
                           "timing": result.timing.to_dict()}
    if result.exit:  # the early exit that answered; the outputs hold its tensor alone
        doc["exit"] = result.exit
    if labels is not None and (top := top_labels(result.outputs, labels, num_samples)) is not None:
        doc["labels"] = top
    return Response(msgspec.json.encode(doc), media_type="application/json")


def make_app(session: Session, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, token: str | None = None,
             max_in_flight_per_client: int = DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
             body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, preprocess: Preprocess | str | None = None,
             labels: Sequence[str] | None = None, resource_interval_s: float | None = 0.1,
             tokenizer: Tokenizer | str | Path | None = None) -> Starlette:
    """A Starlette app serving ``session``: /v1/infer, /healthz, /metrics (see the package docstring).

    ``token``: when given, every request but ``GET /healthz`` (``/metrics`` included) needs
    ``Authorization: Bearer <token>``, else 401. ``max_body_bytes``: larger bodies get 413 (from their
    Content-Length, before reading, or as they stream). ``body_timeout_s``: a body must arrive within
    it, else 408. ``max_in_flight_per_client``: requests one client address may have unanswered, more
    get 429 with Retry-After (behind a proxy every client shares its address). A setting out of range
    raises :class:`SettingError` (a ``ValueError``) naming the argument.

    An ``image/jpeg`` or ``image/png`` body is decoded with Pillow (at most
    ``_images.MAX_IMAGE_PIXELS`` pixels) and made the model's one input by ``preprocess`` (a
    :class:`Preprocess` or its text; default ``Preprocess.for_input`` of the input); it gets a JSON
    answer. ``labels``: class names (label 0 first): every JSON answer then carries ``"labels":
    {"output", "top5": [[{"label", "score"}, ...] per sample]}`` of the first output of as many class
    scores (an image request: one sample). Bad labels or preprocessing raise :class:`InputError`.

    ``resource_interval_s``: while the app runs (its lifespan), each live worker samples its CPU,
    memory and GPU use this often, and ``/metrics`` has them per device (``gateway/_resources.py``;
    None or 0: not sampled).

    ``tokenizer``: a :class:`Tokenizer` or the path of a ``tokenizer.json``; ``POST /v1/completions`` then
    takes a prompt as text too and answers with text beside the token ids (``gateway/_completions.py``).
    Its ids must be within the model's logits, else :class:`InputError`, as for a file that is not one.

    The session stays the caller's: close it after the server stops. ``app.state.metrics`` holds the
    :class:`Metrics`, ``app.state.resources`` the :class:`ResourcePoller` (None when not sampling).
    """
    check_whole(max_body_bytes, "max_body_bytes", MAX_BODY_BYTES_RANGE, "bytes")
    check_whole(max_in_flight_per_client, "max_in_flight_per_client", MAX_IN_FLIGHT_PER_CLIENT_RANGE,
                "requests")
    check_seconds(body_timeout_s, "body_timeout_s", BODY_TIMEOUT_S_RANGE)
    if resource_interval_s:
        check_seconds(resource_interval_s, "resource_interval_s", RESOURCE_INTERVAL_S_RANGE)
    secret = check_token(token, "token")
    steps = image_steps(session.inputs, Preprocess.parse(preprocess) if isinstance(preprocess, str)
                        else preprocess)
    names = None if labels is None else check_labels(labels, getattr(session, "outputs", None), "labels")
    text = check_tokenizer(tokenizer, getattr(session, "outputs", None), "tokenizer")
    metrics = Metrics()
    # Only a real session reaches its workers (a stand-in in tests has no worker_client).
    poller = ResourcePoller(session, metrics, float(resource_interval_s)) \
        if resource_interval_s and hasattr(session, "worker_client") else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if poller is not None:
            poller.start()
        try:
            yield
        finally:
            if poller is not None:
                await asyncio.to_thread(poller.stop)

    def on_refused(path: str, kind: str) -> None:
        if path == INFER_PATH:
            metrics.count_request()
            metrics.count_error(kind)

    async def infer(request: Request) -> Response:
        request_id = request.state.request_id
        metrics.count_request()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body_read = False
        num_samples = None
        try:
            if content_type not in (*NPY_TYPES, JSON_TYPE, *IMAGE_TYPES):
                raise InputError(f"unsupported content type {content_type or '(none)'!r}",
                                 "send application/x-npy (one .npy array), application/json, image/jpeg "
                                 "or image/png")
            body = await read_body(request, max_body_bytes, body_timeout_s)
            body_read = True
            if content_type in NPY_TYPES:
                feeds, as_npy = parse_npy(body, session.inputs), request.query_params.get("format") != "json"
            elif content_type in IMAGE_TYPES:
                if isinstance(steps, InputError):
                    raise InputError(steps.problem, steps.fix)  # a new one: no traceback kept across requests
                # Decoding and resizing take milliseconds of CPU: off the event loop.
                feeds = await asyncio.to_thread(image_feeds, body, session.inputs[0], steps)
                as_npy, num_samples = False, 1
            else:
                feeds, as_npy = parse_json(body), False
            result = await _infer(session, feeds)
        except Exception as e:
            return refusal(e, request_id, body_read)
        metrics.observe(result.timing)
        return _answer(result, as_npy, names, num_samples)

    def refusal(e: Exception, request_id: str, body_read: bool) -> Response:
        """The error answer of a request that failed: its status and one line, counted."""
        if isinstance(e, ClientDisconnect):
            metrics.count_error("disconnect")
            log.info("the client left before sending the whole body [request %s]", request_id)
            return Response(status_code=400)  # nobody reads it
        status, kind = _status_of(e)
        metrics.count_error(kind)
        headers = None if body_read else {"Connection": "close"}  # the unread rest would follow
        line = line_of(e, request_id)
        if status == 500:
            log.exception("internal error [request %s]", request_id)
        else:
            log.info("%d %s [request %s]", status, line, request_id)
        return JSONResponse({"error": line}, status_code=status, headers=headers)

    def line_of(e: Exception, request_id: str) -> str:
        if _status_of(e)[0] == 500:
            return f"internal error: {type(e).__name__}; the gateway's log has request {request_id}"
        return e.line() if isinstance(e, SplitinferError) else str(e)

    async def completions(request: Request) -> Response:
        """A decoder's tokens, whole or streamed (gateway/_completions.py)."""
        request_id, body_read = request.state.request_id, False
        metrics.count_request()
        try:
            body = await read_body(request, max_body_bytes, body_timeout_s)
            body_read = True
            # Off the event loop: encoding a long text prompt takes CPU time.
            completion, sampling = await asyncio.to_thread(parse_completion, body, text)
            check_decoder(session)
            if completion.stream:
                events = stream(session, completion, sampling, lambda e: line_of(e, request_id), text)
                return StreamingResponse(events, media_type="text/event-stream")
            answer = await asyncio.to_thread(complete, session, completion, sampling, text)
        except Exception as e:
            return refusal(e, request_id, body_read)
        return JSONResponse(answer)

    async def healthz(request: Request) -> Response:
        state = session.state
        dead = session.dead_devices
        doc = {"status": "ok" if state == "ready" else state,
               "devices": {name: "dead" if name in dead else "up" for name in session.addresses},
               "stages": [{"stage": s.index, "device": s.device} for s in session.stages],
               "num_replans": session.num_replans}
        return JSONResponse(doc, status_code=200 if state == "ready" else 503)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    guard = Middleware(Guard, token=secret, max_in_flight_per_client=max_in_flight_per_client,
                       on_refused=on_refused)
    app = Starlette(routes=[Route(INFER_PATH, infer, methods=["POST"]), Route("/healthz", healthz),
                            Route(COMPLETIONS_PATH, completions, methods=["POST"]),
                            Route("/metrics", metrics_text)], middleware=[guard], lifespan=lifespan)
    app.state.metrics = metrics
    app.state.resources = poller
    return app
