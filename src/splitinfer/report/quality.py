"""The report's Quality section: an eval file (``splitinfer eval ... -o eval.json``) read and checked,
and its tables: accuracy (reference and candidate), agreement per output, precision and sensitivity
per class. The confusion matrix figure is in :mod:`splitinfer.report.quality_figures`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import msgspec

from splitinfer.errors import InputError, read_file
from splitinfer.report.tables import Table

# What eval writes for a float: +inf and -inf as text, NaN as null (quality's json_float).
Number = float | Literal["inf", "-inf"] | None
_FIX = "give the file `splitinfer eval MODEL --data DATA -o eval.json` wrote"


class OutputDoc(msgspec.Struct):
    """One output's agreement with the reference."""

    name: str
    num_elements: int
    cosine: Number = None
    snr_db: Number = None
    max_abs_diff: Number = None
    mean_abs_diff: Number = None
    top1_agreement: Number = None
    top_k_agreement: dict[str, Number] = {}


class AgreementDoc(msgspec.Struct):
    top_k: list[int]
    outputs: list[OutputDoc]


class ClassificationDoc(msgspec.Struct):
    """A classifier's scores against the labels (rows of ``confusion``: true class; columns: predicted)."""

    num_samples: int
    num_classes: int
    accuracy: float
    confusion: list[list[int]]
    support: list[int]
    precision: list[Number]
    sensitivity: list[Number]
    class_names: list[str] | None = None
    top_k_accuracy: dict[str, Number] = {}
    undefined_precision: list[int] = []
    undefined_sensitivity: list[int] = []
    macro_precision: Number = None
    macro_sensitivity: Number = None
    balanced_accuracy: Number = None
    g_mean: Number = None

    def name_of(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None else str(c)


class EvalDoc(msgspec.Struct):
    """The eval file: what ran on what, and what it found (see ``splitinfer.runtime.evaluate``)."""

    num_samples: int
    data: str
    reference: str
    batch_size: int = 0
    num_padded: int = 0
    model: str = ""
    model_sha256: str = ""  # of the model's bytes (older eval files: not recorded)
    plan: str | None = None
    rank: int | None = None
    in_process: bool = False
    compress: str | None = None
    candidate: str | None = None
    classifier_output: str | None = None
    agreement: AgreementDoc | None = None
    classification: ClassificationDoc | None = None
    reference_classification: ClassificationDoc | None = None
    accuracy_drop: float | None = None
    reference_s: float = 0.0
    candidate_s: float = 0.0


def load_eval(source: str | Path | bytes) -> EvalDoc:
    """The eval file at ``source`` (a path, or its bytes), checked: an :class:`InputError` naming the
    file and what is wrong with it otherwise."""
    where = "the eval JSON" if isinstance(source, bytes) else f"eval file {source}"
    raw = source if isinstance(source, bytes) else read_file(source, "eval file", _FIX, InputError)
    try:
        doc = msgspec.json.decode(raw, type=EvalDoc)
    except msgspec.ValidationError as e:
        raise InputError(f"{where} is not an eval result: {e}", _FIX) from None
    except msgspec.DecodeError as e:
        raise InputError(f"{where} is not JSON ({e})", _FIX) from None
    for key in ("classification", "reference_classification"):
        cls = getattr(doc, key)
        if cls is not None:
            _check_classification(cls, f"{where}: {key}")
    return doc


def _check_classification(cls: ClassificationDoc, where: str) -> None:
    n = cls.num_classes
    sized = {"confusion": cls.confusion, "support": cls.support, "precision": cls.precision,
             "sensitivity": cls.sensitivity, **({"class_names": cls.class_names} if cls.class_names else {})}
    wrong = next((k for k, v in sized.items() if len(v) != n), None)
    if n < 1 or wrong is not None:
        raise InputError(f"{where} has {n} classes but {len(sized[wrong]) if wrong else 0} entries in "
                         f"{wrong or 'confusion'}", _FIX)
    if any(len(row) != n or min(row, default=0) < 0 for row in cls.confusion):
        raise InputError(f"{where} has a confusion matrix that is not {n} x {n} counts", _FIX)


# ---- tables -----------------------------------------------------------------------------------------
def _number(value: Number) -> Any:
    """A value for a table cell: inf as float inf, NaN (null) as empty."""
    if value is None:
        return ""
    return math.inf if value == "inf" else -math.inf if value == "-inf" else value


def summary_pairs(doc: EvalDoc, profiled_sha256: str = "") -> list[tuple[str, object]]:
    """What ran, on what: the Quality section's key-value table. ``profiled_sha256``: the report's
    model; an eval of another one (say, its int8 version) is said to be so."""
    padded = f", {doc.num_padded} padding dropped" if doc.num_padded else ""
    pairs: list[tuple[str, object]] = []
    if doc.model or doc.model_sha256:
        model = doc.model or "the model"
        if doc.model_sha256:
            model += f" (sha256 {doc.model_sha256[:12]})"
            if profiled_sha256 and doc.model_sha256 != profiled_sha256:
                model += f"; not the profiled model ({profiled_sha256[:12]})"
        pairs.append(("model", model))
    pairs += [("data", doc.data),
              ("samples", f"{doc.num_samples} (batch {doc.batch_size}{padded})"),
              ("reference", f"{doc.reference} ({doc.reference_s:.2f} s)")]
    if doc.candidate is not None:
        how = ", ".join(x for x in (f"plan {doc.plan} #{doc.rank or 1}" if doc.plan else "",
                                    "in process" if doc.in_process else "",
                                    f"hops compressed {doc.compress}" if doc.compress else "") if x)
        ran = f"{doc.candidate} ({doc.candidate_s:.2f} s)"
        pairs.append(("candidate", ran + (f"; {how}" if how else "")))
    if doc.accuracy_drop is not None:
        pairs.append(("accuracy drop", f"{doc.accuracy_drop * 100:+.2f} points (reference minus candidate)"))
    if doc.classifier_output is not None:
        pairs.append(("classifier output", doc.classifier_output))
    return pairs


def accuracy_table(doc: EvalDoc) -> Table | None:
    """One row per classifier scored against the labels: the reference, the candidate (or the model)."""
    rows_of = [("reference", doc.reference_classification),
               ("candidate" if doc.candidate is not None else "model", doc.classification)]
    scored = [(who, c) for who, c in rows_of if c is not None]
    if not scored:
        return None
    ks = sorted({int(k) for _, c in scored for k in c.top_k_accuracy if k != "1"})
    header = ["classifier", "num_samples", "accuracy", *(f"top{k}_accuracy" for k in ks), "balanced_accuracy",
              "macro_precision", "macro_sensitivity", "g_mean"]
    rows = [[who, c.num_samples, c.accuracy, *(_number(c.top_k_accuracy.get(str(k))) for k in ks),
             _number(c.balanced_accuracy), _number(c.macro_precision), _number(c.macro_sensitivity),
             _number(c.g_mean)] for who, c in scored]
    return header, rows


def agreement_table(doc: EvalDoc) -> Table | None:
    """One row per output: how close the candidate's is to the reference's."""
    if doc.agreement is None:
        return None
    ks = [k for k in doc.agreement.top_k if k != 1]
    header = ["output", "num_elements", "cosine", "snr_db", "max_abs_diff", "mean_abs_diff",
              "top1_agreement", *(f"top{k}_agreement" for k in ks)]
    rows = [[o.name, o.num_elements, _number(o.cosine), _number(o.snr_db), _number(o.max_abs_diff),
             _number(o.mean_abs_diff), _number(o.top1_agreement),
             *(_number(o.top_k_agreement.get(str(k))) for k in ks)] for o in doc.agreement.outputs]
    return header, rows


def class_table(doc: EvalDoc) -> Table | None:
    """One row per class: its support, precision and sensitivity (the reference's beside them when
    there is a candidate); an undefined value (never predicted, or absent) is empty."""
    cls, ref = doc.classification, doc.reference_classification
    if cls is None:
        return None
    header = ["class", "support", "precision", "sensitivity"]
    with_ref = ref is not None and ref.num_classes == cls.num_classes
    if with_ref:
        header += ["reference_precision", "reference_sensitivity"]
    rows = []
    for c in range(cls.num_classes):
        row = [cls.name_of(c), cls.support[c], _defined(cls, "precision", c), _defined(cls, "sensitivity", c)]
        if with_ref:
            assert ref is not None
            row += [_defined(ref, "precision", c), _defined(ref, "sensitivity", c)]
        rows.append(row)
    return header, rows


def _defined(cls: ClassificationDoc, metric: str, c: int) -> Any:
    undefined = cls.undefined_precision if metric == "precision" else cls.undefined_sensitivity
    return "" if c in undefined else _number(getattr(cls, metric)[c])
