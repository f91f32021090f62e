"""How closely a candidate's outputs follow a reference's: the fp32 whole model against a split
plan with quantised stages or compressed hops.

Per output, over every batch added:

- ``cosine``: the cosine similarity of the whole output, every batch's values concatenated into
  one vector: ``sum(r*c) / (sqrt(sum(r^2)) * sqrt(sum(c^2)))``. It is 1.0 when the candidate equals
  the reference (all zeros included) and 0.0 when only one of them is all zeros.
- ``snr_db``: ``10 * log10(sum(r^2) / sum((r - c)^2))`` over the same concatenation: +inf when the
  candidate equals the reference, -inf when the reference is all zeros and the candidate is not.
- ``max_abs_diff``, ``mean_abs_diff``: of ``|r - c|`` over every element.
- For classifier-like outputs (2-D, rows x classes, at least 2 classes), per row: ``top1_agreement``,
  the fraction of rows whose argmax agrees; ``top_k_agreement[k]``, the fraction of rows where the
  reference's top class is among the candidate's k best (a k above the class count is clamped to
  it, so it is 1.0). Classes are ordered by descending score, ties by ascending index (the argmax).

Streaming: SNR and cosine come from float64 sums accumulated over the batches, never from
per-batch values averaged, so a data set streamed in any batches gives the numbers one batch of
all of it would (up to float rounding); the counts and the maximum are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from splitinfer.errors import InputError
from splitinfer.quality._checks import check_top_k, numeric_array, rank_of, top_k_hits
from splitinfer.quality._format import fixed, json_float, short, table


@dataclass(frozen=True)
class OutputAgreement:
    """The agreement of one output (see the module's doc for each number's definition)."""

    name: str
    num_elements: int
    cosine: float
    snr_db: float
    max_abs_diff: float
    mean_abs_diff: float
    num_rows: int | None = None  # classifier-like outputs only, like the three below
    num_classes: int | None = None
    top1_agreement: float | None = None
    top_k_agreement: Mapping[int, float] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.num_classes is not None

    def to_dict(self) -> dict:
        """JSON-ready: floats, with +inf as ``"inf"``, -inf as ``"-inf"``, NaN as ``null``."""
        return {
            "name": self.name,
            "num_elements": self.num_elements,
            "cosine": json_float(self.cosine),
            "snr_db": json_float(self.snr_db),
            "max_abs_diff": json_float(self.max_abs_diff),
            "mean_abs_diff": json_float(self.mean_abs_diff),
            "num_rows": self.num_rows,
            "num_classes": self.num_classes,
            "top1_agreement": None if self.top1_agreement is None else json_float(self.top1_agreement),
            # JSON keys are strings.
            "top_k_agreement": {str(k): json_float(v) for k, v in self.top_k_agreement.items()},
        }


@dataclass(frozen=True)
class Agreement:
    """Every output's agreement, in the reference's output order; ``agreement["logits"]`` is one."""

    outputs: Mapping[str, OutputAgreement]
    top_k: tuple[int, ...]

    def __getitem__(self, name: str) -> OutputAgreement:
        try:
            return self.outputs[name]
        except KeyError:
            raise InputError(f"no output {name!r} was compared",
                             f"use one of {', '.join(self.outputs)}") from None

    def to_dict(self) -> dict:
        """JSON-ready (see :meth:`OutputAgreement.to_dict` for inf and NaN)."""
        return {"top_k": list(self.top_k), "outputs": [o.to_dict() for o in self.outputs.values()]}

    def format_table(self) -> str:
        """One row per output, for the command line."""
        ks = [k for k in self.top_k if k != 1]
        header = ["output", "elements", "cosine", "SNR dB", "max |diff|", "mean |diff|", "top-1",
                  *(f"top-{k}" for k in ks)]
        rows = []
        for o in self.outputs.values():
            rows.append([o.name, str(o.num_elements), fixed(o.cosine, 6), fixed(o.snr_db, 2),
                         short(o.max_abs_diff), short(o.mean_abs_diff), fixed(o.top1_agreement),
                         *(fixed(o.top_k_agreement.get(k)) for k in ks)])
        return table(header, rows)


class _OutputSums:
    """What one output's metrics are made of, summed over the batches added."""

    def __init__(self, name: str, shape: tuple[int, ...], top_k: tuple[int, ...]) -> None:
        self.name = name
        self.trailing = shape[1:]  # every batch must agree on all but the first dimension
        self.ndim = len(shape)
        self.classifier = len(shape) == 2 and shape[1] >= 2
        self.num_elements = 0
        self.ref_sq = self.cand_sq = self.dot = self.err_sq = self.abs_err = self.max_abs = 0.0
        self.num_rows = 0
        self.top1 = 0
        self.top_k_hits = dict.fromkeys(top_k, 0)

    def check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != self.ndim or shape[1:] != self.trailing:
            raise InputError(f"output {self.name!r} has shape {shape} in this batch, but an earlier "
                             f"batch had {self.ndim} dimension(s) ending in {self.trailing}",
                             "batches may differ only in their first dimension")

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        self.check(ref.shape)
        err = ref - cand
        abs_err = np.abs(err)
        self.num_elements += ref.size
        self.ref_sq += float(np.sum(ref * ref))
        self.cand_sq += float(np.sum(cand * cand))
        self.dot += float(np.sum(ref * cand))
        # From the difference itself, not ref_sq - 2 dot + cand_sq: that cancels to noise exactly
        # when the candidate is good, which is the case SNR is for.
        self.err_sq += float(np.sum(err * err))
        self.abs_err += float(np.sum(abs_err))
        self.max_abs = max(self.max_abs, float(abs_err.max()))
        if self.classifier:
            ranks = rank_of(cand, np.argmax(ref, axis=1))
            self.num_rows += ref.shape[0]
            self.top1 += int(np.count_nonzero(ranks == 0))
            for k, hits in top_k_hits(ranks, tuple(self.top_k_hits)).items():
                self.top_k_hits[k] += hits

    def result(self) -> OutputAgreement:
        if self.err_sq == 0.0:
            cosine, snr_db = 1.0, math.inf
        else:
            norms = math.sqrt(self.ref_sq) * math.sqrt(self.cand_sq)
            # Rounding can put the quotient a hair outside [-1, 1].
            cosine = 0.0 if norms == 0.0 else min(1.0, max(-1.0, self.dot / norms))
            snr_db = -math.inf if self.ref_sq == 0.0 else 10.0 * math.log10(self.ref_sq / self.err_sq)
        extra: dict = {}
        if self.classifier:
            rows = self.num_rows
            extra = {"num_rows": rows, "num_classes": self.trailing[0], "top1_agreement": self.top1 / rows,
                     "top_k_agreement": {k: hits / rows for k, hits in self.top_k_hits.items()}}
        return OutputAgreement(self.name, self.num_elements, cosine, snr_db, self.max_abs,
                               self.abs_err / self.num_elements, **extra)


