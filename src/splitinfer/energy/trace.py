"""``PowerTrace``: the one form every power log and live sensor ends in (seconds and watts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitinfer.errors import ProfileError


@dataclass(frozen=True, eq=False)
class PowerTrace:
    """Power samples of one meter: ``times_s`` (seconds on the clock named in ``source``) ascending,
    ``watts`` at those times, both float64 arrays of one length; ``source``: where they came from
    (the file and column, or the sensor), for messages."""

    times_s: np.ndarray
    watts: np.ndarray
    source: str

    def __post_init__(self) -> None:
        times = np.asarray(self.times_s, dtype=np.float64)
        watts = np.asarray(self.watts, dtype=np.float64)
        if times.ndim != 1 or times.shape != watts.shape:
            raise ProfileError(f"power trace {self.source}: times_s {times.shape} and watts {watts.shape} "
                               "are not two 1-D arrays of one length", "give one watts value per time")
        if not (np.isfinite(times).all() and np.isfinite(watts).all()):
            raise ProfileError(f"power trace {self.source} holds a NaN or infinite value",
                               "drop the samples the meter could not measure")
        if (watts < 0).any():
            raise ProfileError(f"power trace {self.source} holds negative watts",
                               "record the power drawn (a positive number)")
        if (np.diff(times) < 0).any():
            raise ProfileError(f"power trace {self.source}: times_s are not in ascending order",
                               "use PowerTrace.of, which sorts them")
        # Read-only copies: a trace is shared between windows and threads and must not change under them.
        for name, array in (("times_s", times), ("watts", watts)):
            array = array.copy()
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @classmethod
    def of(cls, times_s: object, watts: object, source: str) -> PowerTrace:
        """A trace from samples in any order (sorted by time, stably: equal times keep their order)."""
        times = np.asarray(times_s, dtype=np.float64)
        power = np.asarray(watts, dtype=np.float64)
        if times.ndim == 1 and times.shape == power.shape:
            order = np.argsort(times, kind="stable")
            times, power = times[order], power[order]
        return cls(times, power, source)

    def __len__(self) -> int:
        return int(self.times_s.size)

    @property
    def span_s(self) -> tuple[float, float]:
        """The first and last sample's time (a trace without samples has none: ProfileError)."""
        if not len(self):
            raise ProfileError(f"power trace {self.source} has no samples", "record power while it runs")
        return float(self.times_s[0]), float(self.times_s[-1])

    def shifted(self, offset_s: float) -> PowerTrace:
        """The same samples with ``offset_s`` added to every time (to move it onto another clock)."""
        return PowerTrace(self.times_s + float(offset_s), self.watts, self.source)
