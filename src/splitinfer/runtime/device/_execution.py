"""Running partitions in ONNX Runtime inside a worker: check, warm up, run with the emulated slowdown.

Inference sessions come from the graph layer's one factory
(:func:`~splitinfer.graph.inference.create_inference_session`); timing a partition is the
profile layer's :func:`~splitinfer.profile.timing.time_partition`. Model bytes are only
ever parsed by ONNX Runtime; nothing in them is executed as Python.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from splitinfer.errors import ModelError, ShapeError, first_line
from splitinfer.profile.timing import hold_busy
from splitinfer.types import TensorSpec, check_feeds

_ORT_TYPES = {"float": "float32", "double": "float64"}
log = logging.getLogger("splitinfer.worker")


def numpy_name(ort_type: str) -> str:
    """'tensor(float)' -> 'float32', 'tensor(int64)' -> 'int64'."""
    inner = ort_type.removeprefix("tensor(").removesuffix(")")
    return _ORT_TYPES.get(inner, inner)


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
    """Zero tensors for the specs (a varying dimension: the size seen at load where the spec has it,
    else 1): warm-up feeds."""
    return {s.name: np.zeros(s.seen if s.seen is not None else tuple(d if d >= 0 else 1 for d in s.shape),
                             dtype=s.dtype) for s in specs}


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
            try:
                self.session.run(None, feeds)
            except Exception:  # ORT's own error types
                # Zeros of a made-up size need not be an input the partition takes where sizes vary
                # with the values (NonZero's indices, NMS's selection): the first request warms it.
                if any(s.varies for s in self.inputs):
                    break
                raise
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
        try:
            outs = self.session.run(self.output_names, dict(feeds))
        except InvalidArgument as e:  # ORT's word for inputs the partition does not take (dims, types)
            raise ShapeError(f"the stage's partition rejects its inputs: {first_line(e)}",
                             "feed tensors of the shapes and dtypes the model takes") from None
        compute_s = time.perf_counter() - start
        wait_s = hold_busy(start, compute_s, self.slowdown)
        self.last_busy_s = compute_s + wait_s
        return outs, compute_s, wait_s


def start_runtime(providers: Sequence[str], num_threads: int) -> None:
    """Start ONNX Runtime in this process before any deploy: its first session creates the runtime's
    environment (about 6 MB resident on this project's machine, kept for the process's life), so a
    deploy then grows the worker by what its stage holds, which is what a plan predicts (profiled
    blocks are timed in a worker whose runtime has started). A provider that cannot start here is
    said by the deploy that asks for it, not at start."""
    from splitinfer.graph.inference import create_inference_session
    from splitinfer.profile.device import TRIVIAL_INPUT, trivial_partition

    try:
        session = create_inference_session(trivial_partition(), providers, num_threads)
        session.run(None, {TRIVIAL_INPUT: np.zeros(1, np.float32)})
    except Exception as e:  # the deploy that needs the provider reports it
        log.debug("could not start ONNX Runtime ahead of the first deploy: %s", first_line(e))
