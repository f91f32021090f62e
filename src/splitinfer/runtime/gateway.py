"""The HTTP gateway: a Starlette app in front of a deployed :class:`Session` (``splitinfer serve``).

::

    with deploy(plan, cluster, model, profile=profile) as session:
        uvicorn.run(make_app(session), host="127.0.0.1", port=8080)

Endpoints:

- ``POST /v1/infer``: the body is one ``.npy`` array (``Content-Type: application/x-npy`` or
  ``application/octet-stream``; models with one input) or JSON
  ``{"inputs": {"x": {"dtype": "float32", "shape": [1, 3], "data": [[...]]}}}``.
  An .npy request gets the first output back as .npy (the request's timing in the
  ``X-Splitinfer-Latency-S`` header) unless ``?format=json``; a JSON request gets
  ``{"outputs": {name: {dtype, shape, data}}, "timing": {latency_s, stages, hops, ...}}``.
  NaN and infinite output values are written as JSON null.
  Bad input: 400 ``{"error": "<problem. fix>"}``; body too large: 413; deadline: 504;
  a failed worker (or no plan left): 503.
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` while the session is ready, else 503.
- ``GET /metrics``: Prometheus text format: ``splitinfer_requests_total``,
  ``splitinfer_request_errors_total{kind}``, the ``splitinfer_request_latency_seconds``
  histogram (the session's submit-to-result latency), and per stage
  ``splitinfer_stage_compute_seconds_sum`` / ``_count`` (ONNX Runtime compute).

Arrays are parsed with ``allow_pickle=False``: nothing that arrives is unpickled or executed.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from splitinfer.errors import DeadlineError, InputError, SplitinferError, first_line, http_status_of
from splitinfer.runtime.coordinator.session import DEADLINE_MARGIN_S, Session
from splitinfer.runtime.coordinator.timing import RequestTiming, Result
from splitinfer.types import NUMPY_TO_ONNX

NPY_TYPES = ("application/x-npy", "application/octet-stream")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ERROR_KINDS = ("bad_input", "deadline", "worker", "internal")
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024


class Metrics:
    """Counters and histograms of a gateway, rendered in the Prometheus text format (0.0.4)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self._lock = threading.Lock()
        self.buckets = buckets
        self.requests_total = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self._bucket_counts = [0] * len(buckets)
        self._latency_sum_s = 0.0
        self._latency_count = 0
        self._stages: dict[tuple[int, str], list[float]] = {}  # (stage, device) -> [sum_s, count]

    def count_request(self) -> None:
        with self._lock:
            self.requests_total += 1

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def observe(self, timing: RequestTiming) -> None:
        """Record one completed request."""
        with self._lock:
            self._latency_sum_s += timing.latency_s
            self._latency_count += 1
            for i, bound in enumerate(self.buckets):
                if timing.latency_s <= bound:
                    self._bucket_counts[i] += 1
            for s in timing.stages:
                entry = self._stages.setdefault((s.stage, s.device), [0.0, 0])
                entry[0] += s.compute_s
                entry[1] += 1

    def render(self) -> str:
        """The exposition text."""
        with self._lock:
            lines = ["# HELP splitinfer_requests_total Inference requests received.",
                     "# TYPE splitinfer_requests_total counter",
                     f"splitinfer_requests_total {self.requests_total}",
                     "# HELP splitinfer_request_errors_total Failed inference requests, by kind.",
                     "# TYPE splitinfer_request_errors_total counter"]
            lines += [f'splitinfer_request_errors_total{{kind="{k}"}} {n}' for k, n in self.errors.items()]
            lines += ["# HELP splitinfer_request_latency_seconds Completed requests, submit to result.",
                      "# TYPE splitinfer_request_latency_seconds histogram"]
            lines += [f'splitinfer_request_latency_seconds_bucket{{le="{_number(b)}"}} {n}'
                      for b, n in zip(self.buckets, self._bucket_counts, strict=True)]
            lines += [f'splitinfer_request_latency_seconds_bucket{{le="+Inf"}} {self._latency_count}',
                      f"splitinfer_request_latency_seconds_sum {_number(self._latency_sum_s)}",
                      f"splitinfer_request_latency_seconds_count {self._latency_count}",
                      "# HELP splitinfer_stage_compute_seconds ONNX Runtime compute time per stage.",
                      "# TYPE splitinfer_stage_compute_seconds summary"]
            for (stage, device), (total, count) in sorted(self._stages.items()):
                labels = f'stage="{stage}",device="{_escape(device)}"'
                lines += [f"splitinfer_stage_compute_seconds_sum{{{labels}}} {_number(total)}",
                          f"splitinfer_stage_compute_seconds_count{{{labels}}} {int(count)}"]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value))


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---- request bodies ---------------------------------------------------------------------------------
def parse_npy(body: bytes, session: Session) -> dict[str, np.ndarray]:
    """One .npy array, for a single-input model; never unpickles."""
    names = [s.name for s in session.inputs]
    if len(names) != 1:
        raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}), an .npy body holds one",
                       'send JSON: {"inputs": {name: {"dtype", "shape", "data"}}}')
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"the body is not a readable .npy array ({first_line(e)})",
                       "send numpy.save() output without pickled objects") from None
    if not isinstance(array, np.ndarray):
        raise InputError("the body is an .npz archive, not one .npy array",
                       "send one array saved with numpy.save")
    return {names[0]: array}


