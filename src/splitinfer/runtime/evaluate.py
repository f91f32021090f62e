"""Evaluate a split model on a data set: how closely it follows the whole model, and how well it classifies.

::

    data = load_dataset("digits.npz")                       # splitinfer.data
    stages = plan_stages("plan.json", "cluster.yaml", "model.onnx", profile="profile.json")
    result = evaluate(reference_runner("model.onnx"),
                      chain_runner(with_hop_compression(stages, "int8")), data)
    print(result.format_table())                            # or result.to_dict() for JSON

The *reference* is the whole model in ONNX Runtime; the *candidate* is what would be deployed: a plan's
stages run in this process (:func:`chain_runner`, each hop compressed and restored with the workers'
own code) or through real workers (:func:`session_runner` on a deployed :class:`Session`). Both see the
same batches; :mod:`splitinfer.quality` compares their outputs (agreement) and scores both against
the data's labels (classification). Without a candidate, the reference alone is scored: the accuracy
of the model itself on this data.

Batches: a model whose input has a fixed batch dimension (most split models: 1) gets batches of
exactly that size; the last, partial batch is padded with copies of its last sample, and every output
whose first dimension is the batch is cut back to the real samples before any metric sees it, so
padding never counts. A dynamic batch dimension takes ``batch_size`` samples at a time (default 32),
the last batch shorter. Requests go one batch at a time: this measures quality, not speed.

The classifier output, scored against the labels, is the first output (in the model's order) that is
2-D floats of N rows x C >= 2 classes: probabilities or logits (an argmax label output is compared
for agreement but not scored). Without labels, or without such an output, there is no classification.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitinfer.compression import Compressed, Compression, decompress, parse_compression
from splitinfer.data import Dataset
from splitinfer.errors import InputError, ModelError, ShapeError, first_line, read_file
from splitinfer.graph.inference import DEFAULT_PROVIDERS, create_inference_session
from splitinfer.quality import Agreement, AgreementAccumulator, Classification, ClassificationAccumulator
from splitinfer.runtime.coordinator.deploy import plan_stages  # noqa: F401  (evaluate() runs what it builds)
from splitinfer.runtime.coordinator.pipeline import StageSpec, hop_compression, part_bytes
from splitinfer.runtime.coordinator.session import Session
from splitinfer.types import TensorSpec
from splitinfer.units import check_number

DEFAULT_BATCH_SIZE = 32  # samples per request when the model's batch dimension is dynamic
Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]
_ORT_TYPES = {"float": "float32", "double": "float64"}  # ONNX Runtime's names numpy spells otherwise
_FLOATS = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Runner:
    """A model to evaluate: ``runner(feeds)`` gives its outputs by name; ``inputs`` and ``outputs``
    say what it takes and gives (a negative dimension is dynamic); ``name`` says what it is.
    ``model`` and ``model_sha256``: the file it was read from ("" for bytes) and the sha256 of the
    model's bytes, as ``load_model`` and a plan's provenance give it ("" when not known)."""

    run: Callable[[Feeds], Mapping[str, np.ndarray]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str = ""
    model: str = ""
    model_sha256: str = ""

    def __call__(self, feeds: Feeds) -> Mapping[str, np.ndarray]:
        return self.run(feeds)


def _spec(arg: Any) -> TensorSpec:
    """An ONNX Runtime NodeArg as a TensorSpec: symbolic or unknown dimensions become -1."""
    inner = arg.type.removeprefix("tensor(").removesuffix(")")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, _ORT_TYPES.get(inner, inner), shape)


def reference_runner(model: bytes | str | Path, *, providers: Sequence[str] = DEFAULT_PROVIDERS,
                     num_threads: int = 0) -> Runner:
    """The whole model (its bytes or its .onnx path) in one ONNX Runtime inference session."""
    label = "whole model" if isinstance(model, bytes | bytearray) else f"whole model {Path(model).name}"
    path = "" if isinstance(model, bytes | bytearray) else str(model)
    if not isinstance(model, bytes | bytearray):
        model = read_file(model, "model", "check the path of the .onnx file", ModelError)
    # Of the bytes as read, like load_model's: an eval file then names the very model a plan or profile does.
    sha256 = hashlib.sha256(model).hexdigest()
    session = create_inference_session(model, providers, num_threads)
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> Outputs:
        try:
            return dict(zip(names, session.run(names, dict(feeds)), strict=True))
        except Exception as e:  # ONNX Runtime raises its own untyped errors
            raise ModelError(f"the reference model fails in ONNX Runtime: {first_line(e)}",
                             "check the data against the model's input (splitinfer inspect MODEL)") from None

    inputs, outputs = tuple(map(_spec, session.get_inputs())), tuple(map(_spec, session.get_outputs()))
    return Runner(run, inputs, outputs, label, path, sha256)


def session_runner(session: Session) -> Runner:
    """A deployed pipeline: each call is one request through its workers (``session.run``)."""
    names = [s.name for s in session.outputs]

    def run(feeds: Feeds) -> Outputs:
        return dict(zip(names, session.run(None, feeds), strict=True))

    where = " -> ".join(s.device for s in session.stages)
    return Runner(run, session.inputs, session.outputs, f"workers {where}")


def _hop(compression: Compression, arr: np.ndarray) -> np.ndarray:
    # What a hop does to a tensor: the sender's compress, the receiver's decompress (as wire/codec).
    sent = compression.carry(arr)
    return decompress(sent) if isinstance(sent, Compressed) else sent


def chain_runner(stages: Sequence[StageSpec], *, providers: Sequence[str] = DEFAULT_PROVIDERS,
                 num_threads: int = 0) -> Runner:
    """The stages run one after the other in this process, no workers: fast, and the same numbers.

    Each hop into a stage goes through that stage's ``compression`` as the runtime applies it: the
    uplink into stage 0 always (the coordinator sends it), a hop between stages only when they are
    on different devices (the same device hands its outputs on uncompressed); the model's outputs
    come back raw. A compression skips the tensors it cannot carry (a lossy one and integers), as
    the workers do.
    """
    if not stages:
        raise InputError("stages is empty", "give the stages of a plan (plan_stages) or of a split")
    for k, stage in enumerate(stages[1:], 1):
        if {s.name for s in stages[k - 1].outputs} != {s.name for s in stage.inputs}:
            raise ShapeError(f"stage {k - 1}'s outputs are not stage {k}'s inputs",
                             "give the stages of one split model, in order")
    specs = [hop_compression(stages, k) for k in range(len(stages))]  # as the runtime decides
    compressions = [parse_compression(spec) if spec else None for spec in specs]
    sessions = [create_inference_session(part_bytes(s.model_bytes), providers, num_threads) for s in stages]

    def run(feeds: Feeds) -> Outputs:
        values: Mapping[str, np.ndarray] = feeds
        for k, (stage, session, compression) in enumerate(zip(stages, sessions, compressions, strict=True)):
            inputs = {s.name: values[s.name] for s in stage.inputs}
            if compression is not None:
                inputs = {name: _hop(compression, arr) for name, arr in inputs.items()}
            names = [s.name for s in stage.outputs]
            try:
                values = dict(zip(names, session.run(names, inputs), strict=True))
            except Exception as e:  # ONNX Runtime raises its own untyped errors
                raise ModelError(f"stage {k} fails in ONNX Runtime: {first_line(e)}",
                                 "check the data against the model's input") from None
        return dict(values)

    where = " -> ".join(s.device for s in stages)
    return Runner(run, stages[0].inputs, stages[-1].outputs, f"stages {where} (in process)")


def with_hop_compression(stages: Sequence[StageSpec], compression: str) -> list[StageSpec]:
    """``stages`` with every hop between them compressed as ``compression`` (e.g. ``int8``); the
    uplink into stage 0 keeps its own. A PlanError for a compression that does not exist."""
    parse_compression(compression)
    return [s if s.index == 0 else dataclasses.replace(s, compression=compression) for s in stages]


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` found. ``agreement``: the candidate against the reference (None without a
    candidate). ``classification``: the candidate's scores against the labels (the reference's without
    a candidate); ``reference_classification``: the reference's, when there is a candidate. Both are
    None without labels or a classifier output. Times are wall seconds, each model's summed.
    ``model``, ``model_sha256``: the reference's file and the sha256 of its bytes (its ``Runner``'s;
    "" when the reference does not say), so that a result can be traced to the exact model."""

    num_samples: int
    batch_size: int
    num_padded: int  # padding samples run in the last batch and dropped from every metric
    data: str
    reference: str
    candidate: str | None
    classifier_output: str | None
    agreement: Agreement | None
    classification: Classification | None
    reference_classification: Classification | None
    elapsed_s: float
    reference_s: float
    candidate_s: float
    model: str = ""
    model_sha256: str = ""

    @property
    def accuracy_drop(self) -> float | None:
        """Reference accuracy minus the candidate's (a fraction: 0.005 is half a point); None when
        either is missing."""
        if self.classification is None or self.reference_classification is None:
            return None
        return self.reference_classification.accuracy - self.classification.accuracy

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the quality results' own forms: +inf is ``"inf"``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("agreement", "classification", "reference_classification"):
            out[key] = None if out[key] is None else out[key].to_dict()
        out["accuracy_drop"] = self.accuracy_drop
        return out

    def format_table(self) -> str:
        """Plain text for the command line: the summary, then the agreement and classification tables."""
        what = f"{self.candidate} against {self.reference}" if self.candidate else self.reference
        parts = [f"eval of {what} on {self.data}: {self.num_samples} samples, batch {self.batch_size}"
                 + (f" ({self.num_padded} padding dropped)" if self.num_padded else "")
                 + f", {self.elapsed_s:.2f} s"]
        if self.accuracy_drop is not None:
            assert self.classification is not None and self.reference_classification is not None
            parts.append(f"accuracy: reference {self.reference_classification.accuracy:.4f}, candidate "
                         f"{self.classification.accuracy:.4f} (drop {self.accuracy_drop * 100:+.2f} points)")
        if self.agreement is not None:
            parts += ["", "agreement with the reference:", self.agreement.format_table()]
        if self.classification is not None:
            whose = "candidate" if self.candidate else "model"
            parts += ["", f"classification by the {whose} ({self.classifier_output!r}):",
                      self.classification.format_table()]
        return "\n".join(parts)


