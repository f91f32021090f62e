"""Streaming in any batches gives what one batch of everything gives, and the top-k ranking agrees
with an independent sort, on random data full of ties (small integer scores)."""

from __future__ import annotations

import itertools
import math

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from splitinfer.quality import (
    AgreementAccumulator,
    ClassificationAccumulator,
    classification_report,
    compare_outputs,
)

EXAMPLES = 150
TOP_K = (1, 2, 3, 7)


@st.composite
def splits(draw, n: int) -> list[int]:
    """Cut points 0 < ... < n: batches of any sizes, each non-empty."""
    cuts = draw(st.sets(st.integers(1, max(1, n - 1)), max_size=min(5, n - 1))) if n > 1 else set()
    return [0, *sorted(cuts), n]


@st.composite
def output_pairs(draw):
    rows = draw(st.integers(1, 24))
    shape = (rows, *draw(st.sampled_from([(), (1,), (2,), (5,), (3, 2)])))
    # Small integers: many exact ties, exact candidates and all-zero outputs.
    values = st.integers(-3, 3).map(float)
    ref = draw(hnp.arrays(np.float64, shape, elements=values))
    cand = draw(st.one_of(st.just(ref.copy()), hnp.arrays(np.float64, shape, elements=values),
                          hnp.arrays(np.float32, shape, elements=st.floats(-4, 4, width=32))))
    return ref, cand, draw(splits(rows))


def _same_agreement(a, b):
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        for key in ("num_elements", "num_rows", "num_classes", "top1_agreement", "top_k_agreement",
                    "max_abs_diff"):
            assert x[key] == y[key], key
        for key in ("cosine", "snr_db", "mean_abs_diff"):
            if isinstance(x[key], str):  # "inf" / "-inf"
                assert x[key] == y[key], key
            else:
                assert y[key] == pytest.approx(x[key], rel=1e-9, abs=1e-12), key


@settings(max_examples=EXAMPLES)
@given(output_pairs())
def test_agreement_streamed_equals_one_batch(case):
    ref, cand, cuts = case
    whole = compare_outputs({"out": ref, "twice": 2 * ref}, {"out": cand, "twice": 2 * cand}, top_k=TOP_K)
    acc = AgreementAccumulator(top_k=TOP_K)
    for a, b in itertools.pairwise(cuts):
        acc.add({"out": ref[a:b], "twice": 2 * ref[a:b]}, {"twice": 2 * cand[a:b], "out": cand[a:b]})
    assert acc.num_batches == len(cuts) - 1
    streamed = acc.result()
    _same_agreement({o["name"]: o for o in whole.to_dict()["outputs"]},
                    {o["name"]: o for o in streamed.to_dict()["outputs"]})
    out = whole["out"]
    assert -1.0 <= out.cosine <= 1.0
    if np.array_equal(ref, cand):
        assert out.snr_db == math.inf and out.cosine == 1.0 and out.mean_abs_diff == 0.0
    elif not ref.any():
        assert out.snr_db == -math.inf
    else:
        r, c = ref.ravel(), cand.astype(np.float64).ravel()
        assert out.snr_db == pytest.approx(10 * math.log10(r @ r / ((r - c) @ (r - c))), rel=1e-9)


@settings(max_examples=EXAMPLES)
@given(output_pairs())
def test_agreement_top_k_equals_a_stable_sort(case):
    ref, cand, _ = case
    result = compare_outputs({"out": ref}, {"out": cand}, top_k=TOP_K)["out"]
    if ref.ndim != 2 or ref.shape[1] < 2:
        assert not result.is_classifier and result.top1_agreement is None and result.top_k_agreement == {}
        return
    target = ref.argmax(1)[:, None]
    order = np.argsort(-cand.astype(np.float64), axis=1, kind="stable")
    assert result.top1_agreement == np.mean(cand.argmax(1) == target[:, 0])
    for k in TOP_K:
        assert result.top_k_agreement[k] == np.mean((order[:, :k] == target).any(axis=1))


@st.composite
def labelled(draw):
    rows = draw(st.integers(1, 30))
    classes = draw(st.integers(2, 6))
    y = draw(hnp.arrays(np.int64, rows, elements=st.integers(0, classes - 1)))
    scores = draw(hnp.arrays(np.float64, (rows, classes), elements=st.integers(0, 3).map(float)))
    return y, scores, draw(splits(rows))


@settings(max_examples=EXAMPLES)
@given(labelled())
def test_classification_streamed_equals_one_batch(case):
    y, scores, cuts = case
    for given_ in (scores, scores.argmax(1)):  # scores, then predicted labels (class count grows)
        whole = classification_report(y, given_, top_k=TOP_K).to_dict()
        acc = ClassificationAccumulator(top_k=TOP_K)
        for a, b in itertools.pairwise(cuts):
            acc.add(y[a:b], given_[a:b])
        assert acc.result().to_dict() == whole  # made of counts: exactly equal


@settings(max_examples=EXAMPLES)
@given(labelled())
def test_classification_invariants(case):
    y, scores, _ = case
    report = classification_report(y, scores, top_k=TOP_K)
    order = np.argsort(-scores, axis=1, kind="stable")
    for k in TOP_K:
        assert report.top_k_accuracy[k] == np.mean((order[:, :k] == y[:, None]).any(axis=1))
    assert report.top_k_accuracy[1] == report.accuracy == np.mean(scores.argmax(1) == y)
    accs = [report.top_k_accuracy[k] for k in TOP_K]
    assert accs == sorted(accs)
    assert report.confusion.sum() == y.size
    assert report.support == tuple(np.bincount(y, minlength=scores.shape[1]))
    assert set(report.undefined_sensitivity) == set(range(scores.shape[1])) - set(y.tolist())
    assert set(report.undefined_precision) == set(range(scores.shape[1])) - set(scores.argmax(1).tolist())
    assert 0.0 <= report.g_mean <= report.balanced_accuracy <= 1.0
