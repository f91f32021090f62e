"""Serving the app with uvicorn: a socket bound first (a busy port or a bad host is one line, not a
uvicorn log), TLS from a certificate and key, logs with the request ids.

::

    sock = listen("127.0.0.1", 8443)
    make_server(make_app(session, token=token), certfile="cert.pem", keyfile="key.pem").run(sockets=[sock])
"""

from __future__ import annotations

import copy
import errno
import socket
import ssl
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG

from splitinfer.errors import SplitinferError
from splitinfer.runtime.gateway._settings import SettingError


class ListenError(SplitinferError):
    """The gateway cannot listen where it was asked to, or cannot use its TLS certificate."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, or :class:`ListenError` with the reason."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ListenError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}",
                          "give an address or name of this machine (127.0.0.1, 0.0.0.0, ::)") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        fix = ("stop what uses it or pick another port" if e.errno == errno.EADDRINUSE else
               "give an address of this machine (127.0.0.1, 0.0.0.0, ::)")
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}", fix) from None
    return sock


def check_tls(certfile: str | Path | None, keyfile: str | Path | None) -> None:
    """Both or neither; when both, they load as a certificate chain and its private key."""
    if (certfile is None) != (keyfile is None):
        raise SettingError("certfile and keyfile go together", "give both (TLS) or neither (plain HTTP)")
    if certfile is None or keyfile is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise ListenError(f"cannot use certificate {certfile} with key {keyfile}: {reason}",
                          "give a PEM certificate (chain) and its unencrypted PEM private key") from None


def log_config(level: str = "info") -> dict:
    """uvicorn's logging with its access log off and ``splitinfer.gateway`` (one line per request, with
    its id) at ``level``; uvicorn's own messages from warnings up."""
    config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"][name]["level"] = "WARNING"
    config["loggers"]["splitinfer.gateway"] = {"handlers": ["default"], "level": level.upper(),
                                               "propagate": False}
    return config


def make_server(app: ASGIApp, *, certfile: str | Path | None = None, keyfile: str | Path | None = None,
                log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for ``app`` (TLS when ``certfile`` and ``keyfile`` are given); run it with
    ``server.run(sockets=[listen(host, port)])``, stop it with ``server.should_exit = True``."""
    check_tls(certfile, keyfile)
    config = uvicorn.Config(app, ssl_certfile=certfile, ssl_keyfile=keyfile, log_config=log_config(log_level),
                            access_log=False, timeout_keep_alive=5)
    return uvicorn.Server(config)