def _input_spec(runners: Sequence[Any], data: Dataset) -> TensorSpec:
    """The one model input the data feeds, checked against the data (every runner that says its inputs)."""
    said = [(r, tuple(r.inputs)) for r in runners if getattr(r, "inputs", None) is not None]
    if not said:
        raise InputError("neither reference nor candidate says what input it takes",
                         "make them with reference_runner, session_runner or chain_runner")
    for runner, specs in said:
        if len(specs) != 1:
            raise InputError(f"{getattr(runner, 'name', '') or 'the model'} has {len(specs)} inputs "
                             f"({', '.join(s.name for s in specs)}); a data set feeds one",
                             "evaluate a model with a single input")
    names = {specs[0].name for _, specs in said}
    if len(names) > 1:
        raise InputError(f"the reference and the candidate take different inputs "
                         f"({', '.join(sorted(names))})", "compare a split of the same model")
    for _, specs in said:
        data.check_fits(specs[0])
    return said[-1][1][0]  # the candidate's, when it says: its shapes are the concrete ones


def _batching(batch_size: int | None, runners: Sequence[Any], data: Dataset) -> tuple[int, bool]:
    """(samples per batch, whether a short last batch is padded): a fixed batch dimension decides."""
    fixed = {int(r.inputs[0].shape[0]) for r in runners
             if getattr(r, "inputs", None) and r.inputs[0].shape and r.inputs[0].shape[0] > 0}
    if len(fixed) > 1:
        sizes = " and ".join(map(str, sorted(fixed)))
        raise InputError(f"the reference and the candidate take batches of {sizes}",
                         "split the model with the reference's batch size")
    if batch_size is not None:
        check_number(batch_size, "batch_size", low=1, whole=True, error=InputError)
        if fixed and batch_size not in fixed:
            raise InputError(f"batch_size {batch_size}, but the model takes batches of exactly {fixed.pop()}",
                             "leave batch_size out: a fixed batch dimension sets it")
        return int(batch_size), bool(fixed)
    if fixed:
        return fixed.pop(), True
    return min(DEFAULT_BATCH_SIZE, len(data)), False


