"""A gateway's Prometheus metrics, in a registry of its own (two apps in one process never mix counts)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest

from splitinfer.runtime.coordinator.timing import RequestTiming

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# bad_input 400, too_large 413, body_timeout 408, deadline 504, worker 503, internal 500,
# disconnect: the client left before its answer; unauthorized 401 and throttled 429 (before the body)
ERROR_KINDS = ("bad_input", "too_large", "body_timeout", "deadline", "worker", "internal", "disconnect",
               "unauthorized", "throttled")
# The workers' resource gauges (gateway/_resources.py): figure -> (metric name, help).
RESOURCE_GAUGES = {
    "cpu_percent": ("splitinfer_worker_cpu_percent", "The worker process's CPU use, mean since the last poll "
                                                     "(100 = one core busy)."),
    "rss_bytes": ("splitinfer_worker_rss_bytes", "The worker process's resident memory."),
    "gpu_util_percent": ("splitinfer_worker_gpu_util_percent", "The worker's GPU utilisation (the whole "
                                                               "GPU's), mean since the last poll."),
    "gpu_memory_bytes": ("splitinfer_worker_gpu_memory_bytes", "Memory used on the worker's GPU (all of "
                                                               "its processes)."),
}
# What generate_latest writes; Prometheus reads it as the classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Inference requests, their errors by kind, latency and per-stage compute time.

    Exposed as ``splitinfer_requests_total``, ``splitinfer_request_errors_total{kind}``, the
    ``splitinfer_request_latency_seconds`` histogram (the session's submit-to-result latency) and
    the ``splitinfer_stage_compute_seconds{stage,device}`` summary (ONNX Runtime compute); per device,
    its worker's resource use (:data:`RESOURCE_GAUGES`: ``splitinfer_worker_cpu_percent{device}``, ...).
    """

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter("splitinfer_requests", "Inference requests received.", registry=registry)
        self._errors = Counter("splitinfer_request_errors", "Failed inference requests, by kind.", ["kind"],
                               registry=self.registry)
        for kind in ERROR_KINDS:
            self._errors.labels(kind)
        self._latency = Histogram("splitinfer_request_latency_seconds",
                                  "Completed requests, submit to result.", buckets=buckets,
                                  registry=self.registry)
        self._compute = Summary("splitinfer_stage_compute_seconds", "ONNX Runtime compute time per stage.",
                                ["stage", "device"], registry=self.registry)
        self._resources = {figure: Gauge(name, text, ["device"], registry=self.registry)
                           for figure, (name, text) in RESOURCE_GAUGES.items()}

    def count_request(self) -> None:
        self._requests.inc()

    def count_error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def observe(self, timing: RequestTiming) -> None:
        """Record one completed request."""
        self._latency.observe(timing.latency_s)
        for s in timing.stages:
            self._compute.labels(str(s.stage), s.device).observe(s.compute_s)

    def set_resources(self, device: str, figures: dict[str, float]) -> None:
        """A device's resource gauges: those in ``figures`` set, the others removed (no GPU read)."""
        for figure, gauge in self._resources.items():
            if figure in figures:
                gauge.labels(device).set(figures[figure])
            else:
                _remove(gauge, device)

    def clear_resources(self, device: str) -> None:
        """A device's resource gauges removed (its worker does not answer): no stale figure stays."""
        for gauge in self._resources.values():
            _remove(gauge, device)

    def render(self) -> bytes:
        """The exposition text (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _remove(gauge: Gauge, device: str) -> None:
    with contextlib.suppress(KeyError):  # never set for this device
        gauge.remove(device)
