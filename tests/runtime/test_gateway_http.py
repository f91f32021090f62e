"""The gateway over real HTTP (uvicorn on 127.0.0.1): body limits from Content-Length and while
streaming, slow bodies, clients that leave, TLS, and where it cannot listen."""

from __future__ import annotations

import io
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers.gateway import FakeSession, X, connect, metric, read_reply, self_signed, serving

from splitinfer.runtime.gateway import ListenError, SettingError, check_tls, listen, make_app

MiB = 1024 * 1024
ERRORS = "splitinfer_request_errors_total"


class BodyCounter:
    """An ASGI wrapper counting the body bytes the app was handed."""

    def __init__(self, app) -> None:
        self.app, self.num_bytes = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            self.num_bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _post_head(length: int | None, port: int, extra: str = "") -> str:
    size = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return (f"POST /v1/infer HTTP/1.1\nhost: 127.0.0.1:{port}\ncontent-type: application/x-npy\n{size}\n"
            f"{extra}")


def test_a_declared_content_length_over_the_limit_gets_413_before_any_body_is_read():
    app = make_app(FakeSession(), max_body_bytes=MiB)
    counter = BodyCounter(app)
    with serving(counter) as port:
        start = time.monotonic()
        # 100 clients at once, each declaring 1 GB and sending 10 bytes: all answered, all closed
        with ThreadPoolExecutor(100) as pool:
            head = _post_head(10**9, port)
            replies = list(pool.map(lambda _: read_reply(connect(port, head, b"0123456789")), range(100)))
        elapsed = time.monotonic() - start
        assert all(status == 413 and closed for status, _, closed in replies), replies[0]
        assert b"Content-Length 1000000000, the limit is 1048576 bytes" in replies[0][1]
        assert b"x-request-id: " in replies[0][1].lower()
        assert elapsed < 5.0 and counter.num_bytes == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert metric(client.get("/metrics").text, ERRORS, kind="too_large") == 100
            reply = client.post("/v1/infer", content=_npy(X), headers={"content-type": "application/x-npy"})
            assert reply.status_code == 200  # still serving


def test_a_chunked_body_is_refused_once_it_passes_the_limit_and_never_held_whole():
    app = make_app(FakeSession(), max_body_bytes=MiB)
    counter = BodyCounter(app)
    with serving(counter) as port:
        sock = connect(port, _post_head(None, port))
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"\0" * 64 * 1024)

        def send_forever():  # 64 MiB unless the server stops taking it
            try:
                for _ in range(1024):
                    sock.sendall(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=send_forever, daemon=True)
        sender.start()
        status, data, closed = read_reply(sock)
        sender.join(timeout=10)
        sock.close()
        assert status == 413 and closed and b"the limit is 1048576 bytes" in data
        # what reached the app: the limit and at most one more read of the server's
        assert MiB < counter.num_bytes <= MiB + 512 * 1024


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes():
    app = make_app(FakeSession(), body_timeout_s=0.3)
    with serving(app) as port:
        start = time.monotonic()
        sock = connect(port, _post_head(1000, port), b"0123456789")  # claims 1000, sends 10
        status, data, closed = read_reply(sock)
        sock.close()
        assert status == 408 and closed and b"did not arrive within 0.3 s (10 bytes came)" in data
        assert time.monotonic() - start < 3.0
        assert metric(httpx.get(f"http://127.0.0.1:{port}/metrics").text, ERRORS, kind="body_timeout") == 1


def test_a_client_that_leaves_mid_body_counts_as_a_disconnect_not_an_internal_error():
    app = make_app(FakeSession())
    with serving(app) as port:
        sock = connect(port, _post_head(1000, port), b"0123456789")
        time.sleep(0.2)
        sock.close()
        end = time.monotonic() + 5
        while time.monotonic() < end:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if metric(text, ERRORS, kind="disconnect"):
                break
            time.sleep(0.05)
        assert metric(text, ERRORS, kind="disconnect") == 1
        assert metric(text, ERRORS, kind="internal") == 0


def test_tls_serves_https_with_the_token_and_refuses_plain_http(tmp_path):
    cert, key = self_signed(tmp_path)
    app = make_app(FakeSession(), token="s3cret-token")
    with serving(app, certfile=cert, keyfile=key) as port:
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context) as client:
            assert client.get("/healthz").status_code == 200
            reply = client.post("/v1/infer", content=_npy(X), headers={
                "content-type": "application/x-npy", "authorization": "Bearer s3cret-token"})
            assert reply.status_code == 200
            np.testing.assert_array_equal(np.load(io.BytesIO(reply.content)), X * 2)
            assert client.get("/metrics").status_code == 401
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_tls_settings_are_checked_before_serving(tmp_path):
    cert, key = self_signed(tmp_path)
    check_tls(cert, key)
    with pytest.raises(SettingError, match="certfile and keyfile go together"):
        check_tls(cert, None)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ListenError, match=r"cannot use certificate .*junk.pem"):
        check_tls(tmp_path / "junk.pem", key)
    with pytest.raises(ListenError, match="No such file"):
        check_tls(tmp_path / "missing.pem", key)


def test_listen_says_in_one_line_why_it_cannot():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            listen("127.0.0.1", port)
        assert str(caught.value).startswith(f"cannot listen on 127.0.0.1:{port}: Address already in use.")
    with pytest.raises(ListenError) as caught:
        listen("192.0.2.1", 8080)  # TEST-NET-1: never this machine's
    assert str(caught.value).startswith("cannot listen on 192.0.2.1:8080: Cannot assign requested address.")
