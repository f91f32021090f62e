"""The workers' resource use as gateway metrics: a thread asks each live worker of the session for its
samples every ``POLL_S`` (the ``resources`` request; the first one starts its sampling) and sets the
per-device gauges of :class:`~splitinfer.runtime.gateway._metrics.Metrics`.

A worker that fails to answer loses its gauges until it answers again; nothing it does reaches
``/metrics`` or the requests.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from splitinfer.runtime.gateway._metrics import Metrics
from splitinfer.runtime.wire.client import ResourceSamples, WorkerClient

log = logging.getLogger("splitinfer.gateway")
POLL_S = 2.0  # how often the gauges follow the workers (Prometheus scrapes every 15 s by default)
REQUEST_TIMEOUT_S = 1.0  # a resources reply copies a buffer: a worker slower than this is busy or gone


class ResourcePoller:
    """Polls the workers of ``session`` (what :meth:`Session.worker_client` reaches) every ``poll_s``,
    their samples taken every ``interval_s``, into ``metrics``. :meth:`start` and :meth:`stop` bound
    the thread; :meth:`poll` is one round (the thread's, or a test's)."""

    def __init__(self, session: Any, metrics: Metrics, interval_s: float, poll_s: float = POLL_S) -> None:
        self.session, self.metrics, self.interval_s, self.poll_s = session, metrics, interval_s, poll_s
        self._clients: dict[str, WorkerClient] = {}
        self._since: dict[str, float] = {}  # per device: the time of the last sample seen
        self._lock = threading.Lock()  # one round at a time (the thread's and a test's)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-resources", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT_S * (len(self._clients) + 1) + self.poll_s)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the gauges are a side show: never end serving over them
                log.exception("polling the workers' resources")
            self._stop.wait(self.poll_s)

    def poll(self) -> None:
        """One round: each live device's samples since the last round into its gauges."""
        with self._lock:
            dead = self.session.dead_devices
            for device in [d for d in list(self.session.addresses) if d not in dead]:  # a copy: re-plans add
                if self._stop.is_set():
                    return
                self._poll_device(device)
            for device in [d for d in self._clients if d in dead]:
                self._forget(device, "its worker is dead")

    def _poll_device(self, device: str) -> None:
        try:
            client = self._clients.get(device)
            if client is None:
                client = self._clients[device] = self.session.worker_client(device, REQUEST_TIMEOUT_S)
            # A first round asks from now: what the worker sampled before is no news of this gateway's.
            since = self._since.setdefault(device, time.time())
            samples = client.resources(since_unix_s=since, interval_s=self.interval_s)
        except Exception as e:  # a worker that fails here fails its gauges, never the gateway
            self._forget(device, str(e))
            return
        if len(samples.times_unix_s):
            self._since[device] = float(samples.times_unix_s[-1])
            self.metrics.set_resources(device, _figures(samples))

    def _forget(self, device: str, why: str) -> None:
        log.debug("no resource gauges for %s: %s", device, why)
        client = self._clients.pop(device, None)
        if client is not None:
            client.close()
        self._since.pop(device, None)
        self.metrics.clear_resources(device)


def _figures(samples: ResourceSamples) -> dict[str, float]:
    """The gauges' values: CPU and GPU utilisation as means over the samples of the round (a single
    sample is noisy), memory as the latest."""
    figures = {"cpu_percent": float(samples.cpu_percent.mean()), "rss_bytes": float(samples.rss_bytes[-1])}
    read = ~np.isnan(samples.gpu_util_percent)  # NaN: no GPU reading in that sample
    if read.any():
        figures["gpu_util_percent"] = float(samples.gpu_util_percent[read].mean())
        figures["gpu_memory_bytes"] = float(samples.gpu_memory_bytes[read][-1])
    return figures
