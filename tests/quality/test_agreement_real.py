"""Agreement on a real classifier's outputs: float32 logits of the digits model against their
float16 rounding (a quantised stage) and against a noisy copy, checked with direct numpy formulas."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from splitinfer.quality import AgreementAccumulator, compare_outputs


def _direct(ref: np.ndarray, cand: np.ndarray) -> dict:
    r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    return {"snr_db": 10 * math.log10(np.sum(r**2) / np.sum((r - c) ** 2)),
            "cosine": float(r @ c / (np.linalg.norm(r) * np.linalg.norm(c))),
            "max_abs_diff": float(np.max(np.abs(r - c))), "mean_abs_diff": float(np.mean(np.abs(r - c)))}


def _top_k_direct(ref: np.ndarray, cand: np.ndarray, k: int) -> float:
    # Candidate's classes by descending score, ties by ascending index: a stable sort of -scores.
    order = np.argsort(-cand.astype(np.float64), axis=1, kind="stable")[:, :k]
    return float(np.mean((order == ref.argmax(1)[:, None]).any(axis=1)))


def test_float16_rounding_matches_the_direct_formulas(digits):
    ref = digits.logits
    cand = ref.astype(np.float16).astype(np.float32)
    result = compare_outputs({"logits": ref, "proba": digits.proba}, {"logits": cand, "proba": digits.proba})
    logits = result["logits"]
    expected = _direct(ref, cand)
    assert logits.snr_db == pytest.approx(expected["snr_db"], rel=1e-9)
    assert 55 < logits.snr_db < 80  # float16 keeps about 11 bits: roughly 66 dB
    assert logits.cosine == pytest.approx(expected["cosine"], abs=1e-12)
    assert 1 - 1e-6 < logits.cosine < 1.0
    assert logits.max_abs_diff == pytest.approx(expected["max_abs_diff"], rel=1e-12)
    assert logits.max_abs_diff > 0
    assert logits.mean_abs_diff == pytest.approx(expected["mean_abs_diff"], rel=1e-9)
    assert logits.num_elements == ref.size and logits.num_rows == ref.shape[0] and logits.num_classes == 10
    for k in (1, 5):
        assert logits.top_k_agreement[k] == _top_k_direct(ref, cand, k)
    assert logits.top1_agreement == float(np.mean(ref.argmax(1) == cand.argmax(1)))
    # The unchanged output: exact.
    proba = result["proba"]
    assert proba.snr_db == math.inf and proba.cosine == 1.0 and proba.max_abs_diff == 0.0
    assert proba.top1_agreement == 1.0


def test_noisy_candidate_agreement_matches_scikit_learn_top_k(digits):
    # Noise that flips some argmaxes: the agreement is below 1 and must be counted right.
    sk = pytest.importorskip("sklearn.metrics")
    ref = digits.logits.astype(np.float64)
    cand = ref + np.random.default_rng(0).normal(scale=2.0, size=ref.shape)
    result = compare_outputs({"y": ref}, {"y": cand}, top_k=(1, 2, 3, 5, 10, 11))["y"]
    assert 0.5 < result.top1_agreement < 0.99
    assert result.top1_agreement == float(np.mean(ref.argmax(1) == cand.argmax(1)))
    # Agreement top-k is top-k accuracy with the reference's argmax as the label.
    for k in (1, 2, 3, 5, 10, 11):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k >= classes
            expected = sk.top_k_accuracy_score(ref.argmax(1), cand, k=k, labels=list(range(10)))
        assert result.top_k_agreement[k] == pytest.approx(expected, abs=1e-12)
    assert result.top_k_agreement[11] == 1.0
    expected = _direct(ref, cand)
    assert result.snr_db == pytest.approx(expected["snr_db"], rel=1e-9)
    assert result.cosine == pytest.approx(expected["cosine"], abs=1e-12)


def test_streaming_the_test_set_in_batches_matches_one_batch(digits):
    ref = digits.logits
    cand = ref.astype(np.float16).astype(np.float32)
    whole = compare_outputs({"logits": ref}, {"logits": cand})["logits"]
    acc = AgreementAccumulator()
    for start in range(0, ref.shape[0], 64):
        acc.add({"logits": ref[start:start + 64]}, {"logits": cand[start:start + 64]})
    assert acc.num_batches == 9
    streamed = acc.result()["logits"]
    # From sums, not an average of per-batch SNRs (which would differ by far more than rounding).
    assert streamed.snr_db == pytest.approx(whole.snr_db, rel=1e-12)
    assert streamed.cosine == pytest.approx(whole.cosine, abs=1e-14)
    assert streamed.max_abs_diff == whole.max_abs_diff
    assert streamed.mean_abs_diff == pytest.approx(whole.mean_abs_diff, rel=1e-12)
    assert streamed.top_k_agreement == whole.top_k_agreement and streamed.num_rows == whole.num_rows
    per_batch = [10 * math.log10(np.sum(ref[s:s + 64].astype(np.float64) ** 2)
                                 / np.sum((ref[s:s + 64].astype(np.float64) - cand[s:s + 64]) ** 2))
                 for s in range(0, ref.shape[0], 64)]
    assert abs(np.mean(per_batch) - whole.snr_db) > 0.01  # what averaging would have reported (dB)
