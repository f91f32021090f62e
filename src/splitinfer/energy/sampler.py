"""``Sampler``: one sensor polled in a background thread at a fixed interval, into a PowerTrace."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from splitinfer.energy.trace import PowerTrace
from splitinfer.errors import ProfileError
from splitinfer.units import check_number


class Sampler:
    """Polls ``sensor`` (a :mod:`~splitinfer.energy.sensors` class) every ``interval_s`` between
    :meth:`start` and :meth:`stop`, times read from ``clock`` (the wall clock by default: the clock
    other machines' logs and the profile's windows can share). Also a context manager (``trace`` set
    on exit).

    A power sensor's reads are the trace. An energy counter's differences are: each interval's mean
    power placed at its middle, and the first and last interval's also at the first and last read,
    so that the trace covers the whole time sampled.
    """

    def __init__(self, sensor: Any, *, interval_s: float = 0.1, clock: Callable[[], float] = time.time,
                 max_samples: int = 1_000_000) -> None:
        self.sensor = sensor
        self.interval_s = float(check_number(interval_s, "interval_s", low=1e-3, high=3600,
                                             error=ProfileError))
        self.max_samples = int(check_number(max_samples, "max_samples", low=2, whole=True,
                                            error=ProfileError))
        self.clock = clock
        self.trace: PowerTrace | None = None
        self._energy = bool(getattr(sensor, "counts_energy", False))
        self._read: Callable[[], float] = sensor.read_joules if self._energy else sensor.read_watts
        self._times: list[float] = []
        self._values: list[float] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        if len(self._times) >= self.max_samples:
            raise ProfileError(f"sampler of {self.sensor.name} reached max_samples {self.max_samples}",
                               "sample less often (a larger interval_s) or for a shorter time")
        value = self._read()
        self._times.append(self.clock())
        self._values.append(value)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self._sample()
        except BaseException as e:  # raised again by stop(), in the caller's thread
            self._error = e

    def start(self) -> Sampler:
        """Checks the sensor, reads it once and starts polling."""
        if self._thread is not None:
            raise ProfileError("this sampler was started already", "make one Sampler per trace")
        reason = self.sensor.available()
        if reason is not None:
            raise ProfileError(f"{self.sensor.name} cannot be read: {reason}", "use another sensor")
        self._sample()
        self._thread = threading.Thread(target=self._run, name="splitinfer-power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PowerTrace:
        """Stops polling, reads the sensor a last time and returns the trace (an error the polling
        met is raised here)."""
        if self._thread is None:
            raise ProfileError("this sampler was not started", "call start() first")
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.trace is None:
            self._sample()
            self.trace = self._trace()
        return self.trace

    def _trace(self) -> PowerTrace:
        times = np.array(self._times)
        values = np.array(self._values)
        source = f"{self.sensor.name} sampled every {self.interval_s:g} s"
        if not self._energy:
            return PowerTrace.of(times, values, source)
        spans = np.diff(times)
        if (spans <= 0).any():
            raise ProfileError(f"{source}: the clock did not advance between two reads",
                               "use a clock with a finer resolution")
        watts = np.diff(values) / spans
        middles = (times[1:] + times[:-1]) / 2
        return PowerTrace.of(np.concatenate(([times[0]], middles, [times[-1]])),
                             np.concatenate(([watts[0]], watts, [watts[-1]])), source)

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
