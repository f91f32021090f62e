"""A stage that makes early exits: its partition runs as parts, and after a part that makes an exit the
exit's rule decides whether the request stops there.

The coordinator splits a stage's partition right after each block that makes an exit inside it
(``Deploy.num_parts`` blobs, run in turn on the tensors the previous part hands on), so a request that
leaves at an exit computes nothing past it, as the planner predicts (``plan/exits.py``). The rules are
those of :mod:`splitinfer.graph.exits`: the top softmax probability at least a threshold, the entropy at
most one (:mod:`splitinfer.quality.confidence`), or a small ONNX graph from the exit's tensor to one
bool per sample. A request stops only when every sample of it is confident (a batch leaves together).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from splitinfer.errors import ErrorCode, ShapeError, TransportError, WorkerError
from splitinfer.graph.inference import create_inference_session
from splitinfer.profile.timing import hold_busy
from splitinfer.quality.confidence import confidence
from splitinfer.runtime.device._execution import check_signature, zeros_for
from splitinfer.runtime.device._state import StatefulRunner
from splitinfer.runtime.wire.messages import Deploy, ExitRule, Infer
from splitinfer.types import TensorSpec, check_feeds

THRESHOLD_RULES = ("softmax_max", "entropy")


@dataclass
class ExitCheck:
    """One exit's rule, ready to run (``session``: the ONNX rule's graph)."""

    rule: ExitRule
    session: ort.InferenceSession | None = None

    def __post_init__(self) -> None:
        self._input = self.session.get_inputs()[0].name if self.session is not None else ""

    def holds(self, value: np.ndarray) -> bool:
        """Whether every sample of ``value`` (the exit's tensor) may stop here."""
        if self.session is not None:
            (flags,) = self.session.run(None, {self._input: value})
            flags = np.asarray(flags)
            return flags.dtype == np.bool_ and flags.size == value.shape[0] and bool(flags.all())
        try:
            scores = confidence(self.rule.rule, value)
        except ShapeError:
            return False  # not [batch, classes]: never confident (checked when deployed where it can be)
        with np.errstate(invalid="ignore"):
            passed = scores >= self.rule.threshold if self.rule.rule == "softmax_max" else \
                scores <= self.rule.threshold
        return bool(passed.all())  # NaN (a non-finite logit) never passes


@dataclass
class ExitingRunner:
    """A stage's partition as parts with exits between them; the interface of :class:`StageRunner`."""

    parts: list[ort.InferenceSession]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    checks: dict[int, list[ExitCheck]]  # part -> the exits evaluated after it, in depth order
    slowdown: float = 1.0
    last_busy_s: float = float("inf")
    _names: list[list[str]] = field(default_factory=list)  # each part's outputs
    _takes: list[list[str]] = field(default_factory=list)  # each part's inputs

    def __post_init__(self) -> None:  # read once: these run for every request
        self._names = [[o.name for o in p.get_outputs()] for p in self.parts]
        self._takes = [[i.name for i in p.get_inputs()] for p in self.parts]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def warm_up(self, num_runs: int) -> float:
        """Run every part on zeros (each on what the one before made), ``num_runs`` times."""
        start = time.perf_counter()
        for _ in range(num_runs):
            run_start = time.perf_counter()
            self._chain(zeros_for(self.inputs), None)
            self.last_busy_s = (time.perf_counter() - run_start) * self.slowdown
        return time.perf_counter() - start

    def run(self, feeds: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], float, float]:
        """Every part, no exit taken (as :meth:`StageRunner.run`)."""
        outs, compute_s, wait_s, _ = self.run_request(feeds, full_depth=True)
        return outs, compute_s, wait_s

    def run_request(self, feeds: Mapping[str, np.ndarray], full_depth: bool = False
                    ) -> tuple[list[np.ndarray], float, float, str]:
        """Run the parts in turn; after one that makes an exit whose rule holds (unless ``full_depth``),
        stop: the outputs are then that exit's tensor alone and its name is returned ('' otherwise)."""
        check_feeds(feeds, self.inputs, "stage")
        start = time.perf_counter()
        values, exit_name = self._chain(dict(feeds), None if full_depth else self.checks)
        compute_s = time.perf_counter() - start
        wait_s = hold_busy(start, compute_s, self.slowdown)
        self.last_busy_s = compute_s + wait_s
        if exit_name:
            return [values[exit_name]], compute_s, wait_s, exit_name
        return [values[n] for n in self.output_names], compute_s, wait_s, ""

    def _chain(self, values: dict[str, np.ndarray], checks: dict[int, list[ExitCheck]] | None
               ) -> tuple[dict[str, np.ndarray], str]:
        for k, (part, takes, names) in enumerate(zip(self.parts, self._takes, self._names, strict=True)):
            values.update(zip(names, part.run(names, {n: values[n] for n in takes}), strict=True))
            for check in (checks or {}).get(k, []):
                if check.holds(values[check.rule.output]):
                    return values, check.rule.output
        return values, ""