def _tensor(name: str, item: Any) -> np.ndarray:
    if not isinstance(item, Mapping) or not {"dtype", "shape", "data"} <= set(item):
        raise InputError(f"input {name!r} is not an object with dtype, shape and data",
                       'write it like {"dtype": "float32", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}')
    dtype = item["dtype"]
    if not isinstance(dtype, str) or dtype not in NUMPY_TO_ONNX:
        raise InputError(f"input {name!r} has dtype {dtype!r}",
                       f"use one of: {', '.join(sorted(NUMPY_TO_ONNX))}")
    shape = item["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputError(f"input {name!r} has shape {shape!r}", "give a list of whole numbers >= 0")
    try:
        array = np.asarray(item["data"], dtype=np.dtype(dtype))
        return array.reshape(shape)
    except (ValueError, TypeError, OverflowError) as e:
        raise InputError(f"input {name!r}: data does not fit dtype {dtype} and shape {shape} ({e})",
                       "give (nested) lists of numbers with as many values as the shape holds") from None


def parse_json(body: bytes) -> dict[str, np.ndarray]:
    """``{"inputs": {name: {"dtype", "shape", "data"}}}`` to arrays."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise InputError(f"the body is not valid JSON ({e})", 'send {"inputs": {name: {...}}}') from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict) or not doc["inputs"]:
        raise InputError('the JSON body has no "inputs" object',
                       'send {"inputs": {name: {"dtype", "shape", "data"}}}')
    return {str(name): _tensor(str(name), item) for name, item in doc["inputs"].items()}


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    """An array as ``{"dtype", "shape", "data"}`` (nested lists)."""
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": array.tolist()}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


# ---- the app ----------------------------------------------------------------------------------------
def _error(status: int, error: SplitinferError | str) -> JSONResponse:
    line = error.line() if isinstance(error, SplitinferError) else error
    return JSONResponse({"error": line}, status_code=status)


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


def make_app(session: Session, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """A Starlette app serving ``session``: /v1/infer, /healthz, /metrics (see the module docstring).

    The session stays the caller's: close it after the server stops. ``app.state.metrics``
    holds the :class:`Metrics`.
    """
    metrics = Metrics()

    async def infer(request: Request) -> Response:
        metrics.count_request()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            body = await request.body()
            if len(body) > max_body_bytes:
                metrics.count_error("bad_input")
                return _error(413, InputError(f"the body has {len(body)} bytes, the limit is "
                                              f"{max_body_bytes}",
                                              "send smaller inputs or raise the gateway's limit"))
            if content_type in NPY_TYPES:
                feeds, as_npy = parse_npy(body, session), request.query_params.get("format") != "json"
            elif content_type == "application/json":
                feeds, as_npy = parse_json(body), False
            else:
                raise InputError(f"unsupported content type {content_type or '(none)'!r}",
                                 "send application/x-npy (one .npy array) or application/json")
            result = await _infer(session, feeds)
        except Exception as e:
            status, kind = http_status_of(e)
            metrics.count_error(kind)
            if status == 500:
                return _error(500, f"internal error: {type(e).__name__}: {e}")
            return _error(status, e)  # type: ignore[arg-type]
        metrics.observe(result.timing)
        if as_npy:
            first = next(iter(result.outputs.values()))
            return Response(_npy_bytes(first), media_type="application/x-npy",
                            headers={"X-Splitinfer-Latency-S": repr(result.timing.latency_s)})
        doc = {"outputs": {name: encode_tensor(a) for name, a in result.outputs.items()},
               "timing": result.timing.to_dict()}
        return Response(msgspec.json.encode(doc), media_type="application/json")

    async def healthz(request: Request) -> Response:
        state = session.state
        dead = session.dead_devices
        doc = {"status": "ok" if state == "ready" else state,
               "devices": {name: "dead" if name in dead else "up" for name in session.addresses},
               "stages": [{"stage": s.index, "device": s.device} for s in session.stages],
               "num_replans": session.num_replans}
        return JSONResponse(doc, status_code=200 if state == "ready" else 503)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app = Starlette(routes=[Route("/v1/infer", infer, methods=["POST"]), Route("/healthz", healthz),
                            Route("/metrics", metrics_text)])
    app.state.metrics = metrics
    return app
