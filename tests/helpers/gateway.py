"""Gateway test helpers: a session stand-in, a real uvicorn server on 127.0.0.1, raw HTTP, metrics,
self-signed certificates."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from splitinfer.runtime.coordinator.timing import RequestTiming, Result, StageTiming
from splitinfer.runtime.gateway import listen, make_server
from splitinfer.types import TensorSpec


class FakeSession:
    """What the gateway uses of a Session: input "x" (float32, (1, 4)); ``submit`` doubles it, once
    ``gate`` is set (set from the start unless ``hold``), or raises ``fail`` when given."""

    inputs = (TensorSpec("x", "float32", (1, 4)),)
    timeout_s = 5.0
    state = "ready"
    dead_devices = frozenset()
    stages = ()
    num_replans = 0

    def __init__(self, hold: bool = False, fail: Exception | None = None) -> None:
        self.addresses = {"a": "tcp://127.0.0.1:1"}
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.fail = fail
        self.num_submitted = 0

    def submit(self, feeds: dict[str, np.ndarray]) -> Future:
        if self.fail is not None:
            raise self.fail
        self.num_submitted += 1
        future: Future = Future()
        timing = RequestTiming(self.num_submitted, 0.002, (StageTiming(0, "a", 0.0, 0.001, 0.0),), ())

        def finish() -> None:
            self.gate.wait(10)
            future.set_result(Result(self.num_submitted, {"y": feeds["x"] * 2}, lambda: timing))

        threading.Thread(target=finish, daemon=True).start()
        return future


X = np.arange(4, dtype=np.float32).reshape(1, 4)


@contextlib.contextmanager
def serving(app, *, certfile: Path | None = None, keyfile: Path | None = None) -> Iterator[int]:
    """``app`` served by uvicorn (the gateway's ``make_server``) on 127.0.0.1 in a thread; yields the port."""
    sock = listen("127.0.0.1", 0)
    server = make_server(app, certfile=certfile, keyfile=keyfile, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 10
        while not server.started and time.monotonic() < end:
            time.sleep(0.01)
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


def read_reply(sock: socket.socket, timeout_s: float = 5.0) -> tuple[int, bytes, bool]:
    """(status, everything received, whether the server closed the connection) for one raw HTTP request.

    Reads until the server closes or resets, or ``timeout_s`` passes (closed False, status 0 when
    nothing came)."""
    sock.settimeout(timeout_s)
    data, closed = b"", False
    with contextlib.suppress(TimeoutError):
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data, closed


def connect(port: int, head: str, body: bytes = b"") -> socket.socket:
    """A raw connection that has sent ``head`` (CRLF line ends added) and ``body``."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def metric(text: str | bytes, name: str, **labels: str) -> float:
    """One sample of Prometheus text, parsed by prometheus_client (0.0 when absent)."""
    text = text.decode() if isinstance(text, bytes) else text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM): with the ``cryptography`` package
    if installed, else the ``openssl`` command, else the test is skipped."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("no self-signed certificate: neither the cryptography package nor openssl is here")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key
