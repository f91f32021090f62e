"""What every request passes first (an ASGI middleware): its request id, the bearer token, the
per-client limit of requests in flight, and one log line when it is answered."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("splitinfer.gateway")

REQUEST_ID_HEADER = "x-request-id"
OPEN_PATHS = frozenset({"/healthz"})  # answered without a token and outside the per-client limit
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def request_id_of(headers: dict[bytes, bytes]) -> str:
    """The client's X-Request-Id when it is sane (1 to 128 of ``A-Za-z0-9._:-``), else a new one."""
    given = headers.get(REQUEST_ID_HEADER.encode(), b"")
    return given.decode("ascii") if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class Guard:
    """The gateway's outer layer: request ids, authentication, per-client in-flight limit, access log.

    ``scope["state"]["request_id"]`` (``request.state.request_id``) carries the id to the endpoints;
    every response gets the ``X-Request-Id`` header. ``on_refused(path, kind)`` hears of each request
    refused here (kind ``unauthorized`` or ``throttled``). Refusals close the connection: the body,
    never read, would otherwise keep arriving on it.
    """

    def __init__(self, app: ASGIApp, *, token: bytes | None, max_in_flight_per_client: int,
                 on_refused: Callable[[str, str], None]) -> None:
        self.app = app
        self.token = token
        self.max_in_flight_per_client = max_in_flight_per_client
        self.on_refused = on_refused
        self.in_flight: Counter[str] = Counter()  # client address -> requests in flight (one event loop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = request_id_of(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        client = scope["client"][0] if scope.get("client") else "unknown"
        status = 0
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                   (REQUEST_ID_HEADER.encode(), request_id.encode())]}
            await send(message)

        try:
            refusal = self._refusal(scope["path"], headers, client)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            self.in_flight[client] += 1
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.in_flight[client] -= 1
                if not self.in_flight[client]:
                    del self.in_flight[client]
        finally:
            log.info("%s %s %s -> %s in %.1f ms [request %s]", client, scope["method"], scope["path"],
                     status or "no answer", (time.perf_counter() - start) * 1e3, request_id)

    def _refusal(self, path: str, headers: dict[bytes, bytes], client: str) -> JSONResponse | None:
        if path in OPEN_PATHS:
            return None
        if self.token is not None and not _has_token(headers, self.token):
            self.on_refused(path, "unauthorized")
            return _refuse(401, "the request has no valid bearer token",
                           "send the header Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        if self.in_flight[client] >= self.max_in_flight_per_client:
            self.on_refused(path, "throttled")
            return _refuse(429, f"client {client} has {self.in_flight[client]} requests in flight, "
                                f"the limit is {self.max_in_flight_per_client}",
                           "wait for an answer before sending more", {"Retry-After": "1"})
        return None


def _has_token(headers: dict[bytes, bytes], token: bytes) -> bool:
    scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)


def _refuse(status: int, problem: str, fix: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"error": f"{problem}. {fix}"}, status_code=status,
                        headers={**headers, "Connection": "close"})
