"""Honest timing: warm up, repeat until the median is known to a given precision.

The stopping rule uses a distribution-free confidence interval for the median
(binomial order statistics), because run times are skewed and have outliers:
a mean +- t*sd interval would be too optimistic on a noisy shared machine.

:func:`time_partition` is the one way a partition is timed, in this process
(``LocalRunner``) and on a worker (its ``time_partition`` request);
:func:`time_compression` the one way a hop's compression of a cut's tensors is timed
(``LocalRunner.time_compression``, a worker's ``time_compression`` request).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from splitinfer.compression import DEFAULT_MAX_BYTES, Compressed, decompress, parse_compression, wire_bytes
from splitinfer.errors import ModelError, ProfileError, ShapeError, WorkerError, first_line
from splitinfer.graph.inference import DEFAULT_PROVIDERS, create_inference_session
from splitinfer.host import (
    held_bytes,
    peak_resident_bytes,
    release_freed_memory,
    reset_peak_resident,
    returning_freed_memory,
)
from splitinfer.profile.partition_timing import CompressionTiming, PartitionFailure, PartitionTiming
from splitinfer.profile.rounds import RoundRules, kept_runs, median_ci_rel, time_rounds
from splitinfer.profile.schema import Stats
from splitinfer.units import check_number

# The most one timing may ask for: beyond these it holds a device for hours, or is a mistake.
MAX_RUNS = 100_000
MAX_WARMUP = 1_000
MAX_PARTITION_BUDGET_S = 3_600.0
MAX_REST_S = 1.0  # idle before each timed run: longer rests than a second find the device no colder


def summarize(times: Sequence[float]) -> Stats:
    """Median, mean, p10, p90, std and CI of a list of durations, as the profile file keeps them,
    over the runs the outlier rule keeps (:func:`splitinfer.profile.rounds.kept_runs`; ``outliers``
    counts those dropped; ``ci_rel`` None when too few runs bound the median)."""
    if len(times) == 0:
        raise ValueError("no measurements to summarize")
    xs = np.asarray(kept_runs(times), dtype=np.float64)
    ci_rel = median_ci_rel(xs)
    return Stats(
        median_s=float(np.median(xs)),
        mean_s=float(xs.mean()),
        p10_s=float(np.percentile(xs, 10)),
        p90_s=float(np.percentile(xs, 90)),
        std_s=float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
        n=len(xs),
        ci_rel=ci_rel if math.isfinite(ci_rel) else None,
        outliers=len(times) - len(xs),
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


def _open(part: bytes | memoryview | Path, feeds: Mapping[str, np.ndarray], providers: Sequence[str],
          num_threads: int) -> _Open:
    """Create one partition's session and run it once (untimed: the outputs), measuring the memory
    each step adds to this process. ModelError, ShapeError or WorkerError as :func:`time_partition`."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument  # loaded with the session

    release_freed_memory()  # so that what creating the session touches shows as resident growth
    peak_known = reset_peak_resident()
    process = psutil.Process()
    resident, file_pages = _resident(process)
    before = held_bytes()
    start = time.perf_counter()
    session = create_inference_session(part, providers, num_threads)
    create_s = time.perf_counter() - start
    created = held_bytes()
    created_resident, created_file_pages = _resident(process)
    # The peak while the session was created, read before a run can raise it: a deploy creates every
    # session of a stage before any of them runs, so a block's moment is measured beyond what creating it
    # kept, not hidden under its first run's activations (vit_b16's blocks: 0-0.8 MB so, a deploy's 2-4).
    creation_peak = peak_resident_bytes() if peak_known else None
    wanted = [i.name for i in session.get_inputs()]
    missing = sorted(set(wanted) - set(feeds))
    if missing:
        raise ShapeError(f"the partition takes {missing}, which the feeds lack",
                         "give one tensor per partition input, named like the input")
    own = {name: feeds[name] for name in wanted}
    try:
        with returning_freed_memory():  # its arena's pages are its own, not what the process freed before
            # A second run places its tensors in the arena where the first left them room, touching pages the
            # first did not (resnet18's block 0: 5.1 MB, then 6.7); a third touches no more. A deploy warms a
            # stage up with two runs (messages.Deploy.num_warmup) before its requests.
            session.run(None, own)
            outputs = session.run(None, own)
    except InvalidArgument as e:  # ORT's word for inputs the partition does not take (dims, dtypes)
        raise ShapeError(f"the partition rejects its inputs: {first_line(e)}",
                         "give inputs of the shapes and dtypes the partition takes") from None
    except Exception as e:  # ORT's other exception types: a kernel failed on these values
        raise WorkerError(f"timing the partition failed: {first_line(e)}",
                          "check the inputs' values (e.g. indices in range) and the model") from None
    ran_resident, ran_file_pages = _resident(process)
    # Weights mapped from a file (a partition from the worker's cache, as a deploy loads a stage) are
    # resident file pages, not allocations: those its session kept count with its weights.
    mapped = max(0, ran_file_pages - file_pages)
    names = [o.name for o in session.get_outputs()]
    # The first two runs grow the session's arena, which later runs reuse (no memory pattern:
    # graph/inference.py); what the second returns is counted as the stage's outgoing tensors, not as its
    # working memory. The pages they touched, not what the arena reserved: the arena grows in regions of
    # doubling size whose tails a run may never touch, and only touched pages are resident (mobilenetv2's
    # block 4: 16.1 MB reserved, 9.0 MB touched; deployed in a stage of blocks 0-4, a worker grew 7-9 MB).
    working = (ran_resident - ran_file_pages) - (created_resident - created_file_pages) \
        - sum(o.nbytes for o in outputs)
    # What creating the session held for a moment beyond what it then kept (its allocations, and the
    # pages it mapped by then): a deploy holds that much for a moment.
    allocated = max(0, created - before)
    kept_at_creation = allocated + max(0, created_file_pages - file_pages)
    transient = None if creation_peak is None else max(0, creation_peak - resident - kept_at_creation)
    return _Open(session, own, create_s, dict(zip(names, outputs, strict=True)),
                 allocated + mapped, max(0, working), transient, mapped)


