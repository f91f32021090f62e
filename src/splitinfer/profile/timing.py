"""Honest timing: warm up, repeat until the median is known to a given precision.

The stopping rule uses a distribution-free confidence interval for the median
(binomial order statistics), because run times are skewed and have outliers:
a mean +- t*sd interval would be too optimistic on a noisy shared machine.

:func:`time_partition` is the one way a partition is timed, in this process
(``LocalRunner``) and on a worker (its ``time_partition`` request).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from splitinfer.errors import ShapeError, WorkerError, first_line
from splitinfer.graph.inference import DEFAULT_PROVIDERS, create_inference_session
from splitinfer.profile.partition_timing import PartitionTiming
from splitinfer.profile.schema import Stats

# The most one timing may ask for: beyond these it holds a device for hours, or is a mistake.
MAX_RUNS = 100_000
MAX_WARMUP = 1_000
MAX_PARTITION_BUDGET_S = 3_600.0


def median_ci_rel(times: Sequence[float], z: float = 1.96) -> float:
    """Relative half-width of the ~95% confidence interval of the median.

    The interval is [x_(j), x_(k)] with j, k = n/2 -+ z*sqrt(n)/2 (order statistics).
    Returns inf when there are too few samples to bound it.
    """
    n = len(times)
    if n < 3:
        return math.inf
    xs = np.sort(np.asarray(times, dtype=np.float64))
    half = z * math.sqrt(n) / 2
    j = math.floor(n / 2 - half)
    k = math.ceil(n / 2 + half)
    if j < 0 or k > n - 1:
        return math.inf
    median = float(np.median(xs))
    if median <= 0:
        return 0.0 if xs[k] == xs[j] else math.inf
    return float((xs[k] - xs[j]) / 2 / median)


def summarize(times: Sequence[float]) -> Stats:
    """Median, mean, p10, p90, std and CI of a list of durations, as the profile file keeps them
    (``ci_rel`` None when too few samples bound the median)."""
    if len(times) == 0:
        raise ValueError("no measurements to summarize")
    xs = np.asarray(times, dtype=np.float64)
    ci_rel = median_ci_rel(xs)
    return Stats(
        median_s=float(np.median(xs)),
        mean_s=float(xs.mean()),
        p10_s=float(np.percentile(xs, 10)),
        p90_s=float(np.percentile(xs, 90)),
        std_s=float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
        n=len(xs),
        ci_rel=ci_rel if math.isfinite(ci_rel) else None,
    )


def measure(
    run: Callable[[], object],
    *,
    num_warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 300,
    budget_s: float = 2.0,
    rel_precision: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Time ``run()`` until the median's 95% CI half-width is within ``rel_precision``.

    Stops early at ``max_runs`` or when ``budget_s`` of timed work is spent (after
    at least ``min_runs``). Warm-up runs are not recorded. Returns raw durations.
    """
    for _ in range(num_warmup):
        run()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_runs:
        start = clock()
        run()
        elapsed = clock() - start
        times.append(elapsed)
        spent += elapsed
        if len(times) >= min_runs and (
            spent >= budget_s or median_ci_rel(times) <= rel_precision
        ):
            break
    return times


def time_partition(model_bytes: bytes | memoryview, feeds: Mapping[str, np.ndarray], *,
                   providers: Sequence[str] = DEFAULT_PROVIDERS, num_threads: int = 0, slowdown: float = 1.0,
                   num_warmup: int = 3, min_runs: int = 5, max_runs: int = 200, budget_s: float = 2.0,
                   rel_precision: float = 0.05) -> PartitionTiming:
    """Time one partition: its inference session created untimed, ``num_warmup`` untimed runs, then
    timed runs until the median is precise enough (:func:`measure`); ``times_s`` scaled by ``slowdown``.

    The first untimed run (there is always one) gives the outputs. ShapeError for feeds the
    partition does not take (names, dtypes, dims), ModelError for bytes ONNX Runtime cannot
    load, WorkerError for a provider missing here or a run that fails in a kernel.
    """
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument  # loaded with the session

    start = time.perf_counter()
    session = create_inference_session(model_bytes, providers, num_threads)
    create_s = time.perf_counter() - start
    wanted = {i.name for i in session.get_inputs()}
    if set(feeds) != wanted:
        raise ShapeError(f"the feeds are {sorted(feeds)}, the partition takes {sorted(wanted)}",
                         "give one tensor per partition input, named like the input")
    feeds = dict(feeds)
    try:
        outputs = session.run(None, feeds)
        times = measure(lambda: session.run(None, feeds), num_warmup=max(0, num_warmup - 1),
                        min_runs=max(1, min_runs), max_runs=max(1, min_runs, max_runs), budget_s=budget_s,
                        rel_precision=rel_precision)
    except InvalidArgument as e:  # ORT's word for inputs the partition does not take (dims, dtypes)
        raise ShapeError(f"the partition rejects its inputs: {first_line(e)}",
                         "give inputs of the shapes and dtypes the partition takes") from None
    except Exception as e:  # ORT's other exception types: a kernel failed on these values
        raise WorkerError(f"timing the partition failed: {first_line(e)}",
                          "check the inputs' values (e.g. indices in range) and the model") from None
    names = [o.name for o in session.get_outputs()]
    return PartitionTiming(times_s=[t * slowdown for t in times], compute_times_s=times, create_s=create_s,
                           outputs=dict(zip(names, outputs, strict=True)))
