"""What a worker uses of its machine over time: CPU %, resident memory and, on a GPU worker, the GPU's
utilisation and memory, sampled at a fixed interval into a ring buffer (the ``resources`` request).

Sampling starts on the first ``resources`` request, so a worker nobody asks costs nothing, and stops
on ``stop``, at worker exit, or once nobody has asked for longer than the buffer holds (what it
sampled since would be overwritten unread). A failing reading never ends the worker: the sampler
stops and the next reply says why. CPU % is the worker process's (psutil: 100 = one core busy); RSS
its resident bytes; GPU figures are the whole GPU's (NVML, through ``nvidia-ml-py`` when installed),
of the GPU this process sees first, and only on a worker whose providers run on a GPU.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

from splitinfer.errors import TransportError, first_line
from splitinfer.providers import uses_gpu
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.client import (
    MAX_RESOURCE_INTERVAL_S,
    MAX_RESOURCE_SAMPLES,
    MIN_RESOURCE_INTERVAL_S,
)
from splitinfer.units import check_number

log = logging.getLogger("splitinfer.worker")
DEFAULT_INTERVAL_S = 0.1
Sample = tuple[float, float, float, float, float]  # time, CPU %, RSS bytes, GPU % and bytes (NaN: none)
Reply = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]


def visible_gpu(nvml: Any) -> tuple[Any, str]:
    """The NVML handle of the GPU this process sees first, and its name: NVML numbers GPUs physically,
    CUDA_VISIBLE_DEVICES (an index or a GPU-/MIG- UUID) says which one CUDA shows first."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    if first.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByUUID(first), f"GPU {first}"
    return nvml.nvmlDeviceGetHandleByIndex(int(first)), f"GPU {first}"


class Nvml:
    """The GPU this process sees first, through NVML (imported lazily: only where a GPU is read).
    ``read`` gives (utilisation %, memory used in bytes); any NVML failure closes it (``reason`` says
    why) and it reads nothing more."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handle: Any = None
        self.name = ""
        self.reason = ""

    def open(self) -> bool:
        """True once a first reading succeeded; else ``reason`` says why not."""
        try:
            import pynvml  # nvidia-ml-py, an optional dependency

            pynvml.nvmlInit()
        except Exception as e:  # not installed, no driver: no GPU figures
            self.reason = f"no GPU figures: NVML unavailable ({first_line(e)})"
            return False
        self._nvml = pynvml
        try:
            self._handle, self.name = visible_gpu(pynvml)
        except Exception as e:
            self.close(f"no GPU figures: NVML cannot open the GPU ({first_line(e)})")
            return False
        self.read()
        return self._nvml is not None

    def read(self) -> tuple[float, float]:
        if self._nvml is None:
            return math.nan, math.nan
        try:
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used
            return float(util), float(used)
        except Exception as e:
            self.close(f"GPU figures stopped: NVML failed ({first_line(e)})")
            return math.nan, math.nan

    def close(self, reason: str = "") -> None:
        nvml, self._nvml = self._nvml, None
        self.reason = reason or self.reason
        if nvml is not None:
            with contextlib.suppress(Exception):  # shutting down what already failed: nothing left to do
                nvml.nvmlShutdown()


def _process_reader() -> Callable[[], tuple[float, float]]:
    """This process's CPU % since the previous call and its RSS bytes."""
    process = psutil.Process()
    process.cpu_percent(None)  # the first call only starts the count

    def read() -> tuple[float, float]:
        return float(process.cpu_percent(None)), float(process.memory_info().rss)
    return read


