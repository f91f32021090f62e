"""Quality metrics for ``splitinfer eval``: what quantised stages and compressed hops cost in accuracy.

Pure numpy: arrays in, frozen results out (no ONNX, no files, no scikit-learn). Modules:

- ``agreement``: :func:`compare_outputs` and :class:`AgreementAccumulator`: a candidate's outputs
  against a reference's (cosine, SNR, differences, top-1 / top-k agreement of classifier outputs).
- ``classification``: :func:`classification_report` and :class:`ClassificationAccumulator`:
  outputs against labels (accuracy, top-k, confusion matrix, precision, sensitivity, G-mean).

Each result has ``to_dict()`` (JSON-ready; +inf is ``"inf"``, -inf ``"-inf"``, NaN ``null``) and
``format_table()`` (plain text for the command line). Bad input raises
:class:`~splitinfer.errors.InputError` with one line naming the output, the array and the problem.

Typical use, streaming a data set::

    from splitinfer.quality import AgreementAccumulator, ClassificationAccumulator

    agree, report = AgreementAccumulator(top_k=(1, 5)), ClassificationAccumulator(top_k=(1, 5))
    for feeds, labels in batches:
        ref, cand = whole_model(feeds), split_plan(feeds)  # {"logits": array, ...}
        agree.add(ref, cand)
        report.add(labels, cand["logits"])
    print(agree.result().format_table())
    print(report.result().format_table())
"""

from splitinfer.quality.agreement import (
    Agreement,
    AgreementAccumulator,
    OutputAgreement,
    compare_outputs,
)
from splitinfer.quality.classification import (
    Classification,
    ClassificationAccumulator,
    classification_report,
)

__all__ = [
    "Agreement",
    "AgreementAccumulator",
    "Classification",
    "ClassificationAccumulator",
    "OutputAgreement",
    "classification_report",
    "compare_outputs",
]