def _resident(process: psutil.Process) -> tuple[int, int]:
    """The process's resident bytes, and of those the file-backed ones (mapped files, libraries)."""
    m = process.memory_info()
    return m.rss, getattr(m, "shared", 0)


SPIN_S = 0.0005  # the end of an emulated wait is spun, not slept (see hold_busy)


def hold_busy(start: float, compute_s: float, slowdown: float) -> float:
    """The emulated slowdown: after a run that began at ``start`` (``time.perf_counter``) and computed
    ``compute_s``, wait until ``slowdown`` x compute has passed; return the seconds waited. The worker
    runs its stages so and the profiler times its partitions so: the device idles through the wait
    and its next run starts as cold as in the runtime (a few percent slower than back to back)."""
    if slowdown <= 1.0:
        return 0.0
    end = start + slowdown * compute_s
    # A sleep overshoots by tens of microseconds, more than a small block computes: sleep short of the
    # end, then spin to it (at most SPIN_S of a core).
    left = end - time.perf_counter()  # read once: a second read could be past the end
    if left > SPIN_S:
        time.sleep(left - SPIN_S)
    while time.perf_counter() < end:
        pass
    return time.perf_counter() - start - compute_s


def _held(session: Any, feeds: dict[str, np.ndarray], slowdown: float) -> Callable[[], object]:
    """One timed run of ``session`` as the runtime runs a stage: the run, then the slowdown's wait."""
    def run() -> None:
        start = time.perf_counter()
        session.run(None, feeds)
        hold_busy(start, time.perf_counter() - start, slowdown)
    return run


@dataclass
class _Open:
    session: Any
    feeds: dict[str, np.ndarray]
    create_s: float
    outputs: dict[str, np.ndarray]
    weight_bytes: int
    activation_bytes: int
    transient_bytes: int | None
    mapped_bytes: int


def time_partitions(parts: Sequence[bytes | memoryview | Path], feeds: Mapping[str, np.ndarray], *,
                    providers: Sequence[str] = DEFAULT_PROVIDERS, num_threads: int = 0, slowdown: float = 1.0,
                    num_warmup: int = 3, min_runs: int = 5, max_runs: int = 200, budget_s: float = 2.0,
                    rel_precision: float = 0.05,
                    rest_s: float = 0.0) -> list[PartitionTiming | PartitionFailure]:
    """Time partitions of one model together, in interleaved rounds (:mod:`splitinfer.profile.rounds`;
    ``rest_s``: idle before each timed run, its rule Rest).

    ``feeds``: every tensor any of them takes, by name (one model's tensor names are unique). Each
    session is created untimed, measuring the resident memory it adds (``weight_bytes``), what creating
    it held for a moment beyond that (``transient_bytes``), and the pages its first run touched beyond
    its outputs (``activation_bytes``); the sessions stay open while all are
    timed, so one's freed memory cannot hide another's need. ``budget_s``: timed work of the whole
    set. A partition that cannot run here is a :class:`PartitionFailure`; the others are timed.
    ``slowdown`` > 1 is emulated as the worker emulates it (:func:`hold_busy`): each timed run holds
    the device for ``slowdown`` x its compute, so ``times_s`` are busy times as a stage measures them,
    the budget counts them, and ``compute_times_s`` (what the wire carries) are those / ``slowdown``.
    """
    opened: list[_Open | PartitionFailure] = []
    for part in parts:
        try:
            opened.append(_open(part, feeds, providers, num_threads))
        except (ModelError, WorkerError) as e:  # ShapeError is a ModelError
            opened.append(PartitionFailure(e))
    live = [o for o in opened if isinstance(o, _Open)]
    rules = RoundRules(max(0, num_warmup - 1), max(1, min_runs), max(1, min_runs, max_runs), budget_s,
                       rel_precision, rest_s)
    start = time.time()  # the wall clock, as a power meter's log or another machine would read it
    try:
        samples = iter(time_rounds([_held(o.session, o.feeds, slowdown) for o in live], rules))
    except Exception as e:  # a kernel that ran once and fails on a later run: the set cannot be timed
        raise WorkerError(f"timing the partitions failed: {first_line(e)}",
                          "check the inputs' values (e.g. indices in range) and the model") from None
    window = (start, time.time())
    out: list[PartitionTiming | PartitionFailure] = []
    for o in opened:
        if isinstance(o, PartitionFailure):
            out.append(o)
            continue
        sample = next(samples)
        out.append(PartitionTiming(times_s=list(sample.times_s),
                                   compute_times_s=[t / slowdown for t in sample.times_s],
                                   create_s=o.create_s, outputs=o.outputs,
                                   remeasured=sample.remeasured, weight_bytes=o.weight_bytes,
                                   activation_bytes=o.activation_bytes, transient_bytes=o.transient_bytes,
                                   mapped_bytes=o.mapped_bytes, window_s=window))
    return out