def _classifier(outputs: Iterable[tuple[str, str, tuple[int, ...]]]) -> tuple[str, int] | None:
    """(name, classes) of the first 2-D float output with at least 2 classes."""
    return next(((name, shape[1]) for name, dtype, shape in outputs
                 if dtype in _FLOATS and len(shape) == 2 and shape[1] >= 2), None)


def _check_labels(data: Dataset, output: str, num_classes: int) -> None:
    assert data.y is not None
    if int(data.y.max()) >= num_classes:
        raise InputError(f"data {data.source} has label {int(data.y.max())}, but the model's output "
                         f"{output!r} has {num_classes} classes (0 to {num_classes - 1})",
                         "give the labels in the model's class order, from 0")
    if data.class_names is not None and len(data.class_names) != num_classes:
        raise InputError(f"data {data.source} names {len(data.class_names)} classes, but the model's output "
                         f"{output!r} has {num_classes}", "give one class name per class of the model")


def _check_outputs(reference: Sequence[TensorSpec] | None, candidate: Sequence[TensorSpec] | None) -> None:
    if reference is None or candidate is None:
        return
    ref, cand = [s.name for s in reference], [s.name for s in candidate]
    if ref != cand:
        raise InputError(f"the candidate's outputs ({', '.join(cand)}) are not the reference's "
                         f"({', '.join(ref)})", "compare a split of the same model")


def _trim(outputs: Mapping[str, Any], real: int, size: int) -> Outputs:
    arrays = {name: np.asarray(v) for name, v in outputs.items()}
    if real == size:
        return arrays
    return {name: a[:real] if a.ndim and a.shape[0] == size else a for name, a in arrays.items()}


