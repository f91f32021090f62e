"""The HTTP gateway: a Starlette app in front of a deployed :class:`Session` (``splitinfer serve``).

::

    with deploy(plan, cluster, model, profile=profile) as session:
        server = make_server(make_app(session, token=token), certfile="cert.pem", keyfile="key.pem")
        server.run(sockets=[listen("127.0.0.1", 8443)])

Endpoints:

- ``POST /v1/infer``: the body is one ``.npy`` array (``Content-Type: application/x-npy`` or
  ``application/octet-stream``; models with one input) or JSON
  ``{"inputs": {"x": {"dtype": "float32", "shape": [1, 3], "data": [[...]]}}}``.
  An .npy request gets the first output back as .npy (the request's timing in the
  ``X-Splitinfer-Latency-S`` header) unless ``?format=json``; a JSON request gets
  ``{"outputs": {name: {dtype, shape, data}}, "timing": {latency_s, stages, hops, ...}}``.
  NaN and infinite output values are written as JSON null.
  An ``image/jpeg`` or ``image/png`` body (a single-input model) is decoded with Pillow, at most
  ``MAX_IMAGE_PIXELS`` pixels (checked before decoding: no decompression bomb), and preprocessed
  (``make_app(preprocess=)``, default ``Preprocess.for_input`` of the input); it gets the JSON
  answer. With ``make_app(labels=)`` a JSON answer also has ``"labels": {"output", "top5"}``: the
  five best class names and scores of each sample (an image: one).
  Bad input (unreadable .npy, an image Pillow cannot read, invalid JSON, JSON nested deeper than
  ``MAX_JSON_DEPTH``, wrong names, dtypes or shapes): 400 ``{"error": "<problem. fix>"}``; body
  over the limit: 413 (from its Content-Length, before reading it, or once the bytes streamed pass
  the limit); body not all there within the body timeout: 408; deadline: 504; a failed worker (or
  no plan left): 503.
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` while the session is ready, else 503. Always
  open: no token needed, outside the per-client limit.
- ``GET /metrics``: Prometheus text (``prometheus_client``, a registry per app):
  ``splitinfer_requests_total``, ``splitinfer_request_errors_total{kind}``, the
  ``splitinfer_request_latency_seconds`` histogram (the session's submit-to-result latency), and per
  stage ``splitinfer_stage_compute_seconds_sum`` / ``_count`` (ONNX Runtime compute); per device, its
  worker's resource use, polled every few seconds while the app runs (``make_app(resource_interval_s=)``):
  ``splitinfer_worker_cpu_percent`` and ``splitinfer_worker_gpu_util_percent`` (means since the last
  poll), ``splitinfer_worker_rss_bytes`` and ``splitinfer_worker_gpu_memory_bytes`` (the latest; GPU
  ones on a GPU worker with NVML). Needs the token when there is one.

Protection: with a token, every request but ``/healthz`` needs ``Authorization: Bearer <token>``
(compared in constant time), else 401. TLS comes from uvicorn (``make_server(certfile=, keyfile=)``).
Each client address may have ``max_in_flight_per_client`` requests unanswered, more get 429 with
``Retry-After``. Every response carries ``X-Request-Id`` (the client's when it sent a sane one, else a
new one); the gateway's log lines about a request (logger ``splitinfer.gateway``) end with it.
Arrays are parsed without unpickling: nothing that arrives is unpickled or executed. A JSON body
decodes to Python numbers first (several times its size in memory): send .npy for large tensors.
"""

from __future__ import annotations

from splitinfer.runtime.gateway._bodies import (
    MAX_JSON_DEPTH,
    encode_tensor,
    json_depth,
    parse_json,
    parse_npy,
)
from splitinfer.runtime.gateway._images import IMAGE_TYPES, MAX_IMAGE_PIXELS, decode_image
from splitinfer.runtime.gateway._metrics import ERROR_KINDS, LATENCY_BUCKETS_S, Metrics
from splitinfer.runtime.gateway._settings import (
    BODY_TIMEOUT_S_RANGE,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
    MAX_BODY_BYTES_RANGE,
    MAX_IN_FLIGHT_PER_CLIENT_RANGE,
    PORT_RANGE,
    RESOURCE_INTERVAL_S_RANGE,
    TIMEOUT_S_RANGE,
    SettingError,
    check_seconds,
    check_token,
    check_whole,
)
from splitinfer.runtime.gateway.app import make_app
from splitinfer.runtime.gateway.server import ListenError, check_tls, listen, make_server

__all__ = [
    "BODY_TIMEOUT_S_RANGE",
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IN_FLIGHT_PER_CLIENT",
    "ERROR_KINDS",
    "IMAGE_TYPES",
    "LATENCY_BUCKETS_S",
    "MAX_BODY_BYTES_RANGE",
    "MAX_IMAGE_PIXELS",
    "MAX_IN_FLIGHT_PER_CLIENT_RANGE",
    "MAX_JSON_DEPTH",
    "PORT_RANGE",
    "RESOURCE_INTERVAL_S_RANGE",
    "TIMEOUT_S_RANGE",
    "ListenError",
    "Metrics",
    "SettingError",
    "check_seconds",
    "check_tls",
    "check_token",
    "check_whole",
    "decode_image",
    "encode_tensor",
    "json_depth",
    "listen",
    "make_app",
    "make_server",
    "parse_json",
    "parse_npy",
]