class AgreementAccumulator:
    """Agreement over a data set streamed in batches: :meth:`add` each batch's reference and
    candidate outputs, then :meth:`result`. Every batch must have the first batch's output names
    and, per output, the same shape but for the first (batch) dimension."""

    def __init__(self, *, top_k: Iterable[int] = (1, 5)) -> None:
        self.top_k = check_top_k(top_k)
        self._sums: dict[str, _OutputSums] = {}
        self.num_batches = 0

    def add(self, reference: Mapping[str, object], candidate: Mapping[str, object]) -> None:
        """One batch: output name -> array, the same names on both sides."""
        ref_names = _names(reference, "reference")
        cand_names = _names(candidate, "candidate")
        if set(ref_names) != set(cand_names):
            raise InputError(f"the outputs differ: {_difference(ref_names, cand_names)}",
                             "compare the same outputs on both sides")
        if self._sums and set(ref_names) != set(self._sums):
            raise InputError(f"this batch's outputs differ from the first batch's: "
                             f"{_difference(list(self._sums), ref_names, 'the first batch', 'this batch')}",
                             "give every batch the same outputs")
        # Check every output of the batch before summing any: a bad batch leaves no half-count.
        arrays = {}
        for name in ref_names:
            ref = numeric_array(reference[name], f"reference output {name!r}")
            cand = numeric_array(candidate[name], f"candidate output {name!r}")
            if ref.shape != cand.shape:
                raise InputError(f"output {name!r} has shape {ref.shape} in the reference but "
                                 f"{cand.shape} in the candidate", "compare outputs of the same shape")
            if name in self._sums:
                self._sums[name].check(ref.shape)
            arrays[name] = ref, cand
        for name, (ref, cand) in arrays.items():
            if name not in self._sums:
                self._sums[name] = _OutputSums(name, ref.shape, self.top_k)
            self._sums[name].add(ref, cand)
        self.num_batches += 1

    def result(self) -> Agreement:
        """The agreement of everything added so far."""
        if not self._sums:
            raise InputError("no batch was added", "add at least one batch of outputs first")
        return Agreement({name: sums.result() for name, sums in self._sums.items()}, self.top_k)


def compare_outputs(reference: Mapping[str, object], candidate: Mapping[str, object], *,
                    top_k: Iterable[int] = (1, 5)) -> Agreement:
    """The agreement of one batch of outputs (name -> array); see the module's doc for the metrics."""
    acc = AgreementAccumulator(top_k=top_k)
    acc.add(reference, candidate)
    return acc.result()


def _names(outputs: object, side: str) -> list[str]:
    if not isinstance(outputs, Mapping):
        raise InputError(f"the {side} is a {type(outputs).__name__}, not a mapping of output names "
                         f"to arrays", "pass a dict like {'logits': array}")
    if not outputs:
        raise InputError(f"the {side} has no outputs", "pass at least one output")
    return list(outputs)


def _difference(a: list[str], b: list[str], a_name: str = "the reference",
                b_name: str = "the candidate") -> str:
    only_a = [n for n in a if n not in set(b)]
    only_b = [n for n in b if n not in set(a)]
    parts = [f"only in {side}: {', '.join(map(repr, names))}"
             for side, names in ((a_name, only_a), (b_name, only_b)) if names]
    return "; ".join(parts)