def time_partition(model_bytes: bytes | memoryview, feeds: Mapping[str, np.ndarray], *,
                   providers: Sequence[str] = DEFAULT_PROVIDERS, num_threads: int = 0, slowdown: float = 1.0,
                   num_warmup: int = 3, min_runs: int = 5, max_runs: int = 200, budget_s: float = 2.0,
                   rel_precision: float = 0.05) -> PartitionTiming:
    """Time one partition (:func:`time_partitions` with one): its inference session created untimed,
    ``num_warmup`` untimed runs, then timed runs until the median is precise enough; ``times_s``
    scaled by ``slowdown``.

    The first untimed run (there is always one) gives the outputs. ShapeError for feeds the
    partition does not take (names, dtypes, dims), ModelError for bytes ONNX Runtime cannot
    load, WorkerError for a provider missing here or a run that fails in a kernel.
    """
    (result,) = time_partitions([model_bytes], feeds, providers=providers, num_threads=num_threads,
                                slowdown=slowdown, num_warmup=num_warmup, min_runs=min_runs,
                                max_runs=max_runs, budget_s=budget_s, rel_precision=rel_precision)
    if isinstance(result, PartitionFailure):
        raise result.error
    return result


def time_compression(arrays: Mapping[str, np.ndarray], compressions: Sequence[str], *, slowdown: float = 1.0,
                     num_warmup: int = 1, min_runs: int = 3, max_runs: int = 50, budget_s: float = 0.5,
                     rel_precision: float = 0.1) -> dict[str, CompressionTiming]:
    """Time each compression (text form, :func:`splitinfer.compression.parse_compression`) on one cut's
    tensors: compressing them all as a hop does (``Compression.carry``: a tensor whose dtype a lossy
    compression does not take travels raw), and restoring what it made with
    :func:`splitinfer.compression.decompress`; each timed by :func:`measure` on an equal share of
    ``budget_s``. Medians scaled by ``slowdown``, keyed by the text given.

    Every name is parsed before anything is timed: a PlanError names the first unknown one. A
    compression that cannot carry these values (fp16 past 65504, an int8 axis the tensor lacks) raises
    the TransportError a hop would.
    """
    check_number(slowdown, "slowdown", low=0, low_open=True, error=ProfileError)
    check_number(budget_s, "budget_s", low=0, high=MAX_PARTITION_BUDGET_S, error=ProfileError)
    check_number(rel_precision, "rel_precision", low=0, high=1, error=ProfileError)
    for name, value, low, high in (("num_warmup", num_warmup, 0, MAX_WARMUP),
                                   ("min_runs", min_runs, 1, MAX_RUNS), ("max_runs", max_runs, 1, MAX_RUNS)):
        check_number(value, name, low=low, high=high, whole=True, error=ProfileError)
    parsed = {text: parse_compression(text) for text in compressions}
    tensors = [np.ascontiguousarray(a) for a in arrays.values()]  # as a partition's outputs are
    raw_bytes = sum(a.nbytes for a in tensors)
    max_bytes = max(DEFAULT_MAX_BYTES, *(a.nbytes for a in tensors)) if tensors else DEFAULT_MAX_BYTES
    share_s = budget_s / max(1, 2 * len(parsed))  # compress and restore, for each compression
    runs = {"min_runs": min_runs, "max_runs": max(min_runs, max_runs), "budget_s": share_s,
            "rel_precision": rel_precision}
    timings: dict[str, CompressionTiming] = {}
    for text, compression in parsed.items():
        def compress_all(c=compression) -> list[np.ndarray | Compressed]:
            return [c.carry(a) for a in tensors]

        carried = compress_all()  # the first untimed run gives the payloads (and fails as a hop would)
        packed = [c for c in carried if isinstance(c, Compressed)]
        compress_times = measure(compress_all, num_warmup=max(0, num_warmup - 1), **runs)
        decompress_times = measure(lambda p=packed: [decompress(c, max_bytes=max_bytes) for c in p],
                                   num_warmup=num_warmup, **runs)
        timings[text] = CompressionTiming(
            compress_s=float(np.median(compress_times)) * slowdown,
            decompress_s=float(np.median(decompress_times)) * slowdown,
            wire_bytes=sum(wire_bytes(c) if isinstance(c, Compressed) else c.nbytes for c in carried),
            raw_bytes=raw_bytes)
    return timings