@dataclass(frozen=True)
class _Setup:
    spec: TensorSpec  # the model input the data feeds
    size: int  # samples per batch
    pad: bool  # a short last batch is padded to ``size``
    scored: bool  # scored against labels
    classifier: tuple[str, int] | None  # (output, classes) when the specs tell


def _setup(reference: Any, candidate: Any, data: Dataset, batch_size: int | None, labels: bool) -> _Setup:
    runners = [r for r in (reference, candidate) if r is not None]
    spec = _input_spec(runners, data)
    size, pad = _batching(batch_size, runners, data)
    evaluated = getattr(runners[-1], "outputs", None)
    _check_outputs(getattr(reference, "outputs", None), evaluated if candidate is not None else None)
    scored = labels and data.y is not None
    found = _classifier((s.name, s.dtype, s.shape) for s in evaluated) if evaluated is not None else None
    if scored and found is not None:
        _check_labels(data, *found)
    return _Setup(spec, size, pad, scored, found)


def check_data(reference: Any, candidate: Any, data: Dataset, *, batch_size: int | None = None,
               labels: bool = True) -> None:
    """What :func:`evaluate` checks before it runs anything, alone: an InputError unless ``data`` fits.

    ``reference`` and ``candidate`` need only their ``inputs`` and ``outputs`` (a loaded
    :class:`~splitinfer.graph.Model` will do): check a plan's data before deploying its workers.
    """
    _setup(reference, candidate, data, batch_size, labels)


def evaluate(reference: Callable[[Feeds], Mapping[str, np.ndarray]],
             candidate: Callable[[Feeds], Mapping[str, np.ndarray]] | None, data: Dataset, *,
             batch_size: int | None = None, top_k: Iterable[int] = (1, 5), labels: bool = True,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Run ``data`` through ``reference`` and ``candidate`` (None: the reference alone) and compare.

    Each is a callable from feeds to outputs by name; made by :func:`reference_runner`,
    :func:`chain_runner` or :func:`session_runner`, it also says its input and outputs, which the data
    is checked against before anything runs (InputError, as :func:`check_data`). ``batch_size``: only
    for a dynamic batch dimension (see the module's doc). ``top_k``: the k of the top-k agreement and
    accuracy. ``labels``: score against ``data.y`` (when it has labels). ``progress(done, total)`` is
    called after every batch, in samples.
    """
    runners = [r for r in (reference, candidate) if r is not None]
    agree = AgreementAccumulator(top_k=top_k) if candidate is not None else None
    setup = _setup(reference, candidate, data, batch_size, labels)
    size, found = setup.size, setup.classifier
    accumulators: list[ClassificationAccumulator] = []
    total, done, num_padded = len(data), 0, 0
    times = [0.0, 0.0]
    start = time.perf_counter()
    for first in range(0, total, size):
        x = data.x[first:first + size]
        real = len(x)
        if setup.pad and real < size:
            # Copies of the last sample: a valid input; _trim drops their outputs before any metric.
            x = np.concatenate([x, np.repeat(x[-1:], size - real, axis=0)])
            num_padded = size - real
        feeds = {setup.spec.name: np.ascontiguousarray(x)}
        outs = []
        for k, runner in enumerate(runners):
            t = time.perf_counter()
            outs.append(_trim(runner(feeds), real, size))
            times[k] += time.perf_counter() - t
        if agree is not None:
            agree.add(outs[0], outs[1])
        if setup.scored and first == 0:
            # A runner that does not say its outputs: the first batch shows which is the classifier.
            found = found or _classifier((n, a.dtype.name, a.shape) for n, a in outs[-1].items())
            if found is not None:
                _check_labels(data, *found)
                accumulators = [ClassificationAccumulator(num_classes=found[1], class_names=data.class_names,
                                                          top_k=top_k) for _ in outs]
        for acc, out in zip(accumulators, outs, strict=False):
            acc.add(data.y[first:first + real], out[found[0]])  # type: ignore[index]
        done += real
        if progress is not None:
            progress(done, total)
    results = [acc.result() for acc in accumulators]
    return Evaluation(
        num_samples=done, batch_size=size, num_padded=num_padded, data=data.source or "the data",
        reference=getattr(reference, "name", "") or "reference",
        candidate=None if candidate is None else getattr(candidate, "name", "") or "candidate",
        classifier_output=found[0] if results and found is not None else None,
        agreement=agree.result() if agree is not None else None,
        classification=results[-1] if results else None,
        reference_classification=results[0] if len(results) == 2 else None,
        elapsed_s=time.perf_counter() - start, reference_s=times[0],
        candidate_s=times[1] if candidate is not None else 0.0,
        model=getattr(reference, "model", ""), model_sha256=getattr(reference, "model_sha256", ""),
    )