def run_request(runner: Any, feeds: Mapping[str, np.ndarray], header: Infer
                ) -> tuple[list[np.ndarray], float, float, str]:
    """One request through a stage's runner: outputs, compute, wait and the exit taken ('' for none).
    A stage keeping state (device/_state.py) runs the request as a step of its sequence."""
    if isinstance(runner, ExitingRunner):
        return runner.run_request(feeds, header.full_depth)
    if isinstance(runner, StatefulRunner):
        outs, compute_s, wait_s = runner.run(feeds, header.sequence, header.sequence_start)
    else:
        outs, compute_s, wait_s = runner.run(feeds)
    return outs, compute_s, wait_s, ""


def check_rules(rules: Sequence[ExitRule], num_parts: int, num_blobs: int, outputs: set[str]) -> str:
    """The first problem with a deploy's exits ('' when none): what a worker refuses to install."""
    seen = set()
    for r in rules:
        if r.output in seen:
            return f"exit {r.output!r} is listed twice"
        seen.add(r.output)
        if r.rule not in (*THRESHOLD_RULES, "onnx"):
            return f"exit {r.output!r} has rule {r.rule!r}"
        if not 0 <= r.part < num_parts:
            return f"exit {r.output!r} follows part {r.part} of {num_parts}"
        if r.part == num_parts - 1 and r.output not in outputs:
            return f"exit {r.output!r} is not an output of the stage"
        if r.rule == "onnx" and not num_parts <= r.blob < num_blobs:
            return f"exit {r.output!r} names blob {r.blob}, not a rule graph"
        bad = not np.isfinite(r.threshold) or (r.rule == "softmax_max" and not 0 < r.threshold <= 1) \
            or (r.rule == "entropy" and r.threshold < 0)
        if r.rule in THRESHOLD_RULES and bad:
            return f"exit {r.output!r} has threshold {r.threshold}"
    return ""


def exiting_runner(header: Deploy, sessions: list[Any], blobs: list[bytes], inputs: tuple[TensorSpec, ...],
                   outputs: tuple[TensorSpec, ...], providers: Sequence[str],
                   num_threads: int) -> ExitingRunner:
    """A stage whose partition comes in parts with early exits between them (device/_exits.py)."""
    problem = check_rules(header.exits, header.num_parts, len(blobs), {s.name for s in outputs})
    made = [{o.name for o in s.get_outputs()} for s in sessions]
    problem = problem or next((f"exit {r.output!r} is not an output of part {r.part}" for r in header.exits
                               if r.output not in made[r.part]), "")
    if problem:
        raise TransportError(f"deploy exits: {problem}", "deploy the stages from a plan of the model's exits",
                             code=ErrorCode.MALFORMED)
    checks: dict[int, list[ExitCheck]] = {}
    for r in header.exits:
        rule = None
        if r.rule == "onnx":
            rule = create_inference_session(blobs[r.blob], providers, num_threads)
            ins, outs = rule.get_inputs(), rule.get_outputs()
            if len(ins) != 1 or len(outs) != 1 or outs[0].type != "tensor(bool)":
                raise WorkerError(f"the rule graph of exit {r.output!r} does not take one tensor and give "
                                  "one bool tensor", "give a graph with one input and one bool output")
        checks.setdefault(r.part, []).append(ExitCheck(r, rule))
    check_signature(_Chain(sessions), inputs, outputs)
    return ExitingRunner(sessions, inputs, outputs, checks, header.slowdown)


@dataclass
class _Chain:
    """Parts run in turn, seen from outside: the first one's inputs, the last one's outputs."""

    parts: list[Any]

    def get_inputs(self) -> list[Any]:
        return self.parts[0].get_inputs()

    def get_outputs(self) -> list[Any]:
        return self.parts[-1].get_outputs()
