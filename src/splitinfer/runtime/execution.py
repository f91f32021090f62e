"""Running partitions in ONNX Runtime inside a worker: build once, warm up, run, profile.

Model bytes are only ever parsed by ONNX Runtime; nothing in them is executed
as Python.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from splitinfer.errors import ModelError, ShapeError, WorkerError, first_line
from splitinfer.profile.timing import measure
from splitinfer.types import NUMPY_DTYPES, TensorSpec

_ORT_TYPES = {"float": "float32", "double": "float64"}


def numpy_name(ort_type: str) -> str:
    """'tensor(float)' -> 'float32', 'tensor(int64)' -> 'int64'."""
    inner = ort_type.removeprefix("tensor(").removesuffix(")")
    return _ORT_TYPES.get(inner, inner)


def build_session(model_bytes: bytes | memoryview, providers: Sequence[str],
                  threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime session for a partition; clear errors for bad bytes or providers."""
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise WorkerError(f"execution provider(s) {', '.join(missing)} not available on this worker",
                          f"use one of {', '.join(available)} for this device in cluster.yaml")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(bytes(model_bytes), options, providers=list(providers))
    except Exception as e:  # ORT raises its own untyped errors for any malformed model
        raise ModelError(f"ONNX Runtime cannot load the partition: {first_line(e)}",
                         "send a valid standalone ONNX model (see `splitinfer split`)") from None


def _shape_matches(declared: Sequence[int], actual: Sequence[int]) -> bool:
    # A negative declared dimension accepts any size (a dynamic axis).
    if len(declared) != len(actual):
        return False
    return all(d < 0 or d == a for d, a in zip(declared, actual, strict=True))


def check_signature(session: ort.InferenceSession, inputs: Sequence[TensorSpec],
                    outputs: Sequence[TensorSpec]) -> None:
    """The partition's inputs and outputs must be exactly the declared tensors (names, dtypes)."""
    for role, declared, actual in (("inputs", inputs, session.get_inputs()),
                                   ("outputs", outputs, session.get_outputs())):
        got = {a.name: numpy_name(a.type) for a in actual}
        want = {s.name: s.dtype for s in declared}
        if got != want:
            raise ModelError(f"the partition's {role} are {got}, the stage declares {want}",
                             "deploy the partition that matches the stage's tensor specs")


def zeros_for(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Zero tensors for the specs (dynamic dimensions become 1): warm-up feeds."""
    return {s.name: np.zeros(tuple(d if d >= 0 else 1 for d in s.shape), dtype=s.dtype) for s in specs}


def check_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], where: str) -> None:
    """Feeds must be exactly the specs' tensors with their dtypes and shapes."""
    # The common case first, cheaply: this runs for every request on the coordinator and on
    # every stage, and numpy's dtype.name alone costs a microsecond.
    if len(feeds) == len(specs) and all(
            (arr := feeds.get(s.name)) is not None and arr.dtype == NUMPY_DTYPES.get(s.dtype)
            and (arr.shape == s.shape or _shape_matches(s.shape, arr.shape)) for s in specs):
        return
    names = [s.name for s in specs]
    if set(feeds) != set(names):
        missing = sorted(set(names) - set(feeds))
        extra = sorted(set(feeds) - set(names))
        raise ShapeError(f"{where} got tensors {sorted(feeds)} (missing {missing}, unexpected {extra})",
                         f"feed exactly {names}")
    for s in specs:
        arr = feeds[s.name]
        if arr.dtype.name != s.dtype:
            raise ShapeError(f"{where}: tensor {s.name!r} has dtype {arr.dtype.name}, expected {s.dtype}",
                             f"cast it with .astype('{s.dtype}')")
        if not _shape_matches(s.shape, arr.shape):
            raise ShapeError(f"{where}: tensor {s.name!r} has shape {list(arr.shape)}, expected "
                             f"{list(s.shape)}", "feed a tensor of the declared shape")


@dataclass
class StageRunner:
    """One deployed partition: its ORT session, specs and emulated slowdown."""

    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    slowdown: float = 1.0
    # What the last run kept the device busy (compute + emulated wait); inf before any run.
    last_busy_s: float = float("inf")

    def warm_up(self, num_runs: int) -> float:
        """Run on zeros ``num_runs`` times (untimed work); return the seconds spent."""
        start = time.perf_counter()
        feeds = zeros_for(self.inputs)
        for _ in range(num_runs):
            run_start = time.perf_counter()
            self.session.run(None, feeds)
            self.last_busy_s = (time.perf_counter() - run_start) * self.slowdown
        return time.perf_counter() - start

    @functools.cached_property
    def output_names(self) -> list[str]:
        """The partition's output names, in order."""
        return [s.name for s in self.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], float, float]:
        """Run once, then wait (slowdown-1) x compute; return outputs, compute_s, wait_s."""
        check_feeds(feeds, self.inputs, "stage")
        start = time.perf_counter()
        outs = self.session.run(self.output_names, dict(feeds))
        compute_s = time.perf_counter() - start
        wait_s = 0.0
        if self.slowdown > 1.0:
            target = start + self.slowdown * compute_s
            time.sleep(max(0.0, target - time.perf_counter()))
            wait_s = time.perf_counter() - start - compute_s
        self.last_busy_s = compute_s + wait_s
        return outs, compute_s, wait_s


@dataclass(frozen=True)
class ProfileOutcome:
    """Raw timings of one partition on one worker."""

    compute_times_s: list[float]  # measured ONNX Runtime run times
    times_s: list[float]  # the same scaled by the device's slowdown: what the device would take
    create_s: float
    outputs: dict[str, np.ndarray]


def profile_partition(model_bytes: bytes | memoryview, feeds: Mapping[str, np.ndarray], *,
                      providers: Sequence[str], threads: int, slowdown: float, warmup: int,
                      min_runs: int, max_runs: int, budget_s: float, rel_precision: float) -> ProfileOutcome:
    """Create the session (untimed), warm up, then time runs until the median is precise enough."""
    start = time.perf_counter()
    session = build_session(model_bytes, providers, threads)
    create_s = time.perf_counter() - start
    wanted = {i.name for i in session.get_inputs()}
    if set(feeds) != wanted:
        raise ShapeError(f"profile feeds are {sorted(feeds)}, the partition takes {sorted(wanted)}",
                         "send one tensor per partition input")
    feeds = dict(feeds)
    try:
        outputs = session.run(None, feeds)
        times = measure(lambda: session.run(None, feeds), warmup=max(0, warmup - 1),
                        min_runs=max(1, min_runs), max_runs=max(1, max_runs, min_runs),
                        budget_s=budget_s, rel_precision=rel_precision)
    except Exception as e:  # ORT errors: wrong dtypes/shapes for this partition
        raise WorkerError(f"profile run failed: {first_line(e)}",
                          "send inputs that match the partition's input types and shapes") from None
    names = [o.name for o in session.get_outputs()]
    return ProfileOutcome(times, [t * slowdown for t in times], create_s,
                          dict(zip(names, outputs, strict=True)))