class ResourceSampler:
    """A thread that samples every ``interval_s`` into a ring buffer of ``max_samples``, once started.
    ``process`` and ``gpu`` make the readers (tests give fakes), ``clock`` gives the sample times."""

    def __init__(self, *, process: Callable[[], Callable[[], tuple[float, float]]] = _process_reader,
                 gpu: Callable[[], Nvml] = Nvml, clock: Callable[[], float] = time.time,
                 max_samples: int = MAX_RESOURCE_SAMPLES) -> None:
        self._make_process, self._make_gpu, self._clock = process, gpu, clock
        self.samples: collections.deque[Sample] = collections.deque(maxlen=max_samples)
        self.interval_s = DEFAULT_INTERVAL_S
        self.error = ""  # why sampling, or a part of it, stopped on its own
        self._lock = threading.Lock()  # start and stop
        self._samples_lock = threading.Lock()  # the buffer: appended by the thread, read by replies
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # a new one per start: a stopping thread never sees the next's
        self._read: Callable[[], tuple[float, float]] | None = None
        self._gpu: Nvml | None = None
        self._asked_s = 0.0  # monotonic time of the last request

    @property
    def sampling(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def gpu(self) -> str:
        """The GPU sampled ("" when none)."""
        return self._gpu.name if self._gpu is not None else ""

    def start(self, interval_s: float, gpu: bool) -> None:
        """Sample every ``interval_s`` from now (the interval changed if already sampling)."""
        with self._lock:
            self.interval_s = interval_s
            self._asked_s = time.monotonic()
            if self.sampling:
                return
            self.error = ""
            try:
                self._read = self._make_process()
                self._gpu = self._make_gpu() if gpu else None
            except Exception as e:
                self.error = f"cannot read this process's CPU and memory: {first_line(e)}"
                return
            if self._gpu is not None and not self._gpu.open():
                self.error = self._gpu.reason  # CPU and memory are still sampled
                self._gpu = None
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name="resources",
                                            daemon=True)
            self._thread.start()

    def sample(self) -> None:
        """Take one sample now (the thread calls it every interval)."""
        assert self._read is not None, "start() first"
        cpu, rss = self._read()
        util, used = self._gpu.read() if self._gpu is not None else (math.nan, math.nan)
        if self._gpu is not None and self._gpu.reason:
            self.error = self._gpu.reason
        with self._samples_lock:
            self.samples.append((self._clock(), cpu, rss, util, used))

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.interval_s):
                self.sample()
                if time.monotonic() - self._asked_s > self.interval_s * (self.samples.maxlen or 1):
                    break  # nobody asked while the buffer filled: stop until someone does
        except Exception as e:  # a sampler must not end its worker: stop, and say why when asked
            log.warning("resource sampling stopped: %s", first_line(e))
            self.error = f"sampling stopped: {first_line(e)}"
        finally:
            if self._gpu is not None:
                self._gpu.close()

    def stop(self) -> None:
        """Stop sampling (the samples stay for the next request)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(timeout=max(1.0, 2 * self.interval_s))

    def since(self, since_unix_s: float) -> np.ndarray:
        """The samples taken after ``since_unix_s``, one row each (columns: ``RESOURCE_SERIES``)."""
        with self._samples_lock:
            rows = [s for s in self.samples if s[0] > since_unix_s]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(messages.RESOURCE_SERIES))

    def answer(self, header: messages.Resources, providers: tuple[str, ...]) -> Reply:
        """The reply to a ``resources`` request: its numbers checked, sampling started (or stopped)."""
        interval_s = check_number(header.interval_s, "resources interval_s", low=MIN_RESOURCE_INTERVAL_S,
                                  high=MAX_RESOURCE_INTERVAL_S, error=TransportError)
        since = check_number(header.since_unix_s, "resources since_unix_s", low=0, error=TransportError,
                             fix="a time in seconds since 1970, 0 for every sample kept")
        if not header.stop:
            self.start(float(interval_s), uses_gpu(providers))
        rows = self.since(float(since))
        if header.stop:
            self.stop()
        data = {"interval_s": self.interval_s, "sampling": self.sampling, "error": self.error,
                "gpu": self.gpu, "num_cpus": os.cpu_count() or 1, "now_unix_s": time.time()}
        return data, [(name, np.ascontiguousarray(rows[:, k]))
                      for k, name in enumerate(messages.RESOURCE_SERIES)]
