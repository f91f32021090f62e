"""Resource use over a bench (``bench.json``'s ``resources``): per device, its worker's CPU %, resident
memory and, on a GPU worker, the GPU's utilisation and memory, sampled at a fixed interval; and the
summary the CLI and the report show of each (mean, standard deviation, median, largest).

:func:`splitinfer.runtime.bench.bench` samples (through each worker's ``resources`` request); this
module only holds the series, so the report reads them without loading the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np


class ResourceSeries(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One device's samples during a bench: parallel series of one length, ``times_s`` from the
    bench's start (the first measured request). CPU % is the worker process's (100 = one core busy,
    at most 100 x ``num_cpus``); GPU series are the whole GPU's, empty when the worker read no GPU."""

    interval_s: float
    num_cpus: int = 1
    times_s: tuple[float, ...] = ()
    cpu_percent: tuple[float, ...] = ()
    rss_bytes: tuple[int, ...] = ()
    gpu_util_percent: tuple[float, ...] = ()
    gpu_memory_bytes: tuple[int, ...] = ()
    gpu: str = ""  # which GPU
    note: str = ""  # why a series is missing or ends early ("" when all went well)

    def __post_init__(self) -> None:
        # A file edited by hand or cut short: its series must still pair sample by sample, and hold
        # numbers a sampler writes (the lax reader turns "nan" into a float).
        n = len(self.times_s)
        gpu = len(self.gpu_util_percent)
        if len(self.cpu_percent) != n or len(self.rss_bytes) != n or gpu not in (0, n) \
                or len(self.gpu_memory_bytes) != gpu:
            raise ValueError("the series must have one value per sample (GPU series: or none)")
        if not np.isfinite(self.times_s).all() or not self.interval_s > 0:
            raise ValueError("times_s must be finite and interval_s positive")
        for name, _, _, _ in RESOURCES:
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if not (np.isfinite(values) & (values >= 0)).all():
                raise ValueError(f"{name} must hold finite numbers, none negative")

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu_util_percent)


# The resources a series holds: attribute, what a table and a figure call it, its unit and the factor
# from the series' values to that unit.
RESOURCES: tuple[tuple[str, str, str, float], ...] = (
    ("cpu_percent", "CPU", "%", 1.0),
    ("rss_bytes", "memory (RSS)", "MB", 1e-6),
    ("gpu_util_percent", "GPU utilisation", "%", 1.0),
    ("gpu_memory_bytes", "GPU memory", "MB", 1e-6),
)


@dataclass(frozen=True)
class ResourceStats:
    """One resource of one device over a bench, in its unit: mean, standard deviation, median, largest."""

    mean: float
    std: float
    median: float
    max: float
    num_samples: int


def resource_stats(series: ResourceSeries, attribute: str) -> ResourceStats | None:
    """The summary of one resource (an attribute of :data:`RESOURCES`); None when it has no samples."""
    scale = next(s for a, _, _, s in RESOURCES if a == attribute)
    values = np.asarray(getattr(series, attribute), dtype=np.float64) * scale
    if not len(values):
        return None
    return ResourceStats(float(values.mean()), float(values.std()), float(np.median(values)),
                         float(values.max()), len(values))
